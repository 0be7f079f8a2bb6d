//! The Prometheus endpoint (`--metrics 127.0.0.1:PORT`): serves the text
//! exposition (format 0.0.4) of the node's registry (libp2p's metrics and
//! strew's own) at `GET /metrics`.
//!
//! Owns the listener; the bounded HTTP/1.x responder is [`crate::http`]'s
//! (shared with the dashboard). It must not define metrics.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

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
    let Some((method, path)) = crate::http::read_request(&mut stream).await? else {
        return Ok(());
    };
    let (status, content_type, body) = if method == "GET" && (path == "/metrics" || path == "/") {
        let mut text = String::new();
        let encoded = match registry.lock() {
            Ok(reg) => prometheus_client::encoding::text::encode(&mut text, &reg).is_ok(),
            Err(_) => false,
        };
        // The Prometheus text format (0.0.4): every Prometheus version and
        // `promtool check metrics` read it; prometheus-client writes OpenMetrics.
        if encoded {
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
    crate::http::respond(&mut stream, status, content_type, body.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
