//! iscep's `tokens.json` (lib/iscep/tokens.rs), written by iscepd's tools or by hand. What
//! parses renders as Python's `json.dumps(indent=4)` and reads back the same.
#![no_main]

use keysock::iscep::tokens::Tokens;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = Tokens::parse(data, "fuzz") else {
        return;
    };
    let text = t.render();
    let back = Tokens::parse(&text, "render").expect("our own file");
    assert!(back.owners().eq(t.owners()));
    assert_eq!(&back.render()[..], &text[..]);
    // Every owner is found by its own token (the first owner holding it, in file order).
    let v: keysock::iscep::Ordered<String> = serde_json::from_slice(&text).unwrap();
    assert!(v.0.iter().map(|(k, _)| k.as_str()).eq(t.owners()));
    for (owner, tok) in &v.0 {
        let first = &v.0.iter().find(|(_, t)| t == tok).unwrap().0;
        assert_eq!(back.owner_of(tok), Some(first.as_str()), "{owner}");
    }
});
