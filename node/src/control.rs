//! The control endpoint: how CLI commands talk to the local daemon.
//!
//! The daemon listens on 127.0.0.1 (ephemeral port) and writes
//! `DATA_DIR/control.json` (`{"port": N, "token": "..."}`, mode 0600). A
//! client connects, sends one JSON line `{"token", "cmd", "args"}` and reads
//! one JSON line back: `{"ok": true, "result": ...}` or
//! `{"ok": false, "error": "...", "code": "..."}` (`error` for people, `code` a
//! stable name of the failure's kind, see [`CommandError::code`]).
//! Requests are bounded in size and time. Owns the endpoint, the file and the
//! client; what each command returns is decided by the [`ControlHandler`] the
//! daemon supplies. It must not know overlay or storage internals.

use std::fs;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::daemon::CommandError;

/// File naming the control port and token.
pub const CONTROL_FILE: &str = "control.json";
/// Largest request line accepted.
const MAX_REQUEST: u64 = 1024 * 1024;
/// How long a CLI command waits for a quick answer (`status`, `peers`).
pub const QUICK_CALL: Duration = Duration::from_secs(30);
/// Time a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the control endpoint and client.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "no strew daemon is running for {data_dir} (start one with `strew run --data-dir {data_dir}`)"
    )]
    NotRunning { data_dir: PathBuf },
    #[error("control endpoint I/O")]
    Io(#[source] std::io::Error),
    #[error("the daemon's answer is not valid JSON")]
    Json(#[source] serde_json::Error),
    #[error("the daemon did not answer within {0:?}")]
    Timeout(Duration),
    /// The daemon answered with a failure: its message and its kind.
    #[error("{message}")]
    Daemon { code: String, message: String },
}

#[derive(Serialize, Deserialize)]
struct ControlFile {
    port: u16,
    token: String,
}

/// One request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub token: String,
    pub cmd: String,
    #[serde(default)]
    pub args: Value,
}

/// What a [`ControlHandler`] returns.
pub type HandlerFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, CommandError>> + Send + 'a>>;

/// A failure reply (`code` names its kind; `error` is for people).
fn refusal(code: &str, error: impl Into<String>) -> Value {
    serde_json::json!({"ok": false, "error": error.into(), "code": code})
}

/// Answers control commands (the daemon implements it).
pub trait ControlHandler: Send + Sync + 'static {
    /// Answers `cmd` with `args`; an `Err` reaches the user as its text and code.
    fn handle(&self, cmd: &str, args: Value) -> HandlerFuture<'_>;
}

/// A running endpoint; removes its control file when dropped.
#[derive(Debug)]
pub struct ControlServer {
    file: PathBuf,
    pub port: u16,
    /// The token clients must send (the dashboard asks for it too).
    pub token: String,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.file);
    }
}

fn random_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Binds 127.0.0.1:0, writes the control file and serves until the task is aborted.
pub async fn serve(
    data_dir: &Path,
    handler: Arc<dyn ControlHandler>,
) -> Result<(ControlServer, tokio::task::JoinHandle<()>), ControlError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(ControlError::Io)?;
    let port = listener.local_addr().map_err(ControlError::Io)?.port();
    let token = random_token();
    let file = data_dir.join(CONTROL_FILE);
    let body = serde_json::to_vec(&ControlFile {
        port,
        token: token.clone(),
    })
    .map_err(ControlError::Json)?;
    let target = file.clone();
    let write = move || crate::private_file::write_private(&target, &body);
    tokio::task::spawn_blocking(write)
        .await
        .map_err(|e| ControlError::Io(std::io::Error::other(e)))?
        .map_err(|e| ControlError::Io(e.source))?;
    let server = ControlServer {
        file,
        port,
        token: token.clone(),
    };
    let token = Arc::new(token);
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(err) => {
                    warn!(%err, "control endpoint accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let handler = handler.clone();
            let token = token.clone();
            tokio::spawn(async move {
                if let Err(err) = serve_one(stream, &token, handler).await {
                    debug!(%peer, %err, "control connection ended with an error");
                }
            });
        }
    });
    Ok((server, task))
}

async fn serve_one(
    stream: TcpStream,
    token: &str,
    handler: Arc<dyn ControlHandler>,
) -> Result<(), ControlError> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(MAX_REQUEST);
    let mut line = String::new();
    let answer = match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => refusal("timeout", "request timed out"),
        Ok(Err(err)) => refusal("bad_request", format!("bad request: {err}")),
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Err(err) => refusal("bad_request", format!("bad request: {err}")),
            Ok(req) if req.token != token => refusal("wrong_token", "wrong control token"),
            Ok(req) => match handler.handle(&req.cmd, req.args).await {
                Ok(result) => serde_json::json!({"ok": true, "result": result}),
                Err(error) => refusal(error.code(), error.text()),
            },
        },
    };
    let mut out = serde_json::to_vec(&answer).map_err(ControlError::Json)?;
    out.push(b'\n');
    write.write_all(&out).await.map_err(ControlError::Io)?;
    write.shutdown().await.map_err(ControlError::Io)
}

/// Sends `cmd` to the daemon of `data_dir` and returns its result.
pub async fn call(
    data_dir: &Path,
    cmd: &str,
    args: Value,
    timeout: Duration,
) -> Result<Value, ControlError> {
    let not_running = || ControlError::NotRunning {
        data_dir: data_dir.to_path_buf(),
    };
    let text = tokio::fs::read(data_dir.join(CONTROL_FILE))
        .await
        .map_err(|_| not_running())?;
    let file: ControlFile = serde_json::from_slice(&text).map_err(|_| not_running())?;
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", file.port))
            .await
            .map_err(|_| not_running())?;
        let mut req = serde_json::to_vec(&Request {
            token: file.token,
            cmd: cmd.to_string(),
            args,
        })
        .map_err(ControlError::Json)?;
        req.push(b'\n');
        stream.write_all(&req).await.map_err(ControlError::Io)?;
        let mut line = String::new();
        BufReader::new(stream)
            .take(64 * 1024 * 1024)
            .read_line(&mut line)
            .await
            .map_err(ControlError::Io)?;
        let answer: Value = serde_json::from_str(&line).map_err(ControlError::Json)?;
        if answer.get("ok").and_then(Value::as_bool) == Some(true) {
            Ok(answer.get("result").cloned().unwrap_or(Value::Null))
        } else {
            let field = |name: &str| answer.get(name).and_then(Value::as_str).map(str::to_string);
            Err(ControlError::Daemon {
                // Daemons before codes were added answer without one.
                code: field("code").unwrap_or_else(|| "unknown".into()),
                message: field("error").unwrap_or_else(|| "the daemon refused the request".into()),
            })
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ControlError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl ControlHandler for Echo {
        fn handle(&self, cmd: &str, args: Value) -> HandlerFuture<'_> {
            let cmd = cmd.to_string();
            Box::pin(async move {
                if cmd == "echo" {
                    Ok(args)
                } else {
                    Err(CommandError::UnknownCommand(cmd))
                }
            })
        }
    }

    #[tokio::test]
    async fn client_and_server_exchange_and_refuse_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let (server, task) = serve(dir.path(), Arc::new(Echo)).await.unwrap();
        let t = Duration::from_secs(5);
        let v = call(dir.path(), "echo", serde_json::json!({"a": 1}), t)
            .await
            .unwrap();
        assert_eq!(v, serde_json::json!({"a": 1}));
        let err = call(dir.path(), "nope", Value::Null, t).await.unwrap_err();
        assert!(
            err.to_string().contains("unknown control command \"nope\""),
            "{err}"
        );
        assert!(
            matches!(&err, ControlError::Daemon { code, .. } if code == "unknown_command"),
            "{err:?}"
        );
        // Garbage and a wrong token get an error answer, and the server keeps serving.
        let mut s = TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        s.write_all(b"\x00\xffgarbage\n").await.unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.unwrap();
        assert!(line.contains("bad request"), "{line}");
        let mut s = TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        s.write_all(b"{\"token\":\"x\",\"cmd\":\"echo\"}\n")
            .await
            .unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.unwrap();
        assert!(line.contains("wrong control token"), "{line}");
        assert!(line.contains("\"code\":\"wrong_token\""), "{line}");
        assert!(call(dir.path(), "echo", Value::Null, t).await.is_ok());
        task.abort();
        drop(server);
        let err = call(dir.path(), "echo", Value::Null, t).await.unwrap_err();
        assert!(matches!(err, ControlError::NotRunning { .. }), "{err}");
    }
}
