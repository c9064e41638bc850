//! autoidd's side of auto-id: v1 at `POST /verify` and `POST /Stage/verify` (the original's
//! request and answers, with the interval bypass closed), v2 at `POST /v2/challenge` and
//! `POST /v2/verify`. The RSA key and the entropy file are re-read when they change on disk
//! (a stat per request), so a rotation takes effect at the next request, as in the original.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::{Method, Request, Response, StatusCode};
use openssl::pkey::{PKey, Private};
use zeroize::Zeroizing;

use super::challenge::{self, Issuer, Minter, NonceError, Spent};
use super::wire::{self, WireError};
use super::{Entropy, Store, StoreError};
use crate::daemon::log::quoted;
use crate::daemon::Source;
use crate::http::{self, Body, ConnInfo};
use crate::privfile::Stamp;
use crate::secret::{ct_eq, hex};
use crate::throttle::Throttle;

#[derive(Clone, Debug)]
pub struct Config {
    pub key_path: PathBuf,
    pub entropy_path: PathBuf,
    pub store: Store,
    /// Serve the original protocol.
    pub v1: bool,
    /// Fewest distinct bytes the 4 snippets of a v1 request must cover together.
    pub v1_min_bytes: usize,
    pub challenge_ttl: Duration,
    /// Most spent v2 challenges remembered (until they expire) to refuse their reuse.
    pub replay_cache: usize,
    /// v2 challenges one source group may take at once, and per second after that (0: no
    /// limit).
    pub challenge_burst: u32,
    pub challenge_rate: f64,
    /// Ranges per v2 challenge.
    pub v2_ranges: usize,
    pub max_body: usize,
    /// Failed attempts per source address within `failure_window` before it is refused.
    pub failures: u32,
    pub failure_window: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            key_path: PathBuf::new(),
            entropy_path: PathBuf::new(),
            store: Store {
                dir: PathBuf::new(),
            },
            v1: true,
            v1_min_bytes: 32,
            challenge_ttl: Duration::from_secs(30),
            replay_cache: 65536,
            challenge_burst: 32,
            challenge_rate: 8.0,
            v2_ranges: 8,
            max_body: 16 * 1024,
            failures: 10,
            failure_window: Duration::from_secs(60),
        }
    }
}

/// What a request asks for, by its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// `POST /verify` (or `/Stage/verify`): the original's v1 exchange.
    V1Verify,
    /// `POST /v2/challenge`: a single-use nonce.
    Challenge,
    /// `POST /v2/verify`: the answer to a challenge.
    V2Verify,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        match path {
            "/verify" | "/Stage/verify" => Some(Route::V1Verify),
            "/v2/challenge" => Some(Route::Challenge),
            "/v2/verify" => Some(Route::V2Verify),
            _ => None,
        }
    }
}

struct Material {
    key: PKey<Private>,
    entropy: Entropy,
    stamps: (Stamp, Stamp),
}

pub struct Server {
    cfg: Config,
    material: RwLock<Option<Arc<Material>>>,
    minter: Minter,
    spent: Spent,
    issuer: Issuer,
    throttle: Throttle<Source>,
}

/// Why the key or the entropy file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key or entropy file cannot be read (or looked at).
    #[error("{}: {1}", .0.display())]
    File(PathBuf, std::io::Error),
    #[error(transparent)]
    Key(#[from] crate::keyfile::KeyError),
    #[error("{}: not an RSA key", .0.display())]
    NotRsa(PathBuf),
    #[error("{}: RSA key of {1} bits: at least 2048 are needed", .0.display())]
    ShortKey(PathBuf, u32),
    #[error("lock poisoned")]
    Poisoned,
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::File(path.into(), e)
}

/// Loads the server's RSA private key (PKCS#8 or PKCS#1 PEM, unencrypted).
fn load_private_key(path: &Path) -> Result<PKey<Private>, Error> {
    let k = crate::keyfile::read_private_pem(path, None)?;
    let rsa = k.rsa().map_err(|_| Error::NotRsa(path.into()))?;
    if rsa.size() < 256 {
        return Err(Error::ShortKey(path.into(), rsa.size() * 8));
    }
    Ok(k)
}

impl Material {
    fn load(cfg: &Config) -> Result<Material, Error> {
        let ks = Stamp::of(&cfg.key_path).map_err(file_error(&cfg.key_path))?;
        let es = Stamp::of(&cfg.entropy_path).map_err(file_error(&cfg.entropy_path))?;
        let key = load_private_key(&cfg.key_path)?;
        let entropy = Entropy::load(&cfg.entropy_path).map_err(file_error(&cfg.entropy_path))?;
        Ok(Material {
            key,
            entropy,
            stamps: (ks, es),
        })
    }
}

fn v1_json(status: StatusCode, message: &str) -> Response<Body> {
    http::text(
        status,
        "application/json",
        format!("{{\"message\": {}}}", crate::pyjson::dumps_str(message)),
    )
}

fn internal() -> Response<Body> {
    v1_json(StatusCode::BAD_GATEWAY, "Internal server error")
}

fn v2_json(status: StatusCode, body: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_vec(body) {
        Ok(b) => http::text(status, "application/json", b),
        Err(_) => http::bare(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

fn v2_err(status: StatusCode, why: &str) -> Response<Body> {
    v2_json(
        status,
        &wire::V2Error {
            error: why.to_string(),
        },
    )
}

/// What a challenge's nonce gives: its ranges, the server's X25519 key and its public share.
type Derived = (Vec<(usize, usize)>, PKey<Private>, Vec<u8>);

/// Source groups whose challenge budgets are tracked at once (memory bound of [`Issuer`]).
const ISSUER_SOURCES: usize = 65536;

/// A v1 outcome: the answer, whether it counts as a failed attempt, and a log reason.
type Outcome = (Response<Body>, bool, String);

/// A server-side failure of a v2 request: 500 with `msg` for the client, `why` for the log;
/// not the client's fault, so not counted against it.
fn v2_internal(msg: &str, why: impl ToString) -> Outcome {
    (
        v2_err(StatusCode::INTERNAL_SERVER_ERROR, msg),
        false,
        why.to_string(),
    )
}

impl Server {
    /// Loads the key and entropy file once, so a bad configuration fails at start-up.
    pub fn new(cfg: Config) -> Result<Server, Error> {
        let m = Material::load(&cfg)?;
        let throttle = Throttle::new(cfg.failures, cfg.failure_window);
        Ok(Server {
            minter: Minter::new(cfg.challenge_ttl),
            spent: Spent::new(cfg.replay_cache),
            issuer: Issuer::new(cfg.challenge_burst, cfg.challenge_rate, ISSUER_SOURCES),
            cfg,
            material: RwLock::new(Some(Arc::new(m))),
            throttle,
        })
    }

    pub fn status(&self) -> String {
        format!(
            "serving auto-id {}, secrets in {}",
            if self.cfg.v1 { "v1 and v2" } else { "v2 only" },
            self.cfg.store.dir.display()
        )
    }

    /// The current key and entropy file, re-read if either changed on disk.
    fn material(&self) -> Result<Arc<Material>, Error> {
        let now = (
            Stamp::of(&self.cfg.key_path).map_err(file_error(&self.cfg.key_path))?,
            Stamp::of(&self.cfg.entropy_path).map_err(file_error(&self.cfg.entropy_path))?,
        );
        if let Ok(g) = self.material.read() {
            if let Some(m) = g.as_ref().filter(|m| m.stamps == now) {
                return Ok(m.clone());
            }
        }
        let mut g = self.material.write().map_err(|_| Error::Poisoned)?;
        if let Some(m) = g.as_ref().filter(|m| m.stamps == now) {
            return Ok(m.clone());
        }
        // Drop the old material first: after a rotation it must not serve again.
        *g = None;
        let m = Arc::new(Material::load(&self.cfg)?);
        log::info!(
            "keys-loaded key={} entropy={} entropy_bytes={}",
            self.cfg.key_path.display(),
            self.cfg.entropy_path.display(),
            m.entropy.bytes().len()
        );
        *g = Some(m.clone());
        Ok(m)
    }

    /// Answers one request. Generic over the body, so that unit tests build requests
    /// directly; autoidd serves hyper's `Incoming`.
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>, info: Arc<ConnInfo>) -> Response<Body>
    where
        B: hyper::body::Body<Data = bytes::Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // Limits count per source group (127/8 as one, an IPv6 /64, a uid), not per address.
        let src = info.peer.source();
        let path = req.uri().path().to_string();
        let Some(route) = Route::of(&path) else {
            return http::text(StatusCode::NOT_FOUND, "text/plain", "not found\n");
        };
        if req.method() != Method::POST {
            let mut r = http::text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use POST\n");
            r.headers_mut().insert(
                hyper::header::ALLOW,
                hyper::header::HeaderValue::from_static("POST"),
            );
            return r;
        }
        let v2 = route != Route::V1Verify;
        if !v2 && !self.cfg.v1 {
            log::info!("v1-refused peer={} reason=\"v1 disabled\"", info.peer);
            return v1_json(StatusCode::GONE, "v1 is disabled on this server");
        }
        if !self.throttle.allowed(&src) {
            log::warn!("throttled peer={} path={path}", info.peer);
            let why = "too many failed attempts, try again later";
            return if v2 {
                v2_err(StatusCode::TOO_MANY_REQUESTS, why)
            } else {
                v1_json(StatusCode::TOO_MANY_REQUESTS, why)
            };
        }
        let body = match http::read_body(req.into_body(), self.cfg.max_body).await {
            Ok(b) => b,
            Err(e) => {
                log::warn!(
                    "bad-request peer={} path={path} reason={e}",
                    info.peer,
                    e = quoted(&e)
                );
                self.throttle.failed(&src);
                let st = match e {
                    http::BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                    http::BodyError::Read(_) => StatusCode::BAD_REQUEST,
                    http::BodyError::TimedOut => StatusCode::REQUEST_TIMEOUT,
                };
                return if v2 {
                    v2_err(st, &e.to_string())
                } else {
                    v1_json(st, &e.to_string())
                };
            }
        };
        // RSA, file reads (secrets; the entropy file after a rotation): on the blocking pool.
        let srv = self.clone();
        let work = tokio::task::spawn_blocking(move || match route {
            Route::V1Verify => srv.v1(&body),
            Route::Challenge => srv.challenge(src),
            Route::V2Verify => srv.v2_verify(&body, src),
        });
        let (resp, failed, what) = match work.await {
            Ok(o) => o,
            Err(e) => (
                http::bare(StatusCode::INTERNAL_SERVER_ERROR),
                false,
                format!("request task failed: {e}"),
            ),
        };
        if failed {
            self.throttle.failed(&src);
            log::warn!(
                "refused peer={} path={path} status={} reason={what}",
                info.peer,
                resp.status().as_u16(),
                what = quoted(&what)
            );
        } else if resp.status().is_success() {
            // A challenge proves nothing: only a verification clears the failures.
            if route != Route::Challenge {
                self.throttle.succeeded(&src);
            }
            log::info!("{what} peer={} path={path}", info.peer);
        } else {
            log::warn!(
                "error peer={} path={path} status={} reason={what}",
                info.peer,
                resp.status().as_u16(),
                what = quoted(&what)
            );
        }
        resp
    }

    fn v1(&self, body: &[u8]) -> Outcome {
        let m = match self.material() {
            Ok(m) => m,
            Err(e) => return (internal(), false, format!("keys unavailable: {e}")),
        };
        let o = match wire::v1_open_request(&m.key, body) {
            Ok(o) => o,
            // The original answered 502 when OAEP failed (a client with a wrong public key).
            Err(e @ WireError::Unwrap) => return (internal(), true, e.to_string()),
            Err(e) => {
                return (
                    v1_json(StatusCode::BAD_REQUEST, "bad request"),
                    true,
                    e.to_string(),
                )
            }
        };
        let tuples = match wire::parse_intervals(&o.inner.intervals) {
            Ok(t) => t,
            Err(e) => {
                return (
                    v1_json(StatusCode::BAD_REQUEST, "bad request"),
                    true,
                    e.to_string(),
                )
            }
        };
        let file = m.entropy.bytes();
        let not_found = || v1_json(StatusCode::NOT_FOUND, "not found");
        if let Err(e) = super::check_v1_intervals(&tuples, file.len(), self.cfg.v1_min_bytes) {
            return (not_found(), true, format!("intervals refused: {e}"));
        }
        let want = wire::hash_v1(file, &tuples);
        if !ct_eq(want.as_bytes(), o.inner.hashval.as_bytes()) {
            return (
                not_found(),
                true,
                "hash mismatch (wrong entropy file)".into(),
            );
        }
        let id = match super::map_credential_source(&o.inner.credential_source) {
            Ok(id) => id,
            Err(e) => return (internal(), false, e),
        };
        let secret = match self.secret(id) {
            Ok(s) => s,
            Err(e) => return (internal(), false, e.to_string()),
        };
        let iv: [u8; 16] = wire::random_array();
        match wire::v1_answer(&o.key, &iv, secret.as_bytes()) {
            Ok(b) => (
                http::text(StatusCode::CREATED, "application/json", b),
                false,
                format!("served version=1 secret={id}"),
            ),
            Err(e) => (internal(), false, e.to_string()),
        }
    }

    /// `v2_ranges` disjoint ranges, one in each of as many equal zones of the file, each
    /// 1/8 to all of min(zone, 2048) bytes long, drawn from `rnd` (16 bytes per range; the
    /// challenge's derived stream, so `/v2/verify` finds the same ranges). (The file has at
    /// least MIN_ENTROPY bytes.)
    fn pick_ranges(&self, len: usize, rnd: impl Fn(usize) -> [u8; 16]) -> Vec<(usize, usize)> {
        let n = self.cfg.v2_ranges.clamp(1, (len / 16).max(1));
        if len < 16 {
            return vec![(0, len.max(1))];
        }
        let zone = len / n;
        (0..n)
            .map(|i| {
                let r = rnd(i);
                let v = |k: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&r[k..k + 8]);
                    u64::from_le_bytes(b) as usize
                };
                let max_len = zone.min(2048);
                let min_len = (max_len / 8).max(1);
                let l = min_len + v(0) % (max_len - min_len + 1);
                let lo = i * zone + v(8) % (zone - l + 1);
                (lo, lo + l)
            })
            .collect()
    }

    /// The ranges and the server's X25519 key of challenge `nonce`, derived from it.
    fn derive(
        &self,
        key: &[u8],
        nonce: &challenge::Nonce,
        file_len: usize,
    ) -> Result<Derived, WireError> {
        let eph = Minter::ephemeral(key, nonce)?;
        let share = wire::x25519_public(&eph)?;
        let ranges = self.pick_ranges(file_len, |i| Minter::stream(key, nonce, i));
        Ok((ranges, eph, share))
    }

    /// A v2 challenge. Nothing is stored: the nonce carries its expiry and a MAC binding it to
    /// this process and to `src`; only the rate of issuing per source group is limited.
    fn challenge(&self, src: Source) -> Outcome {
        if !self.issuer.take(src) {
            return (
                v2_err(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many challenges from this source, try again later",
                ),
                false,
                format!("challenges-throttled source={src}"),
            );
        }
        let m = match self.material() {
            Ok(m) => m,
            Err(e) => return v2_internal("keys unavailable", e),
        };
        let Some((nonce, key)) = self.minter.mint(src) else {
            return v2_internal("internal error", "cannot mint a nonce");
        };
        let (ranges, _, server_share) = match self.derive(&key, &nonce, m.entropy.bytes().len()) {
            Ok(x) => x,
            Err(e) => return v2_internal("internal error", e),
        };
        let ch = wire::Challenge {
            version: 2,
            nonce: hex(&nonce),
            ranges: wire::format_ranges(&ranges),
            server_share: hex(&server_share),
            expires_in: self.cfg.challenge_ttl.as_secs(),
        };
        (
            v2_json(StatusCode::OK, &ch),
            false,
            "challenge-issued".into(),
        )
    }

    fn v2_verify(&self, body: &[u8], src: Source) -> Outcome {
        let bad = |why: &str| (v2_err(StatusCode::BAD_REQUEST, why), true, why.to_string());
        let a: wire::Answer = match serde_json::from_slice(body) {
            Ok(a) => a,
            Err(e) => return bad(&format!("not a v2 answer: {e}")),
        };
        let nonce: challenge::Nonce =
            match wire::unhex(&a.nonce).and_then(|n| n[..].try_into().ok()) {
                Some(n) => n,
                None => return bad("nonce is not 32 bytes of hex"),
            };
        // Issued by this process to this source group, not expired, and single use: spent
        // here whatever happens next.
        let spent = self.minter.check(&nonce, src).and_then(|(exp, key)| {
            self.spent.spend(&nonce, exp, self.minter.clock())?;
            Ok(key)
        });
        let key = match spent {
            Ok(k) => k,
            Err(e) => {
                let why = match e {
                    NonceError::Unknown | NonceError::Used => "unknown or already used challenge",
                    NonceError::Expired => "challenge expired",
                };
                return (v2_err(StatusCode::CONFLICT, why), true, e.to_string());
            }
        };
        let m = match self.material() {
            Ok(m) => m,
            Err(e) => return v2_internal("keys unavailable", e),
        };
        let (ranges, eph, server_share) = match self.derive(&key, &nonce, m.entropy.bytes().len()) {
            Ok(x) => x,
            Err(e) => return v2_internal("internal error", e),
        };
        let opened = (|| -> Result<(Zeroizing<Vec<u8>>, wire::Proof), WireError> {
            let wrapped = wire::unb64(&a.key, "key")?;
            let k = wire::oaep_unwrap(&m.key, &wrapped, true)?;
            if k.len() != 32 {
                return Err(WireError::Short("the wrapped key"));
            }
            let share = wire::unhex(&a.client_share).ok_or(WireError::Hex("client_share"))?;
            let shared = wire::x25519_shared(&eph, &share)?;
            let keys = wire::v2_keys(&nonce, &k, &shared)?;
            let sealed = wire::unb64(&a.sealed, "box")?;
            let plain = wire::gcm_open(
                &keys.request,
                &wire::request_aad(&nonce, &server_share, &share),
                &sealed,
            )?;
            let proof: wire::Proof =
                serde_json::from_slice(&plain).map_err(|_| WireError::Inner)?;
            Ok((keys.response, proof))
        })();
        let (resp_key, proof) = match opened {
            Ok(x) => x,
            Err(e) => return bad(&e.to_string()),
        };
        let want = wire::v2_proof(m.entropy.bytes(), &nonce, &proof.secret_id, &ranges);
        let got = wire::unhex(&proof.proof);
        match (want, got) {
            (Some(w), Some(g)) if ct_eq(&w, &g) => {}
            _ => {
                return (
                    v2_err(StatusCode::FORBIDDEN, "proof refused (wrong entropy file?)"),
                    true,
                    "proof mismatch (wrong entropy file)".into(),
                )
            }
        }
        let id = proof.secret_id.as_str();
        let secret = match self.secret(id) {
            Ok(s) => s,
            Err(e @ (StoreError::NotFound(_) | StoreError::BadId(_))) => {
                return (
                    v2_err(StatusCode::NOT_FOUND, &e.to_string()),
                    false,
                    e.to_string(),
                )
            }
            Err(e) => return v2_internal("cannot read the secret", e),
        };
        match wire::gcm_seal(&resp_key, &wire::response_aad(&nonce), secret.as_bytes()) {
            Ok(b) => (
                v2_json(
                    StatusCode::OK,
                    &wire::Sealed {
                        sealed: wire::b64(&b),
                    },
                ),
                false,
                format!("served version=2 secret={id}"),
            ),
            Err(e) => v2_internal("internal error", e),
        }
    }

    /// Secret `id` from the store; the key and entropy file are never served, even when they
    /// sit in the secrets directory.
    fn secret(&self, id: &str) -> Result<crate::locked::Locked, StoreError> {
        let p = self.cfg.store.dir.join(id);
        let same = |q: &Path| match (std::fs::canonicalize(&p), std::fs::canonicalize(q)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if super::valid_id(id) && (same(&self.cfg.key_path) || same(&self.cfg.entropy_path)) {
            return Err(StoreError::NotFound(id.into()));
        }
        self.cfg.store.get(id)
    }

    /// Spent challenges remembered, and source groups with a challenge budget in use.
    pub fn tracked(&self) -> (usize, usize) {
        (self.spent.len(), self.issuer.sources())
    }
}

#[cfg(test)]
mod handler_tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A key of `bits`, a fresh entropy file and an empty secrets directory.
    fn config(dir: &Path, bits: u32) -> Config {
        let key = openssl::rsa::Rsa::generate(bits).unwrap();
        let pem = PKey::from_rsa(key)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap();
        let key_path = dir.join("key.pem");
        std::fs::write(&key_path, pem).unwrap();
        let entropy_path = dir.join("entropy");
        super::super::write_entropy(&entropy_path, true).unwrap();
        Config {
            key_path,
            entropy_path,
            store: Store { dir: dir.into() },
            ..Default::default()
        }
    }

    async fn ask(s: &Arc<Server>, method: &str, uri: &str, body: Vec<u8>) -> Response<Body> {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(http::Body::from(body))
            .unwrap();
        let peer = crate::daemon::Peer::Tcp("127.0.0.1:5000".parse().unwrap());
        s.clone()
            .handle(req, Arc::new(ConnInfo::for_test(peer)))
            .await
    }

    async fn text(r: Response<Body>) -> String {
        let b = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&b).into_owned()
    }

    #[tokio::test]
    async fn routes_methods_v1_switch_and_body_limit() {
        let d = tempfile::tempdir().unwrap();
        let s = Arc::new(Server::new(config(d.path(), 2048)).unwrap());
        let r = ask(&s, "POST", "/elsewhere", vec![]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = ask(&s, "GET", "/v2/challenge", vec![]).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[hyper::header::ALLOW], "POST");
        let r = ask(&s, "POST", "/v2/verify", vec![b'x'; 16 * 1024 + 1]).await;
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(text(r).await.contains("larger than 16384 bytes"));

        let s = Arc::new(
            Server::new(Config {
                v1: false,
                ..config(d.path(), 2048)
            })
            .unwrap(),
        );
        let r = ask(&s, "POST", "/Stage/verify", b"{}".to_vec()).await;
        assert_eq!(r.status(), StatusCode::GONE);
        assert!(text(r).await.contains("v1 is disabled"));
    }

    #[test]
    fn a_short_key_or_a_missing_file_is_a_typed_error() {
        let d = tempfile::tempdir().unwrap();
        let e = Server::new(config(d.path(), 1024)).err().unwrap();
        assert!(matches!(e, Error::ShortKey(_, 1024)), "{e}");
        assert!(e
            .to_string()
            .ends_with("key.pem: RSA key of 1024 bits: at least 2048 are needed"));
        let missing = Config {
            entropy_path: d.path().join("none"),
            ..config(d.path(), 2048)
        };
        let e = Server::new(missing).err().unwrap();
        assert!(matches!(e, Error::File(..)), "{e}");
    }
}
