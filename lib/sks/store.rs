//! skd's token store: the original's key/value layout (spec §3.1) in SQLite (in memory or in
//! `DIR/skd.sqlite`) or in PostgreSQL (lib/sks/pg.rs, for several skd hosts). Every change is
//! one transaction, so concurrent requests and `tokenctl` beside the daemon never see half a
//! change, and an answered change survives `kill -9`. The rules of the spec are written once,
//! over [`Kv`]; each backend only reads, writes and scans keys.
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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::pg::Pg;
use super::wire;
use crate::daemon::log::quoted;
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

/// Records read at a time by scans (listings, migration).
const PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}: {1}")]
    Dir(String, std::io::Error),
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Pg(String),
    /// The database cannot be reached now (skd answers 503 and tries again later).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The database is reachable but not usable by us: refused login, no rights, a newer
    /// schema. Not cured by waiting.
    #[error("store not usable: {0}")]
    Setup(String),
    #[error("the target store is not empty ({0}); migrate copies into an empty store only")]
    NotEmpty(String),
    #[error("store lock poisoned")]
    Poisoned,
}

/// Where a store is: `memory:`, `sqlite:DIR` or a `postgresql://` URL (`--store`).
#[derive(Clone, Debug)]
pub enum Location {
    Memory,
    Sqlite(PathBuf),
    Postgres(Box<super::pg::Target>),
}

impl Location {
    /// Parses a `--store` value; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Location, String> {
        if s == "memory:" {
            return Ok(Location::Memory);
        }
        if let Some(dir) = s.strip_prefix("sqlite:") {
            if dir.is_empty() {
                return Err("sqlite: needs a directory (sqlite:DIR)".into());
            }
            return Ok(Location::Sqlite(PathBuf::from(dir)));
        }
        if s.starts_with("postgresql://") || s.starts_with("postgres://") {
            return super::pg::Target::parse(s).map(|t| Location::Postgres(Box::new(t)));
        }
        Err("a store is memory:, sqlite:DIR or postgresql://[USER@]HOST[:PORT]/DB[?PARAMS]".into())
    }

    /// For log lines and status: never a password (none is allowed in a URL).
    pub fn describe(&self) -> String {
        match self {
            Location::Memory => "memory".into(),
            Location::Sqlite(d) => format!("sqlite:{}", d.display()),
            Location::Postgres(t) => t.describe(),
        }
    }
}

/// A realm as the store knows it: the lowercase hex SHA-1 of its name (the original's key
/// layout, spec §2.3). Realm names never reach the store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RealmHash(String);

impl RealmHash {
    pub fn of(realm: &str) -> RealmHash {
        RealmHash(secret::sha1_hex(realm.as_bytes()))
    }
}

impl std::fmt::Display for RealmHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `/get_key` finds for a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserKey {
    /// The token is not current: no answer.
    NotCurrent,
    /// Current, but its user has no key yet (an empty answer).
    None,
    Key(String),
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

/// One stored record: key, value, expiry.
pub type Record = (String, String, Option<i64>);

/// The key/value operations every backend offers, inside one transaction (writes) or on one
/// connection (reads). Only live records are seen: an expired one reads as missing.
pub trait Kv {
    /// The live value of `k` with its expiry.
    fn get_exp(&mut self, k: &str) -> Result<Option<(String, Option<i64>)>, StoreError>;
    /// Writes `k`; an existing record is replaced only if `replace`. True if written.
    fn insert(
        &mut self,
        k: &str,
        v: &str,
        expires: Option<i64>,
        replace: bool,
    ) -> Result<bool, StoreError>;
    fn del(&mut self, k: &str) -> Result<(), StoreError>;
    /// At most `limit` live records with `after < k` (and `k < before`), in key order (bytes).
    fn scan(
        &mut self,
        after: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError>;
    /// Deletes the expired records; returns how many.
    fn purge(&mut self) -> Result<usize, StoreError>;

    fn get(&mut self, k: &str) -> Result<Option<String>, StoreError> {
        Ok(self.get_exp(k)?.map(|(v, _)| v))
    }
    fn put(&mut self, k: &str, v: &str, expires: Option<i64>) -> Result<(), StoreError> {
        self.insert(k, v, expires, true).map(|_| ())
    }
    /// The live values of `keys` (one round trip where that matters).
    fn get_many(&mut self, keys: &[String]) -> Result<HashMap<String, String>, StoreError> {
        let mut m = HashMap::new();
        for k in keys {
            if let Some(v) = self.get(k)? {
                m.insert(k.clone(), v);
            }
        }
        Ok(m)
    }
    /// Adds new records (keys not in the store); returns how many.
    fn bulk(&mut self, rows: &[Record]) -> Result<usize, StoreError> {
        let mut n = 0;
        for (k, v, e) in rows {
            n += self.insert(k, v, *e, false)? as usize;
        }
        Ok(n)
    }
}

/// [`Kv`] on a SQLite connection (inside the writer's transaction, or a reader).
struct Lite<'a>(&'a Connection);

impl Kv for Lite<'_> {
    fn get_exp(&mut self, k: &str) -> Result<Option<(String, Option<i64>)>, StoreError> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT v, expires FROM kv WHERE k = ?1 AND (expires IS NULL OR expires > ?2)",
            )?
            .query_row(params![k, now()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn insert(
        &mut self,
        k: &str,
        v: &str,
        expires: Option<i64>,
        replace: bool,
    ) -> Result<bool, StoreError> {
        let sql = if replace {
            "INSERT OR REPLACE INTO kv (k, v, expires) VALUES (?1, ?2, ?3)"
        } else {
            "INSERT OR IGNORE INTO kv (k, v, expires) VALUES (?1, ?2, ?3)"
        };
        Ok(self
            .0
            .prepare_cached(sql)?
            .execute(params![k, v, expires])?
            > 0)
    }

    fn del(&mut self, k: &str) -> Result<(), StoreError> {
        self.0
            .prepare_cached("DELETE FROM kv WHERE k = ?1")?
            .execute([k])?;
        Ok(())
    }

    fn scan(
        &mut self,
        after: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let row = |r: &rusqlite::Row| Ok((r.get(0)?, r.get(1)?, r.get(2)?));
        let rows = match before {
            Some(b) => self
                .0
                .prepare_cached(
                    "SELECT k, v, expires FROM kv WHERE k > ?1 AND k < ?2 AND (expires IS NULL OR expires > ?3) ORDER BY k LIMIT ?4",
                )?
                .query_map(params![after, b, now(), limit], row)?
                .collect::<rusqlite::Result<Vec<_>>>()?,
            None => self
                .0
                .prepare_cached(
                    "SELECT k, v, expires FROM kv WHERE k > ?1 AND (expires IS NULL OR expires > ?2) ORDER BY k LIMIT ?3",
                )?
                .query_map(params![after, now(), limit], row)?
                .collect::<rusqlite::Result<Vec<_>>>()?,
        };
        Ok(rows)
    }

    fn purge(&mut self) -> Result<usize, StoreError> {
        Ok(self.0.execute(
            "DELETE FROM kv WHERE expires IS NOT NULL AND expires <= ?1",
            [now()],
        )?)
    }
}

/// The SQLite backend: a file (with readers beside the writer) or memory.
struct Sqlite {
    /// All changes go through this connection, one transaction each.
    writer: Mutex<Connection>,
    /// Connections for reads on a file store, one per core (WAL readers never wait for a writer's
    /// fsync); empty in memory, where the writer also reads.
    readers: Vec<Mutex<Connection>>,
    path: Option<PathBuf>,
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

enum Backend {
    Sqlite(Sqlite),
    Pg(Pg),
}

pub struct Store {
    backend: Backend,
    /// Answers of [`Store::check`], shared with the PostgreSQL listener that invalidates them.
    answers: std::sync::Arc<Answers>,
}

/// Cached `/valid` answers with the token's expiry, each valid while `generation` is
/// unchanged. Every change made here bumps it; so does any change another process makes,
/// as soon as this one learns of it (SQLite: the change counter and `PRAGMA data_version`;
/// PostgreSQL: a notification).
pub struct Answers {
    cache: Mutex<AnswerCache>,
    generation: AtomicU64,
}

impl Answers {
    fn new() -> Self {
        Answers {
            cache: Mutex::new(AnswerCache::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// Some change happened: no answer cached so far is used again.
    pub fn bump(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// `bump`, and the memory of every cached answer freed.
    pub fn forget(&self) {
        self.bump();
        if let Ok(mut c) = self.cache.lock() {
            *c = AnswerCache::new();
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// A cached answer still valid at `generation`, if any.
    fn cached(&self, key: &(String, String), generation: u64) -> Option<Validity> {
        let mut map = self.cache.lock().ok()?;
        let hit = map.get(key)?;
        (hit.generation == generation && hit.expires.map_or(true, |e| e > now()))
            .then(|| hit.validity.clone())
    }

    /// Keeps an answer read at generation `seen`, unless a change came meanwhile.
    fn keep(&self, key: (String, String), seen: u64, validity: &Validity, expires: Option<i64>) {
        let Ok(mut map) = self.cache.lock() else {
            return;
        };
        // A change committed meanwhile may not be in this answer: don't keep it.
        if seen == self.generation() {
            let c = Cached {
                generation: seen,
                validity: validity.clone(),
                expires,
            };
            map.insert(key, c);
        }
    }
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
const CACHE_BYTES: usize = 4 << 20;

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

fn tkey(r: &RealmHash, token: &str) -> String {
    format!("t:{r}:{token}")
}
fn ukey(r: &RealmHash, user: &str) -> String {
    format!("ut:{r}:{user}")
}
fn gkey(g: &str, r: &RealmHash, user: &str) -> String {
    format!("gr:{g}:{r}:{user}")
}

/// The token's state in realm `r` (spec §2.3).
fn validity(c: &mut dyn Kv, r: &RealmHash, token: &str) -> Result<Validity, StoreError> {
    Ok(validity_expiring(c, r, token)?.0)
}

/// The token's state and, if it has one, its entry's expiry.
fn validity_expiring(
    c: &mut dyn Kv,
    r: &RealmHash,
    token: &str,
) -> Result<(Validity, Option<i64>), StoreError> {
    let Some((info, expires)) = c.get_exp(&tkey(r, token))? else {
        return Ok((Validity::No, None));
    };
    let Some(user) = wire::info_user(&info) else {
        return Ok((Validity::No, None));
    };
    let cur = c.get(&ukey(r, user))?;
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

fn current_info(c: &mut dyn Kv, r: &RealmHash, token: &str) -> Result<Option<String>, StoreError> {
    Ok(match validity(c, r, token)? {
        Validity::Current(i) => Some(i),
        _ => None,
    })
}

impl Sqlite {
    /// Runs `f` on the first idle reader (else waits for the first one), with its index; in
    /// memory on the writer, with index `usize::MAX`.
    fn read_at<T>(
        &self,
        f: impl FnOnce(usize, &Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some((i, c)) = self
            .readers
            .iter()
            .enumerate()
            .find_map(|(i, m)| m.try_lock().ok().map(|c| (i, c)))
        {
            return f(i, &c);
        }
        let (i, m) = match self.readers.first() {
            Some(m) => (0, m),
            None => (usize::MAX, &self.writer),
        };
        let c = m.lock().map_err(|_| StoreError::Poisoned)?;
        f(i, &c)
    }

    fn write<T>(
        &self,
        answers: &Answers,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut c = self.writer.lock().map_err(|_| StoreError::Poisoned)?;
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let v = f(&tx)?;
        tx.commit()?;
        // Still under the connection lock: a reader that saw the old data saw the old number.
        answers.bump();
        if let Some(c) = &self.changes {
            c.bump();
        }
        Ok(v)
    }

    /// `/valid` on SQLite: the cached answer while nobody changed the store.
    fn check(&self, answers: &Answers, r: &RealmHash, token: &str) -> Result<Validity, StoreError> {
        let key = (r.to_string(), token.to_string());
        if self.readers.is_empty() {
            // In memory only this process writes: a hit needs no connection at all.
            if let Some(v) = answers.cached(&key, answers.generation()) {
                return Ok(v);
            }
        } else if let Some(c) = &self.changes {
            // Another process's commit shows in the shared counter: a memory read.
            let v = c.get();
            if self.seen_changes.swap(v, Ordering::SeqCst) != v {
                answers.bump();
            }
            let ms = self.opened.elapsed().as_millis() as u64;
            let last = self.last_dv_check.load(Ordering::Relaxed);
            if ms.saturating_sub(last) < DV_CHECK_MS {
                if let Some(v) = answers.cached(&key, answers.generation()) {
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
                    answers.bump();
                }
            }
            let seen = answers.generation();
            if let Some(v) = answers.cached(&key, seen) {
                return Ok((v, None));
            }
            let (v, expires) = validity_expiring(&mut Lite(c), r, token)?;
            Ok((v, Some((seen, expires))))
        })?;
        if let Some((seen, expires)) = fresh {
            answers.keep(key, seen, &validity, expires);
        }
        Ok(validity)
    }
}

impl Store {
    /// The store in `dir` (created 0700 if missing), or in memory without a directory.
    pub fn open(dir: Option<&Path>) -> Result<Store, StoreError> {
        Self::open_as(dir, true)
    }

    fn with(backend: Backend, answers: std::sync::Arc<Answers>) -> Store {
        Store { backend, answers }
    }

    /// `open`, creating the change counter only if `create` (skd does; tools join it).
    fn open_as(dir: Option<&Path>, create: bool) -> Result<Store, StoreError> {
        let answers = std::sync::Arc::new(Answers::new());
        let Some(dir) = dir else {
            let lite = Sqlite {
                writer: Mutex::new(crate::sqlite::memory(SCHEMA)?),
                readers: Vec::new(),
                data_versions: Vec::new(),
                changes: None,
                seen_changes: AtomicU64::new(0),
                last_dv_check: AtomicU64::new(0),
                opened: std::time::Instant::now(),
                path: None,
            };
            return Ok(Store::with(Backend::Sqlite(lite), answers));
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
                    "change-counter-unavailable path={} error={e} effect=\"changes by other processes are seen within a second\"",
                    dir.join("skd.changes").display(), e = quoted(&e));
                None
            }
        };
        let lite = Sqlite {
            writer: Mutex::new(writer),
            data_versions: readers.iter().map(|_| AtomicI64::new(-1)).collect(),
            readers,
            seen_changes: AtomicU64::new(changes.as_ref().map_or(0, |c| c.get())),
            changes,
            last_dv_check: AtomicU64::new(0),
            opened: std::time::Instant::now(),
            path: Some(path),
        };
        Ok(Store::with(Backend::Sqlite(lite), answers))
    }

    /// The store skd keeps in `dir`, which must exist already: a tool run as another user
    /// must not create a database the daemon cannot write.
    fn open_existing(dir: &Path) -> Result<Store, StoreError> {
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
    fn open_by_tool(dir: &Path) -> Result<Store, StoreError> {
        Store::open_as(Some(dir), false)
    }

    /// The PostgreSQL store at `target` with `password` (if the server asks for one).
    /// `daemon`: skd, which keeps a pool of connections and listens for other hosts' changes
    /// (and starts even while the database is unreachable, answering 503 until it is back);
    /// otherwise a tool, with one connection, which fails at once if it cannot connect.
    pub fn open_postgres(
        target: &super::pg::Target,
        password: Option<crate::locked::Locked>,
        daemon: bool,
    ) -> Result<Store, StoreError> {
        let answers = std::sync::Arc::new(Answers::new());
        let pg = Pg::open(target, password, daemon, answers.clone())?;
        Ok(Store::with(Backend::Pg(pg), answers))
    }

    /// Opens the store at `at` for a tool: an SQLite store must exist already unless `create`.
    pub fn open_location(
        at: &Location,
        password: Option<crate::locked::Locked>,
        create: bool,
    ) -> Result<Store, StoreError> {
        match at {
            Location::Memory => Store::open(None),
            Location::Sqlite(d) if create => Store::open_by_tool(d),
            Location::Sqlite(d) => Store::open_existing(d),
            Location::Postgres(t) => Store::open_postgres(t, password, false),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite(l) => l.path.as_deref(),
            Backend::Pg(_) => None,
        }
    }

    /// True when store calls may wait on the network (PostgreSQL): callers on an async
    /// runtime run them on the blocking pool, except [`Store::check_cached`].
    pub fn is_remote(&self) -> bool {
        matches!(self.backend, Backend::Pg(_))
    }

    /// False while a PostgreSQL store is known to be unreachable (skd refuses logins with
    /// 503 before asking PAM); always true for SQLite.
    pub fn available(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(_) => true,
            Backend::Pg(p) => p.available(),
        }
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Kv) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &self.backend {
            Backend::Sqlite(l) => l.read_at(|_, c| f(&mut Lite(c))),
            Backend::Pg(p) => p.read(f),
        }
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn Kv) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &self.backend {
            Backend::Sqlite(l) => l.write(&self.answers, |c| f(&mut Lite(c))),
            Backend::Pg(p) => {
                let v = p.write(f)?;
                self.answers.bump();
                Ok(v)
            }
        }
    }

    /// `/valid`.
    pub fn check(&self, r: &RealmHash, token: &str) -> Result<Validity, StoreError> {
        let p = match &self.backend {
            Backend::Sqlite(l) => return l.check(&self.answers, r, token),
            Backend::Pg(p) => p,
        };
        let key = (r.to_string(), token.to_string());
        // The cache only while the notification channel is up (and was seen up within its
        // lease): otherwise another host's revocation could go unseen.
        let usable = p.cache_usable();
        let seen = self.answers.generation();
        if usable {
            if let Some(v) = self.answers.cached(&key, seen) {
                return Ok(v);
            }
        }
        let (v, expires) = p.read(|kv| validity_expiring(kv, r, token))?;
        if usable && p.cache_usable() {
            self.answers.keep(key, seen, &v, expires);
        }
        Ok(v)
    }

    /// `/valid` from the cache of a PostgreSQL store, without waiting: `None` when the
    /// answer needs the database (then call [`Store::check`] on the blocking pool).
    pub fn check_cached(&self, r: &RealmHash, token: &str) -> Option<Validity> {
        let Backend::Pg(p) = &self.backend else {
            return None;
        };
        if !p.cache_usable() {
            return None;
        }
        let key = (r.to_string(), token.to_string());
        self.answers.cached(&key, self.answers.generation())
    }

    /// Makes a token current for `user` (a login, `/stored_token`, `tokenctl skd issue`):
    /// `token` if given, else a new random one. Returns the token.
    pub fn issue(
        &self,
        r: &RealmHash,
        user: &str,
        info: &str,
        token: Option<&str>,
        expires: Option<i64>,
    ) -> Result<String, StoreError> {
        let t = token
            .map(str::to_string)
            .unwrap_or_else(|| secret::hex_token(TOKEN_BYTES));
        self.write(|c| {
            c.put(&tkey(r, &t), info, expires)?;
            c.put(&ukey(r, user), &t, None)
        })?;
        Ok(t)
    }

    /// `/revoke`: true if the token was known (current or superseded).
    pub fn revoke(&self, r: &RealmHash, token: &str) -> Result<bool, StoreError> {
        self.write(|c| {
            let info = match validity(c, r, token)? {
                Validity::No => return Ok(false),
                Validity::Current(i) => Some(i),
                Validity::Superseded(_) => None,
            };
            c.del(&tkey(r, token))?;
            if let Some(user) = info.as_deref().and_then(wire::info_user) {
                c.put(&ukey(r, user), REVOKED, None)?;
            }
            Ok(true)
        })
    }

    /// `/replace`: a new current token with the same info; the old one is deleted.
    pub fn replace(
        &self,
        r: &RealmHash,
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
            c.put(&tkey(r, &n), &info, expires)?;
            c.put(&ukey(r, user), &n, None)?;
            c.del(&tkey(r, token))?;
            Ok(Some((n, info)))
        })
    }

    /// `/get_key`: the user key of a current token.
    pub fn get_key(&self, r: &RealmHash, token: &str) -> Result<UserKey, StoreError> {
        self.read(|c| {
            let Some(info) = current_info(c, r, token)? else {
                return Ok(UserKey::NotCurrent);
            };
            Ok(match c.get(&format!("k:{info}"))? {
                Some(k) => UserKey::Key(k),
                None => UserKey::None,
            })
        })
    }

    /// `/gen_key`: a new 512-bit user key (replacing any old one), or `None` if not current.
    pub fn gen_key(&self, r: &RealmHash, token: &str) -> Result<Option<String>, StoreError> {
        self.write(|c| {
            let Some(info) = current_info(c, r, token)? else {
                return Ok(None);
            };
            let key = secret::hex_token(USER_KEY_BYTES);
            c.put(&format!("k:{info}"), &key, None)?;
            Ok(Some(key))
        })
    }

    /// `/create_group`.
    pub fn create_group(
        &self,
        r: &RealmHash,
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
            if c.get(&format!("grk:{g}"))?.is_some() {
                return Ok(GroupCreate::Exists);
            }
            c.put(&gkey(&g, r, user), "admin", None)?;
            c.put(&format!("grk:{g}"), &secret::hex_token(TOKEN_BYTES), None)?;
            Ok(GroupCreate::Created)
        })
    }

    /// `/mod_group`: `None` if not allowed, else whether a self-removal was skipped.
    pub fn mod_group(
        &self,
        r: &RealmHash,
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
            if c.get(&gkey(&g, r, user))?.as_deref() != Some("admin") {
                return Ok(None);
            }
            for m in &members {
                c.put(&gkey(&g, r, m), "member", None)?;
            }
            for a in &admins {
                c.put(&gkey(&g, r, a), "admin", None)?;
            }
            let mut self_removal = false;
            for x in &removals {
                if x == user {
                    self_removal = true;
                } else {
                    c.del(&gkey(&g, r, x))?;
                }
            }
            Ok(Some(self_removal))
        })
    }

    /// `/group_hash`: hex SHA-256 of `salt \n group-key`, for members and admins.
    pub fn group_hash(
        &self,
        r: &RealmHash,
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
            match c.get(&gkey(&g, r, user))?.as_deref() {
                Some("admin") | Some("member") => {}
                _ => return Ok(None),
            }
            let Some(key) = c.get(&format!("grk:{g}"))? else {
                return Ok(None);
            };
            Ok(Some(secret::sha256_hex(
                format!("{salt}\n{key}").as_bytes(),
            )))
        })
    }

    /// Live tokens of realm hash `r` (of `user` only, if given), in token order, each handed
    /// to `each` as it is read: a store of a million tokens is listed a page at a time,
    /// never held whole.
    pub fn list_each(
        &self,
        r: &RealmHash,
        user: Option<&str>,
        mut each: impl FnMut(TokenEntry),
    ) -> Result<(), StoreError> {
        let prefix = format!("t:{r}:");
        let end = format!("t:{r};");
        self.read(|c| {
            let mut after = prefix.clone();
            loop {
                let page = c.scan(&after, Some(&end), PAGE)?;
                let Some(last) = page.last() else { break };
                after = last.0.clone();
                let users: Vec<String> = page
                    .iter()
                    .filter_map(|(_, info, _)| wire::info_user(info))
                    .filter(|u| user.map_or(true, |want| want == *u))
                    .map(|u| ukey(r, u))
                    .collect();
                let current = c.get_many(&users)?;
                for (k, info, expires) in page {
                    let Some(u) = wire::info_user(&info) else {
                        continue;
                    };
                    if user.is_some_and(|want| want != u) {
                        continue;
                    }
                    let token = k[prefix.len()..].to_string();
                    let source = info.split('\n').nth(1).unwrap_or("").to_string();
                    let is_current =
                        current.get(&ukey(r, u)).map(String::as_str) == Some(token.as_str());
                    each(TokenEntry {
                        token,
                        user: u.to_string(),
                        source,
                        current: is_current,
                        expires,
                    });
                }
            }
            Ok(())
        })
    }

    /// Adds the original's records (key, value) in one transaction; existing keys are replaced
    /// only with `overwrite`. Returns how many were written.
    pub fn import(&self, pairs: &[(String, String)], overwrite: bool) -> Result<usize, StoreError> {
        self.write(|c| {
            let mut n = 0;
            for (k, v) in pairs {
                n += c.insert(k, v, None, overwrite)? as usize;
            }
            Ok(n)
        })
    }

    /// The info records that own a user key (`k:INFO`), i.e. whose logins see one.
    pub fn key_owners(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut owners = Vec::new();
            let mut after = "k:".to_string();
            loop {
                let page = c.scan(&after, Some("k;"), PAGE)?;
                let Some(last) = page.last() else { break };
                after = last.0.clone();
                owners.extend(page.into_iter().map(|(k, _, _)| k[2..].to_string()));
            }
            Ok(owners)
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
                if !overwrite && c.get(&target)?.is_some() {
                    continue;
                }
                if let Some(key) = c.get(&format!("k:{info}"))? {
                    c.put(&target, &key, None)?;
                    copied += 1;
                }
            }
            Ok((copied, found))
        })
    }

    /// Copies every live record of this store (tokens, keys, groups) into `target`, which
    /// must be empty, in one transaction of the target: all or nothing. Returns how many.
    pub fn copy_into(&self, target: &Store) -> Result<usize, StoreError> {
        target.write(|t| {
            t.purge()?;
            if let Some((k, _, _)) = t.scan("", None, 1)?.into_iter().next() {
                let kind = k.split(':').next().unwrap_or("").to_string();
                return Err(StoreError::NotEmpty(format!("it holds a {kind}: record")));
            }
            self.read(|s| {
                let (mut n, mut after) = (0, String::new());
                loop {
                    let page = s.scan(&after, None, PAGE)?;
                    let Some(last) = page.last() else { break };
                    after = last.0.clone();
                    n += t.bulk(&page)?;
                }
                Ok(n)
            })
        })
    }

    /// Deletes expired token entries; returns how many.
    pub fn purge_expired(&self) -> Result<usize, StoreError> {
        self.write(|c| c.purge())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_matches_spec() {
        let s = Store::open(None).unwrap();
        let r = RealmHash::of("realm");
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
        assert_eq!(s.get_key(&r, &t3).unwrap(), UserKey::None);
        let k = s.gen_key(&r, &t3).unwrap().unwrap();
        assert_eq!(k.len(), 128);
        assert_eq!(s.get_key(&r, &t3).unwrap(), UserKey::Key(k));
        assert_eq!(s.get_key(&r, &t1).unwrap(), UserKey::NotCurrent);
        assert!(s.revoke(&r, &t1).unwrap());
        assert!(!s.revoke(&r, &t1).unwrap());
        assert!(s.revoke(&r, &t3).unwrap());
        assert_eq!(s.check(&r, &t3).unwrap(), Validity::No);
    }

    #[test]
    fn groups() {
        let s = Store::open(None).unwrap();
        let r = RealmHash::of("r");
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
        let r = RealmHash::of("r");
        let t = s
            .issue(&r, "u", "u\nstored\n", None, Some(now() - 1))
            .unwrap();
        assert_eq!(s.check(&r, &t).unwrap(), Validity::No);
        assert_eq!(s.purge_expired().unwrap(), 1);
    }
}
