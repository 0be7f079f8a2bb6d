//! The node dashboard (`strew run --dashboard 127.0.0.1:PORT`): one web
//! page showing this node (identity, grid, manager, group, storage donated
//! and used, packets held, reachability), the user's snapshots with their
//! health, running backups and restores with rate and ETA, and the map.
//!
//! Plain HTML, CSS and a little JavaScript embedded in the binary
//! (`dashboard/page.html`; no build step, no CDN). The page refreshes
//! itself from `GET /api/status`, which answers with the control API's own
//! JSON (`status`, `placements`, `jobs`), and shows `GET /map.svg` (the
//! SVG `strew status --map` writes). Every request must carry the control
//! token (`?token=…`, as in the URL `strew status` prints): the dashboard
//! is read-only and serves nothing else. Owns the routes; the HTTP framing
//! is [`crate::http`]'s and the answers are the daemon's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::control::ControlHandler;
use crate::http::{path_of, query_param, read_request, respond};

/// The page, embedded at build time.
const PAGE: &str = include_str!("dashboard/page.html");

/// The control commands the dashboard may call (all read-only).
const READ_ONLY: [&str; 3] = ["status", "placements", "jobs"];

/// Binds `addr` and serves the dashboard; returns the bound address and the task.
pub async fn serve(
    addr: SocketAddr,
    handler: Arc<dyn ControlHandler>,
    token: String,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    if !addr.ip().is_loopback() {
        warn!(%addr, "the dashboard listens beyond this machine; anyone who learns the URL's token can read it");
    }
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let token = Arc::new(token);
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let (handler, token) = (handler.clone(), token.clone());
                    tokio::spawn(async move {
                        if let Err(err) = answer(stream, handler.as_ref(), &token).await {
                            debug!(%peer, %err, "dashboard request failed");
                        }
                    });
                }
                Err(err) => {
                    warn!(%err, "dashboard accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok((bound, task))
}

/// The URL a browser on this machine opens (with the token it needs).
pub fn url(bound: SocketAddr, token: &str) -> String {
    let host = if bound.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else if bound.is_ipv6() {
        format!("[{}]", bound.ip())
    } else {
        bound.ip().to_string()
    };
    format!("http://{host}:{}/?token={token}", bound.port())
}

/// Whether two tokens are equal, in time independent of where they differ.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn answer(
    mut stream: TcpStream,
    handler: &dyn ControlHandler,
    token: &str,
) -> std::io::Result<()> {
    let Some((method, target)) = read_request(&mut stream).await? else {
        return Ok(());
    };
    if method != "GET" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"the dashboard is read-only\n",
        )
        .await;
    }
    if !query_param(&target, "token").is_some_and(|t| same_token(t, token)) {
        return respond(
            &mut stream,
            "401 Unauthorized",
            "text/plain; charset=utf-8",
            b"open the dashboard URL that `strew status` prints (it carries the control token)\n",
        )
        .await;
    }
    match path_of(&target) {
        "/" | "/index.html" => {
            respond(
                &mut stream,
                "200 OK",
                "text/html; charset=utf-8",
                PAGE.as_bytes(),
            )
            .await
        }
        "/api/status" => {
            let body = serde_json::to_vec(&snapshot_of(handler).await).unwrap_or_default();
            respond(&mut stream, "200 OK", "application/json", &body).await
        }
        "/map.svg" => {
            let state = snapshot_of(handler).await;
            let mut status = state["status"].clone();
            status["snapshots"] = state["snapshots"].clone();
            match crate::daemon::source_commands::status_map_svg(&status) {
                Ok(svg) => respond(&mut stream, "200 OK", "image/svg+xml", svg.as_bytes()).await,
                Err(err) => {
                    let text = format!("cannot draw the map: {}\n", crate::grid::error_text(&err));
                    respond(
                        &mut stream,
                        "500 Internal Server Error",
                        "text/plain",
                        text.as_bytes(),
                    )
                    .await
                }
            }
        }
        _ => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                b"no such page\n",
            )
            .await
        }
    }
}

/// What the page shows, from the control API: `{status, snapshots, jobs}`
/// (a command that fails puts its message in `<name>_error` instead).
async fn snapshot_of(handler: &dyn ControlHandler) -> Value {
    let mut out = json!({});
    for (cmd, field) in READ_ONLY.iter().zip(["status", "snapshots", "jobs"]) {
        match handler.handle(cmd, Value::Null).await {
            Ok(v) => out[field] = v,
            Err(err) => out[format!("{field}_error")] = json!(err.text()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::HandlerFuture;
    use crate::daemon::CommandError;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers like a daemon with one snapshot; refuses anything not read-only.
    struct Fake;
    impl ControlHandler for Fake {
        fn handle(&self, cmd: &str, _: Value) -> HandlerFuture<'_> {
            let cmd = cmd.to_string();
            Box::pin(async move {
                match cmd.as_str() {
                    "status" => Ok(
                        json!({"node_id": "12D3KooWfake", "location": {"lat": 48.85, "lon": 2.35}}),
                    ),
                    "placements" => Ok(json!([{"snapshot": "ab12", "name": "home",
                        "health": {"stripes": 3, "healthy": 3, "degraded": 0, "lost": 0},
                        "targets": [{"node_id": "12D3KooWtarget", "location": {"lat": 52.52, "lon": 13.4}, "packets": 6, "up": true}]}])),
                    "jobs" => Ok(json!([])),
                    other => Err(CommandError::UnknownCommand(other.into())),
                }
            })
        }
    }

    async fn get(addr: SocketAddr, target: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_the_page_status_and_map_only_with_the_token() {
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), Arc::new(Fake), "t0k".into())
            .await
            .unwrap();
        assert_eq!(
            url(addr, "t0k"),
            format!("http://127.0.0.1:{}/?token=t0k", addr.port())
        );
        let page = get(addr, "/?token=t0k").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("<title>strew node</title>"), "{page}");
        assert!(
            !page.contains("http://") || !page.contains("<script src"),
            "no external scripts"
        );
        let status = get(addr, "/api/status?token=t0k").await;
        assert!(status.contains("\"node_id\":\"12D3KooWfake\""), "{status}");
        assert!(status.contains("\"healthy\":3"), "{status}");
        let map = get(addr, "/map.svg?token=t0k").await;
        assert!(map.starts_with("HTTP/1.1 200"), "{map}");
        assert!(map.contains("<svg"), "{map}");
        for bad in ["/", "/api/status?token=wrong", "/map.svg?token=t0"] {
            let refused = get(addr, bad).await;
            assert!(refused.starts_with("HTTP/1.1 401"), "{bad}: {refused}");
        }
        let missing = get(addr, "/nope?token=t0k").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /api/status?token=t0k HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 405"), "{out}");
        task.abort();
    }
}
