//! auto-id v1 envelopes (lib/autoid/wire.rs): the `{"data", "payload"}` request autoidd opens
//! with its RSA key, the intervals inside, and the `{"message"}` answer the client opens.
//! Envelopes and answers we seal open to what they carry.
#![no_main]

use std::sync::OnceLock;

use keysock::autoid::wire::{self as w, Inner, Tuple};
use libfuzzer_sys::fuzz_target;
use openssl::pkey::{PKey, Private};

/// 1024 bits: the padding and parsing are the same as with autoidd's 2048-bit keys, at a
/// fraction of the cost per run.
fn key() -> &'static PKey<Private> {
    static K: OnceLock<PKey<Private>> = OnceLock::new();
    K.get_or_init(|| PKey::from_rsa(openssl::rsa::Rsa::generate(1024).unwrap()).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let aes = w::v1_key(b"0123456789abcdef");
    // Server: a request body, then what it does with the inner fields.
    if let Ok(o) = w::v1_open_request(key(), data) {
        if let Ok(t) = w::parse_intervals(&o.inner.intervals) {
            let _ = w::hash_v1(data, &t);
        }
        let _ = keysock::autoid::map_credential_source(&o.inner.credential_source);
    }
    // Client: an answer.
    let _ = w::v1_open_answer(&aes, data);
    let _ = w::cbc_open(&aes, data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(raw) = w::hexb64_decode(text, "fuzz") {
        assert_eq!(
            *w::hexb64_decode(&w::hexb64_encode(&raw), "again").unwrap(),
            *raw
        );
    }
    if let Some(raw) = w::unhex(text) {
        assert_eq!(*w::unhex(&keysock::secret::hex(&raw)).unwrap(), *raw);
    }
    // Intervals: format(parse(s)) parses to the same tuples; hashing never panics, whatever
    // the numbers (Python slicing of a short file).
    if let Ok(t) = w::parse_intervals(text) {
        assert_eq!(w::parse_intervals(&w::format_intervals(&t)).unwrap(), t);
        let h = w::hash_v1(b"0123456789", &t);
        assert_eq!(h.len(), 64);
        for x in &t {
            let (lo, hi) = x.bounds();
            let r = w::py_slice(lo, hi, 10);
            assert!(r.start <= r.end && r.end <= 10);
        }
    }
    // What autoidd checks before hashing and opening a secret file: at most 4 disjoint
    // snippets inside the file, and a secret id that names a file in the store directory.
    if let Ok(t) = w::parse_intervals(text) {
        if keysock::autoid::check_v1_intervals(&t, 5000, 1).is_ok() {
            assert_eq!(t.len(), 4);
            for x in &t {
                let (lo, hi) = x.bounds();
                assert!(0 <= lo && lo < hi && hi <= 5000);
            }
        }
    }
    if let Ok(id) = keysock::autoid::map_credential_source(text) {
        if keysock::autoid::valid_id(id) {
            assert!(!id.contains('/') && !id.starts_with('.') && !id.contains('\0'));
        }
    }
    // Round trip: the input as the inner fields and as the secret of an answer.
    let mut f = text.splitn(3, '\0');
    let inner = Inner {
        hashval: f.next().unwrap_or("").into(),
        intervals: f.next().unwrap_or("").into(),
        credential_source: f.next().unwrap_or("").into(),
    };
    let pass = w::random_passphrase();
    let body = w::v1_request(key(), &pass, &inner).unwrap();
    let o = w::v1_open_request(key(), body.as_bytes()).expect("our own request");
    assert_eq!(o.inner.hashval, inner.hashval);
    assert_eq!(o.inner.intervals, inner.intervals);
    assert_eq!(o.inner.credential_source, inner.credential_source);
    let ans = w::v1_answer(&o.key, &[3u8; 16], data).unwrap();
    assert_eq!(*w::v1_open_answer(&o.key, ans.as_bytes()).unwrap(), data);
    let t = Tuple {
        a: data.len() as i64,
        b: -1,
        l: i64::MIN,
    };
    assert_eq!(
        w::parse_intervals(&w::format_intervals(&[t])).unwrap(),
        vec![t]
    );
});
