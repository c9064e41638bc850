//! remo's body tokens (lib/remo/wire.rs): Fernet tokens a peer sends, and the 6-byte header
//! and path hash or status inside. Tokens we make open to their plaintext; headers round-trip.
#![no_main]

use keysock::remo::wire::{request_plain, response_plain, sha384, Fernet, Head, HASH_LEN, TTL};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let f = Fernet::new([0x42; 32]);
    // A token off the wire (MAC made with another key, or none).
    assert!(f.decrypt(data, Some(TTL)).is_none() || data.len() >= 100);
    if let Some(plain) = f.decrypt(data, None) {
        let _ = Head::parse(&plain);
    }
    if let Some((h, rest)) = Head::parse(data) {
        assert_eq!(rest.len(), data.len() - 6);
        assert_eq!(Head::parse(&h.encode()), Some((h, &b""[..])));
    } else {
        assert!(data.len() < 6);
    }
    // decrypt(encrypt(x)) == x, at any time stamp without a TTL, and now with one.
    let ts = data.iter().fold(0u64, |a, b| a.rotate_left(8) ^ *b as u64);
    let mut iv = [0u8; 16];
    for (i, b) in data.iter().take(16).enumerate() {
        iv[i] = *b;
    }
    let tok = f.encrypt_at(data, ts, &iv);
    assert_eq!(f.decrypt(tok.as_bytes(), None).as_deref(), Some(data));
    let mut crlf = tok.clone().into_bytes();
    crlf.extend_from_slice(b"\r\n");
    assert_eq!(f.decrypt(&crlf, None).as_deref(), Some(data));
    assert!(Fernet::new([0x43; 32])
        .decrypt(tok.as_bytes(), None)
        .is_none());
    let now = f.encrypt(data);
    assert_eq!(f.decrypt(now.as_bytes(), Some(TTL)).as_deref(), Some(data));
    // Request and response plaintexts parse back to their header and contents.
    let h = Head {
        first: data.first().is_some_and(|b| b & 1 == 1),
        last: data.first().is_some_and(|b| b & 2 == 2),
        req: ts as i16,
        tok: (ts >> 16) as i16,
    };
    let path = String::from_utf8_lossy(data);
    let p = request_plain(h, &path, data);
    let (hh, rest) = Head::parse(&p).unwrap();
    assert_eq!(hh, h);
    if h.first {
        assert_eq!(rest[..HASH_LEN], sha384(path.as_bytes()));
        assert_eq!(&rest[HASH_LEN..], data);
    } else {
        assert_eq!(rest, data);
    }
    let status = (ts % 1000) as u16;
    let r = response_plain(h, status, data);
    let (hh, rest) = Head::parse(&r).unwrap();
    assert_eq!(hh, h);
    if h.first {
        assert_eq!(rest[..3], *format!("{status:03}").as_bytes());
    }
});
