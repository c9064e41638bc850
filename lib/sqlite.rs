//! Opening the SQLite files our daemons keep: WAL, full sync (a change that was answered
//! survives `kill -9` and power loss), a busy timeout so tools can work beside the daemon,
//! and files created 0600.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// Opens (creating if needed) the database file `path` and applies `schema`.
pub fn open(path: &Path, schema: &str) -> rusqlite::Result<Connection> {
    if !path.exists() {
        // Create it 0600 before SQLite does, so no other user can ever read it.
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let c = Connection::open_with_flags(path, flags)?;
    c.busy_timeout(Duration::from_secs(10))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.execute_batch(schema)?;
    Ok(c)
}

/// An in-memory database with `schema`: same code paths, nothing kept.
pub fn memory(schema: &str) -> rusqlite::Result<Connection> {
    let c = Connection::open_in_memory()?;
    c.execute_batch(schema)?;
    Ok(c)
}
