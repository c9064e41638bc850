//! skd's query strings, form bodies and `%` escapes (lib/sks/wire.rs), and its info records.
#![no_main]

use keysock::sks::wire::{decode_path, decode_value, has_bad_escape, info, info_user, parse_query};
use libfuzzer_sys::fuzz_target;

/// Percent-encodes every byte but unreserved ASCII, as a client would.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let bad = has_bad_escape(s);
    let _ = decode_path(s);
    let dv = decode_value(s);
    match parse_query(s) {
        Ok(m) => {
            for (k, v) in &m {
                assert!(!k.contains('&') && !k.contains('='));
                // A value decodes once: no `&` can come out of the raw text unless escaped.
                assert!(v.len() <= s.len());
            }
        }
        Err(e) => assert!(s.split('&').any(|p| p.starts_with(&format!("{}=", e.0)))),
    }
    // Without `%`, `+` is the only change, and both decoders agree on the rest.
    if !s.contains('%') {
        assert_eq!(dv.as_deref(), Some(s.replace('+', " ").as_str()));
        assert_eq!(decode_path(s), s);
        assert!(!bad);
    }
    // decode(encode(x)) == x, and what a client encodes is never a bad escape.
    let e = encode(s);
    assert!(!has_bad_escape(&e));
    assert_eq!(decode_value(&e).as_deref(), Some(s));
    let q = parse_query(&format!("realm=r&token={e}&x")).expect("UTF-8 values");
    assert_eq!(q.get("token").map(String::as_str), Some(s));
    // info records: the user comes back when it and the source are single lines.
    let (user, source) = s.split_once('\n').unwrap_or((s, "src"));
    if !source.is_empty() && !source.contains('\n') {
        let ids = keysock::pam::Ids {
            uid: data.first().map(|b| *b as u32),
            gid: None,
        };
        assert_eq!(info_user(&info(user, source, ids)), Some(user));
    }
    let _ = info_user(s);
});
