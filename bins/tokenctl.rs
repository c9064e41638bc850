//! tokenctl: manage tokens in our daemons' stores directly (skd's store, iscepd's tokens file).
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Subcommand;
use keysock::cli::{self, exit, Fail, FailContext};
use keysock::locked::Locked;
use keysock::sks::{self, Validity};

const PROGRAM: &str = "tokenctl";

#[derive(clap::Parser, Debug)]
#[command(
    name = "tokenctl",
    version,
    about = "Manage keysock tokens for service accounts and admins",
    after_help = "See tokenctl(1)."
)]
struct Args {
    /// Print JSON records, one object a line, instead of plain lines (before or after the
    /// subcommand)
    #[arg(long = "json", global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Version of the JSON records (`"format"` in each): bumped when a record changes shape.
const FORMAT: u32 = 1;

/// Prints one JSON record of `kind` with `fields`, as every `--json` output does.
fn record(kind: &str, fields: serde_json::Value) {
    let mut m = serde_json::Map::new();
    m.insert("format".into(), FORMAT.into());
    m.insert("kind".into(), kind.into());
    if let serde_json::Value::Object(f) = fields {
        m.extend(f);
    }
    println!("{}", serde_json::Value::Object(m));
}

/// Exit status of `check` for a token that was replaced or superseded (YES is 0, NO is 1).
const EXIT_SUPERCEDED: i32 = 2;

/// A token record: the same keys for `issue`, `list` and `check`.
fn token_record(realm: &str, token: &str, state: &str, info: Option<&str>, expires: Option<i64>) {
    let mut lines = info
        .map(|i| i.lines().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter();
    let (user, source) = (lines.next(), lines.next());
    record(
        "token",
        serde_json::json!({"realm": realm, "token": token, "state": state,
            "user": user, "source": source, "expires": expires}),
    );
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Tokens in skd's store (works beside a running skd)
    #[command(subcommand)]
    Skd(SkdCmd),
    /// Tokens in iscepd's tokens file (the original's tokens.json format)
    #[command(subcommand)]
    Iscep(IscepCmd),
}

/// Which store: `--db DIR` (skd -d DIR) or `--store URL` (skd --store URL).
#[derive(clap::Args, Debug)]
struct At {
    /// skd's store directory (skd -d DIR)
    #[arg(long = "db", value_name = "DIR", default_value = SKD_DB)]
    db: PathBuf,
    /// skd's store as skd --store names it: sqlite:DIR or postgresql://... (instead of --db)
    #[arg(long = "store", value_name = "URL", conflicts_with = "db")]
    store: Option<String>,
    /// Read the PostgreSQL password from the first line of FILE (default: the systemd credential store-password, if any)
    #[arg(long = "store-password-file", value_name = "FILE")]
    store_password_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct Where {
    #[command(flatten)]
    at: At,
    /// Realm the tokens belong to
    #[arg(long = "realm", value_name = "REALM")]
    realm: String,
}

/// skd's store under the shipped unit (StateDirectory=skd).
const SKD_DB: &str = "/var/lib/skd";

#[derive(Subcommand, Debug)]
enum SkdCmd {
    /// Issue a new current token for USER and print it
    Issue {
        #[command(flatten)]
        at: Where,
        /// User the token is for
        #[arg(long = "user", value_name = "USER")]
        user: String,
        /// Source line recorded with the token (the key identity of /get_key follows it)
        #[arg(long = "source", value_name = "SOURCE", default_value = "stored")]
        source: String,
        /// Token expires after SECONDS
        #[arg(long = "ttl", value_name = "SECONDS")]
        ttl: Option<u64>,
    },
    /// List live tokens of the realm, one per line
    List {
        #[command(flatten)]
        at: Where,
        /// Only this user's tokens
        #[arg(long = "user", value_name = "USER")]
        user: Option<String>,
    },
    /// Revoke tokens (exit 1 if any was not known)
    Revoke {
        #[command(flatten)]
        at: Where,
        /// Tokens, or "-" to read them from standard input, one a line (safer: every user
        /// can read a command line)
        #[arg(value_name = "TOKEN", required = true)]
        tokens: Vec<String>,
    },
    /// Print YES, SUPERCEDED or NO; exit 0, 2 or 1
    Check {
        #[command(flatten)]
        at: Where,
        /// The token, or "-" to read it from standard input (safer: every user can read a
        /// command line)
        #[arg(value_name = "TOKEN")]
        token: String,
    },
    /// Import the original SessionKeyServer's store from a JE DbDump file (or - for stdin)
    Import {
        /// The store (an SQLite directory is created if missing, as skd -d does)
        #[command(flatten)]
        at: At,
        /// Replace records that exist already (default: keep them)
        #[arg(long = "overwrite")]
        overwrite: bool,
        #[arg(value_name = "DUMP")]
        dump: PathBuf,
    },
    /// List who owns a user key: one info record per line (user, source...), never the key
    Keys {
        #[command(flatten)]
        at: At,
    },
    /// Copy user keys from records with source FROM to the same records with source TO (the
    /// original's CopyKeys), so a login through another module keeps reaching its key
    CopyKeys {
        #[command(flatten)]
        at: At,
        /// Replace keys that exist at the target already (default: keep them)
        #[arg(long = "overwrite")]
        overwrite: bool,
        #[arg(value_name = "FROM")]
        from: String,
        #[arg(value_name = "TO")]
        to: String,
    },
    /// Copy a whole store (tokens, keys, groups) into an empty one, in one transaction: e.g.
    /// from sqlite:/var/lib/skd to postgresql://...
    Migrate {
        /// The store to read: sqlite:DIR or postgresql://...
        #[arg(long = "from", value_name = "URL")]
        from: String,
        /// The store to fill, which must be empty (an SQLite directory is created if missing)
        #[arg(long = "to", value_name = "URL")]
        to: String,
        /// PostgreSQL password of --from, first line of FILE
        #[arg(long = "from-password-file", value_name = "FILE")]
        from_password_file: Option<PathBuf>,
        /// PostgreSQL password of --to, first line of FILE
        #[arg(long = "to-password-file", value_name = "FILE")]
        to_password_file: Option<PathBuf>,
    },
}

fn open(w: &Where) -> Result<(sks::Store, sks::RealmHash), Fail> {
    let store = open_at(&w.at, false)?;
    Ok((store, sks::RealmHash::of(&w.realm)))
}

/// The store of `--db`/`--store`; an SQLite one must exist unless `create`.
fn open_at(at: &At, create: bool) -> Result<sks::Store, Fail> {
    let loc = match &at.store {
        Some(url) => parse_store("--store", url)?,
        None => sks::store::Location::Sqlite(at.db.clone()),
    };
    open_store(&loc, at.store_password_file.as_deref(), create)
}

fn parse_store(option: &str, url: &str) -> Result<sks::store::Location, Fail> {
    sks::store::Location::parse(url).map_err_context(exit::USAGE, || option.to_string())
}

fn open_store(
    loc: &sks::store::Location,
    password_file: Option<&std::path::Path>,
    create: bool,
) -> Result<sks::Store, Fail> {
    let pw = match loc {
        sks::store::Location::Postgres(_) => {
            sks::pg::password(password_file).map_err_code(exit::NOINPUT)?
        }
        _ => None,
    };
    sks::Store::open_location(loc, pw, create).map_err(|e| {
        let code = match e {
            sks::store::StoreError::Dir(..) if !create => exit::NOINPUT,
            _ => store_exit(&e),
        };
        Fail::new(code, format!("cannot open store {}: {e}", loc.describe()))
    })
}

/// The exit status for a store error: the database unreachable (69), not usable by us (78),
/// a migration target not empty (65), anything else (74).
fn store_exit(e: &sks::store::StoreError) -> i32 {
    use sks::store::StoreError;
    match e {
        StoreError::Unavailable(_) => exit::UNAVAILABLE,
        StoreError::Setup(_) => exit::CONFIG,
        StoreError::NotEmpty(_) => exit::DATAERR,
        StoreError::Dir(..) => exit::CANTCREAT,
        _ => exit::IOERR,
    }
}

/// Most bytes of tokens read from standard input (`-`).
const MAX_STDIN: usize = 1 << 20;

/// Standard input, read into locked memory: the tokens of `revoke -` and `check -`.
fn stdin_tokens(one_line: bool) -> Result<Locked, Fail> {
    let stdin = std::io::stdin();
    if one_line {
        keysock::locked::read_line(stdin, MAX_STDIN)
    } else {
        keysock::locked::read_all(stdin, MAX_STDIN)
    }
    .map_err_context(exit::NOINPUT, || "standard input".into())
}

/// The tokens in `text`: one a line, blank lines skipped.
fn token_lines(text: &Locked) -> Result<Vec<&str>, Fail> {
    let s = std::str::from_utf8(text.as_bytes())
        .map_err(|_| Fail::new(exit::DATAERR, "standard input: not UTF-8 text"))?;
    Ok(s.lines().map(str::trim).filter(|l| !l.is_empty()).collect())
}

fn db_err(e: sks::store::StoreError) -> Fail {
    Fail::new(store_exit(&e), format!("store: {e}"))
}

fn run(cmd: SkdCmd, json: bool) -> Result<i32, Fail> {
    match cmd {
        SkdCmd::Issue {
            at,
            user,
            source,
            ttl,
        } => {
            if user.is_empty() || user.contains('\n') || source.is_empty() || source.contains('\n')
            {
                return Err(Fail::new(
                    exit::USAGE,
                    "user and source must be non-empty single lines",
                ));
            }
            let (store, r) = open(&at)?;
            let info = sks::wire::info(&user, &source, Default::default());
            let expires = ttl.map(|t| sks::store::now() + t as i64);
            let t = store
                .issue(&r, &user, &info, None, expires)
                .map_err(db_err)?;
            if json {
                token_record(&at.realm, &t, "YES", Some(&info), expires);
            } else {
                println!("{t}");
            }
            Ok(0)
        }
        SkdCmd::List { at, user } => {
            let (store, r) = open(&at)?;
            // Streamed: each token is printed as it is read.
            store
                .list_each(&r, user.as_deref(), |e| {
                    if json {
                        let state = if e.current { "YES" } else { "SUPERCEDED" };
                        let info = format!("{}\n{}\n", e.user, e.source);
                        token_record(&at.realm, &e.token, state, Some(&info), e.expires);
                    } else {
                        println!("{}", e.token);
                    }
                })
                .map_err(db_err)?;
            Ok(0)
        }
        SkdCmd::Revoke { at, tokens: args } => {
            let input = match args.iter().any(|t| t == "-") {
                true => Some(stdin_tokens(false)?),
                false => None,
            };
            let (store, r) = open(&at)?;
            let mut tokens: Vec<&str> = Vec::new();
            for t in &args {
                match (t.as_str(), &input) {
                    ("-", Some(text)) => tokens.extend(token_lines(text)?),
                    (t, _) => tokens.push(t),
                }
            }
            let mut unknown = 0;
            for t in &tokens {
                let revoked = store.revoke(&r, t).map_err(db_err)?;
                if !revoked {
                    eprintln!("{PROGRAM}: token not known in realm {:?}", at.realm);
                    unknown += 1;
                }
                if json {
                    record(
                        "revoke",
                        serde_json::json!({"realm": at.realm, "token": t, "revoked": revoked}),
                    );
                }
            }
            Ok(if unknown == 0 { 0 } else { 1 })
        }
        SkdCmd::Import {
            at,
            overwrite,
            dump,
        } => {
            let text = if dump.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&dump)
            }
            .map_err_context(exit::NOINPUT, || dump.display().to_string())?;
            let pairs = sks::jedump::parse(&text)
                .map_err_context(exit::DATAERR, || dump.display().to_string())?;
            let store = open_at(&at, true)?;
            let n = store.import(&pairs, overwrite).map_err(db_err)?;
            if json {
                record(
                    "import",
                    serde_json::json!({"imported": n, "records": pairs.len()}),
                );
            }
            eprintln!(
                "{PROGRAM}: imported {n} of {} records into {}",
                pairs.len(),
                at.store
                    .clone()
                    .unwrap_or_else(|| at.db.display().to_string())
            );
            Ok(0)
        }
        SkdCmd::Keys { at } => {
            let store = open_at(&at, false)?;
            for info in store.key_owners().map_err(db_err)? {
                if json {
                    let lines: Vec<&str> = info.lines().collect();
                    record("key-owner", serde_json::json!({"info": lines}));
                } else {
                    println!("{}", info.trim_end_matches('\n').replace('\n', " "));
                }
            }
            Ok(0)
        }
        SkdCmd::CopyKeys {
            at,
            overwrite,
            from,
            to,
        } => {
            if [&from, &to]
                .iter()
                .any(|s| s.is_empty() || s.contains('\n'))
            {
                return Err(Fail::new(
                    exit::USAGE,
                    "FROM and TO must be non-empty single lines",
                ));
            }
            let store = open_at(&at, false)?;
            let (copied, found) = store.copy_keys(&from, &to, overwrite).map_err(db_err)?;
            if json {
                record(
                    "copy-keys",
                    serde_json::json!({"from": from, "to": to, "copied": copied, "found": found}),
                );
            }
            eprintln!("{PROGRAM}: copied {copied} of {found} keys from source {from:?} to {to:?}");
            Ok(0)
        }
        SkdCmd::Migrate {
            from,
            to,
            from_password_file,
            to_password_file,
        } => {
            let (src, dst) = (parse_store("--from", &from)?, parse_store("--to", &to)?);
            let source = open_store(&src, from_password_file.as_deref(), false)?;
            let target = open_store(&dst, to_password_file.as_deref(), true)?;
            let n = source.copy_into(&target).map_err(db_err)?;
            if json {
                record(
                    "migrate",
                    serde_json::json!({"from": src.describe(), "to": dst.describe(), "records": n}),
                );
            }
            eprintln!(
                "{PROGRAM}: copied {n} records from {} to {}",
                src.describe(),
                dst.describe()
            );
            Ok(0)
        }
        SkdCmd::Check { at, token } => {
            let input = match token.as_str() {
                "-" => Some(stdin_tokens(true)?),
                _ => None,
            };
            let (store, r) = open(&at)?;
            let token = match &input {
                Some(text) => token_lines(text)?.first().copied().unwrap_or(""),
                None => token.as_str(),
            };
            let v = store.check(&r, token).map_err(db_err)?;
            let (word, info) = match &v {
                Validity::Current(i) => ("YES", Some(i)),
                Validity::Superseded(i) => ("SUPERCEDED", Some(i)),
                Validity::No => ("NO", None),
            };
            if json {
                token_record(&at.realm, token, word, info.map(String::as_str), None);
            } else {
                println!("{word}");
            }
            Ok(match v {
                Validity::Current(_) => 0,
                Validity::Superseded(_) => EXIT_SUPERCEDED,
                Validity::No => 1,
            })
        }
    }
}

#[derive(clap::Args, Debug)]
struct IscepAt {
    /// The token owner (a name in the tokens file)
    #[arg(value_name = "OWNER")]
    owner: String,
    /// iscepd's tokens file (iscepd --tokens)
    #[arg(long = "tokens", value_name = "FILE", default_value = keysock::iscep::DEFAULT_TOKENS)]
    tokens: PathBuf,
}

#[derive(Subcommand, Debug)]
enum IscepCmd {
    /// Give OWNER a new token and print it (the file is created if missing)
    Add {
        #[command(flatten)]
        at: IscepAt,
    },
    /// Remove OWNER's token (exit 1 if OWNER has none)
    Remove {
        #[command(flatten)]
        at: IscepAt,
    },
    /// Replace OWNER's token with a new one and print it (exit 1 if OWNER has none)
    Rotate {
        #[command(flatten)]
        at: IscepAt,
    },
    /// Print the owners, one per line (never the tokens)
    List {
        /// iscepd's tokens file (iscepd --tokens)
        #[arg(long = "tokens", value_name = "FILE", default_value = keysock::iscep::DEFAULT_TOKENS)]
        tokens: PathBuf,
    },
}

fn run_iscep(cmd: IscepCmd, json: bool) -> Result<i32, Fail> {
    use keysock::iscep::tokens::Tokens;
    let load = |p: &std::path::Path, missing_ok: bool| {
        let r = if missing_ok {
            Tokens::load_or_empty(p)
        } else {
            Tokens::load(p)
        };
        r.map_err(|e| {
            let code = match e {
                keysock::iscep::tokens::TokensError::Format(..) => exit::DATAERR,
                _ => exit::NOINPUT,
            };
            Fail::new(code, e.to_string())
        })
    };
    let save = |t: &Tokens, p: &std::path::Path| t.save(p).map_err_code(exit::CANTCREAT);
    let check_owner = |o: &str| {
        if o.is_empty() || o.chars().any(char::is_control) {
            Err(Fail::new(
                exit::USAGE,
                "OWNER must be a non-empty name without control characters",
            ))
        } else {
            Ok(())
        }
    };
    match cmd {
        IscepCmd::Add { at } => {
            check_owner(&at.owner)?;
            let mut t = load(&at.tokens, true)?;
            if t.owners().any(|o| o == at.owner) {
                return Err(Fail::new(
                    exit::DATAERR,
                    format!(
                        "{}: {:?} already has a token (use rotate to replace it)",
                        at.tokens.display(),
                        at.owner
                    ),
                ));
            }
            let new = t.issue(&at.owner);
            save(&t, &at.tokens)?;
            print_iscep_token(json, &at.owner, new.as_str());
            Ok(0)
        }
        IscepCmd::Rotate { at } => {
            let mut t = load(&at.tokens, false)?;
            if !t.owners().any(|o| o == at.owner) {
                eprintln!(
                    "{PROGRAM}: {}: no token for {:?}",
                    at.tokens.display(),
                    at.owner
                );
                return Ok(1);
            }
            let new = t.issue(&at.owner);
            save(&t, &at.tokens)?;
            print_iscep_token(json, &at.owner, new.as_str());
            Ok(0)
        }
        IscepCmd::Remove { at } => {
            let mut t = load(&at.tokens, false)?;
            if !t.remove(&at.owner) {
                eprintln!(
                    "{PROGRAM}: {}: no token for {:?}",
                    at.tokens.display(),
                    at.owner
                );
                return Ok(1);
            }
            save(&t, &at.tokens)?;
            if json {
                record("iscep-removed", serde_json::json!({"owner": at.owner}));
            }
            Ok(0)
        }
        IscepCmd::List { tokens } => {
            let t = load(&tokens, false)?;
            for o in t.owners() {
                if json {
                    record("iscep-owner", serde_json::json!({"owner": o}));
                } else {
                    println!("{o}");
                }
            }
            Ok(0)
        }
    }
}

/// A new iscep token: the bare token, or an `iscep-token` record.
fn print_iscep_token(json: bool, owner: &str, token: &str) {
    if json {
        record(
            "iscep-token",
            serde_json::json!({"owner": owner, "token": token}),
        );
    } else {
        println!("{token}");
    }
}

fn main() {
    let args: Args = cli::parse(std::env::args_os());
    let result = match args.cmd {
        Cmd::Skd(cmd) => run(cmd, args.json),
        Cmd::Iscep(cmd) => run_iscep(cmd, args.json),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(f) => cli::exit_with(PROGRAM, f),
    }
}
