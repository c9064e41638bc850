//! Key files (lib/keyfile.rs): PEM private keys (PKCS#8, encrypted or not, and traditional
//! PKCS#1/SEC1), public keys (SubjectPublicKeyInfo, PKCS#1 PEM, `ssh-rsa` lines), as read from
//! files and remod's users database. ssh-rsa lines we write parse back to the same key.
#![no_main]

use keysock::keyfile::{
    is_encrypted_pem, parse_private_pem, parse_public, parse_ssh_rsa, ssh_rsa_line,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let enc = is_encrypted_pem(data);
    match parse_private_pem(data, None) {
        Ok(k) => assert!(!enc && k.public_key_to_pem().is_ok()),
        Err(keysock::keyfile::KeyError::NeedPassword(_)) => assert!(enc),
        Err(_) => {}
    }
    if enc {
        let _ = parse_private_pem(data, Some(b"foo"));
    }
    if let Ok(k) = parse_public(data) {
        if let Ok(r) = k.rsa() {
            let line = ssh_rsa_line(&r, "c");
            let back = parse_ssh_rsa(&line).expect("our own ssh-rsa line");
            assert_eq!(back.n(), r.n());
            assert_eq!(back.e(), r.e());
            let again = parse_public(line.as_bytes()).unwrap();
            assert!(again.public_eq(&k));
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(r) = parse_ssh_rsa(s) {
            assert_eq!(parse_ssh_rsa(&ssh_rsa_line(&r, "")).unwrap().n(), r.n());
        }
    }
});
