//! auto-id v2 bodies (lib/autoid/wire.rs): the `/v2/verify` answer autoidd reads (nonce, key,
//! X25519 share, box, and the proof inside), and the challenge, sealed box and error bodies
//! the client reads. Ranges and boxes round-trip.
#![no_main]

use std::sync::OnceLock;

use keysock::autoid::wire as w;
use libfuzzer_sys::fuzz_target;
use openssl::pkey::{PKey, Private};

struct Keys {
    rsa: PKey<Private>,
    eph: PKey<Private>,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| Keys {
        rsa: PKey::from_rsa(openssl::rsa::Rsa::generate(1024).unwrap()).unwrap(),
        eph: w::x25519_generate().unwrap(),
    })
}

const FILE: &[u8] = b"The quick brown fox jumps over the lazy dog. 0123456789";

fuzz_target!(|data: &[u8]| {
    let k = keys();
    let nonce = [5u8; w::V2_NONCE_LEN];
    let box_key = [6u8; 32];
    // Server: the verify body, step by step as autoidd takes it apart.
    if let Ok(a) = serde_json::from_slice::<w::Answer>(data) {
        let _ = w::unhex(&a.nonce);
        if let Ok(wrapped) = w::unb64(&a.key, "key") {
            let _ = w::oaep_unwrap(&k.rsa, &wrapped, true);
        }
        if let Some(share) = w::unhex(&a.client_share) {
            if let Ok(shared) = w::x25519_shared(&k.eph, &share) {
                let _ = w::v2_keys(&nonce, b"k", &shared);
            }
        }
        if let Ok(b) = w::unb64(&a.sealed, "box") {
            let _ = w::gcm_open(&box_key, &w::request_aad(&nonce, b"s", b"c"), &b);
        }
    }
    if let Ok(p) = serde_json::from_slice::<w::Proof>(data) {
        let _ = w::unhex(&p.proof);
        let _ = w::v2_proof(FILE, &nonce, &p.secret_id, &[(0, 3)]);
    }
    let _ = w::x25519_shared(&k.eph, data);
    let _ = w::gcm_open(&box_key, &w::response_aad(&nonce), data);
    // Client: the challenge, the sealed answer, errors.
    if let Ok(c) = serde_json::from_slice::<w::Challenge>(data) {
        let _ = w::unhex(&c.nonce);
        let _ = w::unhex(&c.server_share);
        if let Ok(r) = w::parse_ranges(&c.ranges) {
            let _ = w::v2_proof(FILE, &nonce, "id", &r);
        }
    }
    if let Ok(s) = serde_json::from_slice::<w::Sealed>(data) {
        let _ = w::unb64(&s.sealed, "box");
    }
    let _ = serde_json::from_slice::<w::V2Error>(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Ranges: format(parse(s)) parses the same; a proof is made iff every range is in the file.
    if let Ok(r) = w::parse_ranges(text) {
        assert!(r.iter().all(|(lo, hi)| lo < hi));
        assert_eq!(w::parse_ranges(&w::format_ranges(&r)).unwrap(), r);
        let inside = r.iter().all(|&(_, hi)| hi <= FILE.len());
        assert_eq!(w::v2_proof(FILE, &nonce, text, &r).is_some(), inside);
    }
    if let Ok(raw) = w::unb64(text, "fuzz") {
        assert_eq!(*w::unb64(&w::b64(&raw), "again").unwrap(), *raw);
    }
    // Boxes open to what was sealed, under the same key and associated data only.
    let sealed = w::gcm_seal(&box_key, &w::response_aad(&nonce), data).unwrap();
    assert_eq!(
        *w::gcm_open(&box_key, &w::response_aad(&nonce), &sealed).unwrap(),
        data
    );
    assert!(w::gcm_open(&box_key, &w::response_aad(&[0u8; 32]), &sealed).is_err());
    let b = w::Sealed {
        sealed: w::b64(&sealed),
    };
    let back: w::Sealed = serde_json::from_slice(&serde_json::to_vec(&b).unwrap()).unwrap();
    assert_eq!(*w::unb64(&back.sealed, "box").unwrap(), sealed);
});
