//! add-user: registers a remo user's public key in remod's user database, as remo_serv's
//! `add_user` tool does (same table, key PEM stored as a BLOB), plus the Unix account the
//! user's commands run as and an optional allowlist of programs.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use keysock::cli::{self, exit, Fail, FailContext};
use keysock::keyfile;
use keysock::remo::users;

const PROGRAM: &str = "add-user";

#[derive(clap::Parser, Debug)]
#[command(
    name = "add-user",
    version,
    about = "Add a user and its public key to remod's user database",
    after_help = "See add-user(8)."
)]
struct Args {
    /// Database (".sqlite" is appended unless present or ":memory:")
    #[arg(
        short = 'b',
        long = "base",
        value_name = "DB",
        default_value = "users_db"
    )]
    base: String,
    /// Unix account the user's commands and file transfers run as
    #[arg(short = 'U', long = "unix-user", value_name = "NAME")]
    unix_user: Option<String>,
    /// Programs the user may run, separated by commas or spaces (@get and @put allow transfers)
    #[arg(short = 'a', long = "allow", value_name = "LIST")]
    allow: Option<String>,
    /// Replace the key and settings of an existing user
    #[arg(short = 'f', long = "force")]
    force: bool,
    /// Remote user name
    #[arg(value_name = "USER")]
    user: String,
    /// Public key file, SubjectPublicKeyInfo PEM (default: USER.pem)
    #[arg(value_name = "PEM")]
    pem: Option<PathBuf>,
}

fn run(a: Args) -> Result<(), Fail> {
    if a.user.is_empty() {
        return Err(Fail::new(exit::USAGE, "USER must not be empty"));
    }
    let pem = a
        .pem
        .unwrap_or_else(|| PathBuf::from(format!("{}.pem", a.user)));
    let data = std::fs::read(&pem).map_err_context(exit::NOINPUT, || pem.display().to_string())?;
    let key = keyfile::parse_public(&data)
        .map_err_context(exit::DATAERR, || pem.display().to_string())?;
    let id = key.id();
    if id != openssl::pkey::Id::ED448 && id != openssl::pkey::Id::RSA {
        return Err(Fail::new(
            exit::DATAERR,
            format!("{}: only Ed448 and RSA keys can log in", pem.display()),
        ));
    }
    // Stored as SubjectPublicKeyInfo PEM, the one form the original server reads too.
    let stored = if data.starts_with(b"-----BEGIN PUBLIC KEY-----") {
        data
    } else {
        key.public_key_to_pem()
            .map_err_context(exit::SOFTWARE, || "encoding key".into())?
    };
    if let Some(u) = &a.unix_user {
        if nix::unistd::User::from_name(u).ok().flatten().is_none() {
            eprintln!("{PROGRAM}: warning: no Unix user {u:?} on this machine");
        }
    }
    let db = users::db_path(&a.base);
    let c = users::open(&db).map_err_context(exit::CANTCREAT, || db.display().to_string())?;
    users::add(
        &c,
        &a.user,
        &stored,
        a.unix_user.as_deref(),
        a.allow.as_deref(),
        a.force,
    )
    .map_err(|e| match e {
        users::AddError::Exists(_) => Fail::new(exit::DATAERR, e.to_string()),
        e => Fail::new(exit::IOERR, format!("{}: {e}", db.display())),
    })
}

fn main() {
    let args: Args = cli::parse(std::env::args_os());
    if let Err(f) = run(args) {
        cli::exit_with(PROGRAM, f);
    }
}
