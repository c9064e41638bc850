//! The user database of remo_serv (SQLite table `users`, the public key PEM stored as a BLOB
//! in `pub`), with two columns added compatibly: `unix_user` (the Unix account commands run
//! as) and `allow` (an optional allowlist of programs). The original's queries name their
//! columns, so databases keep working in both directions.

use std::path::{Path, PathBuf};

use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};

pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS users(id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT UNIQUE, key TEXT, pub TEXT);";

/// The database file name as the original `add_user` derives it: `.sqlite` appended unless
/// the name ends with it already or is `:memory:`.
pub fn db_path(name: &str) -> PathBuf {
    if name.ends_with(".sqlite") || name == ":memory:" {
        PathBuf::from(name)
    } else {
        PathBuf::from(format!("{name}.sqlite"))
    }
}

fn has_column(c: &Connection, col: &str) -> rusqlite::Result<bool> {
    let mut st = c.prepare("SELECT name FROM pragma_table_info('users')")?;
    let names = st.query_map([], |r| r.get::<_, String>(0))?;
    for n in names {
        if n? == col {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Opens (creating if needed) the database and adds our columns when they are missing.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let c = if path.as_os_str() == ":memory:" {
        crate::sqlite::memory(SCHEMA)?
    } else {
        crate::sqlite::open(path, SCHEMA)?
    };
    for col in ["unix_user", "allow"] {
        if !has_column(&c, col)? {
            c.execute_batch(&format!("ALTER TABLE users ADD COLUMN {col} TEXT"))?;
        }
    }
    Ok(c)
}

/// One user's row.
#[derive(Clone, Debug)]
pub struct User {
    /// The public key file as stored (PEM bytes).
    pub public: Vec<u8>,
    pub unix_user: Option<String>,
    /// Programs this user may run; None = no restriction.
    pub allow: Option<Vec<String>>,
}

fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::Blob(b) => Some(b),
        Value::Text(t) => Some(t.into_bytes()),
        _ => None,
    }
}

/// Splits an allowlist (white space or commas between entries).
pub fn parse_allow(s: &str) -> Vec<String> {
    s.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn lookup(c: &Connection, user: &str) -> rusqlite::Result<Option<User>> {
    c.query_row(
        "SELECT pub, unix_user, allow FROM users WHERE user=?1",
        params![user],
        |r| {
            Ok((
                r.get::<_, Value>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        },
    )
    .optional()
    .map(|o| {
        o.and_then(|(p, u, a)| {
            Some(User {
                public: bytes(p)?,
                unix_user: u.filter(|s| !s.is_empty()),
                allow: a.map(|s| parse_allow(&s)),
            })
        })
    })
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("user {0:?} exists already (use --force to replace it)")]
    Exists(String),
    #[error("{0}")]
    Db(#[from] rusqlite::Error),
}

/// Adds a user (or, with `replace`, replaces its key and settings). `public` is stored as a
/// BLOB, as the original does.
pub fn add(
    c: &Connection,
    user: &str,
    public: &[u8],
    unix_user: Option<&str>,
    allow: Option<&str>,
    replace: bool,
) -> Result<(), AddError> {
    let exists = c
        .query_row("SELECT 1 FROM users WHERE user=?1", params![user], |_| {
            Ok(())
        })
        .optional()?
        .is_some();
    if exists && !replace {
        return Err(AddError::Exists(user.to_string()));
    }
    if exists {
        c.execute(
            "UPDATE users SET pub=?2, unix_user=?3, allow=?4 WHERE user=?1",
            params![user, public, unix_user, allow],
        )?;
    } else {
        c.execute(
            "INSERT INTO users(user, pub, unix_user, allow) VALUES (?1, ?2, ?3, ?4)",
            params![user, public, unix_user, allow],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_schema_gains_columns_and_blob_stays_blob() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users_db.sqlite");
        {
            // A database as the original creates it.
            let c = Connection::open(&p).unwrap();
            c.execute_batch(SCHEMA).unwrap();
            c.execute(
                "INSERT INTO users(user, pub) VALUES ('bob', ?1)",
                params![b"PEMBYTES".to_vec()],
            )
            .unwrap();
        }
        let c = open(&p).unwrap();
        let u = lookup(&c, "bob").unwrap().unwrap();
        assert_eq!(u.public, b"PEMBYTES");
        assert!(u.unix_user.is_none() && u.allow.is_none());
        add(
            &c,
            "alice",
            b"K",
            Some("nobody"),
            Some("id, ls /bin/true"),
            false,
        )
        .unwrap();
        assert!(matches!(
            add(&c, "alice", b"K", None, None, false),
            Err(AddError::Exists(_))
        ));
        let a = lookup(&c, "alice").unwrap().unwrap();
        assert_eq!(a.unix_user.as_deref(), Some("nobody"));
        assert_eq!(a.allow.unwrap(), ["id", "ls", "/bin/true"]);
        let t: String = c
            .query_row(
                "SELECT typeof(pub) FROM users WHERE user='alice'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(t, "blob");
        assert!(lookup(&c, "carol").unwrap().is_none());
        assert_eq!(db_path("users_db"), PathBuf::from("users_db.sqlite"));
        assert_eq!(db_path("x.sqlite"), PathBuf::from("x.sqlite"));
        assert_eq!(db_path(":memory:"), PathBuf::from(":memory:"));
    }
}
