//! s5 on the wire (lib/s5/wire.rs): the request body a client sends s5d (the 48-byte
//! identifier, compared in constant time), the token text, and the v1 and v2 answers a client
//! decodes. Sealed answers open to the secret they carry.
#![no_main]

use keysock::s5::wire::{self, PAD_LEN, TOKEN_LEN, V1_MAX};
use libfuzzer_sys::fuzz_target;

const PAD: [u8; PAD_LEN] = [0x5a; PAD_LEN];

fuzz_target!(|data: &[u8]| {
    // Server side: the body is the identifier or not.
    let id = [0x11u8; wire::ID_LEN];
    assert_eq!(keysock::secret::ct_eq(data, &id), data == id);
    // Client side: token text and answers.
    if let Ok(t) = wire::parse_token(&String::from_utf8_lossy(data)) {
        assert_eq!(t.len(), TOKEN_LEN);
    }
    if let Ok(raw) = wire::b64decode(data) {
        assert!(raw.len() <= data.len());
        // b64decode(b64encode(x)) == x
        assert_eq!(
            *wire::b64decode(wire::b64encode(&raw).as_bytes()).unwrap(),
            *raw
        );
        if let Ok(s) = wire::open_v1(&raw, &PAD) {
            assert!(s.len() < raw.len().min(PAD_LEN));
        }
        let _ = wire::open_v2(&raw, &PAD);
    }
    let _ = wire::open_v1(data, &PAD);
    assert!(wire::open_v2(data, &PAD).is_err() || data.len() >= 48);
    // Round trips: the input as a secret.
    if data.len() <= V1_MAX {
        let ct = wire::seal_v1(data, &PAD).unwrap();
        let text = wire::b64encode(&ct[..]);
        let back = wire::b64decode(text.as_bytes()).unwrap();
        assert_eq!(*wire::open_v1(&back, &PAD).unwrap(), data);
    } else {
        assert!(wire::seal_v1(data, &PAD).is_err());
    }
    let body = wire::seal_v2(data, &PAD).unwrap();
    let text = wire::b64encode(&body);
    let back = wire::b64decode(text.as_bytes()).unwrap();
    assert_eq!(*wire::open_v2(&back, &PAD).unwrap(), data);
    // A flipped byte is caught by the tag.
    let mut bad = body.clone();
    let at = data.first().map_or(0, |b| *b as usize) % bad.len();
    bad[at] ^= 0x80;
    assert!(wire::open_v2(&bad, &PAD).is_err());
});
