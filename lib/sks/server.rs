//! skd's request handling: every endpoint of the original with its status codes and bodies,
//! plus the fixes documented in skd(8) (form logins, guarded `/stored_token`, token TTL,
//! login throttling, 400 answers where the original dropped or hung the connection).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, Request, Response, StatusCode};

use super::store::{GroupCreate, Location, RealmHash, Store, StoreError, UserKey, Validity};
use super::wire;
use crate::daemon::log::quoted;
use crate::daemon::{Peer, Source};
use crate::http::{self, Body, ConnInfo};
use crate::throttle::{Refused, Throttle};

/// PAM service for every realm when the command line names none (shipped as /etc/pam.d/skd).
pub const DEFAULT_PAM_SERVICE: &str = "skd";

/// Longest user name a login may give: longer ones are refused before PAM and the throttle.
const MAX_USER: usize = 256;

#[derive(Clone, Debug)]
pub struct Config {
    /// Where the tokens are kept (`--store`, `--dir`).
    pub store: Location,
    /// The PostgreSQL password's file (`--store-password-file`; default: the systemd
    /// credential `store-password`, if any).
    pub store_password_file: Option<PathBuf>,
    /// Module for `/auth_token` without `module=` (the original's `-default`).
    pub default_module: String,
    /// The realms skd serves, each with its PAM service (`--realm NAME[=SERVICE]`); `None`:
    /// every realm, all through `pam_app`, else [`DEFAULT_PAM_SERVICE`]. A request never
    /// names a PAM service.
    pub realms: Option<HashMap<String, String>>,
    /// PAM service for every realm (the original's `-pam-app`).
    pub pam_app: Option<String>,
    /// Serve `/stored_token` on TCP listeners too (always served on AF_UNIX ones).
    pub allow_stored_token_tcp: bool,
    /// Lifetime of issued tokens; `None` = until revoked or replaced, as the original.
    pub token_ttl: Option<Duration>,
    /// Largest accepted form body for `POST /auth_token`.
    pub max_form: usize,
    /// Login attempts allowed per (user, PAM service) within `login_window`, four times as
    /// many per source (`daemon::Source`); an attempt counts when it starts and a success
    /// gives its slot back.
    pub login_failures: u32,
    pub login_window: Duration,
    /// PAM conversations running at once at most; more logins get 503.
    pub login_concurrency: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store: Location::Memory,
            store_password_file: None,
            default_module: "pam".into(),
            realms: None,
            pam_app: None,
            allow_stored_token_tcp: false,
            token_ttl: None,
            max_form: 16 * 1024,
            login_failures: 5,
            login_window: Duration::from_secs(60),
            login_concurrency: 16,
        }
    }
}

/// The realms of `--realm NAME[=SERVICE]` arguments, each with its PAM service: SERVICE, else
/// `pam_app`, else the realm's own name (the original's rule, opt-in per realm).
pub fn realm_services(
    specs: &[String],
    pam_app: Option<&str>,
) -> Result<HashMap<String, String>, String> {
    let mut m = HashMap::new();
    for spec in specs {
        let (realm, service) = match spec.split_once('=') {
            Some((r, s)) => (r, s),
            None => (spec.as_str(), pam_app.unwrap_or(spec)),
        };
        if realm.is_empty() || wire::has_control(realm) {
            return Err(format!(
                "--realm {spec:?}: empty realm or control character"
            ));
        }
        if !crate::pam::valid_service_name(service) {
            return Err(format!(
                "--realm {spec:?}: {service:?} is not a PAM service name"
            ));
        }
        m.insert(realm.to_string(), service.to_string());
    }
    Ok(m)
}

/// Why [`Server::new`] failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Password(#[from] super::pg::PasswordError),
    #[error("cannot open store {0}: {1}")]
    Store(String, StoreError),
}

pub struct Server {
    store: Arc<Store>,
    cfg: Config,
    by_user: Throttle<(String, String)>,
    by_source: Throttle<Source>,
    pam_slots: tokio::sync::Semaphore,
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

/// The 503 body while the store (PostgreSQL) cannot be reached.
const STORE_DOWN: &str = "token store unavailable, try later";

/// The answer to a failed store call: 503 while the store cannot be reached (logged at
/// debug: the listener logs the outage once), else 500.
fn store_failed(path: &str, e: StoreError) -> Response<Body> {
    if let StoreError::Unavailable(why) = &e {
        log::debug!(
            "store-unavailable path={path} error={why}",
            why = quoted(why)
        );
        return busy(STORE_DOWN);
    }
    log::error!("store-error path={path} error={e}", e = quoted(&e));
    http::bare(StatusCode::INTERNAL_SERVER_ERROR)
}

fn forbidden() -> Response<Body> {
    http::bare(StatusCode::FORBIDDEN)
}

fn forbidden_because(msg: &str) -> Response<Body> {
    http::text(StatusCode::FORBIDDEN, "text/plain", format!("ERR: {msg}\n"))
}

fn busy(msg: &str) -> Response<Body> {
    http::text(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain",
        format!("ERR: {msg}\n"),
    )
}

/// Parameters that name things (and end up in info records, store keys or log lines): a
/// control character in one is refused, so no client can forge a record line.
const NAME_PARAMS: &[&str] = &[
    "realm",
    "user",
    "group",
    "add_members",
    "add_admins",
    "remove",
    "module",
];

impl Server {
    /// Opens the store. PostgreSQL: started even while the database is unreachable (503
    /// until it is back); a refused login, missing rights or a newer schema are errors.
    pub fn new(cfg: Config) -> Result<Server, Error> {
        let opened = match &cfg.store {
            Location::Memory => Store::open(None),
            Location::Sqlite(d) => Store::open(Some(d)),
            Location::Postgres(t) => {
                let pw = super::pg::password(cfg.store_password_file.as_deref())?;
                Store::open_postgres(t, pw, true)
            }
        };
        let store = opened.map_err(|e| Error::Store(cfg.store.describe(), e))?;
        let (n, w) = (cfg.login_failures, cfg.login_window);
        let slots = cfg.login_concurrency.max(1);
        Ok(Server {
            store: Arc::new(store),
            cfg,
            by_user: Throttle::new(n, w),
            by_source: Throttle::new(n.saturating_mul(4), w),
            pam_slots: tokio::sync::Semaphore::new(slots),
        })
    }

    /// The `STATUS=` line for systemd.
    pub fn status(&self) -> String {
        format!(
            "serving SessionKeyServer {} protocol, store {}",
            wire::VERSION,
            self.cfg.store.describe()
        )
    }

    /// The PAM service of `realm`, or `None` when skd does not serve that realm.
    fn pam_service(&self, realm: &str) -> Option<&str> {
        match &self.cfg.realms {
            Some(m) => m.get(realm).map(String::as_str),
            None => Some(self.cfg.pam_app.as_deref().unwrap_or(DEFAULT_PAM_SERVICE)),
        }
    }

    /// Every PAM service skd may use, for the start-up check.
    pub fn pam_services(&self) -> Vec<&str> {
        let mut v: Vec<&str> = match &self.cfg.realms {
            Some(m) => m.values().map(String::as_str).collect(),
            None => vec![self.pam_service("").unwrap_or(DEFAULT_PAM_SERVICE)],
        };
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The background tasks: with `--token-ttl`, deletes expired tokens at start and every
    /// ten minutes.
    pub fn spawn_tasks(&self) {
        if self.cfg.token_ttl.is_none() {
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            loop {
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.purge_expired()).await {
                    Ok(Ok(n)) if n > 0 => log::info!("purged expired-tokens={n}"),
                    Ok(Err(e)) => log::error!("store-error path=purge error={e}", e = quoted(&e)),
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

    /// Answers one request. Generic over the body, so that unit tests build requests
    /// directly; skd serves hyper's `Incoming`.
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>, conn: Arc<ConnInfo>) -> Response<Body>
    where
        B: hyper::body::Body<Data = bytes::Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
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
            // Wiped when dropped: the form holds the password.
            let form = match http::read_body(body, self.cfg.max_form).await {
                Ok(b) => zeroize::Zeroizing::new(Vec::from(b)),
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
        if let Some(name) = NAME_PARAMS
            .iter()
            .find(|n| params.get(**n).is_some_and(|v| wire::has_control(v)))
        {
            return err400(&format!("control character in {name:?}"));
        }
        let Some(realm) = params.get("realm").cloned() else {
            return err400("missing realm");
        };
        let r = RealmHash::of(&realm);
        if !is_get && !form_login {
            return http::text(StatusCode::NOT_FOUND, "text/plain", "Unknown path");
        }
        let res = match path.as_str() {
            "/valid" => self.valid(r, &params).await,
            "/revoke" => self.revoke(r, &realm, &params).await,
            "/replace" => self.replace(r, &realm, &params).await,
            "/auth_token" => return self.login(r, &realm, params, &conn.peer, false).await,
            "/pam_token" => return self.login(r, &realm, params, &conn.peer, true).await,
            "/stored_token" => self.stored_token(r, &realm, &params, &conn).await,
            "/get_key" => self.get_key(r, &params).await,
            "/gen_key" => self.gen_key(r, &realm, &params).await,
            "/create_group" => self.create_group(r, &params).await,
            "/mod_group" => self.mod_group(r, &params).await,
            "/group_hash" => self.group_hash(r, &params).await,
            _ => Ok(http::bare(StatusCode::NOT_FOUND)),
        };
        res.unwrap_or_else(|e| store_failed(&path, e))
    }

    /// Runs a store read: at once on SQLite, on the blocking pool when the store is across
    /// the network (PostgreSQL).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if self.store.is_remote() {
            self.write(f).await
        } else {
            f(&self.store)
        }
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

    async fn valid(&self, r: RealmHash, p: &Params) -> Result<Response<Body>, StoreError> {
        let Some(t) = p.get("token") else {
            return Ok(ok_text("NO\n"));
        };
        // No token skd could hold is looked up or cached.
        if !wire::plausible_token(t) {
            return Ok(ok_text("NO\n"));
        }
        // PostgreSQL: a cached answer without leaving this thread, else the blocking pool.
        let v = if !self.store.is_remote() {
            self.store.check(&r, t)?
        } else if let Some(v) = self.store.check_cached(&r, t) {
            v
        } else {
            let t = t.clone();
            self.read(move |s| s.check(&r, &t)).await?
        };
        Ok(match v {
            Validity::Current(info) => ok_text(format!("YES\n{info}\n")),
            Validity::Superseded(info) => ok_text(format!("SUPERCEDED\n{info}\n")),
            Validity::No => ok_text("NO\n"),
        })
    }

    async fn revoke(
        &self,
        r: RealmHash,
        realm: &str,
        p: &Params,
    ) -> Result<Response<Body>, StoreError> {
        let Some(t) = p.get("token").cloned() else {
            return Ok(ok_text("INVALID\n"));
        };
        if self.write(move |s| s.revoke(&r, &t)).await? {
            log::info!("revoked realm={}", quoted(realm));
            Ok(ok_text("OK\n"))
        } else {
            Ok(ok_text("INVALID\n"))
        }
    }

    async fn replace(
        &self,
        r: RealmHash,
        realm: &str,
        p: &Params,
    ) -> Result<Response<Body>, StoreError> {
        let Some(t) = p.get("token").cloned() else {
            return Ok(forbidden());
        };
        let exp = self.expires();
        Ok(match self.write(move |s| s.replace(&r, &t, exp)).await? {
            Some((n, info)) => {
                log::info!(
                    "replaced realm={} user={:?}",
                    quoted(realm),
                    wire::info_user(&info).unwrap_or("")
                );
                ok_text(format!("{n}\n{info}\n"))
            }
            None => forbidden(),
        })
    }

    async fn login(
        &self,
        r: RealmHash,
        realm: &str,
        mut p: Params,
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
        let rl = quoted(realm);
        let Some(user) = p.get("user").cloned() else {
            log::info!("{event} realm={rl} result=refused reason=no-user");
            return forbidden();
        };
        let Some(pwd) = p.remove("pwd").map(zeroize::Zeroizing::new) else {
            if legacy {
                return forbidden();
            }
            return err400("missing pwd");
        };
        drop(p);
        if !module.eq_ignore_ascii_case("pam") {
            log::info!("{event} realm={rl} user={user:?} module={module:?} result=refused reason=unsupported-module");
            return forbidden();
        }
        if user.len() > MAX_USER {
            return err400(&format!("user name longer than {MAX_USER} bytes"));
        }
        let Some(service) = self.pam_service(realm).map(str::to_string) else {
            log::warn!("{event} realm={rl} user={user:?} peer={peer} result=refused reason=realm-not-served");
            return forbidden_because(&format!("realm {realm:?} is not served here"));
        };
        // No token could be kept: refuse before PAM sees the password or the throttle counts.
        if !self.store.available() {
            log::warn!("{event} realm={rl} user={user:?} peer={peer} result=refused reason=store-unavailable");
            return busy(STORE_DOWN);
        }
        // Count the attempt before PAM: concurrent guesses cannot all slip under the limit.
        let source = peer.source();
        let ukey = (user.clone(), service.clone());
        let (by_user, by_source) = match (self.by_user.begin(&ukey), self.by_source.begin(&source))
        {
            (Ok(u), Ok(s)) => (u, s),
            (u, s) => {
                let full = matches!(u, Err(Refused::Full)) || matches!(s, Err(Refused::Full));
                // Whichever was counted is given back: this attempt never reached PAM.
                if let Ok(u) = u {
                    u.succeeded();
                }
                if let Ok(s) = s {
                    s.succeeded();
                }
                if full {
                    log::warn!("{event} realm={rl} user={user:?} peer={peer} result=refused reason=throttle-table-full");
                    return busy("too many login attempts, try later");
                }
                log::warn!("{event} realm={rl} user={user:?} peer={peer} source={source} result=refused reason=throttled");
                return forbidden();
            }
        };
        let Ok(slot) = self.pam_slots.try_acquire() else {
            by_user.succeeded();
            by_source.succeeded();
            log::warn!("{event} realm={rl} user={user:?} peer={peer} result=refused reason=too-many-logins-in-progress");
            return busy("too many logins in progress, try later");
        };
        let rhost = peer.ip().map(|ip| ip.to_string());
        let (svc, u) = (service.clone(), user.clone());
        let checked = tokio::task::spawn_blocking(move || {
            crate::pam::authenticate(&svc, &u, pwd.as_bytes(), rhost.as_deref())
        })
        .await;
        drop(slot);
        let ids = match checked {
            Ok(Ok(ids)) => ids,
            Ok(Err(e @ crate::pam::PamFailure::NoService(_))) => {
                by_user.succeeded();
                by_source.succeeded();
                log::error!(
                    "{event} realm={rl} user={user:?} peer={peer} result=error reason={e}",
                    e = quoted(&e)
                );
                return busy("login is not configured for this realm");
            }
            Ok(Err(e)) => {
                // The attempts stay counted.
                log::info!("{event} realm={rl} user={user:?} peer={peer} service={service} result=failed reason={e}", e = quoted(&e));
                return forbidden();
            }
            Err(_) => return http::bare(StatusCode::INTERNAL_SERVER_ERROR),
        };
        by_user.succeeded();
        by_source.succeeded();
        let source = if legacy {
            "pam".to_string()
        } else {
            format!("auth/{module}")
        };
        let info = wire::info(&user, &source, ids);
        let issued = {
            let (user, info, exp) = (user.clone(), info.clone(), self.expires());
            self.write(move |s| s.issue(&r, &user, &info, None, exp))
                .await
        };
        match issued {
            Ok(n) => {
                log::info!(
                    "{event} realm={rl} user={user:?} peer={peer} source={source} uid={} result=ok",
                    ids.uid.map(|u| u.to_string()).unwrap_or("-".into())
                );
                ok_text(format!("{n}\n{info}"))
            }
            Err(e) => store_failed("/auth_token", e),
        }
    }

    async fn stored_token(
        &self,
        r: RealmHash,
        realm: &str,
        p: &Params,
        conn: &ConnInfo,
    ) -> Result<Response<Body>, StoreError> {
        if !conn.peer.is_unix() && !self.cfg.allow_stored_token_tcp {
            log::warn!(
                "stored-token realm={} peer={} result=refused reason=tcp-not-allowed",
                quoted(realm),
                conn.peer
            );
            return Ok(forbidden_because(
                "/stored_token is served on the Unix socket only (skd --allow-stored-token)",
            ));
        }
        if self.pam_service(realm).is_none() {
            return Ok(forbidden_because(&format!(
                "realm {realm:?} is not served here"
            )));
        }
        let (Some(user), Some(token)) = (p.get("user"), p.get("token")) else {
            return Ok(err400("missing user or token"));
        };
        if user.is_empty() || token.is_empty() {
            return Ok(err400("missing user or token"));
        }
        if !wire::plausible_token(token) {
            return Ok(err400(&format!(
                "a token is 1 to {} printable ASCII characters",
                wire::MAX_TOKEN
            )));
        }
        let info = wire::info(user, "stored", Default::default());
        {
            let (user, info, token, exp) =
                (user.clone(), info.clone(), token.clone(), self.expires());
            self.write(move |s| s.issue(&r, &user, &info, Some(&token), exp))
                .await?;
        }
        log::info!(
            "stored-token realm={} user={user:?} peer={}",
            quoted(realm),
            conn.peer
        );
        Ok(ok_text(format!("{token}\n{info}")))
    }

    async fn get_key(&self, r: RealmHash, p: &Params) -> Result<Response<Body>, StoreError> {
        let Some(t) = p.get("token").cloned() else {
            return Ok(forbidden());
        };
        Ok(match self.read(move |s| s.get_key(&r, &t)).await? {
            UserKey::NotCurrent => forbidden(),
            UserKey::None => ok_text(""),
            UserKey::Key(k) => ok_text(k),
        })
    }

    async fn gen_key(
        &self,
        r: RealmHash,
        realm: &str,
        p: &Params,
    ) -> Result<Response<Body>, StoreError> {
        let Some(t) = p.get("token").cloned() else {
            return Ok(forbidden());
        };
        Ok(match self.write(move |s| s.gen_key(&r, &t)).await? {
            None => forbidden(),
            Some(k) => {
                log::info!("key-generated realm={}", quoted(realm));
                ok_text(k)
            }
        })
    }

    async fn create_group(&self, r: RealmHash, p: &Params) -> Result<Response<Body>, StoreError> {
        let (Some(t), Some(g)) = (p.get("token").cloned(), p.get("group").cloned()) else {
            return Ok(forbidden());
        };
        Ok(
            match self.write(move |s| s.create_group(&r, &t, &g)).await? {
                GroupCreate::Created => ok_text("OK\n"),
                GroupCreate::Exists => {
                    http::text(StatusCode::FORBIDDEN, "text/plain", "ERROR: group exists")
                }
                GroupCreate::Forbidden => forbidden(),
            },
        )
    }

    async fn mod_group(&self, r: RealmHash, p: &Params) -> Result<Response<Body>, StoreError> {
        let (Some(t), Some(g)) = (p.get("token").cloned(), p.get("group").cloned()) else {
            return Ok(forbidden());
        };
        let field = |k: &str| p.get(k).cloned().unwrap_or_default();
        let (members, admins, remove) =
            (field("add_members"), field("add_admins"), field("remove"));
        Ok(
            match self
                .write(move |s| s.mod_group(&r, &t, &g, &members, &admins, &remove))
                .await?
            {
                None => forbidden(),
                Some(true) => ok_text("WARN: self-removal ignored\n"),
                Some(false) => ok_text("OK\n"),
            },
        )
    }

    async fn group_hash(&self, r: RealmHash, p: &Params) -> Result<Response<Body>, StoreError> {
        let (Some(t), Some(g)) = (p.get("token").cloned(), p.get("group").cloned()) else {
            return Ok(forbidden());
        };
        let salt = p.get("salt").cloned().unwrap_or_default();
        Ok(
            match self.read(move |s| s.group_hash(&r, &t, &g, &salt)).await? {
                None => forbidden(),
                Some(h) => ok_text(format!("{h}\n")),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn server(cfg: Config) -> Arc<Server> {
        Arc::new(Server::new(cfg).unwrap())
    }

    fn tcp() -> Arc<ConnInfo> {
        Arc::new(ConnInfo::for_test(Peer::Tcp(
            "127.0.0.1:5000".parse().unwrap(),
        )))
    }

    fn unix() -> Arc<ConnInfo> {
        let peer = Peer::Unix {
            uid: 1000,
            gid: 1000,
            pid: 1,
        };
        Arc::new(ConnInfo::for_test(peer))
    }

    /// Answers one request built here: status and body text.
    async fn ask(
        s: &Arc<Server>,
        conn: Arc<ConnInfo>,
        method: &str,
        uri: &str,
        body: &str,
    ) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(http::Body::from(body.to_string()))
            .unwrap();
        let resp = s.clone().handle(req, conn).await;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn version_bad_escapes_and_missing_realm() {
        let s = server(Config::default());
        let (st, body) = ask(&s, tcp(), "GET", "/version", "").await;
        assert_eq!((st, body), (StatusCode::OK, format!("{}\n", wire::VERSION)));
        let (st, body) = ask(&s, tcp(), "GET", "/valid?realm=%zz", "").await;
        assert_eq!(
            (st, body.as_str()),
            (StatusCode::BAD_REQUEST, wire::BAD_ESCAPE_BODY)
        );
        let (st, body) = ask(&s, tcp(), "GET", "/valid?token=x", "").await;
        assert_eq!(
            (st, body.as_str()),
            (StatusCode::BAD_REQUEST, "ERR: missing realm\n")
        );
        let (st, _) = ask(&s, tcp(), "GET", "/nothing?realm=r", "").await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, body) = ask(&s, tcp(), "GET", "/valid?realm=r&token=nonsense", "").await;
        assert_eq!((st, body.as_str()), (StatusCode::OK, "NO\n"));
    }

    #[tokio::test]
    async fn login_form_over_the_limit_is_413() {
        let s = server(Config {
            max_form: 16,
            ..Default::default()
        });
        let form = "realm=r&user=u&password=0123456789";
        let (st, body) = ask(&s, tcp(), "POST", "/auth_token", form).await;
        assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body, "ERR: form body over 16 bytes\n");
    }

    #[tokio::test]
    async fn stored_token_only_on_unix_sockets_unless_allowed() {
        let s = server(Config::default());
        let q = "/stored_token?realm=r&user=u&token=t";
        let (st, body) = ask(&s, tcp(), "GET", q, "").await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("Unix socket only"), "{body}");
        let (st, body) = ask(&s, unix(), "GET", q, "").await;
        assert!(!body.contains("Unix socket only"), "{st} {body}");
        let s = server(Config {
            allow_stored_token_tcp: true,
            ..Default::default()
        });
        let (_, body) = ask(&s, tcp(), "GET", q, "").await;
        assert!(!body.contains("Unix socket only"), "{body}");
    }
}
