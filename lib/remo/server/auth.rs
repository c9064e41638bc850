//! `/auth`: signed logins that open a session.

use super::*;

/// Client keys remembered at most (about 100 bytes each); past it, logins wait for old ones
/// to pass the session timeout rather than forget one (which would let its replay in).
const SEEN_KEYS_MAX: usize = 100_000;

impl Service {
    pub(super) async fn auth(
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
        // Counted when it starts, so concurrent attempts cannot all slip under the limit.
        let Ok(attempt) = self.throttle.begin(&info.peer.source()) else {
            log::warn!("login-refused peer={} reason=throttled", info.peer);
            return bare(StatusCode::FORBIDDEN);
        };
        let a = match wire::parse_auth(&body) {
            Ok(a) => a,
            Err(wire::AuthParse::Malformed) => {
                attempt.succeeded(); // not an attempt at a password: not counted
                log::info!("login-refused peer={} reason=malformed", info.peer);
                return bare(StatusCode::BAD_REQUEST);
            }
            Err(wire::AuthParse::BadValue) => {
                log::info!("login-refused peer={} reason=bad-encoding", info.peer);
                return bare(StatusCode::FORBIDDEN);
            }
        };
        match self.login(&a).await {
            Ok((unix, allow, fernet, answer)) => {
                attempt.succeeded();
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
                    cmds: Default::default(),
                    ended: tokio::sync::watch::channel(()).0,
                };
                let old = {
                    let Ok(mut m) = self.sessions.lock() else {
                        return bare(StatusCode::INTERNAL_SERVER_ERROR);
                    };
                    // A new id at every login; the old session (and its process) ends.
                    let old = cookie.and_then(|c| m.remove(&c));
                    // One user's sessions are capped: the least recently used one goes.
                    let mine: Vec<(&String, Instant)> = m
                        .iter()
                        .filter(|(_, s)| s.user == a.user)
                        .map(|(k, s)| (k, s.last))
                        .collect();
                    let evict = (mine.len() >= self.cfg.max_sessions_per_user)
                        .then(|| {
                            mine.iter()
                                .min_by_key(|(_, t)| *t)
                                .map(|(k, _)| (*k).clone())
                        })
                        .flatten();
                    if let Some(k) = evict {
                        if let Some(s) = m.remove(&k) {
                            log::info!("session-evicted user={} reason=per-user-cap", s.user);
                        }
                    }
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
                drop(attempt);
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
    pub(super) async fn login(
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
        // Checked after the signature, so only a valid login's key is ever recorded.
        {
            let mut seen = self.seen_keys.lock().map_err(|_| "internal error")?;
            let t = self.cfg.session_timeout;
            if seen.get(&a.key).is_some_and(|at| at.elapsed() <= t) {
                return Err("replayed-login");
            }
            if seen.len() >= SEEN_KEYS_MAX {
                seen.retain(|_, at| at.elapsed() <= t);
                if seen.len() >= SEEN_KEYS_MAX {
                    return Err("too-many-recent-logins");
                }
            }
            seen.insert(a.key.clone(), Instant::now());
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
            run_as: child::RunAs::of(&uname, pw.uid.as_raw(), pw.gid.as_raw()),
            name: uname,
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
}
