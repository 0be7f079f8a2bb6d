//! The minimal, bounded HTTP/1.x responder the node's local web endpoints
//! share (Prometheus metrics, the dashboard): one request per connection, a
//! head of at most 8 KiB sent within 5 s, GET only, `Connection: close`.
//!
//! Owns reading a request's method and target and writing one response; it
//! must not decide what a path serves.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX_HEAD: usize = 8 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// A request's method and target (`/path?query`), or `None` when the client
/// sent no complete head in time (the connection is then just closed).
pub async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<(String, String)>> {
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
    match tokio::time::timeout(HEAD_TIMEOUT, read_head).await {
        Err(_) => return Ok(None),
        Ok(result) => result?,
    }
    let request_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.split_whitespace();
    Ok(Some((
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    )))
}

/// Writes one response and closes the stream.
pub async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

/// The value of `name` in a target's query string (`/x?token=abc` → `abc`).
pub fn query_param<'a>(target: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = target.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The path of a target, without its query string.
pub fn path_of(target: &str) -> &str {
    target.split_once('?').map_or(target, |(p, _)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_and_paths_are_split() {
        assert_eq!(query_param("/api?token=abc&x=1", "token"), Some("abc"));
        assert_eq!(query_param("/api?x=1", "token"), None);
        assert_eq!(query_param("/api", "token"), None);
        assert_eq!(path_of("/api/status?token=1"), "/api/status");
        assert_eq!(path_of("/"), "/");
    }
}
