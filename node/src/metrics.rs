//! The Prometheus endpoint (`--metrics 127.0.0.1:PORT`): serves the text
//! exposition of the node's registry (libp2p's metrics and strew's own) at
//! `GET /metrics`.
//!
//! Owns the listener and a minimal, bounded HTTP/1.x responder (one request per
//! connection, head ≤ 8 KiB, 5 s to send it). It must not define metrics.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

const MAX_HEAD: usize = 8 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `addr` and serves the registry; returns the bound address and the task.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Mutex<Registry>>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let registry = registry.clone();
                    tokio::spawn(async move {
                        if let Err(err) = answer(stream, &registry).await {
                            debug!(%peer, %err, "metrics request failed");
                        }
                    });
                }
                Err(err) => {
                    warn!(%err, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok((bound, task))
}

/// Reads the request head and answers it.
async fn answer(mut stream: TcpStream, registry: &Mutex<Registry>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
            if head.len() > MAX_HEAD {
                break;
            }
        }
        Ok::<(), std::io::Error>(())
    };
    if tokio::time::timeout(HEAD_TIMEOUT, read_head).await.is_err() {
        return Ok(());
    }
    let request_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = if method == "GET" && (path == "/metrics" || path == "/") {
        let mut text = String::new();
        let encoded = match registry.lock() {
            Ok(reg) => prometheus_client::encoding::text::encode(&mut text, &reg).is_ok(),
            Err(_) => false,
        };
        // Scrapers that ask for OpenMetrics get it; everyone else (promtool,
        // curl, older Prometheus) gets the 0.0.4 text format.
        let head_text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let wants_openmetrics = head_text
            .lines()
            .any(|l| l.starts_with("accept:") && l.contains("application/openmetrics-text"));
        if encoded && wants_openmetrics {
            (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            )
        } else if encoded {
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                crate::metrics_text::openmetrics_to_prometheus(&text),
            )
        } else {
            (
                "500 Internal Server Error",
                "text/plain",
                "metrics encoding failed\n".to_string(),
            )
        }
    } else {
        (
            "404 Not Found",
            "text/plain",
            "try GET /metrics\n".to_string(),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    async fn get(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_refuses_other_paths() {
        let mut registry = Registry::default();
        let c: Counter = Counter::default();
        registry.register("strew_test", "a test counter", c.clone());
        c.inc_by(7);
        let (addr, task) = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Mutex::new(registry)),
        )
        .await
        .unwrap();
        let ok = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("strew_test_total 7"), "{ok}");
        let missing = get(addr, b"GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let junk = get(addr, b"\x00\x01\x02\n\n").await;
        assert!(junk.starts_with("HTTP/1.1 404"), "{junk}");
        task.abort();
    }
}
