//! Reading the original's Berkeley DB Java Edition store as dumped by JE's own `DbDump`
//! (`java -cp je-5.0.58.jar com.sleepycat.je.util.DbDump -h DIR -s sessionKeyStore [-p]`):
//! the db_dump(1) text format, "print" (`-p`: printable bytes as themselves, `\\` for a
//! backslash, `\xx` hex for the rest) or "bytevalue" (every byte as two hex digits). Each
//! record is a key line and a data line, each starting with one space, between the header's
//! `HEADER=END` and `DATA=END`.

use crate::secret::hex_digit;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DumpError {
    #[error("line {0}: {1}")]
    Line(usize, String),
    #[error("no HEADER=END line: not a DbDump/db_dump file")]
    NoHeader,
    #[error("a key without its data line at the end")]
    OddRecords,
}

fn unprint(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' {
            if s.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
                continue;
            }
            let (h, l) = (hex_digit(*s.get(i + 1)?)?, hex_digit(*s.get(i + 2)?)?);
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The key/value pairs of a dump, as UTF-8 strings (the original stored UTF-8).
pub fn parse(text: &str) -> Result<Vec<(String, String)>, DumpError> {
    let mut lines = text.lines().enumerate();
    let mut printable = false;
    let mut header_end = false;
    for (_, l) in lines.by_ref() {
        match l.trim_end() {
            "format=print" => printable = true,
            "HEADER=END" => {
                header_end = true;
                break;
            }
            _ => {}
        }
    }
    if !header_end {
        return Err(DumpError::NoHeader);
    }
    let mut items = Vec::new();
    for (n, l) in lines {
        if l.trim_end() == "DATA=END" {
            break;
        }
        let Some(body) = l.strip_prefix(' ') else {
            return Err(DumpError::Line(
                n + 1,
                "a record line must start with a space".into(),
            ));
        };
        let bytes = if printable {
            unprint(body.as_bytes())
        } else {
            crate::secret::unhex(body.as_bytes()).map(|b| b.to_vec())
        };
        let bytes =
            bytes.ok_or_else(|| DumpError::Line(n + 1, "bad escape or hex digits".into()))?;
        let s = String::from_utf8(bytes).map_err(|_| DumpError::Line(n + 1, "not UTF-8".into()))?;
        items.push(s);
    }
    if items.len() % 2 != 0 {
        return Err(DumpError::OddRecords);
    }
    let mut it = items.into_iter();
    let mut pairs = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        pairs.push((k, v));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRINT: &str =
        "VERSION=3\nformat=print\ntype=btree\ndatabase=sessionKeyStore\nHEADER=END\n \
t:5573e39b6600496d40f493d00ec7658479a19607:T1\n alice\\0astored\\0a\n \
ut:5573e39b6600496d40f493d00ec7658479a19607:alice\n T1\n k:a\\5c\\5cb\\0a\n KEY\nDATA=END\n";

    #[test]
    fn print_format() {
        let p = parse(PRINT).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[0],
            (
                "t:5573e39b6600496d40f493d00ec7658479a19607:T1".into(),
                "alice\nstored\n".into()
            )
        );
        assert_eq!(p[2].0, "k:a\\\\b\n");
    }

    #[test]
    fn bytevalue_format() {
        let d = "VERSION=3\nformat=bytevalue\ntype=btree\nHEADER=END\n 6b3a61\n 0a41\nDATA=END\n";
        assert_eq!(parse(d).unwrap(), vec![("k:a".into(), "\nA".into())]);
    }

    #[test]
    fn bad_dumps() {
        assert_eq!(parse("just text"), Err(DumpError::NoHeader));
        assert_eq!(
            parse("HEADER=END\n 61\nDATA=END\n"),
            Err(DumpError::OddRecords)
        );
        assert!(matches!(
            parse("format=print\nHEADER=END\n a\\zz\n b\n"),
            Err(DumpError::Line(3, _))
        ));
        assert!(matches!(
            parse("HEADER=END\nx\n"),
            Err(DumpError::Line(2, _))
        ));
    }
}
