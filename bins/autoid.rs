//! autoid: fetch a credential from autoidd (v2 by default) or an original auto-id server
//! (--v1) by proving possession of the entropy file. Parses the command line and wires the
//! library together.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use keysock::autoid::{client, Entropy};
use keysock::cli::{self, exit, Fail, FailContext};

const PROGRAM: &str = "autoid";
/// sysexits EX_PROTOCOL: the server answered something that is not auto-id.
const EX_PROTOCOL: i32 = 76;

#[derive(clap::Parser, Debug)]
#[command(
    name = "autoid",
    version,
    about = "Fetch a secret from autoidd or an auto-id server by proving you hold the entropy file",
    after_help = "Prints the secret and a newline on standard output and exits 0; exits 1 when the server refuses.\nSee autoid(1)."
)]
struct Args {
    /// Server URL, http://HOST[:PORT][/PATH]; v1 posts to PATH (default /verify), v2 uses /v2/ on the same host
    #[arg(long, value_name = "URL")]
    url: String,
    /// The entropy file (info2048.bin)
    #[arg(long, value_name = "FILE")]
    entropy: PathBuf,
    /// The server's RSA public key: ssh-rsa line, SubjectPublicKeyInfo PEM or PKCS#1 PEM
    #[arg(long, value_name = "FILE")]
    server_key: PathBuf,
    /// Speak the original protocol (v1) instead of v2, for original auto-id servers
    #[arg(long)]
    v1: bool,
    /// Give up after SECONDS
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
    /// Benchmark: fetch N times (the secret is not printed; the rate goes to stderr)
    #[arg(long, value_name = "N")]
    repeat: Option<usize>,
    /// With --repeat: this many clients at once
    #[arg(long, value_name = "N", default_value_t = 1, requires = "repeat")]
    concurrency: usize,
    /// Secret id in the server's store (v1 also takes the original's "secretsmanager,ID")
    #[arg(value_name = "SECRET_ID")]
    secret_id: String,
}

fn run(a: Args) -> Result<(), Fail> {
    let url = client::parse_url(&a.url).map_err_code(exit::USAGE)?;
    if !a.v1 && !keysock::autoid::valid_id(&a.secret_id) {
        return Err(Fail::new(
            exit::USAGE,
            format!("{:?}: not a secret id (A-Z a-z 0-9 . _ - @)", a.secret_id),
        ));
    }
    let entropy = Entropy::load(&a.entropy).map_err_context(exit::NOINPUT, || {
        format!("{}: cannot read the entropy file", a.entropy.display())
    })?;
    let key = keysock::keyfile::read_public(&a.server_key)
        .map_err_context(exit::NOINPUT, || "cannot read the server key".into())?;
    if key.rsa().is_err() {
        return Err(Fail::new(
            exit::NOINPUT,
            format!("{}: not an RSA public key", a.server_key.display()),
        ));
    }
    let p = client::Params {
        url: &url,
        entropy: &entropy,
        server_key: &key,
        secret_id: &a.secret_id,
        timeout: Duration::from_secs(a.timeout.max(1)),
    };
    if let Some(n) = a.repeat {
        let (ok, err, took) = client::repeat(&p, a.v1, n, a.concurrency);
        let secs = took.as_secs_f64().max(1e-9);
        eprintln!(
            "{PROGRAM}: {ok} of {n} fetches ({}) with {} clients in {secs:.3}s: {:.1} per second",
            if a.v1 { "v1" } else { "v2" },
            a.concurrency.max(1),
            ok as f64 / secs
        );
        return match err {
            Some(e) => Err(Fail::new(
                1,
                format!("{} fetches failed, first: {e}", n - ok),
            )),
            None => Ok(()),
        };
    }
    let got = if a.v1 {
        client::fetch_v1(&p)
    } else {
        client::fetch_v2(&p)
    };
    let secret = got.map_err(|e| {
        let code = match &e {
            client::FetchError::Refused(_) => 1,
            client::FetchError::Connect(..) | client::FetchError::Timeout(_) => exit::UNAVAILABLE,
            client::FetchError::Url(..) => exit::USAGE,
            client::FetchError::Runtime(_) => exit::OSERR,
            _ => EX_PROTOCOL,
        };
        Fail::new(code, e.to_string())
    })?;
    let mut out = std::io::stdout().lock();
    out.write_all(&secret)
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush())
        .map_err_context(exit::IOERR, || "cannot write the secret".into())
}

fn main() {
    let args: Args = cli::parse(std::env::args_os());
    if let Err(f) = run(args) {
        cli::exit_with(PROGRAM, f);
    }
}
