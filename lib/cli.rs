//! What every binary's `main` shares: sysexits codes, one-line errors, the original programs'
//! single-dash long flags, no core dumps ([`parse`] makes the process non-dumpable), and
//! passwords read into locked memory from a terminal with echo off, standard input or a file.

use std::ffi::OsString;
use std::path::Path;

use crate::locked::{self, Locked};

/// sysexits(3) codes used by our binaries.
pub mod exit {
    pub const USAGE: i32 = 64;
    pub const DATAERR: i32 = 65;
    pub const NOINPUT: i32 = 66;
    pub const UNAVAILABLE: i32 = 69;
    pub const SOFTWARE: i32 = 70;
    pub const OSERR: i32 = 71;
    pub const CANTCREAT: i32 = 73;
    pub const IOERR: i32 = 74;
    pub const CONFIG: i32 = 78;
}

/// A failure a user can act on: printed as `PROGRAM: message`, exits with `code`.
#[derive(Debug)]
pub struct Fail {
    pub code: i32,
    pub msg: String,
}

impl Fail {
    pub fn new(code: i32, msg: impl Into<String>) -> Self {
        Fail {
            code,
            msg: msg.into(),
        }
    }
}

/// Turns any error into a [`Fail`] at the binary's boundary, as uutils' `map_err_context`:
/// the one place where a library's typed error gets its exit code and its wording.
pub trait FailContext<T> {
    /// `context: error`, exiting with `code`.
    fn map_err_context(self, code: i32, context: impl FnOnce() -> String) -> Result<T, Fail>;
    /// The error's own message, exiting with `code`.
    fn map_err_code(self, code: i32) -> Result<T, Fail>;
}

impl<T, E: std::fmt::Display> FailContext<T> for Result<T, E> {
    fn map_err_context(self, code: i32, context: impl FnOnce() -> String) -> Result<T, Fail> {
        self.map_err(|e| Fail::new(code, format!("{}: {e}", context())))
    }

    fn map_err_code(self, code: i32) -> Result<T, Fail> {
        self.map_err(|e| Fail::new(code, e.to_string()))
    }
}

/// Prints `program: msg` and exits with the failure's code.
pub fn exit_with(program: &str, f: Fail) -> ! {
    eprintln!("{program}: {}", f.msg);
    std::process::exit(f.code)
}

/// The connection caps every daemon takes, flattened into its clap `Args`
/// (`#[command(flatten)]`); a daemon with another default or wording changes it with
/// `#[command(mut_arg(..))]`. Keys of the configuration file like any option.
#[derive(clap::Args, Clone, Debug)]
pub struct Connections {
    /// Most connections served at once; more get 503
    #[arg(long = "max-connections", value_name = "N", default_value_t = 256)]
    pub max_connections: usize,
    /// Most connections served at once from one source (an IPv4 address, all of 127/8, an
    /// IPv6 /64, a Unix uid); more get 503 [default: a quarter of --max-connections]
    #[arg(long = "max-connections-per-source", value_name = "N")]
    pub max_connections_per_source: Option<usize>,
}

impl Connections {
    /// The daemon's serving options: these caps, `--idle-exit SECONDS` if any, defaults for
    /// the rest.
    pub fn options(&self, idle_exit: Option<u64>) -> crate::daemon::Options {
        crate::daemon::Options {
            idle_exit: idle_exit.map(std::time::Duration::from_secs),
            max_connections: self.max_connections.max(1),
            max_per_source: crate::daemon::per_source(
                self.max_connections,
                self.max_connections_per_source,
            ),
            ..Default::default()
        }
    }
}

/// What every socket-activated daemon takes besides its own options: [`Connections`],
/// `--idle-exit` and `--syslog`, flattened as [`Connections`] is.
#[derive(clap::Args, Clone, Debug)]
pub struct Daemon {
    #[command(flatten)]
    pub conn: Connections,
    /// Exit after SECONDS with no open connection (for socket activation)
    #[arg(long = "idle-exit", value_name = "SECONDS")]
    pub idle_exit: Option<u64>,
    /// Log to syslog instead of stderr
    #[arg(long = "syslog")]
    pub syslog: bool,
}

impl Daemon {
    /// The daemon's serving options: caps, idle exit, defaults for the rest.
    pub fn options(&self) -> crate::daemon::Options {
        self.conn.options(self.idle_exit)
    }
}

/// The request timeouts of the HTTP daemons, flattened as [`Connections`] is.
#[derive(clap::Args, Clone, Debug)]
pub struct HttpTimeouts {
    /// Seconds allowed to send a request head (and to idle between requests)
    #[arg(long = "header-timeout", value_name = "SECONDS", default_value_t = 10)]
    pub header_timeout: u64,
    /// Seconds allowed to send a whole request body
    #[arg(long = "body-timeout", value_name = "SECONDS", default_value_t = 10)]
    pub body_timeout: u64,
}

impl HttpTimeouts {
    /// HTTP limits with these timeouts (at least a second each), defaults for the rest.
    pub fn limits(&self) -> crate::http::Limits {
        crate::http::Limits {
            header_timeout: std::time::Duration::from_secs(self.header_timeout.max(1)),
            body_timeout: std::time::Duration::from_secs(self.body_timeout.max(1)),
            ..Default::default()
        }
    }
}

/// The single-threaded tokio runtime a daemon's `main` runs on (more threads come from
/// `daemon::Options::workers` and tokio's blocking pool).
pub fn runtime() -> Result<tokio::runtime::Runtime, Fail> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err_context(exit::OSERR, || "cannot start runtime".into())
}

/// Parses the command line with clap; `--help`/`--version` print and exit 0, a usage error
/// prints clap's message and exits 64 (EX_USAGE) instead of clap's 2. Every binary starts
/// here, so this is also where the process is made non-dumpable ([`crate::secret::no_dumps`]):
/// before anything, the command line included, holds a secret.
pub fn parse<T: clap::Parser>(args: impl IntoIterator<Item = OsString>) -> T {
    crate::secret::no_dumps();
    let args: Vec<OsString> = args.into_iter().collect();
    completions::<T>(&args);
    match T::try_parse_from(args) {
        Ok(t) => t,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code)
        }
    }
}

/// The hidden `PROGRAM --generate-completions SHELL` (bash, zsh or fish): prints the shell's
/// completion script, generated from the program's clap definition, and exits 0 (`make
/// install` runs it for every program). Every binary's parse goes through here.
pub fn completions<T: clap::CommandFactory>(args: &[OsString]) {
    const FLAG: &str = "--generate-completions";
    if args.len() != 3 || args[1] != FLAG {
        return;
    }
    use clap_complete::Shell;
    let shell = match args[2].to_str() {
        Some("bash") => Shell::Bash,
        Some("zsh") => Shell::Zsh,
        Some("fish") => Shell::Fish,
        _ => {
            eprintln!("{FLAG}: bash, zsh or fish");
            std::process::exit(exit::USAGE)
        }
    };
    let mut cmd = T::command();
    let name = cmd.get_name().to_string();
    // Into memory first: clap_complete panics on a failed write (a closed pipe).
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut buf);
    let out = std::io::Write::write_all(&mut std::io::stdout(), &buf);
    std::process::exit(if out.is_ok() { 0 } else { exit::IOERR })
}

/// Rewrites the original program's single-dash long flags (`-pam-app`, `-PF`, ...) to our
/// GNU long forms before clap sees them. `legacy` maps each old flag to its new name and says
/// whether it takes a value, so that values are never rewritten.
pub fn translate_legacy(
    args: impl IntoIterator<Item = OsString>,
    legacy: &[(&str, &str, bool)],
) -> Vec<OsString> {
    let mut out = Vec::new();
    let (mut value_next, mut rest_verbatim) = (false, false);
    for a in args {
        if rest_verbatim {
            out.push(a);
            continue;
        }
        if value_next {
            value_next = false;
            out.push(a);
            continue;
        }
        match a
            .to_str()
            .and_then(|s| legacy.iter().find(|(old, _, _)| *old == s))
        {
            Some((_, new, takes)) => {
                out.push(OsString::from(new));
                value_next = *takes;
            }
            None if a == "--" => {
                // Operands follow: copy the rest as it is.
                out.push(a);
                rest_verbatim = true;
            }
            None => out.push(a),
        }
    }
    out
}

/// Longest password [`read_password`] and [`read_password_file`] take.
const MAX_PASSWORD: usize = 4096;

fn without_cr(mut l: Locked) -> Locked {
    if l.as_bytes().last() == Some(&b'\r') {
        l.truncate(l.len() - 1);
    }
    l
}

/// Reads a password into locked memory: from the terminal with echo off (prompt on the
/// terminal) when there is one, else one line of standard input (no prompt). Read a byte at
/// a time, so no I/O buffer keeps a copy; the line end is not kept.
pub fn read_password(prompt: &str) -> std::io::Result<Locked> {
    Ok(without_cr(locked::prompt_or_stdin(prompt, MAX_PASSWORD)?))
}

/// The first line of `path` (a password file), into locked memory, line end not kept.
pub fn read_password_file(path: &Path) -> std::io::Result<Locked> {
    let f = std::fs::File::open(path)?;
    Ok(without_cr(locked::read_line(&f, MAX_PASSWORD)?))
}

/// A password as text (borrowed, not copied): the callers hand it to OpenSSL as a `&str`.
pub fn password_str(pw: &Locked) -> Result<&str, Fail> {
    std::str::from_utf8(pw.as_bytes())
        .map_err(|_| Fail::new(exit::DATAERR, "the password is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_flags_become_long_ones_values_stay() {
        let map = [
            ("-pam-app", "--pam-app", true),
            ("-PP", "--password-prompt", false),
            ("-P", "--password", true),
        ];
        let args =
            ["skd", "-pam-app", "-PP", "-PP", "-P", "-pam-app", "-p", "1"].map(OsString::from);
        let out = translate_legacy(args, &map);
        let want = [
            "skd",
            "--pam-app",
            "-PP",
            "--password-prompt",
            "--password",
            "-pam-app",
            "-p",
            "1",
        ];
        assert_eq!(out, want.map(OsString::from));
    }

    #[test]
    fn password_file_first_line_without_line_end() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pw");
        std::fs::write(&p, "s3cret\r\nsecond line\n").unwrap();
        let pw = read_password_file(&p).unwrap();
        assert_eq!(password_str(&pw).unwrap(), "s3cret");
        std::fs::write(&p, [0xff, b'\n']).unwrap();
        assert!(password_str(&read_password_file(&p).unwrap()).is_err());
    }
}
