//! remod's side of the protocol: sessions keyed by the `SESSION_ID` cookie, `/auth`, and the
//! framed endpoints `/info`, `/get/`, `/put/`, `/cmd/`, `/icm/`, `/idt`, `/edt`.
//!
//! Fixes over remo_serv (specs/remo_serv.md §5): every endpoint after login needs a verified
//! first token numbered exactly one above the last (no idle window, so no replay or
//! reordering); sessions exist only after a successful login and get a fresh id at each one;
//! failed logins all get the same 403 and are throttled per address; errors are framed with
//! their real status and bodies end with an `E` token; files and command output are streamed;
//! commands, transfers and interactive processes run as the Unix user the database maps the
//! remote user to, in its own process group, killed on timeout and when the session ends.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONTENT_TYPE, COOKIE, SET_COOKIE};
use hyper::{Request, Response, StatusCode};
use openssl::pkey::{PKey, Private, Public};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::users;
use super::wire::{self, Fernet, Head};
use crate::child::{self, Proc, SpawnOpts};
use crate::daemon::Peer;
use crate::http::ConnInfo;
use crate::throttle::Throttle;

/// Request header by which our client asks for the exit status in the final token.
pub const STATUS_HEADER: &str = "remo-exit-status";
/// Payload bytes per response token for streamed output.
const CHUNK: usize = 64 * 1024;
/// The working directory and `PATH` of commands.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A response body: a whole one (with Content-Length) or a stream of chunks (chunked).
pub enum RBody {
    Full(Full<Bytes>),
    Once(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl From<crate::http::Body> for RBody {
    fn from(b: crate::http::Body) -> Self {
        RBody::Full(b)
    }
}

impl HttpBody for RBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            RBody::Full(f) => Pin::new(f).poll_frame(cx),
            RBody::Once(o) => Poll::Ready(o.take().map(|b| Ok(Frame::data(b)))),
            RBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RBody::Full(f) => f.is_end_stream(),
            RBody::Once(o) => o.is_none(),
            RBody::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RBody::Full(f) => f.size_hint(),
            // Unknown length: hyper sends it chunked, never with Content-Length (§4.2).
            _ => SizeHint::default(),
        }
    }
}

/// What the daemon is configured with.
pub struct Config {
    pub server_key: PKey<Private>,
    pub users_db: PathBuf,
    pub session_timeout: Duration,
    /// Unix account for users without one in the database; None = refuse them.
    pub default_unix_user: Option<String>,
    pub max_sessions: usize,
    /// Interactive processes alive at once, over all sessions (one per session at most).
    pub max_interactive: usize,
    /// Time limit of `/cmd`, `/get`, `/put` and `/edt`.
    pub cmd_timeout: Duration,
    pub login_failures: u32,
    pub login_window: Duration,
    /// argv prefix of the put helper (`remod --put-helper`); the target path is appended.
    pub put_helper: Vec<String>,
}

#[derive(Debug)]
struct UnixUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
    shell: String,
}

/// An interactive process, counted against the global limit while it lives.
struct IProc {
    proc_: Proc,
    live: Arc<AtomicUsize>,
}

impl Drop for IProc {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

type Shared<T> = Arc<tokio::sync::Mutex<Option<T>>>;

struct Session {
    fernet: Fernet,
    user: String,
    unix: Arc<UnixUser>,
    allow: Option<Arc<Vec<String>>>,
    req_no: i16,
    last: Instant,
    iproc: Shared<IProc>,
}

pub struct Service {
    cfg: Config,
    sessions: Mutex<HashMap<String, Session>>,
    throttle: Throttle<String>,
    live: Arc<AtomicUsize>,
    /// Verified against for unknown users, so they cost the same time as known ones.
    dummy: PKey<Public>,
    root: bool,
}

/// What a verified request carries forward.
struct Ctx {
    sid: String,
    fernet: Fernet,
    req: i16,
    user: String,
    unix: Arc<UnixUser>,
    allow: Option<Arc<Vec<String>>>,
    iproc: Shared<IProc>,
    want_status: bool,
}

fn cookie_id(h: &hyper::HeaderMap) -> Option<String> {
    for v in h.get_all(COOKIE) {
        let s = v.to_str().ok()?;
        if let Some(i) = s.find("SESSION_ID=") {
            let rest = &s[i + 11..];
            let id = rest.split(';').next().unwrap_or("").trim();
            if !id.is_empty() {
                return Some(id.to_string());
            }
        }
    }
    None
}

fn with_cookie(mut r: Response<RBody>, sid: &str) -> Response<RBody> {
    if let Ok(v) = HeaderValue::from_str(&format!("SESSION_ID={sid}")) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r
}

fn bare(status: StatusCode) -> Response<RBody> {
    crate::http::bare(status).map(RBody::Full)
}

/// A plain-text body: chunked for 200 (as the original's WSGI answers are); errors carry
/// Content-Length, which tells clients the body is not encrypted.
fn plain(status: StatusCode, text: &'static str) -> Response<RBody> {
    let b = Bytes::from_static(text.as_bytes());
    let body = if status == StatusCode::OK {
        RBody::Once(Some(b))
    } else {
        RBody::Full(Full::new(b))
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Response tokens of one request.
struct Enc {
    f: Fernet,
    req: i16,
    tok: i16,
    status: u16,
}

impl Enc {
    fn token(&mut self, payload: &[u8], last: bool) -> Bytes {
        let h = Head {
            first: self.tok == 0,
            last,
            req: self.req,
            tok: self.tok,
        };
        self.tok = self.tok.wrapping_add(1);
        let mut t = self
            .f
            .encrypt(&wire::response_plain(h, self.status, payload))
            .into_bytes();
        t.extend_from_slice(b"\r\n");
        Bytes::from(t)
    }
}

/// A framed, encrypted answer with the whole payload: `BE` when empty, else `B.` + `.E`.
fn framed(ctx: &Ctx, status: StatusCode, payload: &[u8]) -> Response<RBody> {
    let mut e = Enc {
        f: ctx.fernet.clone(),
        req: ctx.req,
        tok: 0,
        status: status.as_u16(),
    };
    let mut body = Vec::new();
    if payload.is_empty() {
        body.extend_from_slice(&e.token(b"", true));
    } else {
        body.extend_from_slice(&e.token(payload, false));
        body.extend_from_slice(&e.token(b"", true));
    }
    let mut r = Response::new(RBody::Once(Some(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    with_cookie(r, &ctx.sid)
}

/// A streamed 200 answer; the returned encoder and sender produce its tokens.
fn streamed(ctx: &Ctx) -> (Response<RBody>, Enc, mpsc::Sender<Bytes>) {
    let (tx, rx) = mpsc::channel(4);
    let mut r = Response::new(RBody::Stream(rx));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    let enc = Enc {
        f: ctx.fernet.clone(),
        req: ctx.req,
        tok: 0,
        status: 200,
    };
    (with_cookie(r, &ctx.sid), enc, tx)
}

/// Request body tokens after the first: checks numbering and the end mark.
struct TokenReader {
    body: Incoming,
    /// The request's body deadline ([`crate::http::body_deadline`]); none for uploads and
    /// command input, which the caller bounds with `--cmd-timeout`.
    deadline: Option<tokio::time::Instant>,
    split: wire::LineSplitter,
    lines: std::collections::VecDeque<Vec<u8>>,
    eof: bool,
    fernet: Fernet,
    req: i16,
    next_tok: i16,
    done: bool,
}

#[derive(Debug)]
enum TokErr {
    Missing,
    Invalid(&'static str),
}

impl TokenReader {
    fn new(body: Incoming, fernet: Fernet) -> Self {
        TokenReader {
            body,
            deadline: Some(crate::http::body_deadline()),
            split: wire::LineSplitter::default(),
            lines: Default::default(),
            eof: false,
            fernet,
            req: 0,
            next_tok: 0,
            done: false,
        }
    }

    async fn line(&mut self) -> Result<Option<Vec<u8>>, TokErr> {
        loop {
            if let Some(l) = self.lines.pop_front() {
                return Ok(Some(l));
            }
            if self.eof {
                return Ok(None);
            }
            let frame = match self.deadline {
                Some(d) => tokio::time::timeout_at(d, self.body.frame())
                    .await
                    .map_err(|_| TokErr::Invalid("body timed out"))?,
                None => self.body.frame().await,
            };
            match frame {
                None => {
                    self.eof = true;
                    if let Some(l) = self.split.finish() {
                        self.lines.push_back(l);
                    }
                }
                Some(Err(_)) => return Err(TokErr::Invalid("body read failed")),
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        let got = self
                            .split
                            .push(&d)
                            .ok_or(TokErr::Invalid("token too long"))?;
                        self.lines.extend(got);
                    }
                }
            }
        }
    }

    /// The first token: begin mark, token 0, the path's hash. Returns its request number
    /// and payload.
    async fn first(&mut self, path: &str) -> Result<(i16, Vec<u8>), TokErr> {
        let line = self.line().await?.ok_or(TokErr::Missing)?;
        let plain = self
            .fernet
            .decrypt(&line, Some(wire::TTL))
            .ok_or(TokErr::Invalid("undecryptable or expired token"))?;
        let (h, rest) = Head::parse(&plain).ok_or(TokErr::Invalid("short token"))?;
        if !h.first || h.tok != 0 || rest.len() < wire::HASH_LEN {
            return Err(TokErr::Invalid("bad first token header"));
        }
        if !crate::secret::ct_eq(&rest[..wire::HASH_LEN], &wire::sha384(path.as_bytes())) {
            return Err(TokErr::Invalid("path hash mismatch"));
        }
        self.req = h.req;
        self.next_tok = 1;
        self.done = h.last;
        Ok((h.req, rest[wire::HASH_LEN..].to_vec()))
    }

    /// Lifts the body deadline: the caller bounds the rest of the body itself.
    fn unbounded(&mut self) {
        self.deadline = None;
    }

    /// The next payload, None after the end mark (which must close the body).
    async fn next(&mut self) -> Result<Option<Vec<u8>>, TokErr> {
        if self.done {
            return match self.line().await? {
                None => Ok(None),
                Some(_) => Err(TokErr::Invalid("data after the last token")),
            };
        }
        let line = self
            .line()
            .await?
            .ok_or(TokErr::Invalid("body ends before the last token"))?;
        let plain = self
            .fernet
            .decrypt(&line, Some(wire::TTL))
            .ok_or(TokErr::Invalid("undecryptable or expired token"))?;
        let (h, rest) = Head::parse(&plain).ok_or(TokErr::Invalid("short token"))?;
        if h.first || h.tok != self.next_tok || h.req != self.req {
            return Err(TokErr::Invalid("token out of sequence"));
        }
        self.next_tok = self.next_tok.wrapping_add(1);
        self.done = h.last;
        Ok(Some(rest.to_vec()))
    }
}

fn peer_key(p: &Peer) -> String {
    match p {
        Peer::Tcp(a) => a.ip().to_string(),
        Peer::Unix { uid, .. } => format!("unix:{uid}"),
    }
}

/// The read side of a stream: waits `first` for data, then takes what keeps coming within
/// 20 ms, up to `cap` bytes. Returns the data and whether the stream ended.
async fn read_available(io: &mut UnixStream, first: Duration, cap: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut wait = first;
    while out.len() < cap {
        match tokio::time::timeout(wait, io.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
        wait = Duration::from_millis(20);
    }
    (out, false)
}

/// Fills `buf` from `io` until full or EOF; returns the bytes read.
async fn fill(io: &mut UnixStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match io.read(&mut buf[n..]).await {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl Service {
    pub fn new(cfg: Config) -> Result<Self, openssl::error::ErrorStack> {
        let d = PKey::generate_ed448()?;
        let dummy =
            PKey::public_key_from_raw_bytes(&d.raw_public_key()?, openssl::pkey::Id::ED448)?;
        Ok(Service {
            throttle: Throttle::new(cfg.login_failures, cfg.login_window),
            cfg,
            sessions: Mutex::new(HashMap::new()),
            live: Arc::new(AtomicUsize::new(0)),
            dummy,
            root: rustix::process::geteuid().is_root(),
        })
    }

    /// Drops expired sessions every few seconds (their interactive processes are killed).
    pub fn spawn_purger(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        let every = (self.cfg.session_timeout / 2)
            .clamp(Duration::from_millis(200), Duration::from_secs(5));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(s) = me.upgrade() else { break };
                s.purge();
            }
        });
    }

    fn purge(&self) {
        let t = self.cfg.session_timeout;
        let gone: Vec<Session> = {
            let Ok(mut m) = self.sessions.lock() else {
                return;
            };
            let ids: Vec<String> = m
                .iter()
                .filter(|(_, s)| s.last.elapsed() > t)
                .map(|(k, _)| k.clone())
                .collect();
            ids.iter().filter_map(|k| m.remove(k)).collect()
        };
        for s in gone {
            log::info!("session-expired user={}", s.user);
        }
    }

    pub fn sessions(&self) -> usize {
        self.sessions.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        info: Arc<ConnInfo>,
    ) -> Response<RBody> {
        let path = req.uri().path().to_string();
        let cookie = cookie_id(req.headers());
        if path == "/auth" {
            return self.auth(req, cookie, &info).await;
        }
        let found = cookie.and_then(|id| {
            let mut m = self.sessions.lock().ok()?;
            let alive = m.get(&id)?.last.elapsed() <= self.cfg.session_timeout;
            if !alive {
                m.remove(&id);
                return None;
            }
            let s = m.get(&id)?;
            Some((id, s.fernet.clone(), s.req_no))
        });
        let Some((sid, fernet, last_req)) = found else {
            if path == "/info" {
                return plain(StatusCode::OK, concat!("remo_serv ", "0.6.0", " here"));
            }
            if path.starts_with("/info") {
                return bare(StatusCode::NOT_FOUND);
            }
            log::info!(
                "refused peer={} path={} reason=no-session",
                info.peer,
                short(&path)
            );
            return bare(StatusCode::FORBIDDEN);
        };
        let want_status = req.headers().contains_key(STATUS_HEADER);
        let mut rd = TokenReader::new(req.into_body(), fernet.clone());
        let (req_no, payload) = match rd.first(&path).await {
            Ok(x) => x,
            Err(TokErr::Missing) => {
                log::info!("refused peer={} reason=no-token", info.peer);
                return plain(StatusCode::BAD_REQUEST, "Missing magic tokens");
            }
            Err(TokErr::Invalid(why)) => {
                log::info!("refused peer={} reason=\"{why}\"", info.peer);
                return plain(StatusCode::BAD_REQUEST, "Wrong initial token");
            }
        };
        // Exactly one above the last request: a replayed or reordered request is refused.
        let ctx = {
            let Ok(mut m) = self.sessions.lock() else {
                return bare(StatusCode::INTERNAL_SERVER_ERROR);
            };
            let Some(s) = m.get_mut(&sid) else {
                return bare(StatusCode::FORBIDDEN);
            };
            if req_no != last_req.wrapping_add(1) || s.req_no != last_req {
                log::warn!(
                    "refused user={} peer={} reason=request-number got={req_no} want={}",
                    s.user,
                    info.peer,
                    s.req_no.wrapping_add(1)
                );
                return plain(StatusCode::BAD_REQUEST, "Wrong initial token");
            }
            s.req_no = req_no;
            s.last = Instant::now();
            Ctx {
                sid: sid.clone(),
                fernet,
                req: req_no,
                user: s.user.clone(),
                unix: s.unix.clone(),
                allow: s.allow.clone(),
                iproc: s.iproc.clone(),
                want_status,
            }
        };
        let (prefix, arg) = match path.get(..5) {
            Some(p @ ("/get/" | "/put/" | "/cmd/" | "/icm/")) => (p, Some(&path[5..])),
            _ => (path.as_str(), None),
        };
        let arg = match arg.map(|t| fernet_str(&ctx.fernet, t)) {
            Some(Some(a)) => Some(a),
            Some(None) => {
                log::info!("refused user={} reason=bad-path-token", ctx.user);
                return framed(&ctx, StatusCode::BAD_REQUEST, b"bad path token");
            }
            None => None,
        };
        match (prefix, arg) {
            ("/info", None) => framed(&ctx, StatusCode::OK, b"remo_serv 0.6.0 here"),
            ("/get/", Some(name)) => self.get(ctx, name).await,
            ("/put/", Some(name)) => self.put(ctx, name, payload, rd).await,
            ("/cmd/", Some(cmd)) => self.cmd(ctx, cmd, payload, rd).await,
            ("/icm/", Some(cmd)) => self.icm(ctx, cmd, payload, rd).await,
            ("/idt", None) => self.idt(ctx, payload, rd).await,
            ("/edt", None) => self.edt(ctx).await,
            _ => framed(&ctx, StatusCode::NOT_FOUND, b"unknown command"),
        }
    }

    async fn auth(
        &self,
        req: Request<Incoming>,
        cookie: Option<String>,
        info: &ConnInfo,
    ) -> Response<RBody> {
        let body = match crate::http::read_body(req.into_body(), 64 * 1024).await {
            Ok(b) => b,
            Err(_) => return bare(StatusCode::BAD_REQUEST),
        };
        if body.is_empty() {
            if let Some(id) = cookie {
                let old = self.sessions.lock().ok().and_then(|mut m| m.remove(&id));
                if let Some(s) = old {
                    log::info!("logout user={}", s.user);
                }
            }
            return plain(StatusCode::OK, "Disconnected");
        }
        let pk = peer_key(&info.peer);
        if !self.throttle.allowed(&pk) {
            log::warn!("login-refused peer={} reason=throttled", info.peer);
            return bare(StatusCode::FORBIDDEN);
        }
        let a = match wire::parse_auth(&body) {
            Ok(a) => a,
            Err(wire::AuthParse::Malformed) => {
                log::info!("login-refused peer={} reason=malformed", info.peer);
                return bare(StatusCode::BAD_REQUEST);
            }
            Err(wire::AuthParse::BadValue) => {
                self.throttle.failed(&pk);
                log::info!("login-refused peer={} reason=bad-encoding", info.peer);
                return bare(StatusCode::FORBIDDEN);
            }
        };
        match self.login(&a).await {
            Ok((unix, allow, fernet, answer)) => {
                self.throttle.succeeded(&pk);
                let sid = wire::b64url(&crate::secret::random_bytes(8))
                    .trim_end_matches('=')
                    .to_string();
                let s = Session {
                    fernet,
                    user: a.user.clone(),
                    unix: unix.clone(),
                    allow,
                    req_no: 0,
                    last: Instant::now(),
                    iproc: Default::default(),
                };
                let old = {
                    let Ok(mut m) = self.sessions.lock() else {
                        return bare(StatusCode::INTERNAL_SERVER_ERROR);
                    };
                    // A new id at every login; the old session (and its process) ends.
                    let old = cookie.and_then(|c| m.remove(&c));
                    if m.len() >= self.cfg.max_sessions {
                        let t = self.cfg.session_timeout;
                        m.retain(|_, s| s.last.elapsed() <= t);
                    }
                    if m.len() >= self.cfg.max_sessions {
                        log::warn!("login-refused user={} reason=too-many-sessions", a.user);
                        return bare(StatusCode::SERVICE_UNAVAILABLE);
                    }
                    m.insert(sid.clone(), s);
                    old
                };
                drop(old);
                log::info!(
                    "login user={} unix_user={} peer={} session={}…",
                    a.user,
                    unix.name,
                    info.peer,
                    &sid[..4]
                );
                let mut r = Response::new(RBody::Full(Full::new(Bytes::from(answer))));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("text_plain"));
                with_cookie(r, &sid)
            }
            Err(why) => {
                self.throttle.failed(&pk);
                log::warn!(
                    "login-refused user={:?} peer={} reason={why}",
                    a.user,
                    info.peer
                );
                bare(StatusCode::FORBIDDEN)
            }
        }
    }

    /// Checks a login; the reason for a refusal is for the log only (the client always
    /// gets the same 403).
    async fn login(
        &self,
        a: &wire::AuthRequest,
    ) -> Result<(Arc<UnixUser>, Option<Arc<Vec<String>>>, Fernet, String), &'static str> {
        let db = self.cfg.users_db.clone();
        let name = a.user.clone();
        let row = tokio::task::spawn_blocking(move || {
            users::open(&db).and_then(|c| users::lookup(&c, &name))
        })
        .await
        .map_err(|_| "lookup failed")?
        .map_err(|e| {
            log::error!("user-database error=\"{e}\"");
            "database error"
        })?;
        let mut msg = a.user.as_bytes().to_vec();
        msg.extend_from_slice(&a.key);
        let Some(row) = row else {
            let _ = wire::verify(&self.dummy, &msg, &a.sign);
            return Err("unknown-user");
        };
        let key = crate::keyfile::parse_public(&row.public).map_err(|_| "unusable-public-key")?;
        if !wire::verify(&key, &msg, &a.sign) {
            return Err("bad-signature");
        }
        let uname = row
            .unix_user
            .clone()
            .or_else(|| self.cfg.default_unix_user.clone())
            .ok_or("no-unix-user-mapping")?;
        let pw = nix::unistd::User::from_name(&uname)
            .ok()
            .flatten()
            .ok_or("unix-user-not-found")?;
        let me = rustix::process::geteuid().as_raw();
        if !self.root && pw.uid.as_raw() != me {
            return Err("cannot-switch-to-unix-user");
        }
        let unix = Arc::new(UnixUser {
            name: uname,
            uid: pw.uid.as_raw(),
            gid: pw.gid.as_raw(),
            home: pw.dir,
            shell: pw.shell.to_string_lossy().into_owned(),
        });
        let (eph, eph_pub) = wire::x448_generate().map_err(|_| "key generation failed")?;
        let z = wire::x448_shared(&eph, &a.key).ok_or("bad-client-key")?;
        let fernet = wire::session_fernet(&z);
        let answer =
            wire::auth_answer(&self.cfg.server_key, &eph_pub).map_err(|_| "signing failed")?;
        Ok((unix, row.allow.map(Arc::new), fernet, answer))
    }

    fn spec(&self, ctx: &Ctx, argv: Vec<String>) -> child::Spec {
        let u = &ctx.unix;
        child::Spec {
            argv,
            user: self.root.then_some((u.uid, u.gid)),
            timeout: self.cfg.cmd_timeout,
            max_output: usize::MAX,
            env: vec![
                ("PATH".into(), PATH.into()),
                ("HOME".into(), u.home.to_string_lossy().into_owned()),
                ("USER".into(), u.name.clone()),
                ("LOGNAME".into(), u.name.clone()),
                ("SHELL".into(), u.shell.clone()),
                ("LANG".into(), "C.UTF-8".into()),
                ("REMO_USER".into(), ctx.user.clone()),
            ],
        }
    }

    fn opts(&self, ctx: &Ctx, merge: bool) -> SpawnOpts {
        let home = &ctx.unix.home;
        SpawnOpts {
            cwd: home.is_dir().then(|| home.clone()),
            merge_stderr: merge,
        }
    }

    fn allowed(ctx: &Ctx, what: &str) -> bool {
        ctx.allow
            .as_ref()
            .map_or(true, |l| l.iter().any(|x| x == what))
    }

    fn command(&self, ctx: &Ctx, line: &str) -> Result<Vec<String>, Box<Response<RBody>>> {
        let argv = match wire::shlex_split(line) {
            Ok(v) if !v.is_empty() => v,
            Ok(_) => {
                return Err(Box::new(framed(
                    ctx,
                    StatusCode::BAD_REQUEST,
                    b"empty command",
                )))
            }
            Err(e) => return Err(Box::new(framed(ctx, StatusCode::BAD_REQUEST, e.as_bytes()))),
        };
        if !Self::allowed(ctx, &argv[0]) {
            log::warn!(
                "cmd-refused user={} program={:?} reason=not-allowed",
                ctx.user,
                argv[0]
            );
            return Err(Box::new(framed(
                ctx,
                StatusCode::FORBIDDEN,
                b"command not allowed",
            )));
        }
        Ok(argv)
    }

    fn start(
        &self,
        ctx: &Ctx,
        argv: Vec<String>,
        merge: bool,
    ) -> Result<Proc, Box<Response<RBody>>> {
        let prog = argv[0].clone();
        child::spawn(&self.spec(ctx, argv), &self.opts(ctx, merge)).map_err(|e| {
            log::info!(
                "cmd-failed user={} program={prog:?} error=\"{e}\"",
                ctx.user
            );
            let status = match &e {
                child::RunError::Spawn(_, io) if io.kind() == std::io::ErrorKind::NotFound => {
                    StatusCode::NOT_FOUND
                }
                child::RunError::Spawn(_, io)
                    if io.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    StatusCode::FORBIDDEN
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Box::new(framed(ctx, status, e.to_string().as_bytes()))
        })
    }

    async fn get(&self, ctx: Ctx, name: String) -> Response<RBody> {
        if !Self::allowed(&ctx, "@get") {
            return framed(&ctx, StatusCode::FORBIDDEN, b"transfers not allowed");
        }
        let argv = vec!["cat".into(), "--".into(), name.clone()];
        let mut p = match self.start(&ctx, argv, false) {
            Ok(p) => p,
            Err(r) => return *r,
        };
        let _ = p.io.shutdown().await;
        let mut first = vec![0u8; CHUNK];
        let n = match tokio::time::timeout(self.cfg.cmd_timeout, fill(&mut p.io, &mut first)).await
        {
            Ok(Ok(n)) => n,
            _ => return framed(&ctx, StatusCode::INTERNAL_SERVER_ERROR, b"read failed"),
        };
        first.truncate(n);
        if n < CHUNK {
            // The whole file, or an error: answer with the real status.
            let mut err = Vec::new();
            if let Some(e) = p.err.as_mut() {
                let _ = tokio::time::timeout(Duration::from_secs(5), e.read_to_end(&mut err)).await;
            }
            let st = p.wait(self.cfg.cmd_timeout).await.unwrap_or(-1);
            if st != 0 {
                let msg = String::from_utf8_lossy(&err);
                let msg = msg.trim().trim_start_matches("cat: ").to_string();
                log::info!(
                    "get-failed user={} unix_user={} error={msg:?}",
                    ctx.user,
                    ctx.unix.name
                );
                let status = if msg.contains("No such file") {
                    StatusCode::NOT_FOUND
                } else if msg.contains("Permission denied") {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                return framed(&ctx, status, msg.as_bytes());
            }
            log::info!(
                "get user={} unix_user={} bytes={n}",
                ctx.user,
                ctx.unix.name
            );
            return framed(&ctx, StatusCode::OK, &first);
        }
        let (resp, mut enc, tx) = streamed(&ctx);
        let (user, limit) = (ctx.user.clone(), self.cfg.cmd_timeout);
        tokio::spawn(async move {
            let mut total = n;
            let ok = async {
                tx.send(enc.token(&first, false)).await.ok()?;
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let k = fill(&mut p.io, &mut buf).await.ok()?;
                    if k == 0 {
                        break;
                    }
                    total += k;
                    tx.send(enc.token(&buf[..k], false)).await.ok()?;
                }
                let st = p.wait(limit).await.ok()?;
                (st == 0).then_some(())?;
                tx.send(enc.token(b"", true)).await.ok()
            };
            match tokio::time::timeout(limit, ok).await {
                Ok(Some(_)) => log::info!("get user={user} bytes={total}"),
                _ => log::warn!("get-truncated user={user} bytes={total}"),
            }
        });
        resp
    }

    async fn put(
        &self,
        ctx: Ctx,
        name: String,
        first: Vec<u8>,
        mut rd: TokenReader,
    ) -> Response<RBody> {
        if !Self::allowed(&ctx, "@put") {
            return framed(&ctx, StatusCode::FORBIDDEN, b"transfers not allowed");
        }
        let mut argv = self.cfg.put_helper.clone();
        argv.push(name);
        let mut p = match self.start(&ctx, argv, false) {
            Ok(p) => p,
            Err(r) => return *r,
        };
        let limit = self.cfg.cmd_timeout;
        rd.unbounded();
        let copy = async {
            let mut total = 0usize;
            let mut chunk = Some(first);
            loop {
                let data = match chunk.take() {
                    Some(d) => d,
                    None => match rd.next().await {
                        Ok(Some(d)) => d,
                        Ok(None) => break,
                        Err(e) => return Err(format!("{e:?}")),
                    },
                };
                if data.is_empty() {
                    continue;
                }
                total += data.len();
                let mut frame = (data.len() as u32).to_be_bytes().to_vec();
                frame.extend_from_slice(&data);
                p.io.write_all(&frame)
                    .await
                    .map_err(|e| format!("helper: {e}"))?;
            }
            p.io.write_all(&[0, 0, 0, 0])
                .await
                .map_err(|e| format!("helper: {e}"))?;
            Ok(total)
        };
        let copied = match tokio::time::timeout(limit, copy).await {
            Ok(r) => r,
            Err(_) => Err("timed out".into()),
        };
        // End of input: without the commit frame the helper removes its temporary file.
        let _ = p.io.shutdown().await;
        let mut err = Vec::new();
        if let Some(e) = p.err.as_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(10), e.read_to_end(&mut err)).await;
        }
        let st = p.wait(Duration::from_secs(10)).await.unwrap_or(-1);
        match copied {
            Err(why) => {
                log::warn!("put-refused user={} reason={why:?}", ctx.user);
                framed(&ctx, StatusCode::BAD_REQUEST, b"invalid upload")
            }
            Ok(total) if st == 0 => {
                log::info!(
                    "put user={} unix_user={} bytes={total}",
                    ctx.user,
                    ctx.unix.name
                );
                framed(&ctx, StatusCode::OK, b"")
            }
            Ok(_) => {
                let msg = String::from_utf8_lossy(&err).trim().to_string();
                log::info!("put-failed user={} error={msg:?}", ctx.user);
                framed(&ctx, StatusCode::INTERNAL_SERVER_ERROR, msg.as_bytes())
            }
        }
    }

    async fn cmd(
        &self,
        ctx: Ctx,
        line: String,
        first: Vec<u8>,
        mut rd: TokenReader,
    ) -> Response<RBody> {
        let argv = match self.command(&ctx, &line) {
            Ok(a) => a,
            Err(r) => return *r,
        };
        let prog = argv[0].clone();
        let p = match self.start(&ctx, argv, true) {
            Ok(p) => p,
            Err(r) => return *r,
        };
        log::info!(
            "cmd user={} unix_user={} program={prog:?}",
            ctx.user,
            ctx.unix.name
        );
        let (resp, mut enc, tx) = streamed(&ctx);
        let (limit, want, user) = (self.cfg.cmd_timeout, ctx.want_status, ctx.user.clone());
        rd.unbounded();
        tokio::spawn(async move {
            let mut p = p;
            let (mut r, mut w) = p.io.split();
            let feed = async {
                let mut chunk = Some(first);
                loop {
                    let data = match chunk.take() {
                        Some(d) => d,
                        None => match rd.next().await {
                            Ok(Some(d)) => d,
                            _ => break,
                        },
                    };
                    if w.write_all(&data).await.is_err() {
                        break;
                    }
                }
                let _ = w.shutdown().await;
            };
            let out = async {
                let mut buf = vec![0u8; CHUNK];
                let mut sent_first = false;
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            sent_first = true;
                            if tx.send(enc.token(&buf[..k], false)).await.is_err() {
                                return None;
                            }
                        }
                    }
                }
                Some(sent_first)
            };
            let run = async { tokio::join!(feed, out).1 };
            let done = tokio::time::timeout(limit, run).await;
            drop(rd);
            let st = match done {
                Ok(Some(_)) => p.wait(limit).await.ok(),
                _ => None,
            };
            match st {
                Some(st) => {
                    let tail = if want {
                        format!("exit={st}")
                    } else {
                        String::new()
                    };
                    let _ = tx.send(enc.token(tail.as_bytes(), true)).await;
                    log::info!("cmd-done user={user} status={st}");
                }
                None => {
                    p.kill();
                    log::warn!("cmd-killed user={user} reason=timeout-or-client-gone");
                }
            }
        });
        resp
    }

    async fn icm(
        &self,
        ctx: Ctx,
        line: String,
        first: Vec<u8>,
        rd: TokenReader,
    ) -> Response<RBody> {
        let argv = match self.command(&ctx, &line) {
            Ok(a) => a,
            Err(r) => return *r,
        };
        let mut slot = ctx.iproc.lock().await;
        // The session's previous process ends here (the original leaked it).
        *slot = None;
        if self.live.fetch_add(1, Ordering::SeqCst) >= self.cfg.max_interactive {
            self.live.fetch_sub(1, Ordering::SeqCst);
            log::warn!("icm-refused user={} reason=too-many-interactive", ctx.user);
            return framed(
                &ctx,
                StatusCode::SERVICE_UNAVAILABLE,
                b"too many interactive processes",
            );
        }
        let prog = argv[0].clone();
        let p = match self.start(&ctx, argv, true) {
            Ok(p) => p,
            Err(r) => {
                self.live.fetch_sub(1, Ordering::SeqCst);
                return *r;
            }
        };
        log::info!(
            "icm user={} unix_user={} program={prog:?}",
            ctx.user,
            ctx.unix.name
        );
        *slot = Some(IProc {
            proc_: p,
            live: self.live.clone(),
        });
        drop(slot);
        self.exchange(ctx, first, rd).await
    }

    async fn idt(&self, ctx: Ctx, first: Vec<u8>, rd: TokenReader) -> Response<RBody> {
        if ctx.iproc.lock().await.is_none() {
            return framed(&ctx, StatusCode::BAD_REQUEST, b"no interactive process");
        }
        self.exchange(ctx, first, rd).await
    }

    /// Feeds the body to the session's process and answers with what it prints.
    async fn exchange(&self, ctx: Ctx, first: Vec<u8>, mut rd: TokenReader) -> Response<RBody> {
        let mut slot = ctx.iproc.lock().await;
        let Some(ip) = slot.as_mut() else {
            return framed(&ctx, StatusCode::BAD_REQUEST, b"no interactive process");
        };
        let mut chunk = Some(first);
        loop {
            let data = match chunk.take() {
                Some(d) => d,
                None => match rd.next().await {
                    Ok(Some(d)) => d,
                    Ok(None) => break,
                    Err(_) => return framed(&ctx, StatusCode::BAD_REQUEST, b"invalid body"),
                },
            };
            if !data.is_empty() {
                let w = tokio::time::timeout(Duration::from_secs(10), ip.proc_.io.write_all(&data))
                    .await;
                if !matches!(w, Ok(Ok(()))) {
                    break;
                }
            }
        }
        let (out, eof) =
            read_available(&mut ip.proc_.io, Duration::from_millis(100), 1 << 20).await;
        if eof {
            // The process has finished: forget it (its group is killed and reaped).
            *slot = None;
        }
        framed(&ctx, StatusCode::OK, &out)
    }

    async fn edt(&self, ctx: Ctx) -> Response<RBody> {
        let taken = ctx.iproc.lock().await.take();
        let Some(mut ip) = taken else {
            return framed(&ctx, StatusCode::BAD_REQUEST, b"no interactive process");
        };
        let _ = ip.proc_.io.shutdown().await;
        let (resp, mut enc, tx) = streamed(&ctx);
        let (limit, want, user) = (self.cfg.cmd_timeout, ctx.want_status, ctx.user.clone());
        tokio::spawn(async move {
            let run = async {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    match ip.proc_.io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => tx.send(enc.token(&buf[..k], false)).await.ok()?,
                    }
                }
                Some(())
            };
            if let Ok(Some(())) = tokio::time::timeout(limit, run).await {
                let st = ip.proc_.wait(limit).await.unwrap_or(-1);
                let tail = if want {
                    format!("exit={st}")
                } else {
                    String::new()
                };
                let _ = tx.send(enc.token(tail.as_bytes(), true)).await;
                log::info!("edt-done user={user} status={st}");
            } else {
                log::warn!("edt-killed user={user}");
            }
            drop(ip);
        });
        resp
    }
}

fn fernet_str(f: &Fernet, tok: &str) -> Option<String> {
    String::from_utf8(f.decrypt(tok.as_bytes(), None)?).ok()
}

/// The start of a path, for log lines (path tokens are not logged whole).
fn short(p: &str) -> &str {
    match p.char_indices().nth(5) {
        Some((i, _)) => &p[..i],
        None => p,
    }
}

/// `remod --put-helper PATH`: runs as the mapped user; reads frames (4-byte big-endian
/// length, data) from standard input into a temporary file beside PATH and renames it over
/// PATH at the zero-length commit frame. At end of input without a commit, the temporary
/// file is removed and nothing changes. Returns the exit code.
pub fn put_helper(path: &std::path::Path) -> i32 {
    use std::io::{Read, Write};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        eprintln!("{}: {what}: {e}", path.display());
        1
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(fname) = path.file_name() else {
        return fail("cannot write", &"not a file name");
    };
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    let tmp = dir.join(format!(
        ".{}.{}.part",
        fname.to_string_lossy(),
        crate::secret::hex_token(6)
    ));
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
    {
        Ok(f) => f,
        Err(e) => return fail("cannot write", &e),
    };
    let mut stdin = std::io::stdin().lock();
    let mut buf = Vec::new();
    let result = loop {
        let mut len = [0u8; 4];
        if let Err(e) = stdin.read_exact(&mut len) {
            break Err(format!("upload incomplete: {e}"));
        }
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 {
            break f
                .set_permissions(std::fs::Permissions::from_mode(mode))
                .and_then(|_| f.sync_all())
                .and_then(|_| std::fs::rename(&tmp, path))
                .map_err(|e| e.to_string());
        }
        buf.resize(n, 0);
        if let Err(e) = stdin.read_exact(&mut buf).and_then(|_| f.write_all(&buf)) {
            break Err(e.to_string());
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            fail("cannot write", &e)
        }
    }
}
