//! iscep: the inter-service command execution protocol (specs/iscep.md), both ends.
//!
//! - [`wire`]: frames and packet types, bodies written as the original writes them;
//! - [`config`]: the commands `iscepd` may run (`iscepd.toml`, iscepd.toml(5));
//! - [`tokens`]: the original's `tokens.json` (owner → token), read and written;
//! - [`server`]: one connection of `iscepd`: auth, ECHO, DISCOVER, SEND_CMD, limits;
//! - [`client`]: a blocking client for `iscep` and the tests.

pub mod client;
pub mod config;
pub mod server;
pub mod tokens;
pub mod wire;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const DEFAULT_PORT: u16 = 8989;
pub const DEFAULT_CONFIG: &str = "/etc/keysock/iscepd.toml";
pub const DEFAULT_TOKENS: &str = "/etc/keysock/iscep-tokens.json";
/// Largest frame accepted by default (size field value).
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// A JSON or TOML object read and written in its file order (the original's dicts keep
/// insertion order; DISCOVER lists commands and arguments in configuration order). A key
/// given twice keeps its first place and its last value, as Python's `json` does.
#[derive(Clone, Debug, PartialEq)]
pub struct Ordered<V>(pub Vec<(String, V)>);

impl<V> Default for Ordered<V> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<V> Ordered<V> {
    pub fn get(&self, k: &str) -> Option<&V> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v)
    }
    pub fn insert(&mut self, k: String, v: V) {
        match self.0.iter_mut().find(|(n, _)| *n == k) {
            Some(e) => e.1 = v,
            None => self.0.push((k, v)),
        }
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V_<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table or object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Ordered<V>, A::Error> {
                let mut out = Ordered::default();
                while let Some((k, v)) = m.next_entry::<String, V>()? {
                    out.insert(k, v);
                }
                Ok(out)
            }
        }
        d.deserialize_map(V_(std::marker::PhantomData))
    }
}

impl<V: Serialize> Serialize for Ordered<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}
