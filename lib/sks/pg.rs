//! skd's store in PostgreSQL, for several skd hosts on one database (`--store
//! postgresql://…`): the same key/value records as the SQLite store in table `skd_kv`, with a
//! versioned schema (`skd_schema`) created and migrated on first use.
//!
//! Every change fires a statement trigger that sends `NOTIFY skd_changes`, whoever made it
//! (another skd, tokenctl, psql). skd's listener thread holds one connection that LISTENs on
//! that channel and empties the `/valid` cache on each notification. The cache is used only
//! while that connection is up and was seen working (a notification or a heartbeat) within
//! [`LEASE`]: when it drops, is cut, or hangs, the cache is emptied and skd answers from the
//! database, or 503 when the database cannot be reached. The listener reconnects by itself.
//!
//! Requests use a bounded pool of connections; every change is one transaction that holds
//! `LOCK TABLE skd_kv IN EXCLUSIVE MODE` (writers one at a time, readers never blocked), as
//! the SQLite store's single writer. Only prepared statements with parameters, never SQL
//! built from request text.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use postgres::config::SslMode;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::Type;
use postgres::{Client, NoTls, Statement};

use super::store::{Answers, Kv, Record, StoreError};
use crate::daemon::log::quoted;

/// The schema version this skd writes; a database at a newer one is refused.
const SCHEMA_VERSION: i32 = 1;

/// Statements that bring the schema from version i to i + 1.
const MIGRATIONS: &[&str] = &[
    // 1: the records, byte-ordered keys (COLLATE "C": the order and ranges SQLite uses), and
    // the trigger every skd listens to.
    r#"CREATE TABLE skd_kv (
        k text COLLATE "C" PRIMARY KEY,
        v text NOT NULL,
        expires bigint
    );
    CREATE FUNCTION skd_kv_changed() RETURNS trigger LANGUAGE plpgsql AS
        $$BEGIN PERFORM pg_notify('skd_changes', ''); RETURN NULL; END$$;
    CREATE TRIGGER skd_kv_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON skd_kv
        FOR EACH STATEMENT EXECUTE FUNCTION skd_kv_changed();"#,
];

/// Advisory lock held while the schema is created or migrated (several skd starting at once).
const SCHEMA_LOCK: i64 = 0x736b_645f_7363_6d61;

/// Connections skd uses for requests (the listener holds one more).
const POOL: usize = 4;
/// How long a request waits for a free connection before 503.
const POOL_WAIT: Duration = Duration::from_secs(1);
/// The listener proves its connection alive this often when no notification comes.
const HEARTBEAT: Duration = Duration::from_millis(200);
/// A heartbeat not answered within this cuts the connection.
const HEARTBEAT_WAIT: Duration = Duration::from_millis(400);
/// The cache is used only if the channel was seen working this recently: a channel lost
/// silently (a hung server, a cut network) stops cached answers within this time.
const LEASE: Duration = Duration::from_millis(800);
/// Reconnection delays: from the first, doubling, up to the last.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// Server-side limit of one statement (lock waits included).
const STATEMENT_TIMEOUT: &str = "SET statement_timeout = '10s'";

/// A parsed `postgresql://` URL (libpq's URL form and parameters as rust-postgres reads
/// them), without a password: that comes from a file, never from a command line.
#[derive(Clone)]
pub struct Target {
    config: postgres::Config,
    text: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| format!("bad PostgreSQL URL: {e}"))?;
        if config.get_password().is_some() {
            return Err("a password in the store URL is readable by every local user (ps, /proc): give it in a file (--store-password-file, or the systemd credential store-password)".into());
        }
        if config.get_hosts().is_empty() {
            // libpq's default on Debian: the local server's socket directory.
            config.host_path("/var/run/postgresql");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_tcp_user_timeout().is_none() {
            // Unacknowledged data (a cut network) ends a TCP connection after this.
            config.tcp_user_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("skd");
        }
        Ok(Target {
            config,
            text: url.to_string(),
        })
    }

    pub fn describe(&self) -> String {
        self.text.clone()
    }
}

/// The store's password: `file` if given, else the systemd credential `store-password`
/// (`LoadCredential=store-password:…`), else none.
pub fn password(
    file: Option<&std::path::Path>,
) -> Result<Option<crate::locked::Locked>, PasswordError> {
    let path = match file {
        Some(f) => f.to_path_buf(),
        None => match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(d) => {
                let p = std::path::Path::new(&d).join("store-password");
                if !p.exists() {
                    return Ok(None);
                }
                p
            }
            None => return Ok(None),
        },
    };
    crate::cli::read_password_file(&path)
        .map(Some)
        .map_err(|source| PasswordError { path, source })
}

/// The password file named or found could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", .path.display())]
pub struct PasswordError {
    pub path: std::path::PathBuf,
    pub source: std::io::Error,
}

/// What a PostgreSQL error means for skd: unreachable or busy (503, retried), a setup
/// problem (refused login, missing rights), or another database error.
fn classify(e: postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let text = format!("{} (SQLSTATE {code})", db.message());
        return match code {
            _ if code.starts_with("28") => StoreError::Setup(text),
            "3D000" | "42501" => StoreError::Setup(text),
            "55P03" => StoreError::Unavailable(text),
            _ if ["08", "53", "57", "40"].iter().any(|c| code.starts_with(c)) => {
                StoreError::Unavailable(text)
            }
            _ => StoreError::Pg(text),
        };
    }
    let text = e.to_string();
    if text.starts_with("invalid configuration") {
        StoreError::Setup(text)
    } else {
        StoreError::Unavailable(text)
    }
}

#[derive(Clone)]
enum Tls {
    Off,
    On(postgres_openssl::MakeTlsConnector),
}

/// `sslmode=disable`: no TLS. `prefer` (the default): TLS when the server offers it,
/// verified only against `PGSSLROOTCERT` if that is set (as libpq). `require`: TLS, the
/// certificate verified (chain and host name) against `PGSSLROOTCERT` or the system's CAs.
/// Unix sockets never use TLS.
fn tls_for(config: &postgres::Config) -> Result<Tls, StoreError> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
    let mode = config.get_ssl_mode();
    if mode == SslMode::Disable {
        return Ok(Tls::Off);
    }
    let bad = |e: openssl::error::ErrorStack| StoreError::Setup(format!("TLS: {e}"));
    let mut b = SslConnector::builder(SslMethod::tls()).map_err(bad)?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(bad)?;
    let root = std::env::var_os("PGSSLROOTCERT");
    if let Some(ca) = &root {
        b.set_ca_file(ca)
            .map_err(|e| StoreError::Setup(format!("PGSSLROOTCERT {ca:?}: {e}")))?;
    }
    let verify = mode == SslMode::Require || root.is_some();
    if !verify {
        b.set_verify(SslVerifyMode::NONE);
    }
    let mut tls = postgres_openssl::MakeTlsConnector::new(b.build());
    if !verify {
        tls.set_callback(|c, _| {
            c.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(Tls::On(tls))
}

/// State shared by the pool and the listener thread.
struct Shared {
    config: postgres::Config,
    tls: Tls,
    daemon: bool,
    schema_ok: AtomicBool,
    /// The listener's channel is up…
    up: AtomicBool,
    /// …and was last seen working at this many milliseconds after `start`.
    seen_ms: AtomicU64,
    /// The last attempt to reach the database (a connect, a statement) worked.
    reachable: AtomicBool,
    /// Bumped when the channel is lost: pool connections from before are not reused.
    epoch: AtomicU64,
    /// No pool connection is tried before this (milliseconds after `start`): one just failed.
    retry_ms: AtomicU64,
    start: Instant,
    answers: Arc<Answers>,
    text: String,
}

impl Shared {
    fn ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.seen_ms.store(self.ms(), Ordering::SeqCst);
    }

    /// A new connection, the schema checked (once per process) and its limits set.
    fn connect(&self) -> Result<Client, StoreError> {
        let c = self.connect_once();
        self.reachable.store(
            !matches!(c, Err(StoreError::Unavailable(_))),
            Ordering::SeqCst,
        );
        c
    }

    fn connect_once(&self) -> Result<Client, StoreError> {
        let mut c = match &self.tls {
            Tls::Off => self.config.connect(NoTls),
            Tls::On(t) => self.config.connect(t.clone()),
        }
        .map_err(classify)?;
        if !self.schema_ok.load(Ordering::SeqCst) {
            ensure_schema(&mut c)?;
            self.schema_ok.store(true, Ordering::SeqCst);
        }
        c.batch_execute(STATEMENT_TIMEOUT).map_err(classify)?;
        Ok(c)
    }
}

/// The schema version recorded in the database, `None` before the first skd.
fn schema_version<C: postgres::GenericClient>(c: &mut C) -> Result<Option<i32>, StoreError> {
    let exists: bool = c
        .query_one("SELECT to_regclass('skd_schema') IS NOT NULL", &[])
        .map_err(classify)?
        .get(0);
    if !exists {
        return Ok(None);
    }
    c.query_one("SELECT max(version) FROM skd_schema", &[])
        .map(|r| r.get(0))
        .map_err(classify)
}

/// Creates or migrates the schema to [`SCHEMA_VERSION`]; refuses a newer one and a database
/// whose encoding could not hold every record.
fn ensure_schema(c: &mut Client) -> Result<(), StoreError> {
    let enc: String = c
        .query_one("SELECT current_setting('server_encoding')", &[])
        .map_err(classify)?
        .get(0);
    if enc != "UTF8" {
        return Err(StoreError::Setup(format!(
            "the database's encoding is {enc}; skd needs UTF8 (createdb -E UTF8)"
        )));
    }
    let newer = |v: i32| {
        StoreError::Setup(format!(
            "the database's skd schema is version {v}, newer than this skd's {SCHEMA_VERSION}: upgrade skd"
        ))
    };
    // Already current: no lock, no DDL (a role without CREATE rights works too).
    match schema_version(c)? {
        Some(v) if v == SCHEMA_VERSION => return Ok(()),
        Some(v) if v > SCHEMA_VERSION => return Err(newer(v)),
        _ => {}
    }
    let mut tx = c.transaction().map_err(classify)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .map_err(classify)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS skd_schema (version integer NOT NULL)")
        .map_err(classify)?;
    let v = schema_version(&mut tx)?.unwrap_or(0);
    if v > SCHEMA_VERSION {
        return Err(newer(v));
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(v.max(0) as usize) {
        tx.batch_execute(m).map_err(classify)?;
        log::info!("store-schema-migrated to={}", i + 1);
    }
    if v < SCHEMA_VERSION {
        tx.execute("DELETE FROM skd_schema", &[])
            .map_err(classify)?;
        tx.execute(
            "INSERT INTO skd_schema (version) VALUES ($1)",
            &[&SCHEMA_VERSION],
        )
        .map_err(classify)?;
    }
    tx.commit().map_err(classify)
}

/// One pooled connection with its prepared statements.
struct Conn {
    client: Client,
    stmts: HashMap<&'static str, Statement>,
    epoch: u64,
}

/// Connection slots (`None`: not connected yet, or dropped after an error).
struct Pool {
    free: Mutex<Vec<Option<Conn>>>,
    ready: Condvar,
    size: usize,
}

struct Slot<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Ok(mut f) = self.pool.free.lock() {
            f.push(self.conn.take());
            self.pool.ready.notify_one();
        }
    }
}

impl Pool {
    fn take(&self) -> Result<Slot<'_>, StoreError> {
        let free = self.free.lock().map_err(|_| StoreError::Poisoned)?;
        let (mut free, _) = self
            .ready
            .wait_timeout_while(free, POOL_WAIT, |f| f.is_empty())
            .map_err(|_| StoreError::Poisoned)?;
        match free.pop() {
            Some(conn) => Ok(Slot { pool: self, conn }),
            None => Err(StoreError::Unavailable(format!(
                "all {} database connections busy",
                self.size
            ))),
        }
    }
}

pub struct Pg {
    shared: Arc<Shared>,
    pool: Pool,
}

impl Pg {
    pub fn open(
        target: &Target,
        password: Option<crate::locked::Locked>,
        daemon: bool,
        answers: Arc<Answers>,
    ) -> Result<Pg, StoreError> {
        let mut config = target.config.clone();
        if let Some(p) = &password {
            config.password(p.as_bytes());
        }
        let tls = tls_for(&config)?;
        let shared = Arc::new(Shared {
            config,
            tls,
            daemon,
            schema_ok: AtomicBool::new(false),
            up: AtomicBool::new(false),
            reachable: AtomicBool::new(true),
            seen_ms: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            retry_ms: AtomicU64::new(0),
            start: Instant::now(),
            answers,
            text: target.describe(),
        });
        let size = if daemon { POOL } else { 1 };
        let mut slots: Vec<Option<Conn>> = (0..size).map(|_| None).collect();
        match shared.connect() {
            Ok(client) => {
                slots[0] = Some(Conn {
                    client,
                    stmts: HashMap::new(),
                    epoch: 0,
                })
            }
            // A daemon starts anyway (its host may boot before the database): 503 until
            // the database is reachable, then the schema is checked on first contact.
            Err(StoreError::Unavailable(e)) if daemon => log::warn!(
                "store-unreachable store={} error={e} effect=\"logins and /valid answer 503 until it is reachable; skd keeps trying\"",
                shared.text, e = quoted(&e)),
            Err(e) => return Err(e),
        }
        if daemon {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("skd-pg-listen".into())
                .spawn(move || listen(s))
                .map_err(|e| StoreError::Setup(format!("cannot start the listener: {e}")))?;
        }
        Ok(Pg {
            shared,
            pool: Pool {
                free: Mutex::new(slots),
                ready: Condvar::new(),
                size,
            },
        })
    }

    /// Cached answers may be used: the channel is up and was seen working within the lease.
    pub fn cache_usable(&self) -> bool {
        let s = &self.shared;
        s.up.load(Ordering::SeqCst)
            && s.ms().saturating_sub(s.seen_ms.load(Ordering::SeqCst)) < LEASE.as_millis() as u64
    }

    /// False when the last attempt to reach the database failed: skd then refuses logins
    /// before PAM.
    pub fn available(&self) -> bool {
        self.shared.reachable.load(Ordering::SeqCst)
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let s = &self.shared;
        let mut slot = self.pool.take()?;
        let epoch = s.epoch.load(Ordering::SeqCst);
        if slot
            .conn
            .as_ref()
            .is_some_and(|c| c.client.is_closed() || c.epoch != epoch)
        {
            slot.conn = None;
        }
        if slot.conn.is_none() {
            if s.daemon && s.ms() < s.retry_ms.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable(
                    "database unreachable a moment ago".into(),
                ));
            }
            match s.connect() {
                Ok(client) => {
                    slot.conn = Some(Conn {
                        client,
                        stmts: HashMap::new(),
                        epoch,
                    })
                }
                Err(e) => {
                    s.retry_ms
                        .store(s.ms() + RETRY_MIN.as_millis() as u64, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        let Some(c) = slot.conn.as_mut() else {
            return Err(StoreError::Poisoned);
        };
        let r = f(c);
        match &r {
            Ok(_) => s.reachable.store(true, Ordering::SeqCst),
            Err(e) => {
                let closed = c.client.is_closed();
                if closed {
                    s.reachable.store(false, Ordering::SeqCst);
                }
                if closed || matches!(e, StoreError::Unavailable(_)) {
                    slot.conn = None;
                }
            }
        }
        r
    }

    pub fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Kv) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_conn(|c| {
            f(&mut PgKv {
                client: &mut c.client,
                stmts: &mut c.stmts,
            })
        })
    }

    /// `f` in one transaction that holds the writers' lock.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn Kv) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_conn(|c| {
            c.client
                .batch_execute("BEGIN; LOCK TABLE skd_kv IN EXCLUSIVE MODE")
                .map_err(classify)?;
            let r = f(&mut PgKv {
                client: &mut c.client,
                stmts: &mut c.stmts,
            });
            match r {
                Ok(v) => {
                    c.client.batch_execute("COMMIT").map_err(classify)?;
                    Ok(v)
                }
                Err(e) => {
                    let _ = c.client.batch_execute("ROLLBACK");
                    Err(e)
                }
            }
        })
    }
}

/// The listener thread: LISTEN, empty the cache on every notification, prove the channel
/// alive between them, and reconnect when it is lost.
fn listen(s: Arc<Shared>) {
    let mut delay = RETRY_MIN;
    let mut down_logged = false;
    loop {
        let listening = s.connect().and_then(|mut c| {
            c.batch_execute("LISTEN skd_changes").map_err(classify)?;
            Ok(c)
        });
        let mut c = match listening {
            Ok(c) => c,
            Err(e) => {
                if !down_logged {
                    log::error!(
                        "store-channel-down store={} error={e} effect=\"no cached answers; logins answer 503; retrying\"",
                        s.text, e = quoted(&e));
                    down_logged = true;
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(RETRY_MAX);
                continue;
            }
        };
        // Changes made while we were not listening were missed: forget every answer.
        s.answers.forget();
        s.touch();
        s.up.store(true, Ordering::SeqCst);
        if down_logged {
            log::info!("store-channel-up store={}", s.text);
        }
        delay = RETRY_MIN;
        let lost = loop {
            let got = {
                let mut n = c.notifications();
                let first = n.timeout_iter(HEARTBEAT).next();
                match first {
                    Ok(Some(_)) => {
                        // One bump for everything queued.
                        let mut rest = n.iter();
                        while let Ok(Some(_)) = rest.next() {}
                        Ok(true)
                    }
                    Ok(None) => Ok(false),
                    Err(e) => Err(e),
                }
            };
            match got {
                Ok(true) => {
                    s.answers.bump();
                    s.touch();
                }
                Ok(false) => match c.is_valid(HEARTBEAT_WAIT) {
                    Ok(()) => s.touch(),
                    Err(e) => break e,
                },
                Err(e) => break e,
            }
        };
        s.up.store(false, Ordering::SeqCst);
        s.reachable.store(false, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        s.answers.forget();
        log::error!(
            "store-channel-lost store={} error={lost} effect=\"cache emptied; logins answer 503 until it is back; retrying\"",
            s.text, lost = quoted(&lost));
        down_logged = true;
    }
}

/// [`Kv`] on a pooled connection (in a transaction for writes).
struct PgKv<'a> {
    client: &'a mut Client,
    stmts: &'a mut HashMap<&'static str, Statement>,
}

impl PgKv<'_> {
    fn stmt(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).map_err(classify)?;
        self.stmts.insert(sql, s.clone());
        Ok(s)
    }
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Kv for PgKv<'_> {
    fn get_exp(&mut self, k: &str) -> Result<Option<(String, Option<i64>)>, StoreError> {
        let st = self.stmt(
            "SELECT v, expires FROM skd_kv WHERE k = $1 AND (expires IS NULL OR expires > $2)",
        )?;
        let row = self
            .client
            .query_opt(&st, &[&k, &super::store::now()])
            .map_err(classify)?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    fn insert(
        &mut self,
        k: &str,
        v: &str,
        expires: Option<i64>,
        replace: bool,
    ) -> Result<bool, StoreError> {
        let st = self.stmt(if replace {
            "INSERT INTO skd_kv (k, v, expires) VALUES ($1, $2, $3) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v, expires = EXCLUDED.expires"
        } else {
            "INSERT INTO skd_kv (k, v, expires) VALUES ($1, $2, $3) ON CONFLICT (k) DO NOTHING"
        })?;
        let n = self
            .client
            .execute(&st, &[&k, &v, &expires])
            .map_err(classify)?;
        Ok(n > 0)
    }

    fn del(&mut self, k: &str) -> Result<(), StoreError> {
        let st = self.stmt("DELETE FROM skd_kv WHERE k = $1")?;
        self.client.execute(&st, &[&k]).map_err(classify)?;
        Ok(())
    }

    fn scan(
        &mut self,
        after: &str,
        before: Option<&str>,
        n: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let now = super::store::now();
        let rows = match before {
            Some(b) => {
                let st = self.stmt("SELECT k, v, expires FROM skd_kv WHERE k > $1 AND k < $2 AND (expires IS NULL OR expires > $3) ORDER BY k LIMIT $4")?;
                self.client.query(&st, &[&after, &b, &now, &limit(n)])
            }
            None => {
                let st = self.stmt("SELECT k, v, expires FROM skd_kv WHERE k > $1 AND (expires IS NULL OR expires > $2) ORDER BY k LIMIT $3")?;
                self.client.query(&st, &[&after, &now, &limit(n)])
            }
        }
        .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    fn purge(&mut self) -> Result<usize, StoreError> {
        let st = self.stmt("DELETE FROM skd_kv WHERE expires IS NOT NULL AND expires <= $1")?;
        let n = self
            .client
            .execute(&st, &[&super::store::now()])
            .map_err(classify)?;
        Ok(n as usize)
    }

    fn get_many(&mut self, keys: &[String]) -> Result<HashMap<String, String>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let st = self.stmt(
            "SELECT k, v FROM skd_kv WHERE k = ANY($1) AND (expires IS NULL OR expires > $2)",
        )?;
        let rows = self
            .client
            .query(&st, &[&keys, &super::store::now()])
            .map_err(classify)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// COPY in binary: a million records in seconds, not one round trip each.
    fn bulk(&mut self, rows: &[Record]) -> Result<usize, StoreError> {
        let w = self
            .client
            .copy_in("COPY skd_kv (k, v, expires) FROM STDIN (FORMAT binary)")
            .map_err(classify)?;
        let mut w = postgres::binary_copy::BinaryCopyInWriter::new(
            w,
            &[Type::TEXT, Type::TEXT, Type::INT8],
        );
        for (k, v, e) in rows {
            w.write(&[k, v, e]).map_err(classify)?;
        }
        Ok(w.finish().map_err(classify)? as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("postgresql:///skd?host=/run/pg&user=skd").unwrap();
        assert_eq!(t.config.get_dbname(), Some("skd"));
        assert_eq!(t.config.get_user(), Some("skd"));
        let t = Target::parse("postgresql://db.example:6432/skd").unwrap();
        assert_eq!(t.config.get_ports(), &[6432]);
        assert!(Target::parse("postgresql://u:secret@h/skd")
            .unwrap_err()
            .contains("password"));
        assert!(Target::parse("postgresql://h/skd?password=x")
            .unwrap_err()
            .contains("password"));
        assert!(Target::parse("postgresql://h/skd?bogus=1").is_err());
        assert!(Target::parse("postgresql://h/skd?sslmode=sometimes").is_err());
        let t = Target::parse("postgresql:///skd").unwrap();
        assert_eq!(t.config.get_hosts().len(), 1, "the local socket by default");
    }
}
