//! One way to configure every daemon: a TOML file whose keys are the daemon's long options
//! (`listen = ["127.0.0.1:4431"]`, `idle-exit = 300`, `verbose = true`), read before the
//! command line, which wins. The file is `/etc/keysock/NAME.toml` unless `-c/--config FILE`
//! names another; a missing default file means the built-in defaults, a missing named file is
//! an error.
//!
//! How: the file's values become the defaults of clap's arguments, so the command line
//! replaces them (a repeatable option given on the command line replaces the file's list) and
//! clap checks their types as it checks the command line's. Before that, the file alone is
//! parsed as if it were a command line, so that a bad value or two keys that exclude each
//! other are reported with the file's name, not taken for a usage error. `--help` and
//! `--version` never read the file: `--help` shows the built-in defaults. A file's value is a
//! default to clap, so it does not count for an option that requires another: options that
//! need each other (`tls-cert`, `tls-key`) are given together, in the file or on the command
//! line; and the command line's option wins over a file's option it excludes (`--no-auth`
//! over `tokens`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::ArgAction;

use crate::cli::{exit, Fail};

/// Where the daemons' configuration files are: `/etc/keysock/NAME.toml`.
pub const DIR: &str = "/etc/keysock";

/// What a binary tells [`parse`] about its configuration file.
pub struct Spec<'a> {
    /// The file read when `--config` is not given; `None`: no file unless named.
    pub default_path: Option<PathBuf>,
    /// Top-level tables that are the program's own, not options (iscepd: `commands`).
    pub sections: &'a [&'a str],
}

impl Spec<'static> {
    /// `/etc/keysock/NAME.toml`, no sections of its own.
    pub fn system(name: &str) -> Spec<'static> {
        Spec {
            default_path: Some(Path::new(DIR).join(format!("{name}.toml"))),
            sections: &[],
        }
    }
}

/// A user's file, for a daemon users run themselves (s5d): `$XDG_CONFIG_HOME/keysock/NAME.toml`,
/// `$XDG_CONFIG_HOME` being `~/.config` when unset (XDG Base Directory); `None` without either.
pub fn user_path(name: &str) -> Option<PathBuf> {
    let abs = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    let base = abs(std::env::var_os("XDG_CONFIG_HOME"))
        .or_else(|| abs(std::env::var_os("HOME")).map(|h| h.join(".config")))?;
    Some(base.join("keysock").join(format!("{name}.toml")))
}

/// The file the options came from, for `--check` and the start-up log line.
#[derive(Clone, Debug, Default)]
pub struct Source {
    pub path: Option<PathBuf>,
    /// False: the default file does not exist (built-in defaults).
    pub read: bool,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match (&self.path, self.read) {
            (Some(p), true) => write!(f, "{}", p.display()),
            (Some(p), false) => write!(f, "none ({} does not exist)", p.display()),
            (None, _) => f.write_str("none"),
        }
    }
}

/// Arguments that are never keys of the file.
const NOT_KEYS: &[&str] = &["config", "check", "help", "version"];

/// Parses the command line over the configuration file's values; exits as [`crate::cli::parse`]
/// does on a usage error (64), with 66 when a named file is missing or unreadable and 78 when
/// the file is bad (`PROGRAM: FILE: why`).
pub fn parse<T: clap::Parser>(args: Vec<OsString>, spec: &Spec) -> (T, Source) {
    crate::secret::no_dumps();
    crate::cli::completions::<T>(&args);
    let cmd = T::command();
    let program = cmd.get_name().to_string();
    match try_parse::<T>(cmd, args, spec) {
        Ok(r) => r,
        Err(Outcome::Clap(e)) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code)
        }
        Err(Outcome::Fail(f)) => crate::cli::exit_with(&program, f),
    }
}

enum Outcome {
    Clap(clap::Error),
    Fail(Fail),
}

fn try_parse<T: clap::Parser>(
    cmd: clap::Command,
    args: Vec<OsString>,
    spec: &Spec,
) -> Result<(T, Source), Outcome> {
    // A first pass, errors ignored, to find --config (and --help, --version, a subcommand).
    let pre = cmd
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(&args)
        .map_err(Outcome::Clap)?;
    let named = pre
        .try_get_one::<PathBuf>("config")
        .ok()
        .flatten()
        .filter(|_| pre.value_source("config") == Some(ValueSource::CommandLine))
        .cloned();
    // A subcommand (`autoidd gen-entropy`, `s5d put`) is a tool, not the daemon: no file.
    let (cmd, source) = if pre.subcommand_name().is_some() {
        (cmd, Source::default())
    } else {
        let path = named.clone().or_else(|| spec.default_path.clone());
        match &path {
            None => (cmd, Source::default()),
            Some(p) => match load(p, named.is_some()).map_err(Outcome::Fail)? {
                None => (cmd, Source { path, read: false }),
                Some(table) => {
                    let cmd = apply(cmd, p, &table, spec).map_err(Outcome::Fail)?;
                    (cmd, Source { path, read: true })
                }
            },
        }
    };
    let m = cmd.try_get_matches_from(args).map_err(Outcome::Clap)?;
    let t = T::from_arg_matches(&m).map_err(Outcome::Clap)?;
    Ok((t, source))
}

/// Reads and parses `path`; `None` when it does not exist and was not named.
fn load(path: &Path, named: bool) -> Result<Option<toml::Table>, Fail> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => return Ok(None),
        Err(e) => return Err(Fail::new(exit::NOINPUT, format!("{}: {e}", path.display()))),
    };
    text.parse::<toml::Table>().map(Some).map_err(|e| {
        Fail::new(
            exit::CONFIG,
            format!("{}: {}", path.display(), one_line(&e.to_string())),
        )
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The values of one key, as command-line words; `None` for a flag set to false.
fn words(a: &clap::Arg, key: &str, v: &toml::Value) -> Result<Option<Vec<String>>, String> {
    use toml::Value as V;
    let scalar = |v: &V| match v {
        V::String(s) => Ok(s.clone()),
        V::Integer(i) => Ok(i.to_string()),
        V::Float(f) => Ok(f.to_string()),
        _ => Err(format!(
            "key {key:?}: expected a string or a number, not {}",
            v.type_str()
        )),
    };
    match a.get_action() {
        ArgAction::SetTrue => match v {
            V::Boolean(true) => Ok(Some(vec!["true".into()])),
            V::Boolean(false) => Ok(None),
            _ => Err(format!("key {key:?}: expected true or false")),
        },
        ArgAction::Append => match v {
            V::Array(items) => items.iter().map(scalar).collect::<Result<_, _>>().map(Some),
            _ => scalar(v).map(|s| Some(vec![s])),
        },
        ArgAction::Set => scalar(v).map(|s| Some(vec![s])),
        _ => Err(format!("key {key:?}: not settable in the file")),
    }
}

/// The command with the file's values as its defaults, after checking them.
fn apply(
    mut cmd: clap::Command,
    path: &Path,
    table: &toml::Table,
    spec: &Spec,
) -> Result<clap::Command, Fail> {
    let bad = |m: String| Fail::new(exit::CONFIG, format!("{}: {m}", path.display()));
    let mut settings: Vec<(clap::Id, Vec<String>)> = Vec::new();
    for (key, value) in table {
        if spec.sections.contains(&key.as_str()) {
            continue;
        }
        let arg = cmd
            .get_arguments()
            .filter(|a| !a.is_positional() && !NOT_KEYS.contains(&a.get_id().as_str()))
            .find(|a| {
                a.get_long() == Some(key.as_str())
                    || a.get_all_aliases()
                        .is_some_and(|v| v.contains(&key.as_str()))
            })
            .ok_or_else(|| {
                bad(format!(
                    "unknown key {key:?} (the keys are the long options of {} --help)",
                    cmd.get_name()
                ))
            })?;
        if settings.iter().any(|(id, _)| id == arg.get_id()) {
            return Err(bad(format!(
                "key {key:?}: given twice (under another of its names)"
            )));
        }
        if let Some(w) = words(arg, key, value).map_err(&bad)? {
            settings.push((arg.get_id().clone(), w));
        }
    }
    // The file alone, as a command line: its values and their combinations are checked here
    // (clap's message, with the file's name).
    let mut argv = vec![cmd.get_name().to_string()];
    for (id, w) in &settings {
        let Some(a) = cmd.get_arguments().find(|a| a.get_id() == id) else {
            continue;
        };
        let long = a.get_long().unwrap_or(id.as_str());
        match a.get_action() {
            ArgAction::SetTrue => argv.push(format!("--{long}")),
            _ => argv.extend(w.iter().map(|v| format!("--{long}={v}"))),
        }
    }
    if let Err(e) = cmd.clone().try_get_matches_from(&argv) {
        // clap's message up to its usage lines, on one line.
        let msg = e.to_string();
        let head: Vec<&str> = msg.lines().take_while(|l| !l.trim().is_empty()).collect();
        return Err(bad(one_line(&head.join(" "))
            .trim_start_matches("error: ")
            .to_string()));
    }
    for (id, w) in settings {
        cmd = cmd.mut_arg(id, |a| a.default_values(w));
    }
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(clap::Parser, Debug)]
    #[command(name = "t")]
    struct A {
        #[arg(short = 'c', long, alias = "conf")]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 4431)]
        port: u16,
        #[arg(
            short = 'i',
            long = "interface",
            alias = "host",
            default_value = "0.0.0.0"
        )]
        interface: String,
        #[arg(long)]
        listen: Vec<String>,
        #[arg(long)]
        idle_exit: Option<u64>,
        #[arg(short = 'v', long, short_alias = 'd', alias = "debug")]
        verbose: bool,
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        #[arg(long)]
        check: bool,
        #[command(subcommand)]
        cmd: Option<Sub>,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Sub {
        Tool,
    }

    fn run(file: Option<&str>, args: &[&str]) -> Result<(A, Source), String> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.toml");
        if let Some(f) = file {
            std::fs::write(&p, f).unwrap();
        }
        let spec = Spec {
            default_path: Some(p),
            sections: &["commands"],
        };
        let argv = std::iter::once("t")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        try_parse::<A>(A::command(), argv, &spec).map_err(|e| match e {
            Outcome::Clap(e) => format!("clap: {e}"),
            Outcome::Fail(f) => format!("{}: {}", f.code, f.msg),
        })
    }

    #[test]
    fn missing_default_file_is_defaults() {
        let (a, s) = run(None, &[]).unwrap();
        assert_eq!((a.port, a.interface.as_str()), (4431, "0.0.0.0"));
        assert!(!s.read && s.to_string().contains("does not exist"));
    }

    #[test]
    fn file_gives_defaults_command_line_wins() {
        let f = "port = 9\nhost = \"127.0.0.1\"\nlisten = [\"a:1\", \"b:2\"]\nidle-exit = 300\ndebug = true\n[commands.x]\nexec = [\"/bin/true\"]\n";
        let (a, s) = run(Some(f), &[]).unwrap();
        assert!(s.read);
        assert_eq!((a.port, a.interface.as_str()), (9, "127.0.0.1"));
        assert_eq!(a.listen, ["a:1", "b:2"]);
        assert_eq!(a.idle_exit, Some(300));
        assert!(a.verbose);
        let (a, _) = run(
            Some(f),
            &["--port", "7", "--listen", "c:3", "--idle-exit", "1"],
        )
        .unwrap();
        assert_eq!(a.port, 7);
        assert_eq!(a.listen, ["c:3"]);
        assert_eq!(a.idle_exit, Some(1));
    }

    #[test]
    fn command_line_replaces_each_value() {
        let (a, _) = run(Some("port = 9\ninterface = \"::1\""), &["--port", "7"]).unwrap();
        assert_eq!((a.port, a.interface.as_str()), (7, "::1"));
    }

    #[test]
    fn bad_files_are_config_errors_naming_the_key() {
        for (f, want) in [
            ("port = \"x\"", "--port"),
            ("port = 70000", "--port"),
            ("prot = 1", "unknown key \"prot\""),
            ("verbose = 1", "expected true or false"),
            ("port = [1]", "expected a string or a number"),
            ("host = \"a\"\ninterface = \"b\"", "given twice"),
            ("tls-cert = \"/c\"", "--tls-key"),
            ("check = true", "unknown key"),
            ("port = ", "t.toml"),
            ("[other]\nx = 1", "unknown key \"other\""),
        ] {
            let e = run(Some(f), &[]).unwrap_err();
            assert!(e.starts_with("78: ") && e.contains(want), "{f:?}: {e}");
        }
    }

    #[test]
    fn named_file_must_exist() {
        let e = run(None, &["--config", "/nonexistent/x.toml"]).unwrap_err();
        assert!(e.starts_with("66: /nonexistent/x.toml"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("n.toml");
        std::fs::write(&p, "port = 5").unwrap();
        let (a, s) = run(Some("port = 9"), &["-c", p.to_str().unwrap()]).unwrap();
        assert_eq!(a.port, 5);
        assert_eq!(s.path.as_deref(), Some(p.as_path()));
        let (a, _) = run(Some("port = 9"), &["--conf", p.to_str().unwrap()]).unwrap();
        assert_eq!(a.port, 5);
    }

    #[test]
    fn help_and_subcommands_ignore_the_file() {
        let e = run(Some("port = \"broken\""), &["--help"]).unwrap_err();
        assert!(
            e.starts_with("clap: ") && e.contains("[default: 4431]"),
            "{e}"
        );
        let (a, s) = run(Some("port = \"broken\""), &["tool"]).unwrap();
        assert!(a.cmd.is_some() && s.path.is_none());
    }

    #[test]
    fn file_and_command_line_together() {
        // The file's tls-cert and tls-key, neither on the command line: both set.
        let (a, _) = run(Some("tls-cert = \"/c\"\ntls-key = \"/k\""), &[]).unwrap();
        assert!(a.tls_cert.is_some() && a.tls_key.is_some());
        // Options that need each other are given together, in the file or on the command
        // line (a file's value is a default, which does not satisfy clap's `requires`).
        let pair = "tls-cert = \"/c\"\ntls-key = \"/k\"";
        let (a, _) = run(Some(pair), &["--tls-cert", "/d", "--tls-key", "/e"]).unwrap();
        assert_eq!(a.tls_cert.as_deref(), Some(Path::new("/d")));
        assert_eq!(a.tls_key.as_deref(), Some(Path::new("/e")));
        let e = run(Some("tls-key = \"/k\""), &["--tls-cert", "/c"]).unwrap_err();
        assert!(e.contains("--tls-cert"), "{e}");
        let (a, _) = run(Some("verbose = false"), &["-d"]).unwrap();
        assert!(a.verbose);
    }
}
