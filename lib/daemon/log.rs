//! Logging for daemons and tools: journald's `<N>` priority prefixes on stderr when stderr is
//! the journal stream (`JOURNAL_STREAM`), syslog when asked, plain `PROGRAM: level: message`
//! on stderr otherwise. Messages are one line of `event key=value ...`; never pass a secret.

use std::io::Write;
use std::os::fd::AsFd;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// A log field's value in double quotes, quotes, backslashes and control characters escaped
/// (as Rust's `{:?}` does): a value from a peer or an error message can neither end its field
/// early nor forge another one.
pub fn quoted(value: impl std::fmt::Display) -> String {
    format!("{:?}", value.to_string())
}

enum Sink {
    Journal,
    Stderr(&'static str),
    Syslog(Mutex<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>>),
}

struct Logger {
    sink: Sink,
    level: LevelFilter,
}

/// True when stderr is connected to journald (systemd sets `JOURNAL_STREAM=dev:ino`).
fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(st) = rustix::fs::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}

/// Why [`init`] installed no logger.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot open syslog: {0}")]
    Syslog(String),
    #[error(transparent)]
    AlreadySet(#[from] log::SetLoggerError),
}

/// Installs the process-wide logger. `use_syslog` sends lines to the local syslog daemon
/// (facility daemon); if that fails the error is returned and nothing is installed.
pub fn init(program: &'static str, use_syslog: bool, verbose: bool) -> Result<(), InitError> {
    let level = if verbose {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    let sink = if use_syslog {
        let f = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_DAEMON,
            hostname: None,
            process: program.into(),
            pid: std::process::id(),
        };
        Sink::Syslog(Mutex::new(
            syslog::unix(f).map_err(|e| InitError::Syslog(e.to_string()))?,
        ))
    } else if stderr_is_journal() {
        Sink::Journal
    } else {
        Sink::Stderr(program)
    };
    log::set_boxed_logger(Box::new(Logger { sink, level }))?;
    log::set_max_level(level);
    Ok(())
}

/// Libraries whose info and debug lines are never logged: rust-postgres logs every
/// statement with its parameters (tokens, user keys).
const QUIET: &[&str] = &["tokio_postgres", "postgres"];

fn priority(l: Level) -> u8 {
    match l {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.level
            && (m.level() <= Level::Warn || !QUIET.iter().any(|q| m.target().starts_with(q)))
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        // One event is one line: a newline from a peer must not forge a second log line.
        let msg = r.args().to_string().replace(['\n', '\r'], " ");
        // Each line in one write(2): stderr is unbuffered, and pieces of a line written one by
        // one cost a system call each and can interleave with another process's on the stream.
        let line = match &self.sink {
            Sink::Journal => format!("<{}>{msg}\n", priority(r.level())),
            Sink::Stderr(p) => format!("{p}: {}: {msg}\n", r.level().as_str().to_lowercase()),
            Sink::Syslog(s) => {
                if let Ok(mut s) = s.lock() {
                    let _ = match r.level() {
                        Level::Error => s.err(msg),
                        Level::Warn => s.warning(msg),
                        Level::Info => s.info(msg),
                        _ => s.debug(msg),
                    };
                }
                return;
            }
        };
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoted_fields_cannot_end_early_or_forge_lines() {
        assert_eq!(super::quoted("plain"), r#""plain""#);
        assert_eq!(super::quoted("a\" forged=\"1\nx"), r#""a\" forged=\"1\nx""#);
    }
}
