//! s5client: fetch a secret from s5d or the original s5server (drop-in for the original
//! s5client). Loading a secret into s5d is `s5d put`. Parses the command line and wires the
//! library together.
#![forbid(unsafe_code)]

use std::io::Write;
use std::time::Duration;

use keysock::cli::{self, exit, Fail, FailContext};
use keysock::s5::{self, client, wire};

const PROGRAM: &str = "s5client";

#[derive(clap::Parser, Debug)]
#[command(
    name = "s5client",
    version,
    about = "Fetch a secret from s5d or s5server (drop-in for the original s5client)",
    after_help = "Prints the secret with no newline and exits 0, or prints FAILED and exits 1.\nLoad a secret with `s5d put`. See s5client(1)."
)]
struct Fetch {
    /// Read host, port and token from FILE
    #[arg(long, value_name = "FILE", default_value = s5::DEFAULT_CLIENT_FILE)]
    client_file: String,
    /// Read no file: --host, --port and --token must all be given
    #[arg(long)]
    no_client_file: bool,
    /// Server host name or address (overrides the file's)
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Server port (overrides the file's)
    #[arg(long, value_name = "PORT")]
    port: Option<String>,
    /// Token, base64 of 96 bytes (overrides the file's)
    #[arg(long, value_name = "BASE64")]
    token: Option<String>,
    /// Give up after SECONDS without the secret
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    timeout: u64,
    /// Accept only the authenticated v2 answer (refuse the original server's v1 answer)
    #[arg(long)]
    require_v2: bool,
}

fn fetch(f: Fetch) -> Result<(), Fail> {
    let mut from_file = s5::ClientFileIn::default();
    if !f.no_client_file {
        let path = s5::expand_tilde(&f.client_file);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Fail::new(
                exit::NOINPUT,
                format!("{}: cannot read: {e} (is s5d running? or use --no-client-file --host --port --token)", path.display()),
            )
        })?;
        from_file = s5::parse_client_file(&text)
            .map_err_context(exit::DATAERR, || path.display().to_string())?;
    }
    let missing = |what: &str| {
        Fail::new(
            exit::USAGE,
            format!("no {what}: give --{what} or a client file that has it"),
        )
    };
    let host = f.host.or(from_file.host).ok_or_else(|| missing("host"))?;
    let port = f.port.or(from_file.port).ok_or_else(|| missing("port"))?;
    // The file's "protocol": 2 belongs to its token: s5d made both.
    let require_v2 = if f.require_v2 {
        Some("--require-v2 was given")
    } else if f.token.is_none() && from_file.token.is_some() && from_file.v2 {
        Some("the client file says its server answers v2")
    } else {
        None
    };
    let token_text = f
        .token
        .map(zeroize::Zeroizing::new)
        .or(from_file.token)
        .ok_or_else(|| missing("token"))?;
    let token =
        wire::parse_token(&token_text).map_err_context(exit::DATAERR, || "bad token".into())?;
    match client::fetch(
        &host,
        &port,
        &token,
        Duration::from_secs(f.timeout.max(1)),
        require_v2,
    ) {
        Ok((secret, _)) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&secret)
                .and_then(|_| out.flush())
                .map_err_context(exit::IOERR, || "cannot write the secret".into())
        }
        Err(e) => {
            // As s5client: FAILED on stdout, exit 1; and here also why, on stderr.
            println!("FAILED");
            Err(Fail::new(1, format!("cannot fetch the secret: {e}")))
        }
    }
}

fn main() {
    let args: Fetch = cli::parse(std::env::args_os());
    if let Err(f) = fetch(args) {
        cli::exit_with(PROGRAM, f);
    }
}
