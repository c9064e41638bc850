//! remo_serv 0.6.0 on the wire: base64url, the login messages, ConcatKDF-SHA256, Fernet, and
//! the body framing (begin/end marks, request and token numbers, path hash or status).

use openssl::cipher::CipherRef;
use openssl::cipher_ctx::CipherCtx;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::sign::{Signer, Verifier};

/// The protocol version we speak (reported by `/info`).
pub const VERSION: &str = "0.6.0";
/// ConcatKDF other-info.
const KDF_INFO: &[u8] = b"remo_serv";
/// Fernet time-to-live of body tokens, both directions, in seconds.
pub const TTL: u64 = 10;
/// Tokens dated further in the future than this are refused too.
const MAX_SKEW: u64 = 10;
/// Length of the raw X448 public key.
const X448_LEN: usize = 56;
/// Header length of every body token.
const HEAD_LEN: usize = 6;
/// Length of SHA-384.
pub const HASH_LEN: usize = 48;

// ---- base64url -------------------------------------------------------------------------

/// base64url with `=` padding.
pub fn b64url(data: &[u8]) -> String {
    crate::base64::encode_url(data)
}

/// Decodes base64url, with or without padding, leniently as Python does.
pub fn b64url_decode(s: &[u8]) -> Option<Vec<u8>> {
    crate::base64::decode(s, true).map(|v| v.to_vec())
}

// ---- keys and signatures ----------------------------------------------------------------

/// ConcatKDF (NIST SP 800-56A single step) with SHA-256, one block: SHA-256(1 ‖ Z ‖ info).
pub fn concat_kdf(z: &[u8]) -> [u8; 32] {
    let mut h = openssl::sha::Sha256::new();
    h.update(&1u32.to_be_bytes());
    h.update(z);
    h.update(KDF_INFO);
    h.finish()
}

pub fn sha384(data: &[u8]) -> [u8; HASH_LEN] {
    openssl::sha::sha384(data)
}

/// A fresh X448 key pair (private key, raw public key).
pub fn x448_generate() -> Result<(PKey<Private>, Vec<u8>), openssl::error::ErrorStack> {
    let k = PKey::generate_x448()?;
    let p = k.raw_public_key()?;
    Ok((k, p))
}

/// X448 shared secret with a raw peer public key; None when the key is not 56 valid bytes.
pub fn x448_shared(ours: &PKey<Private>, peer_raw: &[u8]) -> Option<Vec<u8>> {
    if peer_raw.len() != X448_LEN {
        return None;
    }
    let peer = PKey::public_key_from_raw_bytes(peer_raw, Id::X448).ok()?;
    let mut d = openssl::derive::Deriver::new(ours).ok()?;
    d.set_peer(&peer).ok()?;
    let z = d.derive_to_vec().ok()?;
    // An all-zero secret means a small-order peer key.
    (z.iter().any(|&b| b != 0)).then_some(z)
}

/// Signs `msg` with an Ed448 key (plain, no context) or an RSA key (PKCS#1 v1.5, SHA-512).
pub fn sign(key: &PKey<Private>, msg: &[u8]) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    if key.id() == Id::RSA {
        let mut s = Signer::new(MessageDigest::sha512(), key)?;
        s.update(msg)?;
        s.sign_to_vec()
    } else {
        Signer::new_without_digest(key)?.sign_oneshot_to_vec(msg)
    }
}

/// Verifies a signature made by [`sign`]; false on any error.
pub fn verify(key: &PKey<Public>, msg: &[u8], sig: &[u8]) -> bool {
    match key.id() {
        Id::RSA => Verifier::new(MessageDigest::sha512(), key)
            .and_then(|mut v| {
                v.update(msg)?;
                v.verify(sig)
            })
            .unwrap_or(false),
        Id::ED448 => Verifier::new_without_digest(key)
            .and_then(|mut v| v.verify_oneshot(sig, msg))
            .unwrap_or(false),
        _ => false,
    }
}

/// The `/auth` request body: `{"user": ..., "key": ..., "sign": ...}` as Python's json.dumps
/// writes it; the signature covers UTF-8(user) ‖ raw X448 public key.
pub fn auth_body(
    user: &str,
    x448_pub: &[u8],
    key: &PKey<Private>,
) -> Result<String, openssl::error::ErrorStack> {
    let mut msg = user.as_bytes().to_vec();
    msg.extend_from_slice(x448_pub);
    let sig = sign(key, &msg)?;
    let j = serde_json::json!({"user": user, "key": b64url(x448_pub), "sign": b64url(&sig)});
    // json.dumps spacing: ", " and ": ".
    let mut s = String::from("{");
    for (i, k) in ["user", "key", "sign"].iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!("\"{k}\": {}", j[k]));
    }
    s.push('}');
    Ok(s)
}

/// A parsed `/auth` request.
pub struct AuthRequest {
    pub user: String,
    pub key: Vec<u8>,
    pub sign: Vec<u8>,
}

/// Why an `/auth` body was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthParse {
    /// Not JSON, not an object, or a field missing: 400.
    Malformed,
    /// Bad base64 or a key of the wrong length: treated as a failed login (403).
    BadValue,
}

pub fn parse_auth(body: &[u8]) -> Result<AuthRequest, AuthParse> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| AuthParse::Malformed)?;
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .ok_or(AuthParse::Malformed)
    };
    let (user, key, sig) = (field("user")?, field("key")?, field("sign")?);
    let key = b64url_decode(key.as_bytes()).ok_or(AuthParse::BadValue)?;
    let sign = b64url_decode(sig.as_bytes()).ok_or(AuthParse::BadValue)?;
    if key.len() != X448_LEN {
        return Err(AuthParse::BadValue);
    }
    Ok(AuthRequest {
        user: user.to_string(),
        key,
        sign,
    })
}

/// The `/auth` answer: base64url(server ephemeral X448 key) CRLF base64url(Ed448 signature of it).
pub fn auth_answer(
    server_key: &PKey<Private>,
    eph_pub: &[u8],
) -> Result<String, openssl::error::ErrorStack> {
    let sig = sign(server_key, eph_pub)?;
    Ok(format!("{}\r\n{}", b64url(eph_pub), b64url(&sig)))
}

/// Checks an `/auth` answer with the server's public key; returns its X448 public key.
pub fn check_auth_answer(server_pub: &PKey<Public>, body: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    let (k, s) = text.split_once("\r\n").or_else(|| text.split_once('\n'))?;
    let key = b64url_decode(k.as_bytes())?;
    let sig = b64url_decode(s.as_bytes())?;
    (key.len() == X448_LEN && verify(server_pub, &key, &sig)).then_some(key)
}

// ---- Fernet -----------------------------------------------------------------------------

/// A Fernet key: signing key = K[0..16], AES-128-CBC key = K[16..32].
#[derive(Clone)]
pub struct Fernet {
    key: zeroize::Zeroizing<[u8; 32]>,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// AES-128-CBC, fetched from OpenSSL's provider once: OpenSSL 3 looks a built-in cipher up in
/// the provider tables again at every initialisation, a cost paid for each token.
fn aes_128_cbc() -> &'static CipherRef {
    static FETCHED: std::sync::OnceLock<Option<openssl::cipher::Cipher>> =
        std::sync::OnceLock::new();
    match FETCHED.get_or_init(|| openssl::cipher::Cipher::fetch(None, "AES-128-CBC", None).ok()) {
        Some(c) => c,
        None => openssl::cipher::Cipher::aes_128_cbc(),
    }
}

/// HMAC-SHA256 (RFC 2104) over OpenSSL's SHA-256 functions. OpenSSL 3's EVP HMAC looks its
/// algorithm up in the provider tables on every call, a cost paid for each token. The padded
/// key is wiped; what SHA-256 keeps after its final step is only derived from the output.
fn hmac256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut pad = zeroize::Zeroizing::new([0u8; 64]);
    pad[..key.len()].copy_from_slice(key);
    pad.iter_mut().for_each(|b| *b ^= 0x36);
    let mut h = openssl::sha::Sha256::new();
    h.update(&pad[..]);
    h.update(data);
    let inner = h.finish();
    pad.iter_mut().for_each(|b| *b ^= 0x36 ^ 0x5c);
    let mut h = openssl::sha::Sha256::new();
    h.update(&pad[..]);
    h.update(&inner);
    h.finish()
}

impl Fernet {
    pub fn new(key: [u8; 32]) -> Self {
        Fernet {
            key: zeroize::Zeroizing::new(key),
        }
    }

    /// The key as Fernet writes it (base64url, 44 characters). A secret: never log it.
    pub fn key_b64(&self) -> String {
        b64url(&self.key[..])
    }

    /// A token with the current time and a random IV.
    pub fn encrypt(&self, plain: &[u8]) -> String {
        let iv: [u8; 16] = crate::secret::random_bytes(16)
            .try_into()
            .unwrap_or([0u8; 16]);
        self.encrypt_at(plain, now(), &iv)
    }

    /// A token with a given timestamp and IV (for test vectors).
    pub fn encrypt_at(&self, plain: &[u8], ts: u64, iv: &[u8; 16]) -> String {
        let mut out = Vec::with_capacity(57 + plain.len() + 16);
        out.push(0x80);
        out.extend_from_slice(&ts.to_be_bytes());
        out.extend_from_slice(iv);
        // Encryption with a valid 16-byte key and IV does not fail.
        if let Ok(mut cr) = CipherCtx::new() {
            if cr
                .encrypt_init(Some(aes_128_cbc()), Some(&self.key[16..32]), Some(iv))
                .is_ok()
            {
                let _ = cr.cipher_update_vec(plain, &mut out);
                let _ = cr.cipher_final_vec(&mut out);
            }
        }
        let mac = hmac256(&self.key[..16], &out);
        out.extend_from_slice(&mac);
        b64url(&out)
    }

    /// Decrypts a token; with `ttl`, refuses tokens older than ttl seconds or dated more
    /// than [`MAX_SKEW`] seconds ahead. Non-alphabet bytes (CR, LF) are ignored.
    pub fn decrypt(&self, token: &[u8], ttl: Option<u64>) -> Option<Vec<u8>> {
        let raw = b64url_decode(token)?;
        if raw.len() < 57 + 16 || raw[0] != 0x80 || (raw.len() - 57) % 16 != 0 {
            return None;
        }
        let (signed, mac) = raw.split_at(raw.len() - 32);
        let want = hmac256(&self.key[..16], signed);
        if !crate::secret::ct_eq(&want, mac) {
            return None;
        }
        let ts = u64::from_be_bytes(signed[1..9].try_into().ok()?);
        if let Some(ttl) = ttl {
            let n = now();
            if ts > n + MAX_SKEW || ts + ttl < n {
                return None;
            }
        }
        let iv = &signed[9..25];
        let ct = &signed[25..];
        let mut cr = CipherCtx::new().ok()?;
        cr.decrypt_init(Some(aes_128_cbc()), Some(&self.key[16..32]), Some(iv))
            .ok()?;
        let mut buf = Vec::with_capacity(ct.len() + 16);
        cr.cipher_update_vec(ct, &mut buf).ok()?;
        cr.cipher_final_vec(&mut buf).ok()?;
        Some(buf)
    }
}

/// Session key from the X448 shared secret.
pub fn session_fernet(z: &[u8]) -> Fernet {
    Fernet::new(concat_kdf(z))
}

// ---- framing ----------------------------------------------------------------------------

/// The 6-byte header of every body token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub first: bool,
    pub last: bool,
    pub req: i16,
    pub tok: i16,
}

impl Head {
    pub fn encode(&self) -> [u8; HEAD_LEN] {
        let r = self.req.to_be_bytes();
        let t = self.tok.to_be_bytes();
        [
            if self.first { b'B' } else { b'.' },
            if self.last { b'E' } else { b'.' },
            r[0],
            r[1],
            t[0],
            t[1],
        ]
    }

    pub fn parse(plain: &[u8]) -> Option<(Head, &[u8])> {
        if plain.len() < HEAD_LEN {
            return None;
        }
        let h = Head {
            first: plain[0] == b'B',
            last: plain[1] == b'E',
            req: i16::from_be_bytes([plain[2], plain[3]]),
            tok: i16::from_be_bytes([plain[4], plain[5]]),
        };
        Some((h, &plain[HEAD_LEN..]))
    }
}

/// Plaintext of a request token: header, SHA-384(path) in the first one, then payload.
pub fn request_plain(h: Head, path: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = h.encode().to_vec();
    if h.first {
        v.extend_from_slice(&sha384(path.as_bytes()));
    }
    v.extend_from_slice(payload);
    v
}

/// Plaintext of a response token: header, the 3-digit status in the first one, then payload.
pub fn response_plain(h: Head, status: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = h.encode().to_vec();
    if h.first {
        v.extend_from_slice(format!("{:03}", status % 1000).as_bytes());
    }
    v.extend_from_slice(payload);
    v
}

/// Largest single line (one token) we accept in a body: a token for 1 MiB of payload.
pub const MAX_LINE: usize = 1_500_000;

/// Splits a byte stream into CRLF- (or LF-) separated lines of bounded length, empty lines
/// skipped.
#[derive(Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Adds bytes; returns the complete lines, or None when a line is longer than [`MAX_LINE`].
    pub fn push(&mut self, data: &[u8]) -> Option<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut rest = data;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.buf.extend_from_slice(&rest[..i]);
            rest = &rest[i + 1..];
            let mut line = std::mem::take(&mut self.buf);
            while line.last() == Some(&b'\r') {
                line.pop();
            }
            if !line.is_empty() {
                out.push(line);
            }
        }
        self.buf.extend_from_slice(rest);
        (self.buf.len() <= MAX_LINE).then_some(out)
    }

    /// The last line (no newline after it), at the end of the stream.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let mut line = std::mem::take(&mut self.buf);
        while line.last() == Some(&b'\r') {
            line.pop();
        }
        (!line.is_empty()).then_some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        crate::secret::unhex(s.as_bytes()).unwrap().to_vec()
    }

    fn x448_priv(bytes: &[u8]) -> PKey<Private> {
        PKey::private_key_from_raw_bytes(bytes, Id::X448).unwrap()
    }

    fn ed448_priv(bytes: &[u8]) -> PKey<Private> {
        PKey::private_key_from_raw_bytes(bytes, Id::ED448).unwrap()
    }

    const CLIENT_PUB: &str = "bda7365ba1bd9a66f2ef38db6ec5ac5fad5452e990d8b2f88f721fd53363237e775f65205d1d4667d473f0e1f4c57694d2d802e8dff06026";
    const SERVER_PUB: &str = "15bcc15668e4269e486c2f45ff909d99ba94725ec7225a114dfa19c8a3eb3d02b59d25901254afb5752fbeaca3b8bc29f6f101075ffcd881";
    const Z: &str = "b865aea0b942ad54a2e34a1f33521b3811fc459fb13d1e91b50a234daddcfaa1ca7c6da40c2b314782d2fb059128e8e21ba7a5a2a1a664a2";
    const K: &str = "668114b26e416d90cecff69ad3b7ddbaf531aa69e578cadb26d47ee263bc2291";

    #[test]
    fn login_and_key_derivation_vectors() {
        let cpriv = x448_priv(&(1u8..=56).collect::<Vec<_>>());
        let spriv = x448_priv(&(101u8..=156).collect::<Vec<_>>());
        assert_eq!(cpriv.raw_public_key().unwrap(), unhex(CLIENT_PUB));
        assert_eq!(spriv.raw_public_key().unwrap(), unhex(SERVER_PUB));
        let z1 = x448_shared(&spriv, &unhex(CLIENT_PUB)).unwrap();
        let z2 = x448_shared(&cpriv, &unhex(SERVER_PUB)).unwrap();
        assert_eq!(z1, unhex(Z));
        assert_eq!(z2, unhex(Z));
        assert_eq!(concat_kdf(&z1).to_vec(), unhex(K));
        assert_eq!(
            session_fernet(&z1).key_b64(),
            "ZoEUsm5BbZDOz_aa07fduvUxqmnleMrbJtR-4mO8IpE="
        );

        let mut seed: Vec<u8> = (201u8..=255).collect();
        seed.extend_from_slice(&[0, 1]);
        let user = ed448_priv(&seed);
        assert_eq!(
            user.raw_public_key().unwrap(),
            unhex("1badbdcd2f08db24f9a2ea16c34a72a8ecbcddeca3b1d8deffd35e3f01c4e0518259d07ca918ea5feb897dae14956a9ba85d9532947c38ad80")
        );
        let body = auth_body("alice", &unhex(CLIENT_PUB), &user).unwrap();
        let want = r#"{"user": "alice", "key": "vac2W6G9mmby7zjbbsWsX61UUumQ2LL4j3If1TNjI353X2UgXR1GZ9Rz8OH0xXaU0tgC6N_wYCY=", "sign": "zT3FAB1sCFP4ZBZ1MUuexs3FlxZiC3pkuoIdEzJuiG12b_A8pMCuIGeqkvUgAQr7znj6nTmnLhIAFccx7LgaJnBtLUM7wPE7gN13TEQXTUL_bZTfF_Mg-zV0wwrGhh6uBYYZJzDcc17m5l40jGDPUxgA"}"#;
        assert_eq!(body, want);
        assert_eq!(body.len(), 268);
        let parsed = parse_auth(body.as_bytes()).unwrap();
        let upub =
            PKey::public_key_from_raw_bytes(&user.raw_public_key().unwrap(), Id::ED448).unwrap();
        let mut msg = b"alice".to_vec();
        msg.extend_from_slice(&parsed.key);
        assert!(verify(&upub, &msg, &parsed.sign));
        msg[0] = b'A';
        assert!(!verify(&upub, &msg, &parsed.sign));

        let server = ed448_priv(&[7u8; 57]);
        assert_eq!(
            server.raw_public_key().unwrap(),
            unhex("ad0692223bdadb268277bce67d1fe86555acf1535275f07126f5d3485dab4d6af0b7ac976c6d8d60a0d38676ba19969aabd6a793a92b9d7400")
        );
        let ans = auth_answer(&server, &unhex(SERVER_PUB)).unwrap();
        assert_eq!(ans, "FbzBVmjkJp5IbC9F_5CdmbqUcl7HIloRTfoZyKPrPQK1nSWQElSvtXUvvqyjuLwp9vEBB1_82IE=\r\nEcUeAB0ejGHE4msrHyhVPoGBXI26PScP7-zYGQ3zj5h6wsoZTZvSEJxXXM7ipDo2PoshGZre-yCAXsyUFls8b2cCbqOgt8HsA4zIi29wDigrlD3PliJKBpqyQluVCTmbgbxI-05TiVbX-4XVa3OB-xUA");
        assert_eq!(ans.len(), 230);
        let spub =
            PKey::public_key_from_raw_bytes(&server.raw_public_key().unwrap(), Id::ED448).unwrap();
        assert_eq!(
            check_auth_answer(&spub, ans.as_bytes()).unwrap(),
            unhex(SERVER_PUB)
        );
        let mut bad = ans.into_bytes();
        bad[10] ^= 1;
        assert!(check_auth_answer(&spub, &bad).is_none());
    }

    #[test]
    fn request_token_vector_and_framing() {
        assert_eq!(
            sha384(b"/idt").to_vec(),
            unhex("8eb54973f2a773d4bac5df14b3f7503bb4649a6ee0a80677595c04926229d38b585ff592cb5940da486e4a9b0da6fdf2")
        );
        let f = Fernet::new(unhex(K).try_into().unwrap());
        let h = Head {
            first: true,
            last: true,
            req: 1,
            tok: 0,
        };
        let plain = request_plain(h, "/idt", b"ls\n");
        assert_eq!(&plain[..6], b"BE\x00\x01\x00\x00");
        let tok = f.encrypt_at(&plain, 1_700_000_000, &[0u8; 16]);
        assert_eq!(tok, "gAAAAABlU_EAAAAAAAAAAAAAAAAAAAAAAK-doID7sdcHdpm4R39laq1IsGv6P4mrp2odWaIYfmoOBGWfbQBeHUUJyce6Q_etVXA8tTN9nvRsabbisY_uJzWg0WPfurGJ-dlDPox2cuc3Tbc4jwVMTyIZBEem_LXJQA==");
        // No TTL: decrypts; with TTL: far too old.
        assert_eq!(f.decrypt(tok.as_bytes(), None).unwrap(), plain);
        assert!(f.decrypt(tok.as_bytes(), Some(TTL)).is_none());
        // Trailing CRLF is tolerated, a flipped bit is not.
        let mut crlf = tok.clone().into_bytes();
        crlf.extend_from_slice(b"\r\n");
        assert!(f.decrypt(&crlf, None).is_some());
        let mut bad = tok.into_bytes();
        bad[40] = if bad[40] == b'A' { b'B' } else { b'A' };
        assert!(f.decrypt(&bad, None).is_none());
        // An empty BE token is 164 characters.
        let empty = f.encrypt(&request_plain(h, "/get/x", b""));
        assert_eq!(empty.len(), 164);
        let back = f.decrypt(empty.as_bytes(), Some(TTL)).unwrap();
        let (hh, rest) = Head::parse(&back).unwrap();
        assert_eq!(hh, h);
        assert_eq!(rest, sha384(b"/get/x"));
        let r = response_plain(
            Head {
                first: true,
                last: false,
                req: -2,
                tok: 0,
            },
            404,
            b"x",
        );
        assert_eq!(r, b"B.\xff\xfe\x00\x00404x");
        // Future tokens are refused.
        let fut = f.encrypt_at(b"xxxxxx", now() + 60, &[1u8; 16]);
        assert!(f.decrypt(fut.as_bytes(), Some(TTL)).is_none());
    }

    #[test]
    fn fernet_spec_vector() {
        // fernet/spec generate.json, "hello" at 1985-10-26T01:20:00-07:00 with IV 0..15.
        let k = b64url_decode(b"cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=").unwrap();
        let f = Fernet::new(k.try_into().unwrap());
        let iv: [u8; 16] = core::array::from_fn(|i| i as u8);
        let t = f.encrypt_at(b"hello", 499_162_800, &iv);
        assert_eq!(t, "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==");
        assert_eq!(f.decrypt(t.as_bytes(), None).unwrap(), b"hello");
    }

    #[test]
    fn base64_and_lines() {
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8=");
        assert_eq!(b64url_decode(b"-_8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(b64url_decode(b"-_8=\r\n").unwrap(), vec![0xfb, 0xff]);
        assert!(b64url_decode(b"A").is_none());
        assert!(parse_auth(b"[1]").is_err());
        assert_eq!(
            parse_auth(b"{\"user\":\"a\",\"key\":\"!!\",\"sign\":\"\"}").err(),
            Some(AuthParse::BadValue)
        );
        assert_eq!(
            parse_auth(b"{\"user\":\"a\"}").err(),
            Some(AuthParse::Malformed)
        );
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"ab\r\n\r\ncd").unwrap(), vec![b"ab".to_vec()]);
        assert_eq!(s.push(b"e\nf").unwrap(), vec![b"cde".to_vec()]);
        assert_eq!(s.finish().unwrap(), b"f");
        assert!(s.push(&vec![b'a'; MAX_LINE + 1]).is_none());
    }
}

/// Why a command line cannot be split (Python's `shlex` messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShlexError {
    #[error("no closing quotation")]
    NoClosingQuotation,
    #[error("no escaped character")]
    NoEscapedCharacter,
}

/// Splits a command line as Python's `shlex.split` (POSIX mode, no comments) does.
pub fn shlex_split(s: &str) -> Result<Vec<String>, ShlexError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut it = s.chars();
    while let Some(c) = it.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\\' => {
                cur.push(it.next().ok_or(ShlexError::NoEscapedCharacter)?);
                in_word = true;
            }
            '\'' => {
                in_word = true;
                loop {
                    match it.next() {
                        None => return Err(ShlexError::NoClosingQuotation),
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match it.next() {
                        None => return Err(ShlexError::NoClosingQuotation),
                        Some('"') => break,
                        Some('\\') => match it.next() {
                            None => return Err(ShlexError::NoClosingQuotation),
                            Some(c @ ('"' | '\\')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                        },
                        Some(c) => cur.push(c),
                    }
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod shlex_tests {
    use super::shlex_split;

    #[test]
    fn splits_like_python_shlex() {
        let v = |s: &str| shlex_split(s).unwrap();
        assert_eq!(v("echo hi there"), ["echo", "hi", "there"]);
        assert_eq!(
            v(r#"sh -c "echo \"a\" \$x; exit 3""#),
            ["sh", "-c", r#"echo "a" \$x; exit 3"#]
        );
        assert_eq!(v("a'b c'd \"\" e\\ f"), ["ab cd", "", "e f"]);
        assert!(shlex_split("'open").is_err());
        assert!(shlex_split("x\\").is_err());
        assert!(v("  ").is_empty());
    }
}

#[cfg(test)]
mod robustness {
    use super::*;

    /// Random and mutated network input never panics the parsers.
    #[test]
    fn parsers_survive_garbage() {
        let f = Fernet::new([9u8; 32]);
        let good = f.encrypt(&request_plain(
            Head {
                first: true,
                last: true,
                req: 1,
                tok: 0,
            },
            "/x",
            b"payload",
        ));
        let auth = br#"{"user": "a", "key": "AAAA", "sign": "AAAA"}"#;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..5000 {
            let len = (rnd() % 300) as usize;
            let mut v: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
            if i % 3 == 0 {
                // A mutated valid token or login body.
                v = if i % 2 == 0 {
                    good.clone().into_bytes()
                } else {
                    auth.to_vec()
                };
                let n = v.len();
                for _ in 0..(1 + rnd() % 4) {
                    let at = (rnd() as usize) % n;
                    v[at] = rnd() as u8;
                }
                v.truncate(n - (rnd() as usize % 4));
            }
            let _ = f.decrypt(&v, Some(TTL));
            let _ = f.decrypt(&v, None);
            let _ = b64url_decode(&v);
            let _ = Head::parse(&v);
            let _ = parse_auth(&v);
            let mut s = LineSplitter::default();
            let _ = s.push(&v);
            let _ = s.finish();
            let text = String::from_utf8_lossy(&v);
            let _ = shlex_split(&text);
            let _ = crate::keyfile::parse_public(&v);
        }
    }
}
