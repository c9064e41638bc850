//! JSON as Python's `json.dumps` writes it with its defaults (`", "` and `": "` separators,
//! `ensure_ascii`): byte-for-byte what the originals' Python peers send and expect.

use serde::Serialize;

/// `, ` before every item but the first, as Python's default `item_separator`.
fn separator<W: ?Sized + std::io::Write>(w: &mut W, first: bool) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        w.write_all(b", ")
    }
}

/// serde_json formatting as Python's `json.dumps` defaults.
struct PyFormatter;

impl serde_json::ser::Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        separator(w, first)
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        separator(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        write_ascii(w, fragment)
    }
}

/// `ensure_ascii`: everything outside printable ASCII as `\uXXXX` (UTF-16 surrogate pairs
/// above U+FFFF). Quotes, backslashes and control characters are escaped by serde_json.
fn write_ascii<W: ?Sized + std::io::Write>(w: &mut W, s: &str) -> std::io::Result<()> {
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if (' '..='~').contains(&c) {
            continue;
        }
        w.write_all(&s.as_bytes()[start..i])?;
        let mut units = [0u16; 2];
        for u in c.encode_utf16(&mut units) {
            write!(w, "\\u{:04x}", u)?;
        }
        start = i + c.len_utf8();
    }
    w.write_all(&s.as_bytes()[start..])
}

/// `value` as Python's `json.dumps(value)` would write it.
pub fn dumps<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter);
    // Serializing our own types and serde_json values cannot fail (no non-string keys).
    if value.serialize(&mut ser).is_err() {
        return b"{}".to_vec();
    }
    out
}

/// A string as `json.dumps(s)` writes it, quotes included.
pub fn dumps_str(s: &str) -> String {
    // Only ASCII comes out (ensure_ascii), so the bytes are UTF-8.
    String::from_utf8(dumps(s)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_like_python() {
        assert_eq!(dumps_str("a\"b\\é\n"), "\"a\\\"b\\\\\\u00e9\\n\"");
        assert_eq!(dumps_str("😀"), "\"\\ud83d\\ude00\"");
        assert_eq!(
            dumps(&serde_json::json!({"a": [1, 2]})),
            br#"{"a": [1, 2]}"#
        );
    }
}
