//! The JE `DbDump` import (lib/sks/jedump.rs): a file an administrator hands to
//! `tokenctl import`. Any text parses or fails cleanly; dumps we write back parse to the same
//! records, in both formats.
#![no_main]

use keysock::sks::jedump::parse;
use libfuzzer_sys::fuzz_target;

/// db_dump "print" encoding: printable ASCII as itself, `\\` for a backslash, `\xx` else.
fn print(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'\\' => "\\\\".to_string(),
            0x20..=0x7e => (b as char).to_string(),
            _ => format!("\\{b:02x}"),
        })
        .collect()
}

fn bytevalue(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(pairs) = parse(text) {
        // Whatever parsed re-encodes to a dump that parses the same, in either format.
        for (fmt, enc) in [
            ("print", print as fn(&str) -> String),
            ("bytevalue", bytevalue),
        ] {
            let mut d = format!("VERSION=3\nformat={fmt}\ntype=btree\nHEADER=END\n");
            for (k, v) in &pairs {
                d.push_str(&format!(" {}\n {}\n", enc(k), enc(v)));
            }
            d.push_str("DATA=END\n");
            assert_eq!(parse(&d).as_ref(), Ok(&pairs), "{fmt}");
        }
    }
    // The input itself as records: split into key and value lines.
    let (k, v) = text.split_once('\0').unwrap_or((text, ""));
    let pairs = vec![(k.to_string(), v.to_string())];
    for (fmt, enc) in [
        ("print", print as fn(&str) -> String),
        ("bytevalue", bytevalue),
    ] {
        let d = format!(
            "format={fmt}\nHEADER=END\n {}\n {}\nDATA=END\n",
            enc(k),
            enc(v)
        );
        assert_eq!(parse(&d), Ok(pairs.clone()), "{fmt}");
    }
});
