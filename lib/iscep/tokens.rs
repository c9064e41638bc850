//! The original's `tokens.json` (specs/iscep.md §3.1): `{"owner": "<512 lowercase hex>"}`,
//! written as Python's `json.dumps(indent=4)` (no trailing newline). We write it 0600 and
//! atomically; the server compares tokens in constant time.

use std::path::Path;

use zeroize::Zeroizing;

use super::Ordered;

/// Random bytes in a new token: 256, so 512 hex characters, as `secrets.token_hex(256)`.
pub const TOKEN_BYTES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read tokens file {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: not a JSON object of owner names to token strings: {1}")]
    Format(String, String),
    #[error("cannot write tokens file {0}: {1}")]
    Write(String, std::io::Error),
}

/// Owners and their tokens, in file order.
#[derive(Default)]
pub struct Tokens(Ordered<Zeroizing<String>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.owners()).finish()
    }
}

impl Tokens {
    pub fn parse(text: &[u8], what: &str) -> Result<Tokens, TokensError> {
        let m: Ordered<String> = serde_json::from_slice(text)
            .map_err(|e| TokensError::Format(what.into(), e.to_string()))?;
        Ok(Tokens(Ordered(
            m.0.into_iter()
                .map(|(k, v)| (k, Zeroizing::new(v)))
                .collect(),
        )))
    }

    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = Zeroizing::new(
            std::fs::read(path).map_err(|e| TokensError::Read(path.display().to_string(), e))?,
        );
        Self::parse(&text, &path.display().to_string())
    }

    /// Like [`load`](Self::load), but a missing file is an empty set.
    pub fn load_or_empty(path: &Path) -> Result<Tokens, TokensError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Tokens::default()),
            _ => Self::load(path),
        }
    }

    /// The file text, as the original writes it.
    pub fn render(&self) -> Zeroizing<Vec<u8>> {
        if self.0 .0.is_empty() {
            return Zeroizing::new(b"{}".to_vec());
        }
        let mut out = Zeroizing::new(b"{\n".to_vec());
        for (i, (k, v)) in self.0 .0.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b",\n");
            }
            out.extend_from_slice(b"    ");
            out.extend_from_slice(&crate::pyjson::dumps(k));
            out.extend_from_slice(b": ");
            out.extend_from_slice(&Zeroizing::new(crate::pyjson::dumps(v.as_str())));
        }
        out.extend_from_slice(b"\n}");
        out
    }

    /// Writes the file 0600 through a temporary file and a rename.
    pub fn save(&self, path: &Path) -> Result<(), TokensError> {
        crate::privfile::write_private(path, &self.render())
            .map(|_| ())
            .map_err(|e| TokensError::Write(path.display().to_string(), e))
    }

    pub fn owners(&self) -> impl Iterator<Item = &str> {
        self.0 .0.iter().map(|(k, _)| k.as_str())
    }

    pub fn len(&self) -> usize {
        self.0 .0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0 .0.is_empty()
    }

    /// Gives `owner` a new random token (replacing any) and returns it.
    pub fn issue(&mut self, owner: &str) -> Zeroizing<String> {
        let t = Zeroizing::new(crate::secret::hex_token(TOKEN_BYTES));
        self.0.insert(owner.to_string(), t.clone());
        t
    }

    /// Removes `owner`; false if there was none.
    pub fn remove(&mut self, owner: &str) -> bool {
        let before = self.0 .0.len();
        self.0 .0.retain(|(k, _)| k != owner);
        self.0 .0.len() != before
    }

    /// The owner of `token`. Every entry is compared, each in constant time, so the time taken
    /// tells nothing about which one matched or how much of it.
    pub fn owner_of(&self, token: &str) -> Option<&str> {
        let mut found = None;
        for (k, v) in &self.0 .0 {
            if crate::secret::ct_eq(v.as_bytes(), token.as_bytes()) && found.is_none() {
                found = Some(k.as_str());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_the_original_format() {
        let text = b"{\n    \"user\": \"abc\",\n    \"b\\u00e9\": \"def\"\n}";
        let mut t = Tokens::parse(text, "t").unwrap();
        assert_eq!(t.owners().collect::<Vec<_>>(), ["user", "b\u{e9}"]);
        assert_eq!(&t.render()[..], &text[..]);
        assert_eq!(t.owner_of("def"), Some("b\u{e9}"));
        assert_eq!(t.owner_of("de"), None);
        assert_eq!(t.owner_of(""), None);
        let new = t.issue("user");
        assert_eq!(new.len(), 512);
        assert_eq!(t.owner_of(&new), Some("user"));
        assert_eq!(t.owner_of("abc"), None);
        assert!(t.remove("user") && !t.remove("user"));
        assert!(t.remove("b\u{e9}"));
        assert_eq!(&t.render()[..], b"{}");
        assert!(Tokens::parse(b"[]", "t").is_err());
        assert!(Tokens::parse(b"{\"a\": 1}", "t").is_err());
    }
}
