//! skd's request handling: every endpoint of the original with its status codes and bodies,
//! plus the fixes documented in skd(8) (form logins, guarded `/stored_token`, token TTL,
//! login throttling, 400 answers where the original dropped or hung the connection).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::store::{GroupCreate, Store, StoreError, Validity};
use super::wire;
use crate::daemon::Peer;
use crate::http::{self, Body, ConnInfo};
use crate::throttle::Throttle;

#[derive(Clone, Debug)]
pub struct Config {
    /// Module for `/auth_token` without `module=` (the original's `-default`).
    pub default_module: String,
    /// PAM service for every realm (the original's `-pam-app`); else the realm is the service.
    pub pam_app: Option<String>,
    /// Serve `/stored_token` on TCP listeners too (always served on AF_UNIX ones).
    pub allow_stored_token_tcp: bool,
    /// Lifetime of issued tokens; `None` = until revoked or replaced, as the original.
    pub token_ttl: Option<Duration>,
    /// Largest accepted form body for `POST /auth_token`.
    pub max_form: usize,
    /// Failed logins allowed per (realm, user) and per source address within `login_window`.
    pub login_failures: u32,
    pub login_window: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_module: "pam".into(),
            pam_app: None,
            allow_stored_token_tcp: false,
            token_ttl: None,
            max_form: 16 * 1024,
            login_failures: 5,
            login_window: Duration::from_secs(60),
        }
    }
}

pub struct Service {
    store: Arc<Store>,
    cfg: Config,
    by_user: Throttle<(String, String)>,
    by_addr: Throttle<IpAddr>,
}

type Params = HashMap<String, String>;

fn ok_text(body: impl Into<bytes::Bytes>) -> Response<Body> {
    http::text(StatusCode::OK, "text/plain", body)
}

fn err400(msg: &str) -> Response<Body> {
    http::text(
        StatusCode::BAD_REQUEST,
        "text/plain",
        format!("ERR: {msg}\n"),
    )
}

fn forbidden() -> Response<Body> {
    http::bare(StatusCode::FORBIDDEN)
}

/// Short, non-secret label for a realm in log lines.
fn realm_label(realm: &str) -> String {
    format!("{realm:?}")
}

impl Service {
    pub fn new(store: Arc<Store>, cfg: Config) -> Self {
        let (n, w) = (cfg.login_failures, cfg.login_window);
        Service {
            store,
            cfg,
            by_user: Throttle::new(n, w),
            by_addr: Throttle::new(n.saturating_mul(4), w),
        }
    }

    /// With `--token-ttl`, deletes expired tokens at start and every ten minutes.
    pub fn spawn_purger(&self) {
        if self.cfg.token_ttl.is_none() {
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            loop {
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.purge_expired()).await {
                    Ok(Ok(n)) if n > 0 => log::info!("purged expired-tokens={n}"),
                    Ok(Err(e)) => log::error!("store-error path=purge error=\"{e}\""),
                    _ => {}
                }
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
        });
    }

    fn expires(&self) -> Option<i64> {
        self.cfg
            .token_ttl
            .map(|t| super::store::now() + t.as_secs() as i64)
    }

    /// Answers one request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let raw_path = parts.uri.path();
        let raw_query = parts.uri.query().unwrap_or("");
        if wire::has_bad_escape(raw_path) || wire::has_bad_escape(raw_query) {
            return http::text(StatusCode::BAD_REQUEST, "text/html", wire::BAD_ESCAPE_BODY);
        }
        let path = wire::decode_path(raw_path);
        let is_get = parts.method.as_str().eq_ignore_ascii_case("GET");
        if is_get && path == "/version" {
            return ok_text(format!("{}\n", wire::VERSION));
        }
        let mut params = match wire::parse_query(raw_query) {
            Ok(p) => p,
            Err(wire::NotUtf8(name)) => return err400(&format!("parameter {name:?} is not UTF-8")),
        };
        // Logins may send their fields as a form body, so the password stays out of URLs.
        let form_login =
            parts.method == Method::POST && (path == "/auth_token" || path == "/pam_token");
        if form_login {
            let form = match http::read_body(body, self.cfg.max_form).await {
                Ok(b) => b,
                Err(http::BodyError::TooLarge(n)) => {
                    return http::text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "text/plain",
                        format!("ERR: form body over {n} bytes\n"),
                    )
                }
                Err(e) => return err400(&e.to_string()),
            };
            let Ok(form) = std::str::from_utf8(&form) else {
                return err400("form body is not UTF-8");
            };
            if wire::has_bad_escape(form) {
                return err400("malformed escape in form body");
            }
            match wire::parse_query(form.trim_end_matches(['\r', '\n'])) {
                Ok(f) => params.extend(f),
                Err(wire::NotUtf8(name)) => {
                    return err400(&format!("parameter {name:?} is not UTF-8"))
                }
            }
        }
        let Some(realm) = params.get("realm").cloned() else {
            return err400("missing realm");
        };
        let r = crate::secret::sha1_hex(realm.as_bytes());
        if !is_get && !form_login {
            return http::text(StatusCode::NOT_FOUND, "text/plain", "Unknown path");
        }
        let res = match path.as_str() {
            "/valid" => self.valid(&r, &params),
            "/revoke" => self.revoke(&r, &realm, &params).await,
            "/replace" => self.replace(&r, &realm, &params).await,
            "/auth_token" => return self.login(&r, &realm, params, &conn.peer, false).await,
            "/pam_token" => return self.login(&r, &realm, params, &conn.peer, true).await,
            "/stored_token" => self.stored_token(&r, &realm, &params, &conn).await,
            "/get_key" => self.get_key(&r, &params),
            "/gen_key" => self.gen_key(&r, &realm, &params).await,
            "/create_group" => self.create_group(&r, &params).await,
            "/mod_group" => self.mod_group(&r, &params).await,
            "/group_hash" => self.group_hash(&r, &params),
            _ => Ok(http::bare(StatusCode::NOT_FOUND)),
        };
        res.unwrap_or_else(|e| {
            log::error!("store-error path={path} error=\"{e}\"");
            http::bare(StatusCode::INTERNAL_SERVER_ERROR)
        })
    }

    /// Runs a store change on the blocking pool (SQLite commits wait for fsync).
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .unwrap_or(Err(StoreError::Poisoned))
    }

    fn valid(&self, r: &str, p: &Params) -> Result<Response<Body>, StoreError> {
        let Some(t) = p.get("token") else {
            return Ok(ok_text("NO\n"));
        };
        Ok(match self.store.check(r, t)? {
            Validity::Current(info) => ok_text(format!("YES\n{info}\n")),
            Validity::Superseded(info) => ok_text(format!("SUPERCEDED\n{info}\n")),
            Validity::No => ok_text("NO\n"),
        })
    }

    async fn revoke(&self, r: &str, realm: &str, p: &Params) -> Result<Response<Body>, StoreError> {
        let Some(t) = p.get("token").cloned() else {
            return Ok(ok_text("INVALID\n"));
        };
        let r2 = r.to_string();
        if self.write(move |s| s.revoke(&r2, &t)).await? {
            log::info!("revoked realm={}", realm_label(realm));
            Ok(ok_text("OK\n"))
        } else {
            Ok(ok_text("INVALID\n"))
        }
    }

    async fn replace(
        &self,
        r: &str,
        realm: &str,
        p: &Params,
    ) -> Result<Response<Body>, StoreError> {
        let Some(t) = p.get("token").cloned() else {
            return Ok(forbidden());
        };
        let (r2, exp) = (r.to_string(), self.expires());
        Ok(match self.write(move |s| s.replace(&r2, &t, exp)).await? {
            Some((n, info)) => {
                log::info!(
                    "replaced realm={} user={:?}",
                    realm_label(realm),
                    wire::info_user(&info).unwrap_or("")
                );
                ok_text(format!("{n}\n{info}\n"))
            }
            None => forbidden(),
        })
    }

    async fn login(
        &self,
        r: &str,
        realm: &str,
        p: Params,
        peer: &Peer,
        legacy: bool,
    ) -> Response<Body> {
        let module = if legacy {
            "pam".to_string()
        } else {
            p.get("module")
                .cloned()
                .unwrap_or(self.cfg.default_module.clone())
        };
        let event = if legacy { "pam-login" } else { "login" };
        let Some(user) = p.get("user").cloned() else {
            log::info!(
                "{event} realm={} result=refused reason=no-user",
                realm_label(realm)
            );
            return forbidden();
        };
        let Some(pwd) = p.get("pwd") else {
            if legacy {
                return forbidden();
            }
            return err400("missing pwd");
        };
        let pwd = zeroize::Zeroizing::new(pwd.as_bytes().to_vec());
        drop(p);
        if !module.eq_ignore_ascii_case("pam") {
            log::info!("{event} realm={} user={user:?} module={module:?} result=refused reason=unsupported-module", realm_label(realm));
            return forbidden();
        }
        let ukey = (realm.to_string(), user.clone());
        let addr = match peer {
            Peer::Tcp(a) => Some(a.ip()),
            Peer::Unix { .. } => None,
        };
        if !self.by_user.allowed(&ukey) || addr.is_some_and(|a| !self.by_addr.allowed(&a)) {
            log::warn!(
                "{event} realm={} user={user:?} peer={peer} result=refused reason=throttled",
                realm_label(realm)
            );
            return forbidden();
        }
        let service = self
            .cfg
            .pam_app
            .clone()
            .unwrap_or_else(|| realm.to_string());
        let u = user.clone();
        let checked =
            tokio::task::spawn_blocking(move || crate::pam::authenticate(&service, &u, &pwd)).await;
        let ids = match checked {
            Ok(Ok(ids)) => ids,
            Ok(Err(e)) => {
                self.by_user.failed(&ukey);
                if let Some(a) = addr {
                    self.by_addr.failed(&a);
                }
                log::info!(
                    "{event} realm={} user={user:?} peer={peer} result=failed reason=\"{e}\"",
                    realm_label(realm)
                );
                return forbidden();
            }
            Err(_) => return http::bare(StatusCode::INTERNAL_SERVER_ERROR),
        };
        self.by_user.succeeded(&ukey);
        let source = if legacy {
            "pam".to_string()
        } else {
            format!("auth/{module}")
        };
        let info = wire::info(&user, &source, ids);
        let (r2, u2, i2, exp) = (r.to_string(), user.clone(), info.clone(), self.expires());
        match self.write(move |s| s.issue(&r2, &u2, &i2, None, exp)).await {
            Ok(n) => {
                log::info!(
                    "{event} realm={} user={user:?} peer={peer} source={source} uid={} result=ok",
                    realm_label(realm),
                    ids.uid.map(|u| u.to_string()).unwrap_or("-".into())
                );
                ok_text(format!("{n}\n{info}"))
            }
            Err(e) => {
                log::error!("store-error path=login error=\"{e}\"");
                http::bare(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    async fn stored_token(
        &self,
        r: &str,
        realm: &str,
        p: &Params,
        conn: &ConnInfo,
    ) -> Result<Response<Body>, StoreError> {
        if !conn.peer.is_unix() && !self.cfg.allow_stored_token_tcp {
            log::warn!(
                "stored-token realm={} peer={} result=refused reason=tcp-not-allowed",
                realm_label(realm),
                conn.peer
            );
            return Ok(forbidden());
        }
        let (Some(user), Some(token)) = (p.get("user"), p.get("token")) else {
            return Ok(err400("missing user or token"));
        };
        if user.is_empty() || token.is_empty() {
            return Ok(err400("missing user or token"));
        }
        let info = wire::info(user, "stored", Default::default());
        let (r2, u2, i2, t2, exp) = (
            r.to_string(),
            user.clone(),
            info.clone(),
            token.clone(),
            self.expires(),
        );
        self.write(move |s| s.issue(&r2, &u2, &i2, Some(&t2), exp))
            .await?;
        log::info!(
            "stored-token realm={} user={user:?} peer={}",
            realm_label(realm),
            conn.peer
        );
        Ok(ok_text(format!("{token}\n{info}")))
    }

    fn get_key(&self, r: &str, p: &Params) -> Result<Response<Body>, StoreError> {
        let Some(t) = p.get("token") else {
            return Ok(forbidden());
        };
        Ok(match self.store.get_key(r, t)? {
            None => forbidden(),
            Some(k) => ok_text(k.unwrap_or_default()),
        })
    }

    async fn gen_key(
        &self,
        r: &str,
        realm: &str,
        p: &Params,
    ) -> Result<Response<Body>, StoreError> {
        let Some(t) = p.get("token").cloned() else {
            return Ok(forbidden());
        };
        let r2 = r.to_string();
        Ok(match self.write(move |s| s.gen_key(&r2, &t)).await? {
            None => forbidden(),
            Some(k) => {
                log::info!("key-generated realm={}", realm_label(realm));
                ok_text(k)
            }
        })
    }

    async fn create_group(&self, r: &str, p: &Params) -> Result<Response<Body>, StoreError> {
        let (Some(t), Some(g)) = (p.get("token").cloned(), p.get("group").cloned()) else {
            return Ok(forbidden());
        };
        let r2 = r.to_string();
        Ok(
            match self.write(move |s| s.create_group(&r2, &t, &g)).await? {
                GroupCreate::Created => ok_text("OK\n"),
                GroupCreate::Exists => {
                    http::text(StatusCode::FORBIDDEN, "text/plain", "ERROR: group exists")
                }
                GroupCreate::Forbidden => forbidden(),
            },
        )
    }

    async fn mod_group(&self, r: &str, p: &Params) -> Result<Response<Body>, StoreError> {
        let (Some(t), Some(g)) = (p.get("token").cloned(), p.get("group").cloned()) else {
            return Ok(forbidden());
        };
        let field = |k: &str| p.get(k).cloned().unwrap_or_default();
        let (am, aa, rm, r2) = (
            field("add_members"),
            field("add_admins"),
            field("remove"),
            r.to_string(),
        );
        Ok(
            match self
                .write(move |s| s.mod_group(&r2, &t, &g, &am, &aa, &rm))
                .await?
            {
                None => forbidden(),
                Some(true) => ok_text("WARN: self-removal ignored\n"),
                Some(false) => ok_text("OK\n"),
            },
        )
    }

    fn group_hash(&self, r: &str, p: &Params) -> Result<Response<Body>, StoreError> {
        let (Some(t), Some(g)) = (p.get("token"), p.get("group")) else {
            return Ok(forbidden());
        };
        let salt = p.get("salt").map(String::as_str).unwrap_or("");
        Ok(match self.store.group_hash(r, t, g, salt)? {
            None => forbidden(),
            Some(h) => ok_text(format!("{h}\n")),
        })
    }
}
