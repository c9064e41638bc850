//! iscep packet bodies (lib/iscep/wire.rs): the JSON between a frame's type and its MD5. The
//! checksum is made right here so the fuzzer reaches the JSON parser; decode(encode(p)) == p.
#![no_main]

use keysock::iscep::wire::{decode, encode, md5_hex, Body, DecodeError, Type};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (ty, body) = match data {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]) % 8, rest),
        _ => return,
    };
    let mut content = ty.to_be_bytes().to_vec();
    content.extend_from_slice(body);
    content.extend_from_slice(md5_hex(body).as_bytes());
    match decode(&content) {
        Ok(p) => {
            assert_eq!(p.ty as u16, ty);
            let f = encode(p.ty, &p.body);
            assert_eq!(decode(&f[4..]), Ok(p.clone()));
            // Our writer is Python's json.dumps: ASCII only, and it reads back the same.
            let json = keysock::pyjson::dumps(&p.body);
            assert!(json.is_ascii());
            let b: Body = serde_json::from_slice(&json).unwrap();
            assert_eq!(b, p.body);
        }
        Err(DecodeError::Short(n)) => assert!(n <= 34 && body.is_empty()),
        Err(DecodeError::Checksum) => panic!("checksum made here was refused"),
        Err(DecodeError::Type(t)) => assert_eq!(t, ty),
        Err(DecodeError::Body(_)) => {}
    }
    // Any JSON value written as Python writes it reads back the same.
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let json = keysock::pyjson::dumps(&v);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&json).unwrap(),
            v
        );
        let f = encode(Type::CmdResponse, &Body::response(v.clone()));
        if !v.is_null() {
            assert_eq!(decode(&f[4..]).unwrap().body.response, Some(v));
        }
    }
});
