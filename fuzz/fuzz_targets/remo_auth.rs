//! remo's `/auth` messages (lib/remo/wire.rs): the login body remod reads (then the X448
//! exchange with the key in it) and the answer the client checks with the server's key.
//! Bodies we write parse back to their user and key, with a signature that verifies.
#![no_main]

use std::sync::OnceLock;

use keysock::remo::wire::{
    auth_answer, auth_body, check_auth_answer, parse_auth, verify, x448_shared,
};
use libfuzzer_sys::fuzz_target;
use openssl::pkey::{Id, PKey, Private, Public};

struct Keys {
    ed: PKey<Private>,
    ed_pub: PKey<Public>,
    x: PKey<Private>,
    x_pub: Vec<u8>,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        let ed = PKey::private_key_from_raw_bytes(&[7u8; 57], Id::ED448).unwrap();
        let ed_pub =
            PKey::public_key_from_raw_bytes(&ed.raw_public_key().unwrap(), Id::ED448).unwrap();
        let x = PKey::private_key_from_raw_bytes(&[9u8; 56], Id::X448).unwrap();
        let x_pub = x.raw_public_key().unwrap();
        Keys {
            ed,
            ed_pub,
            x,
            x_pub,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let k = keys();
    // Server: the login body, then what login does with it.
    if let Ok(a) = parse_auth(data) {
        assert_eq!(a.key.len(), 56);
        let mut msg = a.user.as_bytes().to_vec();
        msg.extend_from_slice(&a.key);
        let _ = verify(&k.ed_pub, &msg, &a.sign);
        let _ = x448_shared(&k.x, &a.key);
    }
    // Client: the answer.
    if let Some(key) = check_auth_answer(&k.ed_pub, data) {
        assert_eq!(key.len(), 56);
    }
    // Round trip: the input as a user name.
    let user = String::from_utf8_lossy(data);
    let body = auth_body(&user, &k.x_pub, &k.ed).unwrap();
    let a = parse_auth(body.as_bytes()).expect("our own login body");
    assert_eq!(a.user, user);
    assert_eq!(a.key, k.x_pub);
    let mut msg = a.user.as_bytes().to_vec();
    msg.extend_from_slice(&a.key);
    assert!(verify(&k.ed_pub, &msg, &a.sign));
    let ans = auth_answer(&k.ed, &k.x_pub).unwrap();
    assert_eq!(
        check_auth_answer(&k.ed_pub, ans.as_bytes()),
        Some(k.x_pub.clone())
    );
});
