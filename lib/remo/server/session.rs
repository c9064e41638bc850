//! The session table's entries, the per-request context, the session cookie and expiry.

use super::*;

#[derive(Debug)]
pub(super) struct UnixUser {
    pub(super) name: String,
    pub(super) home: PathBuf,
    /// uid, gid and supplementary groups, looked up at login.
    pub(super) run_as: child::RunAs,
    pub(super) shell: String,
}

/// An interactive process, counted against the global limit while it lives.
pub(super) struct IProc {
    pub(super) proc_: Proc,
    pub(super) live: Arc<AtomicUsize>,
}

impl Drop for IProc {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) type Shared<T> = Arc<tokio::sync::Mutex<Option<T>>>;

pub(super) struct Session {
    pub(super) fernet: Fernet,
    pub(super) user: String,
    pub(super) unix: Arc<UnixUser>,
    pub(super) allow: Option<Arc<Vec<String>>>,
    pub(super) req_no: i16,
    pub(super) last: Instant,
    pub(super) iproc: Shared<IProc>,
    /// `/cmd` processes of this session running now.
    pub(super) cmds: Arc<AtomicUsize>,
    /// Dropped with the session (logout, expiry, a new login, eviction): its commands end.
    pub(super) ended: tokio::sync::watch::Sender<()>,
}

/// What a verified request carries forward.
pub(super) struct Ctx {
    pub(super) sid: String,
    pub(super) fernet: Fernet,
    pub(super) req: i16,
    pub(super) user: String,
    pub(super) unix: Arc<UnixUser>,
    pub(super) allow: Option<Arc<Vec<String>>>,
    pub(super) iproc: Shared<IProc>,
    pub(super) cmds: Arc<AtomicUsize>,
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

impl Service {
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

    pub(super) fn purge(&self) {
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
        if let Ok(mut k) = self.seen_keys.lock() {
            k.retain(|_, at| at.elapsed() <= t);
        }
    }

    pub fn sessions(&self) -> usize {
        self.sessions.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// A running `/cmd`, counted against its session's and its user's caps until dropped.
pub(super) struct CmdSlot {
    session: Arc<AtomicUsize>,
    users: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

impl CmdSlot {
    /// A slot for one more command of `ctx`'s session and user, or `None` at either cap.
    pub(super) fn take(svc: &Service, ctx: &Ctx) -> Option<CmdSlot> {
        let mut users = svc.cmds.lock().ok()?;
        let n = users.get(&ctx.user).copied().unwrap_or(0);
        if n >= svc.cfg.max_cmds_per_user {
            return None;
        }
        if ctx.cmds.fetch_add(1, Ordering::SeqCst) >= svc.cfg.max_cmds_per_session {
            ctx.cmds.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        users.insert(ctx.user.clone(), n + 1);
        Some(CmdSlot {
            session: ctx.cmds.clone(),
            users: svc.cmds.clone(),
            user: ctx.user.clone(),
        })
    }
}

impl Drop for CmdSlot {
    fn drop(&mut self) {
        self.session.fetch_sub(1, Ordering::SeqCst);
        if let Ok(mut m) = self.users.lock() {
            if let Some(n) = m.get_mut(&self.user) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.user);
                }
            }
        }
    }
}
