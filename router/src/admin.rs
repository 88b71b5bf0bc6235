//! The admin socket: one JSON request per connection, one JSON answer. The CLI uses it to ask
//! a running node for its routes, counters and neighbours.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Routes,
    Stats,
    Neighbours,
    BgpStatus,
    /// Write what the data plane receives and sends to a pcap file (`count` 0: until stopped).
    CaptureStart {
        path: std::path::PathBuf,
        interface: Option<String>,
        count: u64,
    },
    CaptureStop,
    CaptureStatus,
    /// The route an address takes (like `ip route get`).
    Lookup {
        addr: std::net::Ipv4Addr,
    },
    /// Report probes carrying this trace id (for a few seconds).
    TraceStart {
        id: u32,
    },
    /// The hops recorded for the trace so far.
    TraceCollect {
        id: u32,
    },
    TraceStop,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the node's admin socket {path}: {source}; is the node running? (try `router lab status`)")]
    Connect { path: String, source: std::io::Error },
    #[error("talking to {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("the node answered something that is not JSON: {0}")]
    Decode(serde_json::Error),
    #[error("the node refused: {0}")]
    Refused(String),
}

/// Sends one request and returns the node's result.
pub fn request(path: &Path, req: Request) -> Result<serde_json::Value, ClientError> {
    let p = path.display().to_string();
    let io = |source| ClientError::Io { path: p.clone(), source };
    let mut s = UnixStream::connect(path).map_err(|source| ClientError::Connect { path: p.clone(), source })?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(io)?;
    s.set_write_timeout(Some(Duration::from_secs(5))).map_err(io)?;
    let mut line = serde_json::to_string(&req).map_err(ClientError::Decode)?;
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).map_err(io)?;
    let r: Response = serde_json::from_str(&answer).map_err(ClientError::Decode)?;
    match (r.ok, r.result, r.error) {
        (true, Some(v), _) => Ok(v),
        (true, None, _) => Ok(serde_json::Value::Null),
        (false, _, e) => Err(ClientError::Refused(e.unwrap_or_default())),
    }
}

/// Reads one request line from `s` and answers it with `handle`.
pub fn serve_one(
    s: UnixStream,
    handle: impl FnOnce(Request) -> Result<serde_json::Value, String>,
) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    let resp = match serde_json::from_str::<Request>(&line) {
        Ok(req) => match handle(req) {
            Ok(v) => Response { ok: true, result: Some(v), error: None },
            Err(e) => Response { ok: false, result: None, error: Some(e) },
        },
        Err(e) => Response { ok: false, result: None, error: Some(format!("bad request: {e}")) },
    };
    let mut out = serde_json::to_string(&resp).map_err(std::io::Error::other)?;
    out.push('\n');
    (&s).write_all(out.as_bytes())
}
