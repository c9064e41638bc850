//! What every binary's `main` shares: sysexits codes, one-line errors, the original programs'
//! single-dash long flags, and passwords read from a terminal with echo off.

use std::ffi::OsString;
use std::io::{BufRead, Write};

use zeroize::Zeroizing;

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

/// Prints `program: msg` and exits with the failure's code.
pub fn exit_with(program: &str, f: Fail) -> ! {
    eprintln!("{program}: {}", f.msg);
    std::process::exit(f.code)
}

/// The single-threaded tokio runtime a daemon's `main` runs on (more threads come from
/// `daemon::Options::workers` and tokio's blocking pool).
pub fn runtime() -> Result<tokio::runtime::Runtime, Fail> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail::new(exit::OSERR, format!("cannot start runtime: {e}")))
}

/// Parses the command line with clap; `--help`/`--version` print and exit 0, a usage error
/// prints clap's message and exits 64 (EX_USAGE) instead of clap's 2.
pub fn parse<T: clap::Parser>(args: impl IntoIterator<Item = OsString>) -> T {
    match T::try_parse_from(args) {
        Ok(t) => t,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code)
        }
    }
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

/// Reads a password: from the terminal with echo off (prompt on the terminal) when `tty` is
/// a terminal, else one line from it (no prompt). The trailing newline is removed.
pub fn read_password(prompt: &str) -> std::io::Result<Zeroizing<String>> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty");
    let mut line = Zeroizing::new(String::new());
    match tty {
        Ok(mut t) if rustix::termios::isatty(&t) => {
            let old = tcgetattr(&t)?;
            let mut quiet = old.clone();
            quiet.local_modes.remove(LocalModes::ECHO);
            quiet.local_modes.insert(LocalModes::ECHONL);
            write!(t, "{prompt}")?;
            t.flush()?;
            tcsetattr(&t, OptionalActions::Flush, &quiet)?;
            let r = std::io::BufReader::new(&t).read_line(&mut line);
            tcsetattr(&t, OptionalActions::Flush, &old)?;
            r?;
        }
        _ => {
            std::io::stdin().lock().read_line(&mut line)?;
        }
    }
    while line.ends_with('\n') || line.ends_with('\r') {
        line.pop();
    }
    Ok(line)
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
}
