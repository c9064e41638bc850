//! iscepd: runs configured commands for other services over the iscep protocol (TCP or TLS),
//! wire-compatible with the iscep library's server. Parses the command line and wires the
//! library together.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keysock::cli::{self, exit, Fail, FailContext};
use keysock::iscep::{self, server};
use keysock::{config, daemon, tls};

const PROGRAM: &str = "iscepd";

#[derive(clap::Parser, Debug)]
#[command(
    name = "iscepd",
    version,
    about = "Run configured commands for other services over the iscep protocol",
    after_help = "Every option but --config and --check is also a key of the configuration file (idle-exit = 300);\nthe command line wins. See iscepd(8) and iscepd.toml(5).",
    mut_arg("max_connections", |a| a.default_value("64").help("Most connections served at once; more get an ERROR frame and a close")),
    mut_arg("max_connections_per_source", |a| a.help("Most connections served at once from one source (an IPv4 address, all of 127/8, an IPv6 /64, a Unix uid); more get an ERROR frame and a close [default: a quarter of --max-connections]"))
)]
struct Args {
    /// Configuration file: options and the commands to serve (TOML, iscepd.toml(5)); a missing default file means defaults and no command
    #[arg(short = 'c', long = "config", value_name = "FILE", default_value = iscep::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Tokens file in the original's tokens.json format (owner -> token); must exist
    #[arg(long = "tokens", value_name = "FILE", default_value = iscep::DEFAULT_TOKENS, conflicts_with = "no_auth")]
    tokens: PathBuf,
    /// Serve without authentication (every packet is accepted)
    #[arg(long = "no-auth")]
    no_auth: bool,
    /// Address to bind without socket activation or --listen
    #[arg(
        short = 'a',
        long = "address",
        value_name = "ADDR",
        default_value = "127.0.0.1"
    )]
    address: String,
    /// Port to bind without socket activation or --listen
    #[arg(short = 'p', long = "port", value_name = "PORT", default_value_t = iscep::DEFAULT_PORT)]
    port: u16,
    /// Listen on ADDR (host:port, [v6]:port or /abs/path.sock); repeatable; replaces -a/-p
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<String>,
    /// Serve TLS with this PEM certificate chain (with --tls-key)
    #[arg(long = "tls-cert", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long = "tls-key", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds allowed for a TLS handshake
    #[arg(
        long = "handshake-timeout",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    handshake_timeout: u64,
    /// Largest frame accepted, in bytes (size field); larger ones get ERROR and a close
    #[arg(long = "max-frame", value_name = "BYTES", default_value_t = iscep::DEFAULT_MAX_FRAME)]
    max_frame: usize,
    #[command(flatten)]
    daemon: cli::Daemon,
    /// Close a connection after SECONDS without a packet
    #[arg(long = "idle-timeout", value_name = "SECONDS", default_value_t = 10)]
    idle_timeout: u64,
    /// Check the configuration, tokens and TLS files, report, and exit (non-zero on a problem)
    #[arg(long = "check")]
    check: bool,
    /// Log debug messages too (one line per packet)
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
}

fn run(a: Args) -> Result<(), Fail> {
    daemon::log::init(PROGRAM, a.daemon.syslog, a.verbose).map_err_code(exit::OSERR)?;
    let acceptor = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => {
            Some(tls::from_pem(c, k).map_err_context(exit::CONFIG, || "cannot set up TLS".into())?)
        }
        _ => None,
    };
    let cfg = server::Config {
        max_frame: a.max_frame.max(64),
        idle_timeout: Duration::from_secs(a.idle_timeout.max(1)),
        handshake_timeout: Duration::from_secs(a.handshake_timeout.max(1)),
        sources: server::Sources {
            config: a.config.clone(),
            tokens: (!a.no_auth).then(|| a.tokens.clone()),
        },
        tls: acceptor,
        ..Default::default()
    };
    let srv = server::Server::new(cfg).map_err(|e| {
        let hint = match e {
            server::Error::Tokens(_) => {
                " (create it with `tokenctl iscep add OWNER --tokens FILE`, or run with --no-auth)"
            }
            server::Error::Commands(_) => "",
        };
        Fail::new(exit::CONFIG, format!("{e}{hint}"))
    })?;
    if a.check {
        println!("{}", srv.status());
        return Ok(());
    }
    let srv = Arc::new(srv);
    let opts = a.daemon.options();
    let fallback = [daemon::listen::host_port(&a.address, a.port)];
    let rt = cli::runtime()?;
    rt.block_on(async move {
        let bound = daemon::listen::open(&a.listen, &fallback).map_err_code(exit::UNAVAILABLE)?;
        log::info!(
            "starting version={} config={} auth={} tls={}",
            env!("CARGO_PKG_VERSION"),
            a.config.display(),
            srv.auth(),
            a.tls_cert.is_some()
        );
        let ctl = daemon::Control::new();
        srv.spawn_tasks(&ctl);
        let status = srv.status();
        let reason = daemon::serve(bound, opts, ctl, &status, move |conn| {
            srv.clone().serve_conn(conn)
        })
        .await;
        log::info!("stopped reason={reason}");
        Ok(())
    })
}

fn main() {
    let spec = config::Spec {
        default_path: Some(PathBuf::from(iscep::DEFAULT_CONFIG)),
        sections: &["commands"],
    };
    let (args, _): (Args, _) = config::parse(std::env::args_os().collect(), &spec);
    if let Err(f) = run(args) {
        cli::exit_with(PROGRAM, f);
    }
}
