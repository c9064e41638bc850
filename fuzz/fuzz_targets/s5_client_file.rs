//! The s5 client file (`~/.s5client.json`, lib/s5/mod.rs): written by s5d, s5d put or the
//! original s5server, read by s5client. Any text parses or fails cleanly; files we write read back.
#![no_main]

use keysock::s5::{parse_client_file, ClientFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_client_file(text);
    // The input's pieces as a client file: to_json then parse gives them back.
    let mut it = text.splitn(3, '\0');
    let host = it.next().unwrap_or("").to_string();
    let bind_address = it.next().unwrap_or("").to_string();
    let token = it.next().unwrap_or("").to_string();
    let port = data
        .iter()
        .fold(0u16, |a, b| a.wrapping_mul(31).wrapping_add(*b as u16));
    let f = ClientFile {
        host: host.clone(),
        bind_address: bind_address.clone(),
        port,
        token: zeroize::Zeroizing::new(token.clone()),
        v2: port % 2 == 0,
    };
    let json = f.to_json();
    let back = parse_client_file(&json).expect("our own client file");
    assert_eq!(back.host.as_deref(), Some(host.as_str()));
    assert_eq!(back.bind_address.as_deref(), Some(bind_address.as_str()));
    assert_eq!(back.port, Some(port.to_string()));
    assert_eq!(
        back.token.as_deref().map(|t| t.as_str()),
        Some(token.as_str())
    );
    assert_eq!(back.v2, f.v2);
});
