//! s5: fetch a secret from s5d or the original s5server (drop-in for s5client), or hand one
//! to a running s5d (`s5 put`). Parses the command line and wires the library together.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use keysock::cli::{self, exit, Fail};
use keysock::privfile;
use keysock::s5::{self, client, wire};

const PROGRAM: &str = "s5";

#[derive(clap::Parser, Debug)]
#[command(
    name = "s5",
    version,
    about = "Fetch a secret from s5d or s5server (drop-in for s5client), or load one into s5d",
    args_conflicts_with_subcommands = true,
    after_help = "Prints the secret with no newline and exits 0, or prints FAILED and exits 1.\nSee s5(1)."
)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    fetch: Fetch,
}

#[derive(clap::Args, Debug)]
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

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Read a secret (one line of standard input, or the terminal with echo off) and hand it to
    /// the s5d listening on the control socket; write the client file s5d did not write
    Put(Local),
    /// Ask the local s5d for its connection details and write the client file
    Token(Local),
}

#[derive(clap::Args, Debug)]
struct Local {
    /// s5d's control socket [default: $XDG_RUNTIME_DIR/s5d.sock; /run/s5d.sock for root]
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Where to write the connection details, 0600
    #[arg(long, value_name = "FILE", default_value = s5::DEFAULT_CLIENT_FILE)]
    client_file: String,
    /// Write no client file; print "Token: <base64>" instead
    #[arg(long)]
    no_client_file: bool,
    /// Give up after SECONDS without an answer from s5d
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
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
            .map_err(|e| Fail::new(exit::DATAERR, format!("{}: {e}", path.display())))?;
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
    let token = wire::parse_token(&token_text)
        .map_err(|e| Fail::new(exit::DATAERR, format!("bad token: {e}")))?;
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
                .map_err(|e| Fail::new(exit::IOERR, format!("cannot write the secret: {e}")))
        }
        Err(e) => {
            // As s5client: FAILED on stdout, exit 1; and here also why, on stderr.
            println!("FAILED");
            Err(Fail::new(1, format!("cannot fetch the secret: {e}")))
        }
    }
}

fn local(l: Local, put: bool) -> Result<(), Fail> {
    let path = l.control.unwrap_or_else(s5::default_control_path);
    let timeout = Duration::from_secs(l.timeout.max(1));
    let answer = if put {
        let secret = s5::read_prompted()
            .map_err(|e| Fail::new(exit::NOINPUT, format!("cannot read the secret: {e}")))?;
        client::put(&path, &secret, timeout)
    } else {
        client::token(&path, timeout)
    }
    .map_err(|e| Fail::new(exit::UNAVAILABLE, e.to_string()))?;
    let what = if put {
        "secret loaded"
    } else {
        "s5d is running"
    };
    let c = &answer.client;
    if l.no_client_file {
        eprintln!("{PROGRAM}: {what}; host {} port {}", c.host, c.port);
        println!("Token: {}", *c.token);
    } else if let Some(p) = &answer.written {
        eprintln!(
            "{PROGRAM}: {what}; port {}; client file {} (written by s5d)",
            c.port,
            p.display()
        );
    } else {
        let p = s5::expand_tilde(&l.client_file);
        privfile::write_private(&p, c.to_json().as_bytes())
            .map_err(|e| Fail::new(exit::CANTCREAT, format!("{}: {e}", p.display())))?;
        eprintln!(
            "{PROGRAM}: {what}; port {}; client file {} written",
            c.port,
            p.display()
        );
    }
    Ok(())
}

fn main() {
    let args: Args = cli::parse(std::env::args_os());
    let r = match args.cmd {
        None => fetch(args.fetch),
        Some(Cmd::Put(l)) => local(l, true),
        Some(Cmd::Token(l)) => local(l, false),
    };
    if let Err(f) = r {
        cli::exit_with(PROGRAM, f);
    }
}
