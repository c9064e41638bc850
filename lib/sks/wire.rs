//! SessionKeyServer's wire format: query decoding as the original does it (Java's
//! `URLDecoder` on values, names taken raw, last duplicate wins), info records, and the
//! fixed bodies a client compares against.

use std::collections::HashMap;

use crate::secret::hex_digit;

/// The protocol version the original reports at `/version`; clients may check it.
pub const VERSION: &str = "1.5";

/// Body of the original's answer to a malformed `%` escape (a JDK artefact kept byte for byte).
pub const BAD_ESCAPE_BODY: &str = "<h1>400 Bad Request</h1>URISyntaxException thrown";

/// True if `s` has a `%` not followed by two hex digits.
pub fn has_bad_escape(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() {
                return true;
            }
            if hex_digit(b[i + 1]).is_none() || hex_digit(b[i + 2]).is_none() {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

fn decode(s: &str, plus_is_space: bool) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex_digit(b[i + 1]), hex_digit(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// A query value as Java's `URLDecoder.decode` under UTF-8: `+` is a space, `%XX` a byte.
/// `None` if the bytes are not UTF-8: the original turned them into U+FFFD, so that distinct
/// realms (or tokens) collided.
pub fn decode_value(s: &str) -> Option<String> {
    String::from_utf8(decode(s, true)).ok()
}

/// A URI path: `%XX` decoded, `+` kept (compared with fixed ASCII names only).
pub fn decode_path(s: &str) -> String {
    String::from_utf8_lossy(&decode(s, false)).into_owned()
}

/// A parameter value that is not UTF-8 once decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct NotUtf8(pub String);

/// Parameters of a query string or form body: split on `&`, pieces without `=` dropped,
/// names raw, values decoded, the last of repeated names wins.
pub fn parse_query(raw: &str) -> Result<HashMap<String, String>, NotUtf8> {
    let mut m = HashMap::new();
    for piece in raw.split('&') {
        if let Some((k, v)) = piece.split_once('=') {
            let v = decode_value(v).ok_or_else(|| NotUtf8(k.to_string()))?;
            m.insert(k.to_string(), v);
        }
    }
    Ok(m)
}

/// Longest token skd looks up, stores or caches.
pub const MAX_TOKEN: usize = 128;

/// A token skd could hold: 1 to [`MAX_TOKEN`] printable ASCII characters (skd issues 40 hex
/// digits; `/stored_token` and `tokenctl` may store others of that form).
pub fn plausible_token(t: &str) -> bool {
    (1..=MAX_TOKEN).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_graphic())
}

/// True when `s` has a control character (CR and LF among them), which would let a name
/// forge lines of an info record or a log line.
pub fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// The info record kept with a token: `user\nsource\n[uid=N\n][gid=N\n]`.
pub fn info(user: &str, source: &str, ids: crate::pam::Ids) -> String {
    let mut s = format!("{user}\n{source}\n");
    if let Some(u) = ids.uid {
        s.push_str(&format!("uid={u}\n"));
    }
    if let Some(g) = ids.gid {
        s.push_str(&format!("gid={g}\n"));
    }
    s
}

/// The user of an info record, if it has the two lines the original requires.
pub fn info_user(info: &str) -> Option<&str> {
    let mut lines = info.split('\n').collect::<Vec<_>>();
    while lines.last() == Some(&"") {
        lines.pop();
    }
    (lines.len() >= 2).then(|| lines[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_like_java() {
        assert_eq!(decode_value("a+b%20c").unwrap(), "a b c");
        assert_eq!(decode_value("%C3%A9").unwrap(), "é");
        assert_eq!(decode_value("plain").unwrap(), "plain");
        assert_eq!(decode_value("%E9"), None);
        assert_eq!(parse_query("realm=%FC"), Err(NotUtf8("realm".into())));
        assert_eq!(decode_path("/va%6Cid+x"), "/valid+x");
    }

    #[test]
    fn bad_escapes() {
        assert!(has_bad_escape("token=%zz"));
        assert!(has_bad_escape("a=%4"));
        assert!(has_bad_escape("a=%"));
        assert!(!has_bad_escape("a=%41&b=%c3%a9"));
    }

    #[test]
    fn query_rules() {
        let q = parse_query("realm=r&token=zzz&token=abc&novalue&realm2=&%72=x").unwrap();
        assert_eq!(q["token"], "abc");
        assert_eq!(q["realm2"], "");
        assert!(!q.contains_key("novalue"));
        assert_eq!(q["%72"], "x"); // names are not decoded
    }

    #[test]
    fn info_records() {
        let ids = crate::pam::Ids {
            uid: Some(65534),
            gid: Some(65534),
        };
        assert_eq!(
            info("nobody", "auth/pam", ids),
            "nobody\nauth/pam\nuid=65534\ngid=65534\n"
        );
        assert_eq!(info_user("alice\nstored\n"), Some("alice"));
        assert_eq!(info_user("alice\n"), None);
    }

    /// Random bytes from the CSPRNG (a fuzzer's poor cousin on stable Rust): the query and
    /// escape parsers never panic, and parsing is total.
    #[test]
    fn random_input_never_panics() {
        let alphabet = b"%&=+abcXYZ019\x00\xff";
        for round in 0..2000 {
            let raw = crate::secret::random_bytes(1 + round % 64);
            let s: String = raw
                .iter()
                .map(|b| alphabet[*b as usize % alphabet.len()] as char)
                .collect();
            let _ = has_bad_escape(&s);
            let _ = decode_path(&s);
            if let Ok(m) = parse_query(&s) {
                assert!(m.keys().all(|k| !k.contains('&') && !k.contains('=')));
            }
            let _ = super::super::jedump::parse(&format!("HEADER=END\n {s}\n {s}\n"));
        }
    }
}
