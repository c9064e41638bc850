//! iscep: the client of iscepd (and of the original iscep server): ECHO, DISCOVER, and
//! SEND_CMD with arguments from the command line.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use keysock::cli::{self, exit, Fail, FailContext};
use keysock::iscep::client::{Client, ClientError, Tls};
use keysock::iscep::wire::{Packet, Type};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

const PROGRAM: &str = "iscep";

#[derive(clap::Parser, Debug)]
#[command(
    name = "iscep",
    version,
    about = "Ask an iscep server to echo, list its commands, or run one",
    after_help = "Exit status: 0 on an answer, 1 on ERROR, 2 on UNAUTHORIZED, 64-78 when no answer came.\nThe token may also come from the ISCEP_TOKEN environment variable. See iscep(1)."
)]
struct Args {
    /// Server host name or address
    #[arg(
        global = true,
        short = 'H',
        long = "host",
        value_name = "HOST",
        default_value = "127.0.0.1"
    )]
    host: String,
    /// Server port
    #[arg(global = true, short = 'p', long = "port", value_name = "PORT", default_value_t = keysock::iscep::DEFAULT_PORT)]
    port: u16,
    /// Token to send with every packet (visible to other local users: prefer --token-file)
    #[arg(
        global = true,
        long = "token",
        value_name = "TOKEN",
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// Read the token from the first line of FILE
    #[arg(global = true, long = "token-file", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Use TLS and trust only this PEM certificate (the server's own, or its CA); the certificate must name HOST
    #[arg(global = true, long = "tls-ca", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// With --tls-ca: the server must present that very certificate, whatever names it holds, and no SNI is sent (the original client's pinning)
    #[arg(global = true, long = "tls-pinned", requires = "tls_ca")]
    tls_pinned: bool,
    /// Seconds to wait for the connection and for each answer
    #[arg(
        global = true,
        long = "timeout",
        value_name = "SECONDS",
        default_value_t = 30
    )]
    timeout: u64,
    /// For a text command, print its standard output as it is (and its standard error to stderr)
    #[arg(global = true, long = "raw")]
    raw: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Send ECHO and print what comes back
    Echo {
        /// The message to echo
        #[arg(value_name = "MESSAGE", default_value = "echo")]
        message: String,
    },
    /// List the commands this token may run, with their arguments
    Discover,
    /// Run command NAME; arguments as NAME=VALUE (typed as DISCOVER says) or NAME:=JSON
    Run {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(value_name = "ARG")]
        args: Vec<String>,
    },
    /// Measure round trips per second: ECHO, or command NAME (arguments as NAME:=JSON)
    Bench {
        /// Concurrent connections
        #[arg(long = "clients", value_name = "N", default_value_t = 1)]
        clients: usize,
        /// How long to measure
        #[arg(long = "seconds", value_name = "SECONDS", default_value_t = 5)]
        seconds: u64,
        /// Command to run (default: ECHO)
        #[arg(value_name = "NAME")]
        name: Option<String>,
        #[arg(value_name = "ARG")]
        args: Vec<String>,
    },
}

fn token(a: &Args) -> Result<Option<Zeroizing<String>>, Fail> {
    if let Some(t) = &a.token {
        return Ok(Some(Zeroizing::new(t.clone())));
    }
    if let Some(f) = &a.token_file {
        let text = Zeroizing::new(
            std::fs::read_to_string(f)
                .map_err_context(exit::NOINPUT, || f.display().to_string())?,
        );
        let line = text.lines().next().unwrap_or("").trim();
        if line.is_empty() {
            return Err(Fail::new(
                exit::DATAERR,
                format!("{}: no token in the file", f.display()),
            ));
        }
        return Ok(Some(Zeroizing::new(line.to_string())));
    }
    Ok(std::env::var("ISCEP_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map(Zeroizing::new))
}

fn net(e: ClientError) -> Fail {
    let code = match e {
        ClientError::Connect(..) => exit::UNAVAILABLE,
        ClientError::Tls(_) => exit::CONFIG,
        _ => exit::IOERR,
    };
    Fail::new(code, e.to_string())
}

/// Arguments from `NAME=VALUE` (a string, or converted to the type DISCOVER gave) and
/// `NAME:=JSON`.
fn parse_args(list: &[String], types: Option<&Map<String, Value>>) -> Result<Value, Fail> {
    let mut m = Map::new();
    for a in list {
        let bad = |why: &str| Fail::new(exit::USAGE, format!("argument {a:?}: {why}"));
        let (k, v) = if let Some((k, json)) = a.split_once(":=").filter(|(k, _)| !k.contains('=')) {
            (
                k,
                serde_json::from_str(json).map_err(|_| bad("the value after := is not JSON"))?,
            )
        } else if let Some((k, s)) = a.split_once('=') {
            let ty = types.and_then(|t| t.get(k)).and_then(Value::as_str);
            let v = match ty {
                Some("int" | "float" | "bool" | "dict" | "list") => serde_json::from_str(s)
                    .map_err(|_| bad(&format!("not a valid {}", ty.unwrap_or("value"))))?,
                _ => Value::String(s.to_string()),
            };
            (k, v)
        } else {
            return Err(bad("expected NAME=VALUE or NAME:=JSON"));
        };
        if k.is_empty() {
            return Err(bad("empty name"));
        }
        m.insert(k.to_string(), v);
    }
    Ok(Value::Object(m))
}

fn show(p: &Packet, raw: bool) -> Result<i32, Fail> {
    let code = match p.ty {
        Type::Error => {
            let why = p.body.error.as_deref().unwrap_or("the command failed");
            eprintln!("{PROGRAM}: server answered ERROR: {why}");
            return Ok(1);
        }
        Type::Unauthorized => {
            eprintln!("{PROGRAM}: server answered UNAUTHORIZED: missing or unknown token");
            return Ok(2);
        }
        _ => 0,
    };
    let resp = p.body.response.clone().unwrap_or(Value::Null);
    if raw {
        if let (Some(out), Some(err)) = (
            resp.get("stdout").and_then(Value::as_str),
            resp.get("stderr").and_then(Value::as_str),
        ) {
            use std::io::Write;
            let _ = std::io::stdout().write_all(out.as_bytes());
            let _ = std::io::stderr().write_all(err.as_bytes());
            return Ok(code);
        }
    }
    println!("{resp}");
    Ok(code)
}

fn tls(a: &Args) -> Option<Tls<'_>> {
    a.tls_ca.as_deref().map(|ca| Tls {
        ca,
        pinned: a.tls_pinned,
    })
}

fn run(a: Args) -> Result<i32, Fail> {
    let tok = token(&a)?;
    if let Cmd::Bench {
        clients,
        seconds,
        name,
        args,
    } = &a.cmd
    {
        use keysock::iscep::client::{bench, BenchRequest};
        let req = match name {
            None => BenchRequest::Echo,
            Some(n) => {
                let v = parse_args(args, None)?;
                BenchRequest::Command(n.clone(), (!args.is_empty()).then_some(v))
            }
        };
        let rate = bench(
            &a.host,
            a.port,
            tls(&a),
            tok,
            req,
            *clients,
            Duration::from_secs((*seconds).max(1)),
        )
        .map_err(net)?;
        println!("{rate:.0}");
        return Ok(0);
    }
    let mut c = Client::connect(
        &a.host,
        a.port,
        tls(&a),
        Duration::from_secs(a.timeout.max(1)),
    )
    .map_err(net)?;
    c.set_token(tok);
    let reply = match &a.cmd {
        Cmd::Echo { message } => c.echo(message).map_err(net)?,
        Cmd::Discover => c.discover().map_err(net)?,
        Cmd::Bench { .. } => return Ok(0),
        Cmd::Run { name, args } => {
            // Typed `NAME=VALUE` needs the declared types: ask DISCOVER on the same connection.
            let types = if args.iter().any(|x| !x.contains(":=")) {
                let d = c.discover().map_err(net)?;
                d.body
                    .response
                    .as_ref()
                    .and_then(|r| r.get(name))
                    .and_then(Value::as_object)
                    .cloned()
            } else {
                None
            };
            let v = parse_args(args, types.as_ref())?;
            let v = if args.is_empty() { None } else { Some(v) };
            c.command(name, v).map_err(net)?
        }
    };
    let code = show(&reply, a.raw)?;
    let _ = c.close();
    Ok(code)
}

fn main() {
    let args: Args = cli::parse(std::env::args_os());
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(f) => cli::exit_with(PROGRAM, f),
    }
}
