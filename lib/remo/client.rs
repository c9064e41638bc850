//! remo's side of the protocol: login, then numbered, encrypted requests; responses are
//! checked strictly (every line must decrypt, numbering must follow, the final `E` token must
//! come) unless `legacy` is set for the original server, which sends no final token.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, SET_COOKIE};
use hyper::Request;
use openssl::pkey::{PKey, Private, Public};

use super::server::STATUS_HEADER;
use super::wire::{self, Fernet, Head};
use crate::http::ConnectError;

/// Payload bytes per uploaded token.
const UP_CHUNK: usize = 64 * 1024;
/// Bytes of a login answer or an error message read at most (streamed output is not limited).
const MAX_ANSWER: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("login refused (HTTP {0})")]
    LoginRefused(u16),
    #[error("the server's answer is not signed by its key")]
    BadServerSignature,
    #[error("HTTP Error {0}: {1}")]
    Status(u16, String),
    #[error("bad response: {0}")]
    Protocol(&'static str),
    #[error("bad response: answer truncated (no final token); the original remo_serv never sends one: talk to it with --legacy-server")]
    NoFinalToken,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("crypto: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
}

/// The error for an answer with `status`: its reason phrase, then the server's message if any.
fn status_error(status: hyper::StatusCode, body: &[u8]) -> ClientError {
    let reason = status.canonical_reason().unwrap_or("");
    let msg = String::from_utf8_lossy(body);
    let msg = msg.trim();
    ClientError::Status(
        status.as_u16(),
        if msg.is_empty() {
            reason.to_string()
        } else {
            format!("{reason}: {msg}")
        },
    )
}

/// A request body: whole, or a file streamed as tokens.
enum ReqBody {
    Full(Full<Bytes>),
    Put(PutBody),
}

struct PutBody {
    file: std::fs::File,
    fernet: Fernet,
    req: i16,
    tok: i16,
    path: String,
    done: bool,
}

impl HttpBody for ReqBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            ReqBody::Full(f) => Pin::new(f)
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(|e: Infallible| match e {}))),
            ReqBody::Put(p) => {
                if p.done {
                    return Poll::Ready(None);
                }
                // Reading a local file: short blocking reads, acceptable in a client.
                let mut buf = vec![0u8; UP_CHUNK];
                let mut n = 0;
                while n < buf.len() {
                    match p.file.read(&mut buf[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    }
                }
                let first = p.tok == 0;
                let last = n == 0;
                let h = Head {
                    first,
                    last,
                    req: p.req,
                    tok: p.tok,
                };
                p.tok = p.tok.wrapping_add(1);
                p.done = last;
                let plain = wire::request_plain(h, &p.path, &buf[..n]);
                let mut t = p.fernet.encrypt(&plain).into_bytes();
                t.extend_from_slice(b"\r\n");
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(t)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Full(f) => f.is_end_stream(),
            ReqBody::Put(p) => p.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Full(f) => f.size_hint(),
            ReqBody::Put(_) => SizeHint::default(),
        }
    }
}

/// Where and who.
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub key: PKey<Private>,
    pub server: PKey<Public>,
    /// Accept answers without the final `E` token (the original server).
    pub legacy: bool,
}

pub struct Client {
    t: Target,
    fernet: Option<Fernet>,
    cookie: Option<String>,
    req: i16,
    sender: Option<SendRequest<ReqBody>>,
}

/// How a request ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Exit status of the remote command, when the server sent one.
    pub exit: Option<i32>,
}

impl Client {
    pub fn new(t: Target) -> Self {
        Client {
            t,
            fernet: None,
            cookie: None,
            req: 0,
            sender: None,
        }
    }

    pub fn base_url(&self) -> String {
        if self.t.port == 80 {
            format!("http://{}", self.t.host)
        } else {
            format!("http://{}:{}", self.t.host, self.t.port)
        }
    }

    async fn connection(&mut self) -> Result<&mut SendRequest<ReqBody>, ClientError> {
        if let Some(s) = self.sender.as_mut() {
            if s.ready().await.is_err() {
                self.sender = None;
            }
        }
        if self.sender.is_none() {
            let sender = match crate::http::connect(&self.t.host, self.t.port).await {
                Ok(s) => s,
                Err(ConnectError::Tcp(e)) => {
                    let addr = format!("{}:{}", self.t.host, self.t.port);
                    return Err(ClientError::Connect(addr, e));
                }
                Err(ConnectError::Handshake(e)) => return Err(ClientError::Http(e.to_string())),
            };
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .ok_or(ClientError::Protocol("no connection"))
    }

    fn request(
        &self,
        path: &str,
        body: ReqBody,
        len: Option<usize>,
    ) -> Result<Request<ReqBody>, ClientError> {
        let mut b = Request::post(path)
            .header(HOST, format!("{}:{}", self.t.host, self.t.port))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(n) = len {
            b = b.header(CONTENT_LENGTH, n);
        }
        if let Some(c) = &self.cookie {
            b = b.header(COOKIE, format!("SESSION_ID={c}"));
        }
        b.body(body).map_err(|e| ClientError::Http(e.to_string()))
    }

    /// Logs out (an empty `/auth` with the session cookie), on a fresh connection and within
    /// two seconds; the server then ends the session and what it runs. Errors are ignored: the
    /// session expires on the server anyway.
    pub async fn logout(&mut self) {
        if self.cookie.is_none() {
            return;
        }
        self.sender = None;
        let bye = async {
            let resp = self.post_auth(Bytes::new()).await?;
            let _ = Limited::new(resp.into_body(), MAX_ANSWER).collect().await;
            Ok::<_, ClientError>(())
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), bye).await;
        self.cookie = None;
        self.fernet = None;
    }

    /// POSTs `body` to `/auth` (a login, or a logout when empty).
    async fn post_auth(
        &mut self,
        body: Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let len = body.len();
        let req = self.request("/auth", ReqBody::Full(Full::new(body)), Some(len))?;
        self.connection()
            .await?
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))
    }

    /// Logs in: signed user name and X448 key; checks the server's signed answer.
    pub async fn login(&mut self) -> Result<(), ClientError> {
        let (eph, eph_pub) = wire::x448_generate()?;
        let body = wire::auth_body(&self.t.user, &eph_pub, &self.t.key)?;
        let resp = self.post_auth(Bytes::from(body)).await?;
        let status = resp.status().as_u16();
        self.take_cookie(resp.headers());
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        if status != 200 {
            return Err(ClientError::LoginRefused(status));
        }
        let server_eph = wire::check_auth_answer(&self.t.server, &body)
            .ok_or(ClientError::BadServerSignature)?;
        let z = wire::x448_shared(&eph, &server_eph).ok_or(ClientError::BadServerSignature)?;
        self.fernet = Some(wire::session_fernet(&z));
        self.req = 0;
        Ok(())
    }

    fn take_cookie(&mut self, h: &hyper::HeaderMap) {
        for v in h.get_all(SET_COOKIE) {
            if let Some(id) = v
                .to_str()
                .ok()
                .and_then(|s| s.strip_prefix("SESSION_ID="))
                .map(|s| s.split(';').next().unwrap_or("").to_string())
            {
                self.cookie = Some(id);
            }
        }
    }

    fn fernet(&self) -> Result<Fernet, ClientError> {
        self.fernet
            .clone()
            .ok_or(ClientError::Protocol("not logged in"))
    }

    /// Sends one framed request and feeds the response payload to `sink`.
    async fn call(
        &mut self,
        prefix: &str,
        arg: Option<&str>,
        payload: &[u8],
        upload: Option<std::fs::File>,
        sink: &mut dyn Write,
    ) -> Result<Outcome, ClientError> {
        if self.req == i16::MAX {
            // The 16-bit counter is spent: a new login starts it again.
            self.login().await?;
        }
        let f = self.fernet()?;
        self.req += 1;
        let path = match arg {
            Some(a) => format!("{prefix}{}", f.encrypt(a.as_bytes())),
            None => prefix.to_string(),
        };
        let (body, len) = match upload {
            Some(file) => (
                ReqBody::Put(PutBody {
                    file,
                    fernet: f.clone(),
                    req: self.req,
                    tok: 0,
                    path: path.clone(),
                    done: false,
                }),
                None,
            ),
            None => {
                let h = Head {
                    first: true,
                    last: true,
                    req: self.req,
                    tok: 0,
                };
                let t = f.encrypt(&wire::request_plain(h, &path, payload));
                let n = t.len();
                (ReqBody::Full(Full::new(Bytes::from(t))), Some(n))
            }
        };
        let mut req = self.request(&path, body, len)?;
        if prefix == "/cmd/" || prefix == "/edt" {
            req.headers_mut()
                .insert(STATUS_HEADER, hyper::header::HeaderValue::from_static("1"));
        }
        let resp = self
            .connection()
            .await?
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status();
        self.take_cookie(resp.headers());
        let close = resp
            .headers()
            .get(CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if resp.headers().contains_key(CONTENT_LENGTH) {
            // Not encrypted: an error from the server itself.
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            if close {
                self.sender = None;
            }
            return Err(status_error(status, &body));
        }
        let mut body = resp.into_body();
        let mut split = wire::LineSplitter::default();
        let mut next_tok: i16 = 0;
        let mut ended = false;
        let mut out = Outcome::default();
        let mut err_text = Vec::new();
        let ok = status.as_u16() == 200;
        let mut handle =
            |line: Vec<u8>, next_tok: &mut i16, ended: &mut bool| -> Result<(), ClientError> {
                if *ended {
                    return Err(ClientError::Protocol("data after the last token"));
                }
                let plain = f
                    .decrypt(&line, Some(wire::TTL))
                    .ok_or(ClientError::Protocol("undecryptable or expired token"))?;
                let (h, mut rest) =
                    Head::parse(&plain).ok_or(ClientError::Protocol("short token"))?;
                if h.req != self.req || h.tok != *next_tok || h.first != (*next_tok == 0) {
                    return Err(ClientError::Protocol("token out of sequence"));
                }
                if h.first {
                    if rest.len() < 3 || !rest[..3].iter().all(u8::is_ascii_digit) {
                        return Err(ClientError::Protocol("no status in the first token"));
                    }
                    let st: u16 = std::str::from_utf8(&rest[..3])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    if st != status.as_u16() && !(self.t.legacy && st == 200) {
                        return Err(ClientError::Protocol("status mismatch"));
                    }
                    rest = &rest[3..];
                }
                *next_tok = next_tok.wrapping_add(1);
                if h.last {
                    *ended = true;
                    if let Some(s) = rest.strip_prefix(b"exit=") {
                        out.exit = std::str::from_utf8(s).ok().and_then(|s| s.parse().ok());
                        return Ok(());
                    }
                }
                if ok {
                    sink.write_all(rest)?;
                } else if err_text.len() + rest.len() <= MAX_ANSWER {
                    err_text.extend_from_slice(rest);
                }
                Ok(())
            };
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
            if let Ok(d) = frame.into_data() {
                for line in split
                    .push(&d)
                    .ok_or(ClientError::Protocol("token too long"))?
                {
                    handle(line, &mut next_tok, &mut ended)?;
                }
            }
        }
        if let Some(line) = split.finish() {
            handle(line, &mut next_tok, &mut ended)?;
        }
        if close {
            self.sender = None;
        }
        if !ended && !self.t.legacy {
            return Err(ClientError::NoFinalToken);
        }
        if !ok {
            return Err(status_error(status, &err_text));
        }
        Ok(out)
    }

    /// `/cmd/`: runs a command line; its output goes to `sink`.
    pub async fn exec(
        &mut self,
        cmdline: &str,
        input: &[u8],
        sink: &mut dyn Write,
    ) -> Result<Outcome, ClientError> {
        self.call("/cmd/", Some(cmdline), input, None, sink).await
    }

    /// `/get/`: copies the remote file into `sink`.
    pub async fn get(&mut self, remote: &str, sink: &mut dyn Write) -> Result<(), ClientError> {
        self.call("/get/", Some(remote), b"", None, sink)
            .await
            .map(|_| ())
    }

    /// `/put/`: streams a local file to the remote path.
    pub async fn put(&mut self, remote: &str, local: std::fs::File) -> Result<(), ClientError> {
        self.call(
            "/put/",
            Some(remote),
            b"",
            Some(local),
            &mut std::io::sink(),
        )
        .await
        .map(|_| ())
    }

    pub async fn iexec(&mut self, cmdline: &str, sink: &mut dyn Write) -> Result<(), ClientError> {
        self.call("/icm/", Some(cmdline), b"", None, sink)
            .await
            .map(|_| ())
    }

    pub async fn idata(&mut self, data: &[u8], sink: &mut dyn Write) -> Result<(), ClientError> {
        self.call("/idt", None, data, None, sink).await.map(|_| ())
    }

    pub async fn iend(&mut self, sink: &mut dyn Write) -> Result<Outcome, ClientError> {
        self.call("/edt", None, b"", None, sink).await
    }

    pub async fn info(&mut self, sink: &mut dyn Write) -> Result<(), ClientError> {
        self.call("/info", None, b"", None, sink).await.map(|_| ())
    }
}
