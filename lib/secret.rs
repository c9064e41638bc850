//! Tokens and keys from the OS CSPRNG, hex encoding, constant-time comparison, and the
//! process-wide protection of secrets in memory ([`no_dumps`]).

/// Makes this process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`): no core dump is written
/// when it crashes, other processes of the same user cannot ptrace it or read its memory,
/// and the files in its `/proc/PID` belong to root. Every binary calls it first thing (through
/// [`crate::cli::parse`]): daemons hold server keys, session keys and tokens, tools hold
/// passwords and tokens. An `execve` of another program resets it, so the commands the
/// daemons run are unaffected.
pub fn no_dumps() {
    // Cannot fail for these arguments; a kernel without it would leave nothing to protect.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
}

/// `n` random bytes from the kernel's CSPRNG (`getrandom(2)`).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(k) => filled += k,
            Err(rustix::io::Errno::INTR) => continue,
            // getrandom(2) without GRND_NONBLOCK only fails on a broken kernel: never hand out
            // a predictable token.
            Err(e) => panic!("getrandom failed: {e}"),
        }
    }
    buf
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The value of one hex digit, either case.
pub fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Hex digits (either case, nothing between them) to bytes, in memory wiped when dropped;
/// `None` on an odd count or anything but a digit.
pub fn unhex(digits: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    if digits.len() % 2 != 0 {
        return None;
    }
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(digits.len() / 2));
    for p in digits.chunks(2) {
        out.push(hex_digit(p[0])? << 4 | hex_digit(p[1])?);
    }
    Some(out)
}

/// A lowercase hex token of `n` random bytes (`2n` characters).
pub fn hex_token(n: usize) -> String {
    hex(&random_bytes(n))
}

/// Compares two secrets in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

pub fn sha1_hex(data: &[u8]) -> String {
    hex(&openssl::sha::sha1(data))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&openssl::sha::sha256(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_hex_and_distinct() {
        let (a, b) = (hex_token(20), hex_token(20));
        assert_eq!(a.len(), 40);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn digests_match_known_vectors() {
        // sha1("r1") as the spec shows it in a store dump.
        assert_eq!(sha1_hex(b"r1"), "5573e39b6600496d40f493d00ec7658479a19607");
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn unhex_reverses_hex_in_either_case() {
        assert_eq!(*unhex(b"00aBff").unwrap(), [0, 0xab, 0xff]);
        assert_eq!(*unhex(hex(b"key").as_bytes()).unwrap(), *b"key");
        assert_eq!(unhex(b"abc"), None);
        assert_eq!(unhex(b"0g"), None);
        assert_eq!(unhex(b"0 "), None);
    }

    #[test]
    fn ct_eq_compares() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }
}

extern "C" {
    // libcrypto's, linked through openssl-sys (which does not declare it).
    fn CRYPTO_secure_malloc_init(size: libc::size_t, minsize: libc::size_t) -> libc::c_int;
}

/// How [`secure_key_heap`] went.
#[derive(Debug, PartialEq, Eq)]
pub enum SecureHeap {
    /// Locked in memory (`mlock`), fenced by guard pages, left out of core dumps.
    Locked,
    /// Made, but the kernel refused the lock or the guard pages (`RLIMIT_MEMLOCK`).
    Unprotected,
    Failed,
}

/// Private keys that OpenSSL makes or loads from now on (server keys, ephemeral X448 keys)
/// live in its secure heap of `size` bytes: never swapped out, never in a core dump, zeroed
/// when freed. Call it before loading any key.
pub fn secure_key_heap(size: usize) -> SecureHeap {
    openssl::init();
    // SAFETY: a plain library call with sizes; OpenSSL allows it once, before any secure
    // allocation, which is where our callers are (at start, before loading keys).
    match unsafe { CRYPTO_secure_malloc_init(size, 16) } {
        1 => SecureHeap::Locked,
        2 => SecureHeap::Unprotected,
        _ => SecureHeap::Failed,
    }
}
