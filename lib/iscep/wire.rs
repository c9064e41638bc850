//! The iscep frame (specs/iscep.md §2): `size:u32 BE | type:u16 BE | JSON body | md5hex(body)`,
//! where `size` counts type, body and checksum. Bodies are written as Python's `json.dumps`
//! writes them (`", "` and `": "` separators, non-ASCII as `\uXXXX`, keys in the order
//! auth_token, command, args, error, response, nulls left out), so the upstream golden frames
//! come out byte for byte.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Packet types (§2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Type {
    Echo = 0,
    Discover = 1,
    SendCmd = 2,
    CmdResponse = 3,
    CloseConnection = 4,
    Unauthorized = 5,
    Error = 6,
}

impl Type {
    pub fn from_u16(v: u16) -> Option<Type> {
        Some(match v {
            0 => Type::Echo,
            1 => Type::Discover,
            2 => Type::SendCmd,
            3 => Type::CmdResponse,
            4 => Type::CloseConnection,
            5 => Type::Unauthorized,
            6 => Type::Error,
            _ => return None,
        })
    }

    /// The original's names (ECHO, SEND_CMD, ...), for log lines.
    pub fn name(self) -> &'static str {
        match self {
            Type::Echo => "ECHO",
            Type::Discover => "DISCOVER",
            Type::SendCmd => "SEND_CMD",
            Type::CmdResponse => "CMD_RESPONSE",
            Type::CloseConnection => "CLOSE_CONNECTION",
            Type::Unauthorized => "UNAUTHORIZED",
            Type::Error => "ERROR",
        }
    }
}

/// A packet body: the five keys the protocol knows, in the original's order. Unknown keys
/// are refused on receipt.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "is_null")]
    pub args: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "is_null")]
    pub response: Option<Value>,
}

fn is_null(v: &Option<Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

/// `Debug` shows the token: never log a `Body` whole.
impl Body {
    pub fn error(msg: &str) -> Body {
        Body {
            error: Some(msg.into()),
            ..Default::default()
        }
    }
    pub fn response(v: Value) -> Body {
        Body {
            response: Some(v),
            ..Default::default()
        }
    }
}

/// One decoded packet.
#[derive(Clone, Debug, PartialEq)]
pub struct Packet {
    pub ty: Type,
    pub body: Body,
}

/// Why content could not be decoded; every one is answered with a bare ERROR `{}`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame content of {0} bytes is too short")]
    Short(usize),
    #[error("checksum mismatch")]
    Checksum,
    #[error("body is not a JSON object with known keys: {0}")]
    Body(String),
    #[error("unknown packet type {0}")]
    Type(u16),
}

/// Lowercase hex MD5, as Python's `hashlib.md5(...).hexdigest()`.
pub fn md5_hex(data: &[u8]) -> String {
    match openssl::hash::hash(openssl::hash::MessageDigest::md5(), data) {
        Ok(d) => crate::secret::hex(&d),
        // MD5 missing from the OpenSSL build (FIPS mode): nothing would verify anyway.
        Err(_) => String::new(),
    }
}

/// A whole frame, size prefix included.
pub fn encode(ty: Type, body: &Body) -> Vec<u8> {
    encode_any(ty, body)
}

/// A whole frame whose body is any serializable object (for replies whose key order matters,
/// such as DISCOVER's).
pub fn encode_any<T: Serialize + ?Sized>(ty: Type, body: &T) -> Vec<u8> {
    let json = crate::pyjson::dumps(body);
    let sum = md5_hex(&json);
    let size = (2 + json.len() + sum.len()) as u32;
    let mut f = Vec::with_capacity(4 + size as usize);
    f.extend_from_slice(&size.to_be_bytes());
    f.extend_from_slice(&(ty as u16).to_be_bytes());
    f.extend_from_slice(&json);
    f.extend_from_slice(sum.as_bytes());
    f
}

/// Decodes the content of a frame (everything after the size field), as §2.2 steps 3–6.
pub fn decode(content: &[u8]) -> Result<Packet, DecodeError> {
    if content.len() <= 34 {
        return Err(DecodeError::Short(content.len()));
    }
    let raw_ty = u16::from_be_bytes([content[0], content[1]]);
    let (body, sum) = content[2..].split_at(content.len() - 34);
    // Exact comparison with the lowercase digest: uppercase hex is refused, as the original.
    if md5_hex(body).as_bytes() != sum {
        return Err(DecodeError::Checksum);
    }
    let body: Body = serde_json::from_slice(body).map_err(|e| DecodeError::Body(e.to_string()))?;
    let ty = Type::from_u16(raw_ty).ok_or(DecodeError::Type(raw_ty))?;
    Ok(Packet { ty, body })
}

/// What reading the next frame gave.
#[derive(Debug)]
pub enum Read {
    Packet(Packet),
    /// The peer closed, or sent a size of 0.
    Closed,
    /// A frame that could not be decoded (answered with ERROR `{}`).
    Bad(DecodeError),
    /// A size over the limit; the content was not read.
    TooLarge(u32),
}

/// Reads one whole frame however it is segmented; a size over `max` is not read.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> std::io::Result<Read> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut head[got..]).await? {
            0 if got == 0 => return Ok(Read::Closed),
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    read_content(r, u32::from_be_bytes(head), max).await
}

/// Reads the content of a frame whose size field was `size`.
pub async fn read_content<R: AsyncRead + Unpin>(
    r: &mut R,
    size: u32,
    max: usize,
) -> std::io::Result<Read> {
    if size == 0 {
        return Ok(Read::Closed);
    }
    if size as usize > max {
        return Ok(Read::TooLarge(size));
    }
    let mut content = vec![0u8; size as usize];
    r.read_exact(&mut content).await?;
    Ok(match decode(&content) {
        Ok(p) => Read::Packet(p),
        Err(e) => Read::Bad(e),
    })
}

/// Blocking variant of [`read_frame`] for clients.
pub fn read_frame_blocking<R: std::io::Read>(r: &mut R, max: usize) -> std::io::Result<Read> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(Read::Closed),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let size = u32::from_be_bytes(head);
    if size == 0 {
        return Ok(Read::Closed);
    }
    if size as usize > max {
        return Ok(Read::TooLarge(size));
    }
    let mut content = vec![0u8; size as usize];
    r.read_exact(&mut content)?;
    Ok(match decode(&content) {
        Ok(p) => Read::Packet(p),
        Err(e) => Read::Bad(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hexdump(b: &[u8]) -> String {
        crate::secret::hex(b)
    }

    #[test]
    fn golden_send_cmd() {
        let body = Body {
            command: Some("test_cmd".into()),
            ..Default::default()
        };
        let f = encode(Type::SendCmd, &body);
        let mut want = vec![0, 0, 0, 0x39, 0, 2];
        want.extend_from_slice(b"{\"command\": \"test_cmd\"}");
        want.extend_from_slice(b"cc13d75d4a4ce43b1cc85d506ec5ed87");
        assert_eq!(hexdump(&f), hexdump(&want));
        assert_eq!(
            decode(&want[4..]).unwrap(),
            Packet {
                ty: Type::SendCmd,
                body
            }
        );
    }

    #[test]
    fn golden_empty_bodies() {
        for (ty, n) in [(Type::Unauthorized, 5u8), (Type::Error, 6)] {
            let mut want = vec![0, 0, 0, 0x24, 0, n, b'{', b'}'];
            want.extend_from_slice(b"99914b932bd37a50b983c5e7c90ae93b");
            assert_eq!(encode(ty, &Body::default()), want);
        }
    }

    #[test]
    fn golden_errors() {
        for (msg, size, sum) in [
            (
                "command not found",
                0x40,
                "9639720743e114a98d7ee67e6f06ddd7",
            ),
            (
                "unknown packet type",
                0x42,
                "86eab67c54f8fc5dbe97a86d1ccfefd4",
            ),
        ] {
            let f = encode(Type::Error, &Body::error(msg));
            assert_eq!(&f[..6], &[0, 0, 0, size, 0, 6]);
            let json = format!("{{\"error\": \"{msg}\"}}");
            assert_eq!(&f[6..f.len() - 32], json.as_bytes());
            assert_eq!(&f[f.len() - 32..], sum.as_bytes());
        }
    }

    #[test]
    fn key_order_separators_and_ascii() {
        let b = Body {
            response: Some(json!({"b": [1, "é😀"], "a": null})),
            auth_token: Some("T".into()),
            error: None,
            command: Some("c".into()),
            args: Some(Value::Null),
        };
        assert_eq!(
            String::from_utf8(crate::pyjson::dumps(&b)).unwrap(),
            r#"{"auth_token": "T", "command": "c", "response": {"a": null, "b": [1, "\u00e9\ud83d\ude00"]}}"#
        );
        assert_eq!(crate::pyjson::dumps(&Body::default()), b"{}");
        assert_eq!(crate::pyjson::dumps(&json!("a\n\u{7f}")), br#""a\n\u007f""#);
    }

    fn content(ty: u16, body: &[u8], sum: &str) -> Vec<u8> {
        let mut c = ty.to_be_bytes().to_vec();
        c.extend_from_slice(body);
        c.extend_from_slice(sum.as_bytes());
        c
    }

    #[test]
    fn bad_content() {
        let ok = |b: &[u8]| md5_hex(b);
        // 34 bytes: type and checksum only.
        assert_eq!(
            decode(&content(0, b"", &ok(b""))),
            Err(DecodeError::Short(34))
        );
        let b = br#"{"command": "x"}"#;
        assert_eq!(
            decode(&content(2, b, &ok(b).to_uppercase())),
            Err(DecodeError::Checksum)
        );
        assert!(matches!(
            decode(&content(2, br#"{"foo": 1}"#, &ok(br#"{"foo": 1}"#))),
            Err(DecodeError::Body(_))
        ));
        assert!(matches!(
            decode(&content(2, b"[1]", &ok(b"[1]"))),
            Err(DecodeError::Body(_))
        ));
        assert!(matches!(
            decode(&content(2, b"\xff\xfe", &ok(b"\xff\xfe"))),
            Err(DecodeError::Body(_))
        ));
        assert_eq!(
            decode(&content(7, b"{}", &ok(b"{}"))),
            Err(DecodeError::Type(7))
        );
        // Compact JSON is accepted.
        let b = br#"{"command":"x","args":{"a":1}}"#;
        let p = decode(&content(2, b, &ok(b))).unwrap();
        assert_eq!(p.body.args, Some(json!({"a": 1})));
    }

    /// A number passes through iscepd unchanged: parsed to the nearest double, as Python's
    /// `json.loads` does, so writing it back reads the same (found by fuzzing: serde_json's
    /// fast float parser was one unit off on long mantissas, and a relayed value drifted).
    #[test]
    fn numbers_round_trip() {
        for n in [
            "7777777777777777777777777777777777777777777777777777777",
            "0.30000000000000004441",
            "2.2250738585072011e-308",
            "1.00000000000000011102230246251565404236316680908203125",
        ] {
            let body = format!("{{\"response\": {n}}}");
            let p = decode(&content(3, body.as_bytes(), &md5_hex(body.as_bytes()))).unwrap();
            let f = encode(p.ty, &p.body);
            assert_eq!(decode(&f[4..]).unwrap(), p, "{n}");
            let want: f64 = n.parse().unwrap();
            assert_eq!(p.body.response.unwrap().as_f64(), Some(want), "{n}");
        }
    }

    /// Random content, and valid frames with random bytes flipped: never a panic.
    #[test]
    fn random_content_never_panics() {
        let good = encode(
            Type::SendCmd,
            &Body {
                command: Some("c".into()),
                args: Some(json!({"a": [1, 2.5, "x"]})),
                ..Default::default()
            },
        );
        for i in 0..20_000usize {
            let r = crate::secret::random_bytes(2 + i % 90);
            let _ = decode(&r);
            let mut f = good[4..].to_vec();
            let at = r[0] as usize % f.len();
            f[at] ^= r[1] | 1;
            let _ = decode(&f);
        }
    }

    #[test]
    fn reads_split_frames_and_refuses_large_ones() {
        let f = encode(Type::Echo, &Body::response(json!({"echo": "x"})));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut b = &f[..];
            match read_frame(&mut b, 1 << 20).await.unwrap() {
                Read::Packet(p) => assert_eq!(p.ty, Type::Echo),
                r => panic!("{r:?}"),
            }
            let big = [0u8, 0xa0, 0, 0, 0, 0];
            let mut b = &big[..];
            assert!(matches!(
                read_frame(&mut b, 1 << 20).await.unwrap(),
                Read::TooLarge(0xa0_0000)
            ));
            let mut b: &[u8] = &[0, 0, 0, 0];
            assert!(matches!(
                read_frame(&mut b, 1 << 20).await.unwrap(),
                Read::Closed
            ));
        });
    }
}
