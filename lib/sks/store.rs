//! skd's token store: the original's key/value layout (spec §3.1) in SQLite, in memory or in
//! `DIR/skd.sqlite`. Every change is one transaction, so concurrent requests and `tokenctl`
//! beside the daemon never see half a change, and an answered change survives `kill -9`.
//!
//! | key | value |
//! |---|---|
//! | `t:R:TOKEN` | info: `user\nsource\n[uid=N\n][gid=N\n]` (+ optional expiry column) |
//! | `ut:R:USER` | the current token, or `revoked` |
//! | `k:INFO` | 128-hex user key |
//! | `grk:G` | 40-hex group key |
//! | `gr:G:R:USER` | `admin` or `member` |
//!
//! R and G are lowercase hex SHA-1 of the realm and group names.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::wire;
use crate::secret;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS kv (
    k TEXT PRIMARY KEY NOT NULL,
    v TEXT NOT NULL,
    expires INTEGER          -- unix seconds; NULL = never (t: entries only)
) WITHOUT ROWID;";

/// Bytes of randomness in a token: 40 hex characters, the original's shape (clients and
/// tools may match on it), 160 bits from the OS CSPRNG instead of SHA-1 over UUIDs.
pub const TOKEN_BYTES: usize = 20;
const USER_KEY_BYTES: usize = 64;
const REVOKED: &str = "revoked";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}: {1}")]
    Dir(String, std::io::Error),
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("store lock poisoned")]
    Poisoned,
}

/// What a token is in a realm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Validity {
    Current(String),
    Superseded(String),
    No,
}

#[derive(Debug, PartialEq, Eq)]
pub enum GroupCreate {
    Created,
    Exists,
    Forbidden,
}

/// One stored token, for listings.
#[derive(Debug, serde::Serialize)]
pub struct TokenEntry {
    pub token: String,
    pub user: String,
    pub source: String,
    pub current: bool,
    pub expires: Option<i64>,
}

pub struct Store {
    /// All changes go through this connection, one transaction each.
    writer: Mutex<Connection>,
    /// Connections for reads on a file store, one per core (WAL readers never wait for a writer's
    /// fsync); `None` in memory, where the writer also reads.
    readers: Vec<Mutex<Connection>>,
    path: Option<PathBuf>,
    /// Answers of [`Store::check`] with the token's expiry, valid while `generation` is
    /// unchanged. Every change made here bumps it; on a file store, so does any commit a
    /// reader sees through `PRAGMA data_version` (tokenctl writing beside us).
    cache: Mutex<AnswerCache>,
    generation: AtomicU64,
    /// The `data_version` each reader last saw.
    data_versions: Vec<AtomicI64>,
    /// The change counter shared with tokenctl (file stores; `None` if it cannot be mapped),
    /// and the value this process last saw.
    changes: Option<super::changes::Changes>,
    seen_changes: AtomicU64,
    /// Milliseconds since `opened` of the last `PRAGMA data_version` check: done at most
    /// once a second on cache hits, for writers that bypass the counter (the sqlite3 shell).
    last_dv_check: AtomicU64,
    opened: std::time::Instant,
}

/// How often a cache hit also asks SQLite whether anyone changed the file.
const DV_CHECK_MS: u64 = 1000;

#[derive(Clone)]
struct Cached {
    generation: u64,
    validity: Validity,
    expires: Option<i64>,
}

/// Bytes of cached `/valid` answers kept at most (keys, answers and bookkeeping); past it the
/// least recently used answers go.
pub const CACHE_BYTES: usize = 4 << 20;

/// Bookkeeping bytes of one cache entry beside its strings (hash slot, links, lengths).
const ENTRY_OVERHEAD: usize = 128;

/// `/valid` answers, least recently used first, bounded in bytes.
struct AnswerCache {
    map: hashlink::LruCache<(String, String), Cached>,
    bytes: usize,
}

impl AnswerCache {
    fn new() -> Self {
        AnswerCache {
            map: hashlink::LruCache::new_unbounded(),
            bytes: 0,
        }
    }

    fn size(key: &(String, String), c: &Cached) -> usize {
        let info = match &c.validity {
            Validity::Current(i) | Validity::Superseded(i) => i.len(),
            Validity::No => 0,
        };
        key.0.len() + key.1.len() + info + ENTRY_OVERHEAD
    }

    fn get(&mut self, key: &(String, String)) -> Option<&Cached> {
        self.map.get(key)
    }

    fn insert(&mut self, key: (String, String), c: Cached) {
        self.bytes += Self::size(&key, &c);
        if let Some(old) = self.map.insert(key.clone(), c) {
            self.bytes -= Self::size(&key, &old);
        }
        while self.bytes > CACHE_BYTES {
            let Some((k, v)) = self.map.remove_lru() else {
                break;
            };
            self.bytes -= Self::size(&k, &v);
        }
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn tkey(r: &str, token: &str) -> String {
    format!("t:{r}:{token}")
}
fn ukey(r: &str, user: &str) -> String {
    format!("ut:{r}:{user}")
}
fn gkey(g: &str, r: &str, user: &str) -> String {
    format!("gr:{g}:{r}:{user}")
}

fn get(c: &Connection, k: &str) -> rusqlite::Result<Option<String>> {
    c.prepare_cached("SELECT v FROM kv WHERE k = ?1 AND (expires IS NULL OR expires > ?2)")?
        .query_row(params![k, now()], |r| r.get(0))
        .optional()
}

fn put(c: &Connection, k: &str, v: &str, expires: Option<i64>) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT OR REPLACE INTO kv (k, v, expires) VALUES (?1, ?2, ?3)")?
        .execute(params![k, v, expires])?;
    Ok(())
}

fn del(c: &Connection, k: &str) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM kv WHERE k = ?1")?
        .execute([k])?;
    Ok(())
}

/// The token's state in realm `r` (spec §2.3).
fn validity(c: &Connection, r: &str, token: &str) -> rusqlite::Result<Validity> {
    Ok(validity_expiring(c, r, token)?.0)
}

/// The token's state and, if it has one, its entry's expiry.
fn validity_expiring(
    c: &Connection,
    r: &str,
    token: &str,
) -> rusqlite::Result<(Validity, Option<i64>)> {
    let row = c
        .prepare_cached(
            "SELECT v, expires FROM kv WHERE k = ?1 AND (expires IS NULL OR expires > ?2)",
        )?
        .query_row(params![tkey(r, token), now()], |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?))
        })
        .optional()?;
    let Some((info, expires)) = row else {
        return Ok((Validity::No, None));
    };
    let Some(user) = wire::info_user(&info) else {
        return Ok((Validity::No, None));
    };
    let cur = get(c, &ukey(r, user))?;
    Ok((
        if cur
            .as_deref()
            .is_some_and(|t| secret::ct_eq(t.as_bytes(), token.as_bytes()))
        {
            Validity::Current(info)
        } else {
            Validity::Superseded(info)
        },
        expires,
    ))
}

fn current_info(c: &Connection, r: &str, token: &str) -> rusqlite::Result<Option<String>> {
    Ok(match validity(c, r, token)? {
        Validity::Current(i) => Some(i),
        _ => None,
    })
}

impl Store {
    /// The store in `dir` (created 0700 if missing), or in memory without a directory.
    pub fn open(dir: Option<&Path>) -> Result<Store, StoreError> {
        Self::open_as(dir, true)
    }

    /// `open`, creating the change counter only if `create` (skd does; tools join it).
    fn open_as(dir: Option<&Path>, create: bool) -> Result<Store, StoreError> {
        let Some(dir) = dir else {
            return Ok(Store {
                writer: Mutex::new(crate::sqlite::memory(SCHEMA)?),
                readers: Vec::new(),
                cache: Mutex::new(AnswerCache::new()),
                generation: AtomicU64::new(0),
                data_versions: Vec::new(),
                changes: None,
                seen_changes: AtomicU64::new(0),
                last_dv_check: AtomicU64::new(0),
                opened: std::time::Instant::now(),
                path: None,
            });
        };
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| StoreError::Dir(dir.display().to_string(), e))?;
        }
        let path = dir.join("skd.sqlite");
        let writer = crate::sqlite::open(&path, SCHEMA)?;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let readers = (0..cores)
            .map(|_| crate::sqlite::open(&path, SCHEMA).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        // skd creates the counter; a tool only joins it (a file it created as root would
        // lock skd's own user out). Without it, changes are found through data_version.
        let changes = match super::changes::Changes::open(&dir.join("skd.changes"), create) {
            Ok(c) => Some(c),
            Err(e) => {
                log::warn!(
                    "change-counter-unavailable path={} error=\"{e}\" effect=\"changes by other processes are seen within a second\"",
                    dir.join("skd.changes").display()
                );
                None
            }
        };
        Ok(Store {
            writer: Mutex::new(writer),
            data_versions: readers.iter().map(|_| AtomicI64::new(-1)).collect(),
            readers,
            cache: Mutex::new(AnswerCache::new()),
            generation: AtomicU64::new(0),
            seen_changes: AtomicU64::new(changes.as_ref().map_or(0, |c| c.get())),
            changes,
            last_dv_check: AtomicU64::new(0),
            opened: std::time::Instant::now(),
            path: Some(path),
        })
    }

    /// The store skd keeps in `dir`, which must exist already: a tool run as another user
    /// must not create a database the daemon cannot write.
    pub fn open_existing(dir: &Path) -> Result<Store, StoreError> {
        let db = dir.join("skd.sqlite");
        if !db.is_file() {
            let e = std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no skd.sqlite here (start skd -d DIR once first)",
            );
            return Err(StoreError::Dir(dir.display().to_string(), e));
        }
        Store::open_as(Some(dir), false)
    }

    /// The store in `dir` (created 0700 if missing) for a tool such as `tokenctl skd import`:
    /// it joins skd's change counter but never creates it.
    pub fn open_by_tool(dir: &Path) -> Result<Store, StoreError> {
        Store::open_as(Some(dir), false)
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        self.read_at(|_, c| f(c))
    }

    /// Runs `f` on the first idle reader (else waits for the first one), with its index; in
    /// memory on the writer, with index `usize::MAX`.
    fn read_at<T>(
        &self,
        f: impl FnOnce(usize, &Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        if let Some((i, c)) = self
            .readers
            .iter()
            .enumerate()
            .find_map(|(i, m)| m.try_lock().ok().map(|c| (i, c)))
        {
            return Ok(f(i, &c)?);
        }
        let (i, m) = match self.readers.first() {
            Some(m) => (0, m),
            None => (usize::MAX, &self.writer),
        };
        let c = m.lock().map_err(|_| StoreError::Poisoned)?;
        Ok(f(i, &c)?)
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut c = self.writer.lock().map_err(|_| StoreError::Poisoned)?;
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let v = f(&tx)?;
        tx.commit()?;
        // Still under the connection lock: a reader that saw the old data saw the old number.
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(c) = &self.changes {
            c.bump();
        }
        Ok(v)
    }

    /// `/valid`.
    pub fn check(&self, r: &str, token: &str) -> Result<Validity, StoreError> {
        let key = (r.to_string(), token.to_string());
        if self.readers.is_empty() {
            // In memory only this process writes: a hit needs no connection at all.
            if let Some(v) = self.cached(&key, self.generation.load(Ordering::SeqCst)) {
                return Ok(v);
            }
        } else if let Some(c) = &self.changes {
            // Another process's commit shows in the shared counter: a memory read.
            let v = c.get();
            if self.seen_changes.swap(v, Ordering::SeqCst) != v {
                self.generation.fetch_add(1, Ordering::SeqCst);
            }
            let ms = self.opened.elapsed().as_millis() as u64;
            let last = self.last_dv_check.load(Ordering::Relaxed);
            if ms.saturating_sub(last) < DV_CHECK_MS {
                if let Some(v) = self.cached(&key, self.generation.load(Ordering::SeqCst)) {
                    return Ok(v);
                }
            } else {
                self.last_dv_check.store(ms, Ordering::Relaxed);
            }
        }
        let (validity, fresh) = self.read_at(|i, c| {
            if let Some(last) = self.data_versions.get(i) {
                let dv: i64 = c
                    .prepare_cached("PRAGMA data_version")?
                    .query_row([], |row| row.get(0))?;
                if last.swap(dv, Ordering::SeqCst) != dv {
                    self.generation.fetch_add(1, Ordering::SeqCst);
                }
            }
            let seen = self.generation.load(Ordering::SeqCst);
            if let Some(v) = self.cached(&key, seen) {
                return Ok((v, None));
            }
            let (v, expires) = validity_expiring(c, r, token)?;
            Ok((v, Some((seen, expires))))
        })?;
        if let Some((seen, expires)) = fresh {
            let mut map = self.cache.lock().map_err(|_| StoreError::Poisoned)?;
            // A change committed meanwhile may not be in this answer: don't keep it.
            if seen == self.generation.load(Ordering::SeqCst) {
                let c = Cached {
                    generation: seen,
                    validity: validity.clone(),
                    expires,
                };
                map.insert(key, c);
            }
        }
        Ok(validity)
    }

    /// A cached answer still valid at `generation`, if any.
    fn cached(&self, key: &(String, String), generation: u64) -> Option<Validity> {
        let mut map = self.cache.lock().ok()?;
        let hit = map.get(key)?;
        (hit.generation == generation && hit.expires.map_or(true, |e| e > now()))
            .then(|| hit.validity.clone())
    }

    /// Makes a token current for `user` (a login, `/stored_token`, `tokenctl skd issue`):
    /// `token` if given, else a new random one. Returns the token.
    pub fn issue(
        &self,
        r: &str,
        user: &str,
        info: &str,
        token: Option<&str>,
        expires: Option<i64>,
    ) -> Result<String, StoreError> {
        let t = token
            .map(str::to_string)
            .unwrap_or_else(|| secret::hex_token(TOKEN_BYTES));
        self.write(|c| {
            put(c, &tkey(r, &t), info, expires)?;
            put(c, &ukey(r, user), &t, None)
        })?;
        Ok(t)
    }

    /// `/revoke`: true if the token was known (current or superseded).
    pub fn revoke(&self, r: &str, token: &str) -> Result<bool, StoreError> {
        self.write(|c| {
            let info = match validity(c, r, token)? {
                Validity::No => return Ok(false),
                Validity::Current(i) => Some(i),
                Validity::Superseded(_) => None,
            };
            del(c, &tkey(r, token))?;
            if let Some(user) = info.as_deref().and_then(wire::info_user) {
                put(c, &ukey(r, user), REVOKED, None)?;
            }
            Ok(true)
        })
    }

    /// `/replace`: a new current token with the same info; the old one is deleted.
    pub fn replace(
        &self,
        r: &str,
        token: &str,
        expires: Option<i64>,
    ) -> Result<Option<(String, String)>, StoreError> {
        self.write(|c| {
            let Some(info) = current_info(c, r, token)? else {
                return Ok(None);
            };
            let Some(user) = wire::info_user(&info) else {
                return Ok(None);
            };
            let n = secret::hex_token(TOKEN_BYTES);
            put(c, &tkey(r, &n), &info, expires)?;
            put(c, &ukey(r, user), &n, None)?;
            del(c, &tkey(r, token))?;
            Ok(Some((n, info)))
        })
    }

    /// `/get_key`: `None` if the token is not current, else the user key if one exists.
    pub fn get_key(&self, r: &str, token: &str) -> Result<Option<Option<String>>, StoreError> {
        self.read(|c| match current_info(c, r, token)? {
            None => Ok(None),
            Some(info) => Ok(Some(get(c, &format!("k:{info}"))?)),
        })
    }

    /// `/gen_key`: a new 512-bit user key (replacing any old one), or `None` if not current.
    pub fn gen_key(&self, r: &str, token: &str) -> Result<Option<String>, StoreError> {
        self.write(|c| {
            let Some(info) = current_info(c, r, token)? else {
                return Ok(None);
            };
            let key = secret::hex_token(USER_KEY_BYTES);
            put(c, &format!("k:{info}"), &key, None)?;
            Ok(Some(key))
        })
    }

    /// `/create_group`.
    pub fn create_group(
        &self,
        r: &str,
        token: &str,
        group: &str,
    ) -> Result<GroupCreate, StoreError> {
        let g = secret::sha1_hex(group.as_bytes());
        self.write(|c| {
            let Some(info) = current_info(c, r, token)? else {
                return Ok(GroupCreate::Forbidden);
            };
            let Some(user) = wire::info_user(&info) else {
                return Ok(GroupCreate::Forbidden);
            };
            if get(c, &format!("grk:{g}"))?.is_some() {
                return Ok(GroupCreate::Exists);
            }
            put(c, &gkey(&g, r, user), "admin", None)?;
            put(
                c,
                &format!("grk:{g}"),
                &secret::hex_token(TOKEN_BYTES),
                None,
            )?;
            Ok(GroupCreate::Created)
        })
    }

    /// `/mod_group`: `None` if not allowed, else whether a self-removal was skipped.
    pub fn mod_group(
        &self,
        r: &str,
        token: &str,
        group: &str,
        add_members: &str,
        add_admins: &str,
        remove: &str,
    ) -> Result<Option<bool>, StoreError> {
        let g = secret::sha1_hex(group.as_bytes());
        let items = |s: &str| {
            s.split(',')
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let (members, admins, removals) = (items(add_members), items(add_admins), items(remove));
        self.write(|c| {
            let Some(info) = current_info(c, r, token)? else {
                return Ok(None);
            };
            let Some(user) = wire::info_user(&info) else {
                return Ok(None);
            };
            if get(c, &gkey(&g, r, user))?.as_deref() != Some("admin") {
                return Ok(None);
            }
            for m in &members {
                put(c, &gkey(&g, r, m), "member", None)?;
            }
            for a in &admins {
                put(c, &gkey(&g, r, a), "admin", None)?;
            }
            let mut self_removal = false;
            for x in &removals {
                if x == user {
                    self_removal = true;
                } else {
                    del(c, &gkey(&g, r, x))?;
                }
            }
            Ok(Some(self_removal))
        })
    }

    /// `/group_hash`: hex SHA-256 of `salt \n group-key`, for members and admins.
    pub fn group_hash(
        &self,
        r: &str,
        token: &str,
        group: &str,
        salt: &str,
    ) -> Result<Option<String>, StoreError> {
        let g = secret::sha1_hex(group.as_bytes());
        self.read(|c| {
            let Some(info) = current_info(c, r, token)? else {
                return Ok(None);
            };
            let Some(user) = wire::info_user(&info) else {
                return Ok(None);
            };
            match get(c, &gkey(&g, r, user))?.as_deref() {
                Some("admin") | Some("member") => {}
                _ => return Ok(None),
            }
            let Some(key) = get(c, &format!("grk:{g}"))? else {
                return Ok(None);
            };
            Ok(Some(secret::sha256_hex(
                format!("{salt}\n{key}").as_bytes(),
            )))
        })
    }

    /// Live tokens of realm hash `r`, optionally of one user, sorted by token text.
    /// Live tokens of realm hash `r` (of `user` only, if given), in token order, each handed
    /// to `each` as it is read: a store of a million tokens is listed without holding them.
    pub fn list_each(
        &self,
        r: &str,
        user: Option<&str>,
        mut each: impl FnMut(TokenEntry),
    ) -> Result<(), StoreError> {
        let prefix = format!("t:{r}:");
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT k, v, expires FROM kv WHERE k > ?1 AND k < ?2 AND (expires IS NULL OR expires > ?3) ORDER BY k",
            )?;
            let rows = st.query_map(params![prefix, format!("t:{r};"), now()], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, Option<i64>>(2)?))
            })?;
            for row in rows {
                let (k, info, expires) = row?;
                let token = k[prefix.len()..].to_string();
                let Some(u) = wire::info_user(&info) else { continue };
                if user.is_some_and(|want| want != u) {
                    continue;
                }
                let source = info.split('\n').nth(1).unwrap_or("").to_string();
                let current = get(c, &ukey(r, u))?.as_deref() == Some(token.as_str());
                each(TokenEntry { token, user: u.to_string(), source, current, expires });
            }
            Ok(())
        })
    }

    /// Adds the original's records (key, value) in one transaction; existing keys are replaced
    /// only with `overwrite`. Returns how many were written.
    pub fn import(&self, pairs: &[(String, String)], overwrite: bool) -> Result<usize, StoreError> {
        let sql = if overwrite {
            "INSERT OR REPLACE INTO kv (k, v, expires) VALUES (?1, ?2, NULL)"
        } else {
            "INSERT OR IGNORE INTO kv (k, v, expires) VALUES (?1, ?2, NULL)"
        };
        self.write(|c| {
            let mut st = c.prepare(sql)?;
            let mut n = 0;
            for (k, v) in pairs {
                n += st.execute(params![k, v])?;
            }
            Ok(n)
        })
    }

    /// The info records that own a user key (`k:INFO`), i.e. whose logins see one.
    pub fn key_owners(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut st =
                c.prepare("SELECT substr(k, 3) FROM kv WHERE k > 'k:' AND k < 'k;' ORDER BY k")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect()
        })
    }

    /// The original's `CopyKeys`: every user key owned by a record with source `from` is
    /// copied to the same record with source `to` (kept if that exists, unless `overwrite`).
    /// Returns (copied, candidates).
    pub fn copy_keys(
        &self,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<(usize, usize), StoreError> {
        let owners = self.key_owners()?;
        self.write(|c| {
            let (mut copied, mut found) = (0, 0);
            for info in &owners {
                let mut lines: Vec<&str> = info.split('\n').collect();
                if lines.get(1) != Some(&from) {
                    continue;
                }
                found += 1;
                lines[1] = to;
                let target = format!("k:{}", lines.join("\n"));
                if !overwrite && get(c, &target)?.is_some() {
                    continue;
                }
                if let Some(key) = get(c, &format!("k:{info}"))? {
                    put(c, &target, &key, None)?;
                    copied += 1;
                }
            }
            Ok((copied, found))
        })
    }

    /// Deletes expired token entries; returns how many.
    pub fn purge_expired(&self) -> Result<usize, StoreError> {
        self.write(|c| {
            c.execute(
                "DELETE FROM kv WHERE expires IS NOT NULL AND expires <= ?1",
                [now()],
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_matches_spec() {
        let s = Store::open(None).unwrap();
        let r = secret::sha1_hex(b"realm");
        let t1 = s
            .issue(&r, "alice", "alice\nauth/pam\n", None, None)
            .unwrap();
        assert_eq!(t1.len(), 40);
        assert_eq!(
            s.check(&r, &t1).unwrap(),
            Validity::Current("alice\nauth/pam\n".into())
        );
        let t2 = s
            .issue(&r, "alice", "alice\nauth/pam\n", None, None)
            .unwrap();
        assert!(matches!(s.check(&r, &t1).unwrap(), Validity::Superseded(_)));
        assert_eq!(s.replace(&r, &t1, None).unwrap(), None);
        let (t3, _) = s.replace(&r, &t2, None).unwrap().unwrap();
        assert_eq!(s.check(&r, &t2).unwrap(), Validity::No);
        assert_eq!(s.get_key(&r, &t3).unwrap(), Some(None));
        let k = s.gen_key(&r, &t3).unwrap().unwrap();
        assert_eq!(k.len(), 128);
        assert_eq!(s.get_key(&r, &t3).unwrap(), Some(Some(k)));
        assert_eq!(s.get_key(&r, &t1).unwrap(), None);
        assert!(s.revoke(&r, &t1).unwrap());
        assert!(!s.revoke(&r, &t1).unwrap());
        assert!(s.revoke(&r, &t3).unwrap());
        assert_eq!(s.check(&r, &t3).unwrap(), Validity::No);
    }

    #[test]
    fn groups() {
        let s = Store::open(None).unwrap();
        let r = secret::sha1_hex(b"r");
        let adm = s.issue(&r, "adm", "adm\nstored\n", None, None).unwrap();
        let mem = s.issue(&r, "mem", "mem\nstored\n", None, None).unwrap();
        assert_eq!(s.create_group(&r, &adm, "g").unwrap(), GroupCreate::Created);
        assert_eq!(s.create_group(&r, &adm, "g").unwrap(), GroupCreate::Exists);
        assert_eq!(s.group_hash(&r, &mem, "g", "").unwrap(), None);
        assert_eq!(
            s.mod_group(&r, &adm, "g", "mem,,x", "y", "").unwrap(),
            Some(false)
        );
        let h = s.group_hash(&r, &mem, "g", "").unwrap().unwrap();
        assert_eq!(h, s.group_hash(&r, &adm, "g", "").unwrap().unwrap());
        assert_ne!(h, s.group_hash(&r, &adm, "g", "salt").unwrap().unwrap());
        assert_eq!(
            s.mod_group(&r, &adm, "g", "", "", "adm,x").unwrap(),
            Some(true)
        );
        assert_eq!(s.mod_group(&r, &mem, "g", "", "", "").unwrap(), None);
    }

    #[test]
    fn expired_tokens_answer_no() {
        let s = Store::open(None).unwrap();
        let t = s
            .issue("r", "u", "u\nstored\n", None, Some(now() - 1))
            .unwrap();
        assert_eq!(s.check("r", &t).unwrap(), Validity::No);
        assert_eq!(s.purge_expired().unwrap(), 1);
    }
}
