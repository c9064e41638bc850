//! The s5 wire formats (specs/s5.md §2): the 96-byte token, the v1 answer
//! `base64(([n] ‖ secret ‖ tail) XOR pad)` and our authenticated v2 answer.
//!
//! v2 (both ends keysock; the client asks with `Accept: application/x-s5-v2`):
//! `k_enc = HMAC-SHA256(pad, "keysock s5 v2 encryption")`,
//! `k_mac = HMAC-SHA256(pad, "keysock s5 v2 authentication")`,
//! `ct = AES-256-CTR(k_enc, iv)(secret)` with a fresh random 16-byte `iv`,
//! `tag = HMAC-SHA256(k_mac, "s5v2" ‖ iv ‖ ct)`; body = `base64(iv ‖ ct ‖ tag)`, served as
//! `Content-Type: application/x-s5-v2`. Any secret length; tampering is detected.

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::symm::{Cipher, Crypter, Mode};
use zeroize::Zeroizing;

pub const ID_LEN: usize = 48;
pub const PAD_LEN: usize = 48;
pub const TOKEN_LEN: usize = ID_LEN + PAD_LEN;
/// Longest secret the v1 format carries: one length byte plus the secret in 48 bytes.
pub const V1_MAX: usize = PAD_LEN - 1;
/// Media type of the v2 answer (also what the client puts in `Accept`).
pub const V2_MEDIA: &str = "application/x-s5-v2";
const V2_IV: usize = 16;
const V2_TAG: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("secret is {0} bytes; the s5 v1 answer carries at most 47")]
    TooLongForV1(usize),
    #[error("token is not base64 of 96 bytes")]
    BadToken,
    #[error("answer is not base64")]
    BadBase64,
    #[error("answer is malformed ({0})")]
    Malformed(&'static str),
    #[error("answer failed authentication (tampered with, or not for this token)")]
    BadTag,
    #[error("crypto: {0}")]
    Crypto(String),
}

fn crypto(e: openssl::error::ErrorStack) -> WireError {
    WireError::Crypto(e.to_string())
}

/// Standard base64 with padding, as Python's `b64encode`.
pub fn b64encode(data: &[u8]) -> String {
    crate::base64::encode(data)
}

/// Lenient base64, as Python's `b64decode` (see [`crate::base64::decode`]).
pub fn b64decode(text: &[u8]) -> Result<Zeroizing<Vec<u8>>, WireError> {
    crate::base64::decode(text, false).ok_or(WireError::BadBase64)
}

/// Decodes the text form of a token (128 base64 characters) into its 96 bytes.
pub fn parse_token(text: &str) -> Result<Zeroizing<Vec<u8>>, WireError> {
    let t = b64decode(text.as_bytes()).map_err(|_| WireError::BadToken)?;
    if t.len() != TOKEN_LEN {
        return Err(WireError::BadToken);
    }
    Ok(t)
}

/// The v1 ciphertext (48 bytes): `[n] ‖ secret` XOR pad, then a tail of fresh random bytes,
/// so no pad byte is ever sent in clear (the original sends the raw pad tail, and the whole
/// pad when n = 47).
pub fn seal_v1(secret: &[u8], pad: &[u8]) -> Result<Zeroizing<[u8; PAD_LEN]>, WireError> {
    let n = secret.len();
    if n > V1_MAX {
        return Err(WireError::TooLongForV1(n));
    }
    let mut ct = Zeroizing::new([0u8; PAD_LEN]);
    ct[0] = n as u8 ^ pad[0];
    for i in 0..n {
        ct[1 + i] = secret[i] ^ pad[1 + i];
    }
    let tail = crate::secret::random_bytes(PAD_LEN - 1 - n);
    ct[1 + n..].copy_from_slice(&tail);
    Ok(ct)
}

/// Decrypts a v1 ciphertext: only the first 48 bytes count (the original server sends 96
/// when n = 47). Returns the secret bytes.
pub fn open_v1(ct: &[u8], pad: &[u8]) -> Result<Zeroizing<Vec<u8>>, WireError> {
    let m: Zeroizing<Vec<u8>> = Zeroizing::new(ct.iter().zip(pad).map(|(c, p)| c ^ p).collect());
    let Some(&n) = m.first() else {
        return Err(WireError::Malformed("empty"));
    };
    let n = n as usize;
    if 1 + n > m.len() {
        return Err(WireError::Malformed("length byte beyond the answer"));
    }
    Ok(Zeroizing::new(m[1..1 + n].to_vec()))
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>, WireError> {
    let k = PKey::hmac(key).map_err(crypto)?;
    let mut s = Signer::new(MessageDigest::sha256(), &k).map_err(crypto)?;
    for p in parts {
        s.update(p).map_err(crypto)?;
    }
    Ok(Zeroizing::new(s.sign_to_vec().map_err(crypto)?))
}

type Key = Zeroizing<Vec<u8>>;

/// (k_enc, k_mac) from the pad.
fn v2_keys(pad: &[u8]) -> Result<(Key, Key), WireError> {
    Ok((
        hmac(pad, &[b"keysock s5 v2 encryption"])?,
        hmac(pad, &[b"keysock s5 v2 authentication"])?,
    ))
}

fn ctr(key: &[u8], iv: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>, WireError> {
    let mut c =
        Crypter::new(Cipher::aes_256_ctr(), Mode::Encrypt, key, Some(iv)).map_err(crypto)?;
    let mut out = Zeroizing::new(vec![0u8; data.len() + 16]);
    let mut n = c.update(data, &mut out).map_err(crypto)?;
    n += c.finalize(&mut out[n..]).map_err(crypto)?;
    out.truncate(n);
    Ok(out)
}

/// The v2 answer bytes (`iv ‖ ct ‖ tag`, before base64) for a secret of any length.
pub fn seal_v2(secret: &[u8], pad: &[u8]) -> Result<Vec<u8>, WireError> {
    let (k_enc, k_mac) = v2_keys(pad)?;
    let iv = crate::secret::random_bytes(V2_IV);
    let ct = ctr(&k_enc, &iv, secret)?;
    let tag = hmac(&k_mac, &[b"s5v2", &iv, &ct])?;
    let mut out = Vec::with_capacity(V2_IV + ct.len() + V2_TAG);
    out.extend_from_slice(&iv);
    out.extend_from_slice(&ct);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Checks the tag (in constant time) and decrypts a v2 answer.
pub fn open_v2(body: &[u8], pad: &[u8]) -> Result<Zeroizing<Vec<u8>>, WireError> {
    if body.len() < V2_IV + V2_TAG {
        return Err(WireError::Malformed("v2 answer too short"));
    }
    let (k_enc, k_mac) = v2_keys(pad)?;
    let (iv, rest) = body.split_at(V2_IV);
    let (ct, tag) = rest.split_at(rest.len() - V2_TAG);
    let want = hmac(&k_mac, &[b"s5v2", iv, ct])?;
    if !crate::secret::ct_eq(&want, tag) {
        return Err(WireError::BadTag);
    }
    ctr(&k_enc, iv, ct)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's layout (§2.4): the ciphertext decrypts to `[n] ‖ secret ‖ tail`; the tail
    /// is random in ours, so nothing after the secret equals the pad.
    #[test]
    fn v1_layout_and_no_pad_in_clear() {
        let pad: Vec<u8> = (0..48u8)
            .map(|i| i.wrapping_mul(91).wrapping_add(7))
            .collect();
        for secret in [
            &b""[..],
            b"s",
            b"hunter22",
            "é".repeat(23).as_bytes(),
            &[b'x'; 47],
        ] {
            let ct = seal_v1(secret, &pad).unwrap();
            assert_eq!(ct.len(), 48);
            assert_eq!(ct[0] ^ pad[0], secret.len() as u8);
            assert_eq!(*open_v1(&ct[..], &pad).unwrap(), secret);
            let b = b64encode(&ct[..]);
            assert_eq!(b.len(), 64);
            // A 96-byte answer (the original's n = 47 case) decrypts from its first 48 bytes.
            let mut long = ct.to_vec();
            long.extend_from_slice(&pad);
            assert_eq!(*open_v1(&long, &pad).unwrap(), secret);
        }
        // The 47-byte case leaks nothing: the original appended the pad itself.
        let ct = seal_v1(&[b'x'; 47], &pad).unwrap();
        assert_ne!(&ct[1..], &pad[1..]);
        // The tail is fresh each time.
        let (a, b) = (seal_v1(b"k", &pad).unwrap(), seal_v1(b"k", &pad).unwrap());
        assert_eq!(a[..2], b[..2]);
        assert_ne!(a[2..], b[2..]);
        assert_eq!(
            seal_v1(&[b'x'; 48], &pad).unwrap_err(),
            WireError::TooLongForV1(48)
        );
    }

    /// A known answer computed by hand from §2.4: pad = 0x01 everywhere, secret "ab".
    #[test]
    fn v1_known_answer() {
        let pad = [1u8; 48];
        let ct = seal_v1(b"ab", &pad).unwrap();
        assert_eq!(&ct[..3], &[3, b'a' ^ 1, b'b' ^ 1]);
        let mut orig = [1u8; 48]; // the original: zeros XOR pad in the tail
        orig[..3].copy_from_slice(&[3, b'a' ^ 1, b'b' ^ 1]);
        assert_eq!(*open_v1(&orig, &pad).unwrap(), b"ab");
        assert!(open_v1(&[0x20 ^ 1, 0, 0], &pad).is_err());
    }

    #[test]
    fn v2_any_length_and_tamper_evident() {
        let pad = [7u8; 48];
        for n in [0usize, 1, 47, 48, 1000, 65536] {
            let s: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let body = seal_v2(&s, &pad).unwrap();
            assert_eq!(body.len(), n + 48);
            assert_eq!(*open_v2(&body, &pad).unwrap(), s);
        }
        let mut body = seal_v2(b"secret", &pad).unwrap();
        body[17] ^= 1;
        assert_eq!(open_v2(&body, &pad).unwrap_err(), WireError::BadTag);
        let body = seal_v2(b"secret", &pad).unwrap();
        assert_eq!(open_v2(&body, &[8u8; 48]).unwrap_err(), WireError::BadTag);
        assert!(open_v2(&body[..40], &pad).is_err());
    }
}
