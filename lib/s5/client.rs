//! The s5 client: fetch the secret with `POST /` (asking for the authenticated v2 answer,
//! accepting the original server's v1 answer of 48 or 96 bytes), and talk to a local s5d's
//! control socket (`s5d put`, `s5d token`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{ACCEPT, CONNECTION, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use zeroize::Zeroizing;

use super::wire::{self, WireError};
use super::ClientFile;
use crate::locked::Locked;

/// Largest answer read (a v2 answer of the largest secret, in base64, with room to spare).
const MAX_ANSWER: usize = 2 * super::MAX_SECRET;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("bad port {0:?}")]
    BadPort(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("no answer within {0}s")]
    Timeout(u64),
    #[error("the server refused: wrong token (404)")]
    WrongToken,
    #[error("the server answered {0}{1}")]
    Status(u16, String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("the server sent an unauthenticated v1 answer, but {0}: refused (a downgrade on the way, or the wrong server)")]
    NotV2(&'static str),
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
}

/// Which answer format the secret came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    V1,
    V2,
}

/// Fetches and decrypts the secret from `host:port` with the 96-byte `token`. With
/// `require_v2` (why: for the error), a v1 answer is refused.
pub fn fetch(
    host: &str,
    port: &str,
    token: &[u8],
    timeout: Duration,
    require_v2: Option<&'static str>,
) -> Result<(Zeroizing<Vec<u8>>, Format), FetchError> {
    let port_n: u16 = port
        .trim()
        .parse()
        .map_err(|_| FetchError::BadPort(port.to_string()))?;
    if token.len() != wire::TOKEN_LEN {
        return Err(WireError::BadToken.into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(FetchError::Runtime)?;
    rt.block_on(async {
        tokio::time::timeout(timeout, fetch_async(host, port_n, token, require_v2))
            .await
            .unwrap_or(Err(FetchError::Timeout(timeout.as_secs())))
    })
}

async fn fetch_async(
    host: &str,
    port: u16,
    token: &[u8],
    require_v2: Option<&'static str>,
) -> Result<(Zeroizing<Vec<u8>>, Format), FetchError> {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| FetchError::Connect(authority.clone(), e))?;
    let _ = stream.set_nodelay(true);
    let http = |e: hyper::Error| FetchError::Http(chain(&e));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::post("/")
        .header(HOST, &authority)
        .header(ACCEPT, wire::V2_MEDIA)
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONNECTION, "close")
        .body(Full::new(Bytes::copy_from_slice(&token[..wire::ID_LEN])))
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(http)?;
    let status = resp.status().as_u16();
    let v2 = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == wire::V2_MEDIA);
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?
        .to_bytes();
    if status == 404 {
        return Err(FetchError::WrongToken);
    }
    if status != 200 {
        let why = String::from_utf8_lossy(&body);
        let why = why.lines().next().unwrap_or("").trim();
        let why: String = why.chars().take(200).collect();
        return Err(FetchError::Status(
            status,
            if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            },
        ));
    }
    let raw = wire::b64decode(&body)?;
    let pad = &token[wire::ID_LEN..];
    if v2 {
        Ok((wire::open_v2(&raw, pad)?, Format::V2))
    } else if let Some(why) = require_v2 {
        Err(FetchError::NotV2(why))
    } else {
        Ok((wire::open_v1(&raw, pad)?, Format::V1))
    }
}

/// An error and its causes, `outer: inner: ...` (hyper's own messages are terse).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("s5d refused: {0}")]
    Refused(String),
    #[error("unexpected answer from s5d: {0}")]
    Bad(String),
}

/// What s5d answers on its control socket.
#[derive(Debug)]
pub struct ControlAnswer {
    pub client: ClientFile,
    /// The client file s5d wrote itself, if any.
    pub written: Option<PathBuf>,
}

fn control(
    path: &Path,
    request: &[&[u8]],
    timeout: Duration,
) -> Result<ControlAnswer, ControlError> {
    let where_ = path.display().to_string();
    let io = |e| ControlError::Io(where_.clone(), e);
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| ControlError::Connect(where_.clone(), e))?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    // s5d may refuse (and close) before reading the request: keep a write error, but read
    // its answer first.
    let sent = request
        .iter()
        .try_for_each(|part| s.write_all(part))
        .and_then(|_| s.shutdown(std::net::Shutdown::Write));
    let mut answer = Zeroizing::new(Vec::new());
    let read = (&mut s).take(MAX_ANSWER as u64).read_to_end(&mut answer);
    if answer.is_empty() {
        sent.map_err(io)?;
        read.map_err(io)?;
    }
    let text = std::str::from_utf8(&answer).map_err(|_| ControlError::Bad("not UTF-8".into()))?;
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    if let Some(why) = first.strip_prefix("ERR ") {
        return Err(ControlError::Refused(why.to_string()));
    }
    let json = first.strip_prefix("OK ").ok_or_else(|| {
        ControlError::Bad(format!("{:?}", first.chars().take(40).collect::<String>()))
    })?;
    let f = super::parse_client_file(json).map_err(ControlError::Bad)?;
    let (Some(host), Some(port), Some(token)) = (f.host, f.port, f.token) else {
        return Err(ControlError::Bad("missing host, port or token".into()));
    };
    let port = port
        .parse()
        .map_err(|_| ControlError::Bad(format!("bad port {port:?}")))?;
    let written = lines
        .find_map(|l| l.strip_prefix("FILE "))
        .map(PathBuf::from);
    Ok(ControlAnswer {
        client: ClientFile {
            host,
            bind_address: f.bind_address.unwrap_or_default(),
            port,
            token,
            v2: f.v2,
        },
        written,
    })
}

/// Hands `secret` to the s5d listening on the control socket `path`.
pub fn put(path: &Path, secret: &Locked, timeout: Duration) -> Result<ControlAnswer, ControlError> {
    control(path, &[b"PUT\n", secret.as_bytes()], timeout)
}

/// Asks the s5d on the control socket `path` for its connection details.
pub fn token(path: &Path, timeout: Duration) -> Result<ControlAnswer, ControlError> {
    control(path, &[b"TOKEN\n"], timeout)
}
