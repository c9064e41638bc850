//! The s5 server: `POST /` with the identifier gets the encrypted secret (v1, or v2 when the
//! client asks for it), counted against the success and failure limits; the local control
//! socket takes the secret (`s5d put`) and hands out the connection details to s5d's own
//! user or root.
//!
//! Differences from the original, all invisible to its client (specs/s5.md §5): the v1 tail
//! is fresh random bytes, the identifier is compared in constant time, connections are
//! served concurrently with read timeouts, the secret lives in locked memory and is
//! zeroized as soon as the success limit is reached.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONNECTION};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::wire;
use super::ClientFile;
use crate::daemon::log::quoted;
use crate::daemon::{Conn, Control, Peer};
use crate::http::{self, Body, ConnInfo};
use crate::locked::Locked;

/// Longest `POST /` body read: the identifier is 48 bytes, anything longer is wrong.
const MAX_BODY: usize = 4096;

/// Where the original's access log lines go (`--logfile`).
pub enum AccessLog {
    None,
    Stdout,
    File(Mutex<File>),
}

pub struct Config {
    /// Stop after this many secrets served (0 = unlimited).
    pub success_max: u64,
    /// Stop after this many failed requests (0 = unlimited).
    pub failure_max: u64,
    /// Time allowed for a control-socket exchange (HTTP bodies: `http::Limits::body_timeout`).
    pub read_timeout: Duration,
    pub access_log: AccessLog,
    /// The client file s5d wrote, if any (reported to `s5d put`).
    pub client_file: Option<PathBuf>,
    /// Stop after this long, served or not (`--expire`).
    pub expire: Option<Duration>,
    /// identifier ‖ pad ([`Server::new_token`]).
    pub token: Locked,
    /// Where clients reach s5d, as written to the client file.
    pub host: String,
    pub bind_address: String,
    pub port: u16,
}

struct State {
    secret: Option<Locked>,
    successes: u64,
    failures: u64,
    /// Set once a limit is reached: no more answers.
    closed: Option<String>,
}

pub struct Server {
    cfg: Config,
    ctl: Control,
    state: Mutex<State>,
}

/// Why [`Server::load`] took no secret.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("a secret is already loaded")]
    AlreadyLoaded,
    #[error("s5d is stopping: {0}")]
    Closed(String),
}

fn limit(n: u64) -> String {
    if n == 0 {
        "unlimited".into()
    } else {
        n.to_string()
    }
}

impl Server {
    /// A server with no secret yet ([`Server::load`]); `ctl` is the serving loop's, which
    /// it stops once a limit is reached. Cannot fail.
    pub fn new(cfg: Config, ctl: Control) -> Result<Server, std::convert::Infallible> {
        Ok(Server {
            cfg,
            ctl,
            state: Mutex::new(State {
                secret: None,
                successes: 0,
                failures: 0,
                closed: None,
            }),
        })
    }

    /// A fresh random token (identifier ‖ pad) in locked memory.
    pub fn new_token() -> Locked {
        let mut raw = zeroize::Zeroizing::new(crate::secret::random_bytes(wire::TOKEN_LEN));
        let t = Locked::from_slice(&raw);
        zeroize::Zeroize::zeroize(&mut *raw);
        t
    }

    fn identifier(&self) -> &[u8] {
        &self.cfg.token.as_bytes()[..wire::ID_LEN]
    }

    fn pad(&self) -> &[u8] {
        &self.cfg.token.as_bytes()[wire::ID_LEN..]
    }

    /// The connection details, as written to the client file.
    pub fn client_file(&self) -> ClientFile {
        ClientFile {
            host: self.cfg.host.clone(),
            bind_address: self.cfg.bind_address.clone(),
            port: self.cfg.port,
            token: zeroize::Zeroizing::new(wire::b64encode(self.cfg.token.as_bytes())),
            v2: true,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State inconsistent (plain counters).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `STATUS=` line for systemd.
    pub fn status(&self) -> String {
        let st = self.lock();
        if let Some(r) = &st.closed {
            return format!("done: {r}");
        }
        if st.secret.is_none() {
            return format!(
                "waiting for a secret (s5d put) on port {}, success-max {}",
                self.cfg.port,
                limit(self.cfg.success_max)
            );
        }
        format!(
            "serving a secret on port {}: {} of {} served, {} of {} failed",
            self.cfg.port,
            st.successes,
            limit(self.cfg.success_max),
            st.failures,
            limit(self.cfg.failure_max)
        )
    }

    /// Takes the secret (from the prompt, standard input, a credential or `s5d put`).
    pub fn load(&self, secret: Locked, source: &str) -> Result<(), LoadError> {
        {
            let mut st = self.lock();
            if let Some(r) = &st.closed {
                return Err(LoadError::Closed(r.clone()));
            }
            if st.secret.is_some() {
                return Err(LoadError::AlreadyLoaded);
            }
            let n = secret.len();
            log::info!(
                "secret-loaded source={source} bytes={n} locked={} formats={}",
                if secret.is_locked() { "yes" } else { "no" },
                if n <= wire::V1_MAX { "v1,v2" } else { "v2" }
            );
            if n > wire::V1_MAX {
                log::warn!(
                    "secret-too-long-for-v1 bytes={n} max={}: the original s5client cannot fetch it, keysock's s5client can (v2)",
                    wire::V1_MAX
                );
            }
            if !secret.is_locked() {
                log::warn!("mlock-failed: the secret is not locked in memory (RLIMIT_MEMLOCK?)");
            }
            st.secret = Some(secret);
        }
        self.ctl.set_status(&self.status());
        Ok(())
    }

    /// The background tasks: with `--expire`, stops serving after that long.
    pub fn spawn_tasks(self: &Arc<Self>) {
        let Some(after) = self.cfg.expire else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            me.close(format!("expired after {}s (--expire)", after.as_secs()));
        });
    }

    /// Ends serving: the secret is zeroized now, s5d stops.
    pub fn close(&self, reason: String) {
        {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            st.secret = None;
            st.closed = Some(reason.clone());
        }
        log::info!("limit-reached reason={reason}", reason = quoted(&reason));
        self.ctl.set_status(&format!("done: {reason}"));
        self.ctl.stop(crate::daemon::Stop::Done(reason));
    }

    /// Drops the secret (zeroized) at shutdown.
    pub fn wipe(&self) {
        self.lock().secret = None;
    }

    fn fail(&self, st: &mut State) -> Option<String> {
        st.failures += 1;
        (self.cfg.failure_max > 0 && st.failures >= self.cfg.failure_max)
            .then(|| format!("failure-max reached ({} failed requests)", st.failures))
    }

    /// One TCP connection: HTTP/1.1, `POST /`.
    pub async fn serve_tcp(self: Arc<Self>, conn: Conn, limits: Arc<http::Limits>) {
        let ctl = self.ctl.clone();
        http::serve_conn(conn, ctl, None, limits, move |req, info| {
            self.clone().handle(req, info)
        })
        .await
    }

    /// Answers one request. Generic over the body, so that unit tests build requests
    /// directly; s5d serves hyper's `Incoming`.
    async fn handle<B>(self: Arc<Self>, req: Request<B>, info: Arc<ConnInfo>) -> Response<Body>
    where
        B: hyper::body::Body<Data = bytes::Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (method, path, version) = (
            req.method().clone(),
            req.uri().path().to_string(),
            req.version(),
        );
        let (mut resp, outcome) = self.answer(req).await;
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        let len = hyper::body::Body::size_hint(resp.body())
            .exact()
            .unwrap_or(0);
        log::info!(
            "request peer={} method={} path={:?} status={} outcome={outcome}",
            info.peer,
            method,
            path,
            resp.status().as_u16()
        );
        self.access_log(&info.peer, &method, &path, version, resp.status(), len);
        if outcome == "success" || outcome == "failure" {
            self.ctl.set_status(&self.status());
        }
        resp
    }

    async fn answer<B>(&self, req: Request<B>) -> (Response<Body>, &'static str)
    where
        B: hyper::body::Body<Data = bytes::Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if req.uri().path() != "/" {
            return (
                http::text(
                    StatusCode::NOT_FOUND,
                    "application/json",
                    "{\"title\": \"404 Not Found\"}",
                ),
                "no-route",
            );
        }
        if req.method() == Method::OPTIONS {
            let mut r = http::bare(StatusCode::OK);
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
            return (r, "options");
        }
        if req.method() != Method::POST {
            let mut r = http::text(
                StatusCode::METHOD_NOT_ALLOWED,
                "application/json",
                "{\"title\": \"405 Method Not Allowed\"}",
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST, OPTIONS"));
            return (r, "method-not-allowed");
        }
        let v2 = req
            .headers()
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|m| m.trim() == wire::V2_MEDIA));
        // Within the body timeout of http::Limits (s5d's --timeout).
        let body = http::read_body(req.into_body(), MAX_BODY).await;
        let not_found = || http::text(StatusCode::NOT_FOUND, "application/json", "");
        let body = match body {
            Ok(b) => Some(b),
            Err(e) => {
                log::info!("bad-body error={e}", e = quoted(&e));
                None
            }
        };
        let mut stop = None;
        let result = {
            let mut st = self.lock();
            if st.closed.is_some() {
                (
                    http::text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "s5d is stopping\n",
                    ),
                    "closed",
                )
            } else if !body
                .as_ref()
                .is_some_and(|b| crate::secret::ct_eq(b, self.identifier()))
            {
                stop = self.fail(&mut st);
                (not_found(), "failure")
            } else if let Some(secret) = &st.secret {
                let sealed = if v2 {
                    wire::seal_v2(secret.as_bytes(), self.pad())
                        .map(|b| (wire::b64encode(&b), wire::V2_MEDIA))
                } else {
                    wire::seal_v1(secret.as_bytes(), self.pad())
                        .map(|c| (wire::b64encode(&c[..]), "text/plain; charset=utf-8"))
                };
                match sealed {
                    Ok((b64, ctype)) => {
                        st.successes += 1;
                        if self.cfg.success_max > 0 && st.successes >= self.cfg.success_max {
                            stop = Some(format!(
                                "success-max reached ({} secrets served)",
                                st.successes
                            ));
                        }
                        (http::text(StatusCode::OK, ctype, b64), "success")
                    }
                    Err(wire::WireError::TooLongForV1(n)) => {
                        log::warn!("refused reason=secret-too-long-for-v1 bytes={n}: this client speaks only v1; use keysock's s5client(1)");
                        stop = self.fail(&mut st);
                        (
                            http::text(
                                StatusCode::NOT_ACCEPTABLE,
                                "text/plain",
                                format!("the secret is {n} bytes, longer than the 47 the s5 v1 answer carries: fetch it with keysock's s5client(1), which speaks v2\n"),
                            ),
                            "failure",
                        )
                    }
                    Err(e) => {
                        log::error!("seal-failed error={e}", e = quoted(&e));
                        (http::bare(StatusCode::INTERNAL_SERVER_ERROR), "error")
                    }
                }
            } else {
                (
                    http::text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "no secret loaded yet\n",
                    ),
                    "no-secret",
                )
            }
        };
        if let Some(reason) = stop {
            self.close(reason);
        }
        result
    }

    fn access_log(
        &self,
        peer: &Peer,
        method: &Method,
        path: &str,
        version: hyper::Version,
        status: StatusCode,
        len: u64,
    ) {
        let ip = peer.ip().map_or("-".into(), |ip| ip.to_string());
        let line = format!(
            "{ip} - - [{}] \"{method} {} {version:?}\" {} {len}\n",
            log_time(),
            path.escape_default(),
            status.as_u16()
        );
        match &self.cfg.access_log {
            AccessLog::None => {}
            AccessLog::Stdout => {
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(line.as_bytes());
                let _ = o.flush();
            }
            AccessLog::File(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
        }
    }

    /// One control-socket connection: `PUT\n` + secret (until end of input), or `TOKEN\n`.
    /// The answer is `OK <client file JSON>\n` (plus `FILE <path>\n` when s5d wrote the
    /// client file itself) or `ERR <why>\n`. Only s5d's own uid and root are served.
    pub async fn serve_control(self: Arc<Self>, conn: Conn) {
        let Peer::Unix { uid, pid, .. } = conn.peer else {
            return;
        };
        let mut s = conn.stream;
        let me = rustix::process::geteuid().as_raw();
        let answer = if uid != me && uid != 0 {
            log::warn!("control-refused peer_uid={uid} peer_pid={pid} reason=\"not s5d's uid ({me}) or root\"");
            format!("ERR permission denied: uid {uid} is neither s5d's ({me}) nor root\n")
        } else {
            match tokio::time::timeout(self.cfg.read_timeout, self.control(&mut s, uid, pid)).await
            {
                Ok(a) => a,
                Err(_) => "ERR timed out\n".into(),
            }
        };
        let _ = s.write_all(answer.as_bytes()).await;
        let _ = s.shutdown().await;
    }

    async fn control(&self, s: &mut crate::daemon::Stream, uid: u32, pid: i32) -> String {
        let mut cmd = Vec::new();
        let mut b = [0u8; 1];
        loop {
            match s.read(&mut b).await {
                Ok(1) if b[0] == b'\n' => break,
                Ok(1) if cmd.len() < 16 => cmd.push(b[0]),
                Ok(_) => return "ERR bad command\n".into(),
                Err(e) => return format!("ERR {e}\n"),
            }
        }
        let ok = |me: &Server| {
            let mut a = format!("OK {}\n", *me.client_file().to_json());
            if let Some(p) = &me.cfg.client_file {
                a.push_str(&format!("FILE {}\n", p.display()));
            }
            a
        };
        match &cmd[..] {
            b"TOKEN" => {
                log::info!("control-token peer_uid={uid} peer_pid={pid}");
                ok(self)
            }
            b"PUT" => {
                let mut secret = Locked::with_capacity(super::MAX_SECRET);
                loop {
                    if secret.spare_mut().is_empty() {
                        match s.read(&mut b).await {
                            Ok(0) => break,
                            _ => {
                                return format!(
                                    "ERR secret longer than {} bytes\n",
                                    super::MAX_SECRET
                                )
                            }
                        }
                    }
                    match s.read(secret.spare_mut()).await {
                        Ok(0) => break,
                        Ok(n) => secret.advance(n),
                        Err(e) => return format!("ERR {e}\n"),
                    }
                }
                match self.load(secret, &format!("put(uid={uid},pid={pid})")) {
                    Ok(()) => ok(self),
                    Err(e) => {
                        log::warn!("put-refused peer_uid={uid} reason={e}", e = quoted(&e));
                        format!("ERR {e}\n")
                    }
                }
            }
            _ => "ERR unknown command (PUT or TOKEN)\n".into(),
        }
    }
}

/// `23/Nov/2026 14:26:50` in local time, as Python's `log_date_time_string`.
fn log_time() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: `tm` is plain old data; localtime_r writes only into it and is thread-safe.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return "-".into();
        }
        tm
    };
    format!(
        "{:02}/{}/{} {:02}:{:02}:{:02}",
        tm.tm_mday,
        MONTHS.get(tm.tm_mon as usize).unwrap_or(&"?"),
        tm.tm_year + 1900,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod handler_tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A server whose token is the bytes 0, 1, 2, ...: the identifier is the first 48.
    fn server(success_max: u64, failure_max: u64) -> (Arc<Server>, Control) {
        let token: Vec<u8> = (0..wire::TOKEN_LEN as u8).collect();
        let cfg = Config {
            success_max,
            failure_max,
            read_timeout: Duration::from_secs(5),
            access_log: AccessLog::None,
            client_file: None,
            expire: None,
            token: Locked::from_slice(&token),
            host: "h".into(),
            bind_address: "127.0.0.1".into(),
            port: 1,
        };
        let ctl = Control::new();
        let s = match Server::new(cfg, ctl.clone()) {
            Ok(s) => s,
            Err(e) => match e {},
        };
        (Arc::new(s), ctl)
    }

    async fn ask(
        s: &Arc<Server>,
        method: &str,
        path: &str,
        v2: bool,
        body: &[u8],
    ) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(path);
        if v2 {
            req = req.header(ACCEPT, wire::V2_MEDIA);
        }
        let req = req.body(http::Body::from(body.to_vec())).unwrap();
        let peer = Peer::Tcp("127.0.0.1:5000".parse().unwrap());
        let r = s
            .clone()
            .handle(req, Arc::new(ConnInfo::for_test(peer)))
            .await;
        let st = r.status();
        (
            st,
            r.into_body().collect().await.unwrap().to_bytes().to_vec(),
        )
    }

    fn id() -> Vec<u8> {
        (0..wire::ID_LEN as u8).collect()
    }

    #[tokio::test]
    async fn routes_and_no_secret_yet() {
        let (s, _) = server(1, 0);
        assert_eq!(
            ask(&s, "POST", "/x", false, &id()).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ask(&s, "GET", "/", false, b"").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let (st, body) = ask(&s, "POST", "/", false, &id()).await;
        assert_eq!(
            (st, body.as_slice()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                &b"no secret loaded yet\n"[..]
            )
        );
    }

    #[tokio::test]
    async fn the_identifier_gets_the_secret_once_then_s5d_stops() {
        let (s, ctl) = server(1, 0);
        s.load(Locked::from_slice(b"hunter2"), "test").unwrap();
        let (st, body) = ask(&s, "POST", "/", true, &id()).await;
        assert_eq!(st, StatusCode::OK);
        let pad: Vec<u8> = (wire::ID_LEN as u8..wire::TOKEN_LEN as u8).collect();
        let sealed = wire::b64decode(&body).unwrap();
        assert_eq!(wire::open_v2(&sealed, &pad).unwrap().as_slice(), b"hunter2");
        assert!(ctl.is_stopping());
        let (st, _) = ask(&s, "POST", "/", true, &id()).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn wrong_identifiers_count_until_failure_max() {
        let (s, ctl) = server(1, 2);
        s.load(Locked::from_slice(b"hunter2"), "test").unwrap();
        let mut wrong = id();
        wrong[0] ^= 1;
        assert_eq!(
            ask(&s, "POST", "/", false, &wrong).await.0,
            StatusCode::NOT_FOUND
        );
        assert!(!ctl.is_stopping());
        assert_eq!(
            ask(&s, "POST", "/", false, b"short").await.0,
            StatusCode::NOT_FOUND
        );
        assert!(ctl.is_stopping());
        assert!(
            s.status().starts_with("done: failure-max reached"),
            "{}",
            s.status()
        );
    }
}
