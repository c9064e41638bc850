//! remo's body framing (lib/remo/wire.rs): the line splitter over a request or response body
//! however the network segments it, and the shlex splitting of `/cmd` command lines.
#![no_main]

use keysock::remo::wire::{b64url, b64url_decode, shlex_split, LineSplitter, MAX_LINE};
use libfuzzer_sys::fuzz_target;

fn lines(chunks: &[&[u8]]) -> Option<Vec<Vec<u8>>> {
    let mut s = LineSplitter::default();
    let mut out = Vec::new();
    for c in chunks {
        out.extend(s.push(c)?);
    }
    out.extend(s.finish());
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    // Segmentation does not change the lines: whole, byte by byte, and cut at each 0xff.
    let whole = lines(&[data]);
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(lines(&bytes), whole);
    let cuts: Vec<&[u8]> = data.split(|b| *b == 0xff).collect();
    let joined: Vec<u8> = cuts.concat();
    assert_eq!(lines(&cuts), lines(&[&joined]));
    if let Some(ls) = &whole {
        for l in ls {
            assert!(!l.is_empty() && !l.contains(&b'\n') && l.last() != Some(&b'\r'));
            assert!(l.len() <= MAX_LINE);
        }
    }
    // base64url round trip, and leniency never panics.
    let _ = b64url_decode(data);
    assert_eq!(
        b64url_decode(b64url(data).as_bytes()).as_deref(),
        Some(data)
    );
    // Command lines: what splits re-quotes to the same words.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(words) = shlex_split(text) {
        let quoted: Vec<String> = words
            .iter()
            .map(|w| format!("'{}'", w.replace('\'', "'\"'\"'")))
            .collect();
        assert_eq!(shlex_split(&quoted.join(" ")).unwrap(), words);
    }
});
