//! The auto-id wire formats (specs/auto-id.md §2), both ends.
//!
//! v1, the original's: `{"data": D, "payload": P}` where D = hex(base64(RSA-OAEP-SHA1(passphrase)))
//! and P = hex(base64(IV ‖ AES-256-CBC(SHA-256(passphrase), PKCS#7(inner JSON)))); the answer
//! `{"message": M}` carries the secret the same way under the same key.
//!
//! v2, ours (autoidd(8), "PROTOCOL v2"): `POST /v2/challenge` hands out a single-use nonce, the
//! server's X25519 share and disjoint byte ranges of the entropy file chosen by the server;
//! `POST /v2/verify` carries a fresh 32-byte key K wrapped with RSA-OAEP-SHA256, the client's
//! X25519 share and an AES-256-GCM box holding the secret id and an HMAC-SHA256 over the nonce,
//! the id and the chosen snippets. Both directions use keys derived from K and the X25519
//! shared secret (HKDF-SHA256 with the nonce as salt), so recorded sessions stay closed even if
//! the RSA key leaks later, and the answer is authenticated.

use openssl::encrypt::{Decrypter, Encrypter};
use openssl::hash::MessageDigest;
use openssl::pkey::{HasPrivate, HasPublic, PKey, PKeyRef, Private};
use openssl::rsa::Padding;
use openssl::symm::{Cipher, Crypter, Mode};
use zeroize::Zeroizing;

use crate::secret::{hex, random_bytes};

/// The original client's constants: 4 snippets, offsets in [0, 2048).
pub const MAX_SNIPPETS: usize = 4;
pub const MAX_SIZE: i64 = 2048;
/// Length of the original's passphrase (characters of `[A-Za-z0-9]`).
const PASSPHRASE_LEN: usize = 16;
const ALNUM: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("not JSON of the expected shape: {0}")]
    Json(String),
    #[error("{0} is not hex")]
    Hex(&'static str),
    #[error("{0} is not base64")]
    Base64(&'static str),
    #[error("cannot unwrap the key (RSA-OAEP failed: wrong server key?)")]
    Unwrap,
    #[error("the passphrase is not UTF-8")]
    Passphrase,
    #[error("{0} is too short")]
    Short(&'static str),
    #[error("bad padding (wrong key or corrupted data)")]
    Padding,
    #[error("authentication failed (wrong key or tampered data)")]
    Auth,
    #[error("the payload is not UTF-8 JSON")]
    Inner,
    #[error("bad intervals: {0}")]
    Intervals(String),
    #[error("crypto: {0}")]
    Crypto(String),
}

fn crypto(e: openssl::error::ErrorStack) -> WireError {
    WireError::Crypto(e.to_string())
}

/// Lowercase hex of the standard base64 of `raw` (the original's encoding of every binary value).
pub fn hexb64_encode(raw: &[u8]) -> String {
    hex(openssl::base64::encode_block(raw).as_bytes())
}

/// Reverses [`hexb64_encode`]: hex (either case, as Python's `bytes.fromhex`), then base64
/// (lenient, as Python's `b64decode`).
pub fn hexb64_decode(text: &str, what: &'static str) -> Result<Zeroizing<Vec<u8>>, WireError> {
    let b64 = unhex(text).ok_or(WireError::Hex(what))?;
    if !b64
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'\n' | b'\r'))
    {
        return Err(WireError::Base64(what));
    }
    crate::base64::decode(&b64, false).ok_or(WireError::Base64(what))
}

/// Hex to bytes, ignoring ASCII whitespace between pairs; None on anything else.
pub fn unhex(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let digits: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    crate::secret::unhex(&digits)
}

// ---------------------------------------------------------------- intervals and hash (v1)

/// One `a,b,l` tuple of the original, any integers (the server validates separately).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub a: i64,
    pub b: i64,
    pub l: i64,
}

impl Tuple {
    /// `[lo, hi)` before Python's slice clamping.
    pub fn bounds(&self) -> (i64, i64) {
        let base = MAX_SIZE.saturating_mul(self.l);
        (
            self.a.min(self.b).saturating_add(base),
            self.a.max(self.b).saturating_add(base),
        )
    }
}

/// Parses `a,b,l|a,b,l|...` (decimal integers, no spaces required; any count).
pub fn parse_intervals(s: &str) -> Result<Vec<Tuple>, WireError> {
    if s.len() > 4096 {
        return Err(WireError::Intervals("too long".into()));
    }
    s.split('|')
        .map(|t| {
            let n: Vec<i64> = t
                .split(',')
                .map(|x| x.trim().parse::<i64>())
                .collect::<Result<_, _>>()
                .map_err(|_| WireError::Intervals(format!("{t:?} is not a,b,l")))?;
            match n[..] {
                [a, b, l] => Ok(Tuple { a, b, l }),
                _ => Err(WireError::Intervals(format!("{t:?} is not a,b,l"))),
            }
        })
        .collect()
}

pub fn format_intervals(t: &[Tuple]) -> String {
    t.iter()
        .map(|t| format!("{},{},{}", t.a, t.b, t.l))
        .collect::<Vec<_>>()
        .join("|")
}

/// Python's `s[lo:hi]` on a sequence of length `len`: the byte range it selects.
pub fn py_slice(lo: i64, hi: i64, len: usize) -> std::ops::Range<usize> {
    let n = len as i64;
    let fix = |i: i64| {
        if i < 0 {
            (i + n).max(0)
        } else {
            i.min(n)
        }
    };
    let (lo, hi) = (fix(lo), fix(hi));
    if lo >= hi {
        0..0
    } else {
        lo as usize..hi as usize
    }
}

/// The original's hash: lowercase hex SHA-256 of the snippets in tuple order, with Python's
/// slicing rules (so the spec's vectors, bypass ones included, come out as the original's).
pub fn hash_v1(file: &[u8], tuples: &[Tuple]) -> String {
    let mut h = openssl::sha::Sha256::new();
    for t in tuples {
        let (lo, hi) = t.bounds();
        h.update(&file[py_slice(lo, hi, file.len())]);
    }
    hex(&h.finish())
}

/// Intervals as the original client draws them, from the OS CSPRNG: 4 tuples, each of a, b, l
/// in [0, 2047], a != b.
pub fn random_intervals() -> Vec<Tuple> {
    (0..MAX_SNIPPETS)
        .map(|_| loop {
            let r = random_bytes(6);
            let v = |i: usize| (u16::from_le_bytes([r[i], r[i + 1]]) % MAX_SIZE as u16) as i64;
            let t = Tuple {
                a: v(0),
                b: v(2),
                l: v(4),
            };
            if t.a != t.b {
                break t;
            }
        })
        .collect()
}

// ---------------------------------------------------------------- v1 envelope

/// The AES-256 key of v1: SHA-256 of the passphrase's UTF-8 bytes.
pub fn v1_key(passphrase: &[u8]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(openssl::sha::sha256(passphrase))
}

/// A 16-character `[A-Za-z0-9]` passphrase from the OS CSPRNG (rejection sampling, no bias).
pub fn random_passphrase() -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(PASSPHRASE_LEN));
    while s.len() < PASSPHRASE_LEN {
        for b in random_bytes(32) {
            if (b as usize) < 62 * 4 && s.len() < PASSPHRASE_LEN {
                s.push(ALNUM[b as usize % 62] as char);
            }
        }
    }
    s
}

/// `IV ‖ AES-256-CBC(key, PKCS#7(plain))`, padding over bytes.
pub fn cbc_seal(key: &[u8; 32], iv: &[u8; 16], plain: &[u8]) -> Result<Vec<u8>, WireError> {
    let ct = openssl::symm::encrypt(Cipher::aes_256_cbc(), key, Some(iv), plain).map_err(crypto)?;
    let mut out = iv.to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens `IV ‖ ciphertext`; the PKCS#7 padding is checked (the original dropped it unchecked).
pub fn cbc_open(key: &[u8; 32], data: &[u8]) -> Result<Zeroizing<Vec<u8>>, WireError> {
    if data.len() < 32 || data.len() % 16 != 0 {
        return Err(WireError::Short("the AES payload (IV and whole blocks)"));
    }
    let (iv, ct) = data.split_at(16);
    let mut c =
        Crypter::new(Cipher::aes_256_cbc(), Mode::Decrypt, key, Some(iv)).map_err(crypto)?;
    let mut out = Zeroizing::new(vec![0u8; ct.len() + 16]);
    let n = c.update(ct, &mut out).map_err(|_| WireError::Padding)?;
    let m = c.finalize(&mut out[n..]).map_err(|_| WireError::Padding)?;
    out.truncate(n + m);
    Ok(out)
}

/// RSA-OAEP encryption; `sha256` false = SHA-1/MGF1-SHA-1 (v1), true = SHA-256 (v2).
pub fn oaep_wrap<T: HasPublic>(
    key: &PKeyRef<T>,
    data: &[u8],
    sha256: bool,
) -> Result<Vec<u8>, WireError> {
    let mut e = Encrypter::new(key).map_err(crypto)?;
    e.set_rsa_padding(Padding::PKCS1_OAEP).map_err(crypto)?;
    let md = if sha256 {
        MessageDigest::sha256()
    } else {
        MessageDigest::sha1()
    };
    e.set_rsa_oaep_md(md).map_err(crypto)?;
    e.set_rsa_mgf1_md(md).map_err(crypto)?;
    let mut out = vec![0u8; e.encrypt_len(data).map_err(crypto)?];
    let n = e.encrypt(data, &mut out).map_err(crypto)?;
    out.truncate(n);
    Ok(out)
}

pub fn oaep_unwrap<T: HasPrivate>(
    key: &PKeyRef<T>,
    data: &[u8],
    sha256: bool,
) -> Result<Zeroizing<Vec<u8>>, WireError> {
    let mut d = Decrypter::new(key).map_err(crypto)?;
    d.set_rsa_padding(Padding::PKCS1_OAEP).map_err(crypto)?;
    let md = if sha256 {
        MessageDigest::sha256()
    } else {
        MessageDigest::sha1()
    };
    d.set_rsa_oaep_md(md).map_err(crypto)?;
    d.set_rsa_mgf1_md(md).map_err(crypto)?;
    let mut out = Zeroizing::new(vec![0u8; d.decrypt_len(data).map_err(crypto)?]);
    let n = d.decrypt(data, &mut out).map_err(|_| WireError::Unwrap)?;
    out.truncate(n);
    Ok(out)
}

/// The inner plaintext of a v1 request.
#[derive(Debug, serde::Deserialize)]
pub struct Inner {
    pub hashval: String,
    pub intervals: String,
    pub credential_source: String,
}

impl Inner {
    /// `json.dumps` of the three keys in the original's order.
    pub fn to_json(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{{\"hashval\": {}, \"intervals\": {}, \"credential_source\": {}}}",
            crate::pyjson::dumps_str(&self.hashval),
            crate::pyjson::dumps_str(&self.intervals),
            crate::pyjson::dumps_str(&self.credential_source)
        ))
    }
}

#[derive(Debug, serde::Deserialize)]
struct Outer {
    data: String,
    payload: String,
}

/// A v1 request body as the original client sends it.
pub fn v1_request<T: HasPublic>(
    server: &PKeyRef<T>,
    passphrase: &str,
    inner: &Inner,
) -> Result<String, WireError> {
    let d = oaep_wrap(server, passphrase.as_bytes(), false)?;
    let key = v1_key(passphrase.as_bytes());
    let iv: [u8; 16] = random_array();
    let p = cbc_seal(&key, &iv, inner.to_json().as_bytes())?;
    Ok(format!(
        "{{\"data\": \"{}\", \"payload\": \"{}\"}}",
        hexb64_encode(&d),
        hexb64_encode(&p)
    ))
}

/// What the server gets out of a v1 request: the AES key and the inner fields.
pub struct Opened {
    pub key: Zeroizing<[u8; 32]>,
    pub inner: Inner,
}

pub fn v1_open_request<T: HasPrivate>(
    server: &PKeyRef<T>,
    body: &[u8],
) -> Result<Opened, WireError> {
    let o: Outer = serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
    let wrapped = hexb64_decode(&o.data, "data")?;
    let pass = oaep_unwrap(server, &wrapped, false)?;
    std::str::from_utf8(&pass).map_err(|_| WireError::Passphrase)?;
    let key = v1_key(&pass);
    let raw = hexb64_decode(&o.payload, "payload")?;
    let plain = cbc_open(&key, &raw)?;
    let inner: Inner = serde_json::from_slice(&plain).map_err(|_| WireError::Inner)?;
    Ok(Opened { key, inner })
}

/// The 201 body: `{"message": hex(base64(IV ‖ AES-256-CBC(key, PKCS#7(secret))))}`.
pub fn v1_answer(key: &[u8; 32], iv: &[u8; 16], secret: &[u8]) -> Result<String, WireError> {
    let m = cbc_seal(key, iv, secret)?;
    Ok(format!("{{\"message\": \"{}\"}}", hexb64_encode(&m)))
}

#[derive(Debug, serde::Deserialize)]
struct Message {
    message: String,
}

pub fn v1_open_answer(key: &[u8; 32], body: &[u8]) -> Result<Zeroizing<Vec<u8>>, WireError> {
    let m: Message = serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
    let raw = hexb64_decode(&m.message, "message")?;
    cbc_open(key, &raw)
}

pub fn random_array<const N: usize>() -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&random_bytes(N));
    a
}

// ---------------------------------------------------------------- v2

pub const V2_NONCE_LEN: usize = 32;
const V2_REQ_AAD: &[u8] = b"autoid-v2 request";
const V2_RESP_AAD: &[u8] = b"autoid-v2 response";

/// `POST /v2/challenge` answer.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Challenge {
    pub version: u32,
    /// hex, 32 bytes
    pub nonce: String,
    /// `lo-hi|lo-hi|...`: byte ranges `[lo, hi)` of the entropy file, disjoint.
    pub ranges: String,
    /// hex of the server's ephemeral X25519 public key
    pub server_share: String,
    /// seconds the challenge stays valid
    pub expires_in: u64,
}

/// `POST /v2/verify` body.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    pub nonce: String,
    /// base64 of RSA-OAEP-SHA256(K), K 32 random bytes
    pub key: String,
    /// hex of the client's ephemeral X25519 public key
    pub client_share: String,
    /// base64 of IV(12) ‖ AES-256-GCM ciphertext ‖ tag(16) of [`Proof`] as JSON
    #[serde(rename = "box")]
    pub sealed: String,
}

/// Inside the request box.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Proof {
    pub secret_id: String,
    /// hex HMAC-SHA256, see [`v2_proof`]
    pub proof: String,
}

/// The 200 answer of `/v2/verify`: `{"box": base64(IV ‖ GCM ciphertext ‖ tag)}` of the secret.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Sealed {
    #[serde(rename = "box")]
    pub sealed: String,
}

/// Error answers of v2: `{"error": "why"}`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct V2Error {
    pub error: String,
}

pub fn parse_ranges(s: &str) -> Result<Vec<(usize, usize)>, WireError> {
    if s.len() > 4096 {
        return Err(WireError::Intervals("too long".into()));
    }
    s.split('|')
        .map(|r| {
            let (a, b) = r
                .split_once('-')
                .ok_or_else(|| WireError::Intervals(format!("{r:?} is not lo-hi")))?;
            match (a.parse::<usize>(), b.parse::<usize>()) {
                (Ok(lo), Ok(hi)) if lo < hi => Ok((lo, hi)),
                _ => Err(WireError::Intervals(format!("{r:?} is not lo-hi"))),
            }
        })
        .collect()
}

pub fn format_ranges(r: &[(usize, usize)]) -> String {
    r.iter()
        .map(|(a, b)| format!("{a}-{b}"))
        .collect::<Vec<_>>()
        .join("|")
}

/// The proof of possession: HMAC-SHA256 keyed with the nonce over a domain tag, the secret
/// id and the snippets (each length-prefixed). None if a range falls outside `file`.
pub fn v2_proof(
    file: &[u8],
    nonce: &[u8],
    secret_id: &str,
    ranges: &[(usize, usize)],
) -> Option<Zeroizing<Vec<u8>>> {
    let key = PKey::hmac(nonce).ok()?;
    let mut s = openssl::sign::Signer::new(MessageDigest::sha256(), &key).ok()?;
    s.update(b"autoid-v2 proof\0").ok()?;
    s.update(&(secret_id.len() as u64).to_be_bytes()).ok()?;
    s.update(secret_id.as_bytes()).ok()?;
    for &(lo, hi) in ranges {
        let snip = file.get(lo..hi)?;
        s.update(&(snip.len() as u64).to_be_bytes()).ok()?;
        s.update(snip).ok()?;
    }
    s.sign_to_vec().ok().map(Zeroizing::new)
}

fn hmac(key: &[u8], data: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>, WireError> {
    let k = PKey::hmac(key).map_err(crypto)?;
    let mut s = openssl::sign::Signer::new(MessageDigest::sha256(), &k).map_err(crypto)?;
    for d in data {
        s.update(d).map_err(crypto)?;
    }
    s.sign_to_vec().map(Zeroizing::new).map_err(crypto)
}

/// Request and response keys: HKDF-SHA256(salt = nonce, ikm = K ‖ X25519 shared secret),
/// one block each with distinct labels.
pub struct V2Keys {
    pub request: Zeroizing<Vec<u8>>,
    pub response: Zeroizing<Vec<u8>>,
}

pub fn v2_keys(nonce: &[u8], k: &[u8], shared: &[u8]) -> Result<V2Keys, WireError> {
    let prk = hmac(nonce, &[k, shared])?;
    Ok(V2Keys {
        request: hmac(&prk, &[b"autoid-v2 request key", &[1]])?,
        response: hmac(&prk, &[b"autoid-v2 response key", &[1]])?,
    })
}

/// X25519: a fresh key pair.
pub fn x25519_generate() -> Result<PKey<Private>, WireError> {
    PKey::generate_x25519().map_err(crypto)
}

pub fn x25519_public(k: &PKey<Private>) -> Result<Vec<u8>, WireError> {
    k.raw_public_key().map_err(crypto)
}

pub fn x25519_shared(mine: &PKey<Private>, theirs: &[u8]) -> Result<Zeroizing<Vec<u8>>, WireError> {
    if theirs.len() != 32 {
        return Err(WireError::Short("the X25519 share"));
    }
    let peer = PKey::public_key_from_raw_bytes(theirs, openssl::pkey::Id::X25519)
        .map_err(|_| WireError::Auth)?;
    let mut d = openssl::derive::Deriver::new(mine).map_err(crypto)?;
    d.set_peer(&peer).map_err(crypto)?;
    let s = d
        .derive_to_vec()
        .map(Zeroizing::new)
        .map_err(|_| WireError::Auth)?;
    // An all-zero result means a low-order point was sent.
    if s.iter().all(|b| *b == 0) {
        return Err(WireError::Auth);
    }
    Ok(s)
}

pub fn gcm_seal(key: &[u8], aad: &[&[u8]], plain: &[u8]) -> Result<Vec<u8>, WireError> {
    let iv: [u8; 12] = random_array();
    let mut tag = [0u8; 16];
    let ct = openssl::symm::encrypt_aead(
        Cipher::aes_256_gcm(),
        key,
        Some(&iv),
        &aad.concat(),
        plain,
        &mut tag,
    )
    .map_err(crypto)?;
    let mut out = iv.to_vec();
    out.extend_from_slice(&ct);
    out.extend_from_slice(&tag);
    Ok(out)
}

pub fn gcm_open(key: &[u8], aad: &[&[u8]], data: &[u8]) -> Result<Zeroizing<Vec<u8>>, WireError> {
    if data.len() < 28 {
        return Err(WireError::Short("the box"));
    }
    let (iv, rest) = data.split_at(12);
    let (ct, tag) = rest.split_at(rest.len() - 16);
    openssl::symm::decrypt_aead(Cipher::aes_256_gcm(), key, Some(iv), &aad.concat(), ct, tag)
        .map(Zeroizing::new)
        .map_err(|_| WireError::Auth)
}

pub fn request_aad<'a>(
    nonce: &'a [u8],
    server_share: &'a [u8],
    client_share: &'a [u8],
) -> [&'a [u8]; 4] {
    [V2_REQ_AAD, nonce, server_share, client_share]
}

pub fn response_aad(nonce: &[u8]) -> [&[u8]; 2] {
    [V2_RESP_AAD, nonce]
}

pub fn b64(data: &[u8]) -> String {
    crate::base64::encode(data)
}

pub fn unb64(text: &str, what: &'static str) -> Result<Zeroizing<Vec<u8>>, WireError> {
    openssl::base64::decode_block(text)
        .map(Zeroizing::new)
        .map_err(|_| WireError::Base64(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's synthetic entropy file (§6.1).
    fn synthetic() -> Vec<u8> {
        let mut f = Vec::with_capacity(2048 * 2049);
        for l in 0..2048 {
            for j in 0..2048 {
                f.push(ALNUM[(l + j) % 62]);
            }
            f.push(b'\n');
        }
        f
    }

    #[test]
    fn spec_interval_vectors() {
        let f = synthetic();
        assert_eq!(f.len(), 4_196_352);
        let cases = [
            (
                "1310,1438,1583|1507,17,1587|708,897,387|280,1522,624",
                "3c443f66a5154f9524a4e13dc71a7cfa276557b795921ba48d433252d78cb076",
            ),
            (
                "2047,0,2047",
                "e531709f3732c79bf6bf6489d964c45fcf3e6dd35d7ffec104b64c4f29d2331e",
            ),
            (
                "0,0,0",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
        ];
        for (i, h) in cases {
            let t = parse_intervals(i).unwrap();
            assert_eq!(format_intervals(&t), i);
            assert_eq!(hash_v1(&f, &t), h, "{i}");
        }
        // The bypass requests of §6.4 hash as the spec says (the server refuses them elsewhere).
        let empty = crate::secret::sha256_hex(b"");
        assert_eq!(
            hash_v1(&f, &parse_intervals("9999999,9999999,0").unwrap()),
            empty
        );
        let lf = parse_intervals("2048,2049,0|2048,2049,0|2048,2049,0|2048,2049,0").unwrap();
        assert_eq!(hash_v1(&f, &lf), crate::secret::sha256_hex(b"\n\n\n\n"));
        // Python slicing: negative offsets count from the end, reversed bounds are empty.
        assert_eq!(py_slice(-3, -1, 10), 7..9);
        assert_eq!(py_slice(5, 2, 10), 0..0);
        assert_eq!(py_slice(8, 99, 10), 8..10);
        assert!(parse_intervals("1,2").is_err());
        assert!(parse_intervals("1,2,x").is_err());
        assert!(parse_intervals("").is_err());
    }

    #[test]
    fn spec_aes_vector_byte_for_byte() {
        let key = v1_key(b"0123456789abcdef");
        assert_eq!(
            hex(&key[..]),
            "9f9f5111f7b27a781f1f1ddde5ebc2dd2b796bfc7365c9c28b548e564176929f"
        );
        let body = v1_answer(&key, &[0u8; 16], b"test-secret-value1,test-secret-value2").unwrap();
        assert_eq!(body, "{\"message\": \"414141414141414141414141414141414141414141485645384d2f65495930384c6753682b7636764e553938316c6c71694235637271704a6d31545437584e4473722b6e7342766330335245484630454f47427632673d3d\"}");
        let back = v1_open_answer(&key, body.as_bytes()).unwrap();
        assert_eq!(&back[..], b"test-secret-value1,test-secret-value2");
        // Uppercase hex and the original's byte sizes.
        assert_eq!(
            &v1_open_answer(
                &key,
                body.to_uppercase().replace("MESSAGE", "message").as_bytes()
            )
            .unwrap()[..],
            b"test-secret-value1,test-secret-value2"
        );
    }

    #[test]
    fn spec_sizes_and_round_trip() {
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let key = PKey::from_rsa(rsa).unwrap();
        let inner = Inner {
            hashval: "3b14e014".repeat(8),
            intervals: "1310,1438,1583|1507,17,1587|708,897,387|280,1522,624".into(),
            credential_source: "secretsmanager,test-secret".into(),
        };
        assert_eq!(inner.to_json().len(), 199);
        let pass = random_passphrase();
        assert_eq!(pass.len(), 16);
        assert!(pass.bytes().all(|c| c.is_ascii_alphanumeric()));
        let body = v1_request(&key, &pass, &inner).unwrap();
        assert_eq!(body.len(), 1315, "the spec's observed request size");
        let o = v1_open_request(&key, body.as_bytes()).unwrap();
        assert_eq!(o.inner.credential_source, "secretsmanager,test-secret");
        assert_eq!(&o.key[..], &v1_key(pass.as_bytes())[..]);
        // Bad padding and a wrong key are clear errors.
        let other = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        assert!(matches!(
            v1_open_request(&other, body.as_bytes()),
            Err(WireError::Unwrap)
        ));
        let k = v1_key(b"k");
        let mut bad = cbc_seal(&k, &[0; 16], b"hello").unwrap();
        let last = bad.len() - 1;
        bad[last] ^= 0x55;
        assert_eq!(cbc_open(&k, &bad).unwrap_err(), WireError::Padding);
        assert!(matches!(
            hexb64_decode("zz", "data"),
            Err(WireError::Hex(_))
        ));
        assert!(matches!(
            hexb64_decode("2a2a", "data"),
            Err(WireError::Base64(_))
        ));
    }

    #[test]
    fn v2_boxes_and_proofs() {
        let f = synthetic();
        let n = [7u8; 32];
        let r = vec![(0, 10), (100, 2000)];
        let p = v2_proof(&f, &n, "id", &r).unwrap();
        assert_ne!(p, v2_proof(&f, &[8u8; 32], "id", &r).unwrap());
        assert_ne!(p, v2_proof(&f, &n, "id2", &r).unwrap());
        assert!(v2_proof(&f, &n, "id", &[(0, f.len() + 1)]).is_none());
        let (a, b) = (x25519_generate().unwrap(), x25519_generate().unwrap());
        let s1 = x25519_shared(&a, &x25519_public(&b).unwrap()).unwrap();
        let s2 = x25519_shared(&b, &x25519_public(&a).unwrap()).unwrap();
        assert_eq!(s1, s2);
        assert!(x25519_shared(&a, &[0u8; 32]).is_err());
        let k = v2_keys(&n, b"k", &s1).unwrap();
        let sealed = gcm_seal(&k.request, &response_aad(&n), b"x").unwrap();
        assert_eq!(
            &gcm_open(&k.request, &response_aad(&n), &sealed).unwrap()[..],
            b"x"
        );
        assert!(gcm_open(&k.response, &response_aad(&n), &sealed).is_err());
        assert!(gcm_open(&k.request, &response_aad(&[0; 32]), &sealed).is_err());
        assert_eq!(parse_ranges("1-5|7-9").unwrap(), vec![(1, 5), (7, 9)]);
        assert!(parse_ranges("5-1").is_err());
    }
}
