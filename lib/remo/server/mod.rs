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

mod auth;
mod exec;
mod framing;
pub mod link;
mod process;
mod session;
mod transfer;

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONTENT_TYPE, COOKIE, SET_COOKIE};
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::monitor::proto::{self, NetConfig, Run};
use super::wire::{self, Fernet, Head};
use crate::daemon::log::quoted;
use crate::http::ConnInfo;
use crate::throttle::Throttle;
use link::{Link, Proc, Refused};

pub use framing::RBody;
pub use process::network_process;
pub use transfer::put_helper;
use {exec::*, framing::*, session::*, transfer::*};

/// Request header by which our client asks for the exit status in the final token.
pub const STATUS_HEADER: &str = "remo-exit-status";

/// The network process's HTTP server: it holds each session's key and request number; the
/// monitor, reached through `link`, holds who the session is and runs its processes.
pub struct Server {
    cfg: NetConfig,
    sessions: Mutex<HashMap<String, Session>>,
    throttle: Throttle<crate::daemon::Source>,
    link: Arc<Link>,
}

impl Server {
    pub fn new(cfg: NetConfig, link: Arc<Link>) -> Result<Server, Infallible> {
        Ok(Server {
            throttle: Throttle::new(cfg.login_failures, cfg.login_window),
            cfg,
            sessions: Mutex::new(HashMap::new()),
            link,
        })
    }

    /// The `STATUS=` line for systemd.
    pub fn status(&self) -> String {
        self.cfg.status.clone()
    }

    /// Busy while a session is open: sessions live in memory, so no idle exit then.
    pub fn is_busy(&self) -> bool {
        self.sessions() > 0
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
        let req_no = match rd.first(&path).await {
            Ok(x) => x,
            Err(TokErr::Missing) => {
                log::info!("refused peer={} reason=no-token", info.peer);
                return plain(StatusCode::BAD_REQUEST, "Missing magic tokens");
            }
            Err(TokErr::Invalid(why)) => {
                log::info!("refused peer={} reason={why}", info.peer, why = quoted(why));
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
                unix_user: s.unix_user.clone(),
                iproc: s.iproc.clone(),
                ended: s.ended.subscribe(),
                conn: info.clone(),
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
        // The session stays alive in the monitor too: a start there counts as use, the rest
        // say so.
        if arg.is_none() {
            self.link
                .tell(&proto::Request::Touch {
                    sid: ctx.sid.clone(),
                })
                .await;
        }
        match (prefix, arg) {
            ("/info", None) => framed(&ctx, StatusCode::OK, b"remo_serv 0.6.0 here"),
            ("/get/", Some(name)) => self.get(ctx, name).await,
            ("/put/", Some(name)) => self.put(ctx, name, rd).await,
            ("/cmd/", Some(cmd)) => self.cmd(ctx, cmd, rd).await,
            ("/icm/", Some(cmd)) => self.icm(ctx, cmd, rd).await,
            ("/idt", None) => self.idt(ctx, rd).await,
            ("/edt", None) => self.edt(ctx).await,
            _ => framed(&ctx, StatusCode::NOT_FOUND, b"unknown command"),
        }
    }
}
