//! autoid's side of auto-id: fetch one secret with v1 (the original's single request) or v2
//! (challenge, then an authenticated answer) over HTTP/1.1.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::Request;
use openssl::pkey::{PKey, Public};
use zeroize::Zeroizing;

use super::wire::{self, WireError};
use super::Entropy;
use crate::http::ConnectError;
use crate::secret::hex;

/// Largest answer read.
const MAX_ANSWER: usize = 4 * super::MAX_SECRET + 4096;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("bad URL {0:?}: {1}")]
    Url(String, &'static str),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("no answer within {0}s")]
    Timeout(u64),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("bad answer from the server: {0}")]
    Wire(#[from] WireError),
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
}

/// `http://host[:port][/path]` split up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub path: String,
}

pub fn parse_url(url: &str) -> Result<Url, FetchError> {
    let bad = |why| FetchError::Url(url.to_string(), why);
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if url.starts_with("https://") {
        return Err(bad(
            "https is not supported by autoid; use http:// to autoidd (or a local TLS proxy)",
        ));
    } else {
        return Err(bad("expected http://HOST[:PORT][/PATH]"));
    };
    let (auth, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = if let Some(h) = auth.strip_prefix('[') {
        let (h, p) = h.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        (h, p.strip_prefix(':'))
    } else {
        match auth.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (auth, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad("bad port"))?,
        None => 80,
    };
    Ok(Url {
        host: host.to_string(),
        port,
        path: if path.is_empty() || path == "/" {
            "/verify".into()
        } else {
            path.to_string()
        },
    })
}

pub struct Params<'a> {
    pub url: &'a Url,
    pub entropy: &'a Entropy,
    pub server_key: &'a PKey<Public>,
    pub secret_id: &'a str,
    pub timeout: Duration,
}

struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: String,
}

async fn connect(u: &Url) -> Result<Conn, FetchError> {
    let authority = if u.host.contains(':') {
        format!("[{}]:{}", u.host, u.port)
    } else {
        format!("{}:{}", u.host, u.port)
    };
    match crate::http::connect(&u.host, u.port).await {
        Ok(sender) => Ok(Conn { sender, authority }),
        Err(ConnectError::Tcp(e)) => Err(FetchError::Connect(authority, e)),
        Err(ConnectError::Handshake(e)) => Err(FetchError::Http(e.to_string())),
    }
}

async fn post(c: &mut Conn, path: &str, body: String) -> Result<(u16, Bytes), FetchError> {
    let http = |e: hyper::Error| FetchError::Http(e.to_string());
    c.sender.ready().await.map_err(http)?;
    let req = Request::post(path)
        .header(HOST, &c.authority)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let resp = c.sender.send_request(req).await.map_err(http)?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}

/// The server's error answer, shortened for a message.
fn why(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let detail = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .or_else(|| v.get("message"))
                .and_then(|m| m.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| text.lines().next().unwrap_or("").to_string());
    let detail: String = detail.chars().take(200).collect();
    format!("the server answered {status}: {detail}")
}

fn run<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, FetchError>>,
) -> Result<T, FetchError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(FetchError::Runtime)?;
    rt.block_on(async {
        tokio::time::timeout(timeout, f)
            .await
            .unwrap_or(Err(FetchError::Timeout(timeout.as_secs())))
    })
}

/// The original's credential_source for a secret id (`secretsmanager,ID`), unless the id
/// already is one.
pub fn credential_source(id: &str) -> String {
    if id.contains(',') {
        id.to_string()
    } else {
        format!("secretsmanager,{id}")
    }
}

/// v1: one request to the URL's path, as the original client (but with CSPRNG intervals
/// drawn disjoint, so autoidd's policy never refuses them).
pub fn fetch_v1(p: &Params) -> Result<Zeroizing<Vec<u8>>, FetchError> {
    let file = p.entropy.bytes();
    let tuples = loop {
        let t = wire::random_intervals();
        if super::check_v1_intervals(&t, file.len(), 64).is_ok() {
            break t;
        }
    };
    let pass = wire::random_passphrase();
    let inner = wire::Inner {
        hashval: wire::hash_v1(file, &tuples),
        intervals: wire::format_intervals(&tuples),
        credential_source: credential_source(p.secret_id),
    };
    let body = wire::v1_request(p.server_key, &pass, &inner)?;
    let key = wire::v1_key(pass.as_bytes());
    run(p.timeout, async {
        let mut c = connect(p.url).await?;
        let (status, answer) = post(&mut c, &p.url.path, body).await?;
        if status != 201 {
            return Err(FetchError::Refused(why(status, &answer)));
        }
        Ok(wire::v1_open_answer(&key, &answer)?)
    })
}

/// v2: `POST /v2/challenge`, then `POST /v2/verify` on the same connection.
pub fn fetch_v2(p: &Params) -> Result<Zeroizing<Vec<u8>>, FetchError> {
    run(p.timeout, async {
        let mut c = connect(p.url).await?;
        let (status, body) = post(&mut c, "/v2/challenge", "{}".into()).await?;
        if status != 200 {
            return Err(FetchError::Refused(why(status, &body)));
        }
        let ch: wire::Challenge =
            serde_json::from_slice(&body).map_err(|e| WireError::Json(e.to_string()))?;
        let nonce = wire::unhex(&ch.nonce)
            .filter(|n| n.len() == wire::V2_NONCE_LEN)
            .ok_or(WireError::Hex("nonce"))?;
        let server_share = wire::unhex(&ch.server_share).ok_or(WireError::Hex("server_share"))?;
        let ranges = wire::parse_ranges(&ch.ranges)?;
        let proof =
            wire::v2_proof(p.entropy.bytes(), &nonce, p.secret_id, &ranges).ok_or_else(|| {
                WireError::Intervals(
                    "the challenge's ranges fall outside our entropy file (wrong file?)".into(),
                )
            })?;
        let k: Zeroizing<[u8; 32]> = Zeroizing::new(wire::random_array());
        let eph = wire::x25519_generate()?;
        let client_share = wire::x25519_public(&eph)?;
        let shared = wire::x25519_shared(&eph, &server_share)?;
        let keys = wire::v2_keys(&nonce, &k[..], &shared)?;
        let inner = Zeroizing::new(
            serde_json::to_vec(&wire::Proof {
                secret_id: p.secret_id.to_string(),
                proof: hex(&proof),
            })
            .map_err(|e| WireError::Json(e.to_string()))?,
        );
        let sealed = wire::gcm_seal(
            &keys.request,
            &wire::request_aad(&nonce, &server_share, &client_share),
            &inner,
        )?;
        let answer = wire::Answer {
            nonce: ch.nonce.clone(),
            key: wire::b64(&wire::oaep_wrap(p.server_key, &k[..], true)?),
            client_share: hex(&client_share),
            sealed: wire::b64(&sealed),
        };
        let body = serde_json::to_string(&answer).map_err(|e| WireError::Json(e.to_string()))?;
        let (status, body) = post(&mut c, "/v2/verify", body).await?;
        if status != 200 {
            return Err(FetchError::Refused(why(status, &body)));
        }
        let s: wire::Sealed =
            serde_json::from_slice(&body).map_err(|e| WireError::Json(e.to_string()))?;
        let raw = wire::unb64(&s.sealed, "box")?;
        Ok(wire::gcm_open(
            &keys.response,
            &wire::response_aad(&nonce),
            &raw,
        )?)
    })
}

/// Fetches `count` times with `concurrency` threads (each fetch a fresh connection and, for
/// v2, a fresh challenge); returns the successes, the first error and the elapsed time.
pub fn repeat(
    p: &Params,
    v1: bool,
    count: usize,
    concurrency: usize,
) -> (usize, Option<FetchError>, Duration) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let ok = AtomicUsize::new(0);
    let first_err = std::sync::Mutex::new(None);
    let t0 = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..concurrency.max(1) {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let r = if v1 { fetch_v1(p) } else { fetch_v2(p) };
                    match r {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            if let Ok(mut f) = first_err.lock() {
                                f.get_or_insert(e);
                            }
                        }
                    }
                }
            });
        }
    });
    let err = first_err.into_inner().unwrap_or(None);
    (ok.into_inner(), err, t0.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:4440/Stage/verify").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 4440, "/Stage/verify")
        );
        let u = parse_url("http://[::1]:9").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 9, "/verify")
        );
        assert_eq!(parse_url("http://h").unwrap().port, 80);
        assert!(parse_url("https://h/").is_err());
        assert!(parse_url("ftp://h/").is_err());
        assert!(parse_url("http://h:x/").is_err());
        assert_eq!(credential_source("a"), "secretsmanager,a");
        assert_eq!(credential_source("s,a"), "s,a");
    }
}
