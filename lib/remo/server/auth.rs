//! `/auth`: signed logins, verified by the monitor, that open a session.

use super::*;

impl Server {
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
                    // The monitor logs the logout and ends the session's processes.
                    let _ = self.link.call(&proto::Request::Logout { sid: id }).await;
                    drop(s);
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
        let login = proto::Request::Login {
            user: a.user.clone(),
            key: a.key.clone(),
            sign: a.sign.clone(),
            replaces: cookie.clone(),
        };
        let reply = match self.link.call(&login).await {
            Ok((r, _)) => r,
            Err(_) => return bare(StatusCode::SERVICE_UNAVAILABLE),
        };
        let (sid, key, answer, unix_user) = match reply {
            proto::Reply::LoggedIn {
                sid,
                fernet,
                answer,
                unix_user,
            } => (sid, fernet, answer, unix_user),
            proto::Reply::Refused { status, why } => {
                if status == 403 {
                    drop(attempt);
                } else {
                    attempt.succeeded(); // a full table is no failed password
                }
                log::warn!(
                    "login-refused user={:?} peer={} reason={why}",
                    a.user,
                    info.peer
                );
                return bare(StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN));
            }
            _ => return bare(StatusCode::INTERNAL_SERVER_ERROR),
        };
        attempt.succeeded();
        let Ok(key) = <[u8; 32]>::try_from(key.as_slice()) else {
            return bare(StatusCode::INTERNAL_SERVER_ERROR);
        };
        let s = Session {
            fernet: Fernet::new(key),
            user: a.user.clone(),
            unix_user: unix_user.as_str().into(),
            req_no: 0,
            last: Instant::now(),
            iproc: Default::default(),
            ended: tokio::sync::watch::channel(()).0,
        };
        let old = {
            let Ok(mut m) = self.sessions.lock() else {
                return bare(StatusCode::INTERNAL_SERVER_ERROR);
            };
            m.insert(sid.clone(), s);
            // The monitor ended it too (the same user's only: see remod(8)).
            cookie
                .filter(|c| m.get(c).is_some_and(|o| o.user == a.user))
                .and_then(|c| m.remove(&c))
        };
        drop(old);
        log::info!(
            "login user={} unix_user={unix_user} peer={} session={}…",
            a.user,
            info.peer,
            &sid[..4]
        );
        let mut r = Response::new(RBody::Full(Full::new(Bytes::from(answer))));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text_plain"));
        with_cookie(r, &sid)
    }
}
