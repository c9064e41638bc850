//! The session table's entries, the per-request context, the session cookie and expiry.

use super::*;

pub(super) type Shared<T> = Arc<tokio::sync::Mutex<Option<T>>>;

/// What the network process knows of a session the monitor opened.
pub(super) struct Session {
    pub(super) fernet: Fernet,
    pub(super) user: String,
    /// The Unix account the monitor runs its processes as (for the log).
    pub(super) unix_user: Arc<str>,
    pub(super) req_no: i16,
    pub(super) last: Instant,
    /// The interactive process (`/icm`).
    pub(super) iproc: Shared<Proc>,
    /// Dropped with the session (logout, expiry, a new login, eviction): its requests end.
    pub(super) ended: tokio::sync::watch::Sender<()>,
}

/// What a verified request carries forward.
pub(super) struct Ctx {
    pub(super) sid: String,
    pub(super) fernet: Fernet,
    pub(super) req: i16,
    pub(super) user: String,
    pub(super) unix_user: Arc<str>,
    pub(super) iproc: Shared<Proc>,
    pub(super) ended: tokio::sync::watch::Receiver<()>,
    /// The connection the request came on.
    pub(super) conn: Arc<ConnInfo>,
    pub(super) want_status: bool,
}

pub(super) fn cookie_id(h: &hyper::HeaderMap) -> Option<String> {
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

pub(super) fn with_cookie(mut r: Response<RBody>, sid: &str) -> Response<RBody> {
    if let Ok(v) = HeaderValue::from_str(&format!("SESSION_ID={sid}")) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r
}

impl Server {
    /// The background tasks: the reader of the monitor's messages (a session it ended is
    /// forgotten here; without the monitor nothing can be done, so `ctl` stops), and the
    /// purger forgetting expired sessions every few seconds (the monitor ends them on its
    /// side).
    pub fn spawn_tasks(self: &Arc<Self>, ctl: &crate::daemon::Control) {
        let (me, link, ctl) = (Arc::downgrade(self), self.link.clone(), ctl.clone());
        tokio::spawn(async move {
            link.read(move |sid| {
                if let Some(s) = me.upgrade() {
                    s.ended(&sid);
                }
            })
            .await;
            ctl.stop(crate::daemon::Stop::MonitorGone);
        });
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

    pub(super) fn purge(&self) {
        let t = self.cfg.session_timeout;
        if let Ok(mut m) = self.sessions.lock() {
            m.retain(|_, s| s.last.elapsed() <= t);
        }
    }

    /// The monitor ended a session: it is forgotten here too.
    pub fn ended(&self, sid: &str) {
        let gone = self.sessions.lock().ok().and_then(|mut m| m.remove(sid));
        drop(gone);
    }

    pub fn sessions(&self) -> usize {
        self.sessions.lock().map(|m| m.len()).unwrap_or(0)
    }
}
