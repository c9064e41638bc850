//! autoidd: auto-id server (specs/auto-id.md) over a local credential store. Serves the
//! original's v1 at POST /verify and /Stage/verify (bypass closed) and the v2 challenge flow;
//! `autoidd gen-entropy FILE` writes a new entropy file. Parses the command line and wires the
//! library together.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keysock::autoid::{self, server};
use keysock::cli::{self, exit, Fail, FailContext};
use keysock::{config, daemon, http};

const PROGRAM: &str = "autoidd";
const STATE: &str = "/var/lib/autoidd";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(clap::Parser, Debug)]
#[command(
    name = "autoidd",
    version,
    about = "Hand out credentials to workloads that prove they hold the entropy file (auto-id v1 and v2)",
    args_conflicts_with_subcommands = true,
    after_help = "Default files are in $STATE_DIRECTORY (else /var/lib/autoidd); secrets come from\n$CREDENTIALS_DIRECTORY when set. Every option of the server but --config and --check is also a key\nof the configuration file (idle-exit = 300); the command line wins. See autoidd(8)."
)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    serve: Serve,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Write a new entropy file (2048 lines of 2048 [A-Za-z0-9] and LF, 0600) to FILE
    GenEntropy {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Replace an existing FILE (default: refuse, exit 73)
        #[arg(long, conflicts_with = "if_missing")]
        force: bool,
        /// Only if FILE does not exist, else do nothing and exit 0 (a first start)
        #[arg(long)]
        if_missing: bool,
    },
}

#[derive(clap::Args, Debug)]
struct Serve {
    /// Configuration file (TOML; keys are the long options); a missing default file means defaults
    #[arg(
        short = 'c',
        long,
        value_name = "FILE",
        default_value = "/etc/keysock/autoidd.toml"
    )]
    config: PathBuf,
    /// Check the configuration, key, entropy and secrets, report, and exit (non-zero on a problem)
    #[arg(long)]
    check: bool,
    /// RSA private key, PEM (PKCS#8 or PKCS#1, unencrypted) [default: the credential autoidd.key, else STATE/autoid_key.pem]
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Entropy file [default: the credential autoidd.entropy, else STATE/info2048.bin]
    #[arg(long, value_name = "FILE")]
    entropy: Option<PathBuf>,
    /// Directory of secrets, one 0600 file per secret id [default: $CREDENTIALS_DIRECTORY, else STATE/secrets]
    #[arg(long, value_name = "DIR")]
    secrets: Option<PathBuf>,
    /// Listen on ADDR (host:port, [v6]:port or /abs/path.sock); repeatable [default: 127.0.0.1:4440]
    #[arg(long, value_name = "ADDR")]
    listen: Vec<String>,
    /// Serve the original protocol (v1) at /verify and /Stage/verify
    #[arg(long, value_name = "on|off", value_enum, default_value = "on")]
    v1: OnOff,
    /// Fewest distinct bytes the 4 snippets of a v1 request must cover together
    #[arg(long, value_name = "N", default_value_t = 32)]
    v1_min_bytes: usize,
    /// Seconds a v2 challenge stays valid
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    challenge_ttl: u64,
    /// v2 challenges one source (an address; 127/8, an IPv6 /64 or a uid as one) may take at once
    #[arg(long, value_name = "N", default_value_t = 32)]
    challenge_burst: u32,
    /// v2 challenges per second one source may take after its burst (0: no limit)
    #[arg(long, value_name = "N", default_value_t = 8.0)]
    challenge_rate: f64,
    /// Used v2 challenges remembered until they expire, to refuse their reuse
    #[arg(long, value_name = "N", default_value_t = 65536)]
    replay_cache: usize,
    /// Failed attempts per source address before it is refused for --failure-window
    #[arg(long, value_name = "N", default_value_t = 10)]
    failures: u32,
    /// Window of the failure count, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    failure_window: u64,
    /// Largest request body, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 16384)]
    max_body: usize,
    #[command(flatten)]
    daemon: cli::Daemon,
    #[command(flatten)]
    timeouts: cli::HttpTimeouts,
    /// Log debug messages too
    #[arg(short = 'v', long)]
    verbose: bool,
}

fn state_dir() -> PathBuf {
    match std::env::var_os("STATE_DIRECTORY") {
        // StateDirectory= may list several, separated by ':'; ours is the first.
        Some(d) if !d.is_empty() => {
            let s = d.to_string_lossy().into_owned();
            PathBuf::from(s.split(':').next().unwrap_or(STATE))
        }
        _ => PathBuf::from(STATE),
    }
}

fn gen_entropy(file: &Path, force: bool, if_missing: bool) -> Result<(), Fail> {
    if if_missing && std::fs::symlink_metadata(file).is_ok() {
        return Ok(());
    }
    autoid::write_entropy(file, force)
        .map_err_context(exit::CANTCREAT, || file.display().to_string())?;
    eprintln!(
        "{PROGRAM}: wrote {} ({} bytes, mode 0600)",
        file.display(),
        autoid::ENTROPY_LEN
    );
    Ok(())
}

fn run(a: Serve, conf: config::Source) -> Result<(), Fail> {
    daemon::log::init(PROGRAM, a.daemon.syslog, a.verbose).map_err_code(exit::OSERR)?;
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let state = state_dir();
    let cfg = server::Config {
        key_path: a
            .key
            .or_else(|| autoid::credential(autoid::KEY_CREDENTIAL))
            .unwrap_or_else(|| state.join("autoid_key.pem")),
        entropy_path: a
            .entropy
            .or_else(|| autoid::credential(autoid::ENTROPY_CREDENTIAL))
            .unwrap_or_else(|| state.join("info2048.bin")),
        store: autoid::Store {
            dir: a
                .secrets
                .unwrap_or_else(|| autoid::Store::default_dir(&state.join("secrets"))),
        },
        v1: a.v1 == OnOff::On,
        v1_min_bytes: a.v1_min_bytes,
        challenge_ttl: Duration::from_secs(a.challenge_ttl.max(1)),
        replay_cache: a.replay_cache.max(1),
        challenge_burst: a.challenge_burst.max(1),
        challenge_rate: a.challenge_rate,
        max_body: a.max_body.max(1024),
        failures: a.failures,
        failure_window: Duration::from_secs(a.failure_window),
        ..Default::default()
    };
    if !cfg.store.dir.is_dir() {
        return Err(Fail::new(
            exit::NOINPUT,
            format!(
                "secrets directory {}: not a directory (give --secrets DIR)",
                cfg.store.dir.display()
            ),
        ));
    }
    let srv = Arc::new(server::Server::new(cfg).map_err_code(exit::NOINPUT)?);
    if a.check {
        println!("{PROGRAM}: configuration ok: file {conf}; {}", srv.status());
        return Ok(());
    }
    let opts = http::Options {
        daemon: a.daemon.options(),
        tls: None,
        limits: Arc::new(http::Limits {
            max_head: 16 * 1024,
            ..a.timeouts.limits()
        }),
    };
    let fallback = [format!("127.0.0.1:{}", autoid::DEFAULT_PORT)];
    let rt = cli::runtime()?;
    rt.block_on(async move {
        let bound = daemon::listen::open(&a.listen, &fallback).map_err_code(exit::UNAVAILABLE)?;
        log::info!(
            "starting version={} {}",
            env!("CARGO_PKG_VERSION"),
            srv.status()
        );
        let ctl = daemon::Control::new();
        let status = srv.status();
        let reason = http::serve(bound, opts, ctl, &status, move |req, info| {
            srv.clone().handle(req, info)
        })
        .await;
        log::info!("stopped reason={reason}");
        Ok(())
    })
}

fn main() {
    let (args, conf): (Args, _) = config::parse(
        std::env::args_os().collect(),
        &config::Spec::system(PROGRAM),
    );
    let r = match args.cmd {
        Some(Cmd::GenEntropy {
            file,
            force,
            if_missing,
        }) => gen_entropy(&file, force, if_missing),
        None => run(args.serve, conf),
    };
    if let Err(f) = r {
        cli::exit_with(PROGRAM, f);
    }
}
