//! build-key-pair: makes an Ed448 (or RSA) key pair as remo_serv's `build_key_pair` does:
//! PREFIX_key.pem (PKCS#8, encrypted when a password is given, 0600) and PREFIX.pem
//! (SubjectPublicKeyInfo); for RSA also PREFIX.pub (OpenSSH line).
#![forbid(unsafe_code)]

use std::path::PathBuf;

use keysock::cli::{self, exit, Fail, FailContext};
use keysock::keyfile::{self, KeyType};

const PROGRAM: &str = "build-key-pair";

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Kind {
    Ed448,
    Rsa,
}

#[derive(clap::Parser, Debug)]
#[command(
    name = "build-key-pair",
    version,
    about = "Make a key pair: PREFIX_key.pem (private, 0600) and PREFIX.pem (public)",
    after_help = "The password is read from the terminal with echo off, else one line of standard input;\nan empty password leaves the private key unencrypted. See build-key-pair(1)."
)]
struct Args {
    /// Key type
    #[arg(short = 't', long = "type", value_enum, default_value = "ed448")]
    kind: Kind,
    /// RSA modulus size in bits (with --type rsa)
    #[arg(short = 'b', long = "bits", value_name = "N", default_value_t = 2048)]
    bits: u32,
    /// File name prefix
    #[arg(value_name = "PREFIX")]
    prefix: String,
    /// Folder to write the files into (default: the current directory)
    #[arg(value_name = "FOLDER")]
    folder: Option<PathBuf>,
    /// Replace existing files (default: refuse, exit 73, write nothing)
    #[arg(long, conflicts_with = "if_missing")]
    force: bool,
    /// Only if PREFIX_key.pem does not exist: make an unencrypted pair without asking for a
    /// password, else do nothing and exit 0 (a daemon's first start, as sshd's host keys)
    #[arg(long = "if-missing")]
    if_missing: bool,
}

fn run(a: Args) -> Result<(), Fail> {
    if a.prefix.is_empty() || a.prefix.contains('/') {
        return Err(Fail::new(
            exit::USAGE,
            "PREFIX must be a plain file name prefix",
        ));
    }
    let kind = match a.kind {
        Kind::Ed448 => KeyType::Ed448,
        Kind::Rsa if !(1024..=16384).contains(&a.bits) => {
            return Err(Fail::new(
                exit::USAGE,
                format!("--bits {}: must be 1024 to 16384", a.bits),
            ))
        }
        Kind::Rsa => KeyType::Rsa(a.bits),
    };
    let folder = a.folder.unwrap_or_else(|| PathBuf::from("."));
    if !folder.is_dir() {
        return Err(Fail::new(
            exit::CANTCREAT,
            format!("{}: not a directory", folder.display()),
        ));
    }
    if a.if_missing {
        let private = folder.join(format!("{}_key.pem", a.prefix));
        if std::fs::symlink_metadata(&private).is_ok() {
            return Ok(());
        }
        keyfile::build_key_pair(kind, &a.prefix, &folder, None, false)
            .map_err_code(exit::CANTCREAT)?;
        eprintln!("{PROGRAM}: made {} and its public key", private.display());
        return Ok(());
    }
    let pw = cli::read_password("Password: ")
        .map_err_context(exit::NOINPUT, || "cannot read password".into())?;
    let pw = cli::password_str(&pw)?.trim();
    let pw = (!pw.is_empty()).then_some(pw.as_bytes());
    keyfile::build_key_pair(kind, &a.prefix, &folder, pw, a.force).map_err_code(exit::CANTCREAT)?;
    Ok(())
}

fn main() {
    let args: Args = cli::parse(std::env::args_os());
    if let Err(f) = run(args) {
        cli::exit_with(PROGRAM, f);
    }
}
