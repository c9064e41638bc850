//! Base64 as the originals' Python peers write and read it: RFC 4648 encoding with padding
//! (standard or URL-safe alphabet), and Python's lenient decoding (`b64decode` and
//! `urlsafe_b64decode` without `validate`): bytes outside the alphabet, such as newlines,
//! are skipped, and decoding stops at the first `=`.

use zeroize::Zeroizing;

/// Standard alphabet (`+/`), padded: Python's `b64encode`.
pub fn encode(data: &[u8]) -> String {
    openssl::base64::encode_block(data)
}

/// URL-safe alphabet (`-_`), padded: Python's `urlsafe_b64encode`.
pub fn encode_url(data: &[u8]) -> String {
    encode(data).replace('+', "-").replace('/', "_")
}

/// Lenient decoding; with `url`, `-` and `_` stand for `+` and `/` (which stay valid, as
/// Python translates before decoding). `None` if a lone character is left over. The result
/// is zeroized when dropped: it is often key material.
pub fn decode(text: &[u8], url: bool) -> Option<Zeroizing<Vec<u8>>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'-' if url => 62,
            b'_' if url => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 3 / 4));
    let (mut acc, mut n) = (0u32, 0u32);
    for &c in text {
        if c == b'=' {
            break;
        }
        let Some(v) = val(c) else { continue };
        acc = (acc << 6) | v;
        n += 1;
        if n == 4 {
            out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
            (acc, n) = (0, 0);
        }
    }
    match n {
        0 => {}
        2 => out.push((acc >> 4) as u8),
        3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_leniency() {
        for n in 0..10 {
            let d: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37)).collect();
            for url in [false, true] {
                let e = if url { encode_url(&d) } else { encode(&d) };
                assert_eq!(*decode(e.as_bytes(), url).unwrap(), d);
                assert_eq!(*decode(format!("{e}\r\n").as_bytes(), url).unwrap(), d);
            }
        }
        assert_eq!(encode(&[0u8; 96]).len(), 128);
        assert_eq!(*decode(b"aGVs\nbG8=", false).unwrap(), b"hello");
        assert!(decode(b"a", false).is_none());
        assert_eq!(encode_url(&[0xfb, 0xff]), "-_8=");
        assert_eq!(*decode(b"-_8", true).unwrap(), vec![0xfb, 0xff]);
        assert_eq!(*decode(b"+/8=", true).unwrap(), vec![0xfb, 0xff]);
        // The standard alphabet skips - and _ as Python's b64decode does: one character left.
        assert!(decode(b"-_8=", false).is_none());
        assert_eq!(*decode(b"-_ODg=", false).unwrap(), b"88");
    }
}
