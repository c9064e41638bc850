//! skd: SessionKeyServer-compatible session token daemon. Parses the command line (the
//! original's flags and GNU long forms) and wires the library together.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keysock::cli::{self, exit, Fail, FailContext};
use keysock::{config, daemon, http, sks, tls};

/// The original's single-dash flags, rewritten before parsing; -d -l -p -P are listed so that
/// their values are never taken for flags.
const LEGACY: &[(&str, &str, bool)] = &[
    ("-PF", "--password-file", true),
    ("-PP", "--password-prompt", false),
    ("-tls", "--tls", true),
    ("-default", "--default-module", true),
    ("-pam-app", "--pam-app", true),
    ("-jaas", "--jaas", true),
    ("-krb5conf", "--krb5conf", true),
    ("-d", "--dir", true),
    ("-l", "--address", true),
    ("-p", "--port", true),
    ("-P", "--password", true),
];

const PROGRAM: &str = "skd";

#[derive(clap::Parser, Debug)]
#[command(
    name = "skd",
    version,
    about = "Session token server, wire-compatible with SessionKeyServer 1.5",
    after_help = "The original's spellings -PF, -PP, -tls, -default, -pam-app, -jaas and -krb5conf are accepted too.\nEvery option but --config and --check is also a key of the configuration file (idle-exit = 300);\nthe command line wins. See skd(8)."
)]
struct Args {
    /// Configuration file (TOML; keys are the long options); a missing default file means defaults
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "/etc/keysock/skd.toml"
    )]
    config: PathBuf,
    /// Check the configuration and the TLS files, report, and exit (non-zero on a problem)
    #[arg(long = "check")]
    check: bool,
    /// Keep the store in DIR/skd.sqlite (created 0700 if missing; --store sqlite:DIR); default: in memory
    #[arg(short = 'd', long = "dir", value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The store: memory:, sqlite:DIR or postgresql://[USER@]HOST[:PORT]/DB[?PARAMS] (several skd on one database)
    #[arg(long = "store", value_name = "URL", conflicts_with = "dir")]
    store: Option<String>,
    /// Read the PostgreSQL password from the first line of FILE (default: the systemd credential store-password, if any)
    #[arg(long = "store-password-file", value_name = "FILE")]
    store_password_file: Option<PathBuf>,
    /// Address to bind without socket activation or --listen; '*' = all interfaces
    #[arg(
        short = 'l',
        long = "address",
        value_name = "ADDR",
        default_value = "127.0.0.1"
    )]
    address: String,
    /// Port to bind without socket activation or --listen
    #[arg(
        short = 'p',
        long = "port",
        value_name = "PORT",
        default_value_t = 4431
    )]
    port: u16,
    /// Keystore password for --tls (default: SessionKeyServer)
    #[arg(short = 'P', long = "password", value_name = "PASS")]
    password: Option<String>,
    /// Read the keystore password from the first line of FILE
    #[arg(long = "password-file", value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Ask for the keystore password on the terminal
    #[arg(long = "password-prompt")]
    password_prompt: bool,
    /// Serve HTTPS with the PKCS#12 keystore FILE
    #[arg(long = "tls", value_name = "FILE", conflicts_with_all = ["tls_cert", "tls_key"])]
    tls: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key)
    #[arg(long = "tls-cert", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long = "tls-key", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Login module used when a request names none; only "pam" is supported
    #[arg(long = "default-module", value_name = "MODULE", default_value = "pam")]
    default_module: String,
    /// PAM service for every realm (default: skd; see --realm)
    #[arg(long = "pam-app", value_name = "NAME")]
    pam_app: Option<String>,
    /// Serve only the listed realms, each through PAM service SERVICE (default: --pam-app, else the realm's name); repeatable
    #[arg(long = "realm", value_name = "NAME[=SERVICE]")]
    realm: Vec<String>,
    /// JAAS configuration of the original; accepted and ignored (JAAS is not supported)
    #[arg(long = "jaas", value_name = "FILE")]
    jaas: Option<PathBuf>,
    /// Kerberos configuration of the original; accepted and ignored
    #[arg(long = "krb5conf", value_name = "FILE")]
    krb5conf: Option<PathBuf>,
    /// Listen on ADDR (host:port, [v6]:port or /abs/path.sock); repeatable; replaces -l/-p
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<String>,
    /// Serve /stored_token on TCP listeners too (always served on Unix sockets)
    #[arg(long = "allow-stored-token")]
    allow_stored_token: bool,
    /// Issued tokens expire after SECONDS (default: never, as the original)
    #[arg(long = "token-ttl", value_name = "SECONDS")]
    token_ttl: Option<u64>,
    /// Login attempts per user and PAM service (x4 per source) before refusing for --login-window
    #[arg(long = "login-failures", value_name = "N", default_value_t = 5)]
    login_failures: u32,
    /// PAM conversations at once at most; more logins are answered 503
    #[arg(long = "login-concurrency", value_name = "N", default_value_t = 16)]
    login_concurrency: usize,
    /// Window of the failed-login count, in seconds
    #[arg(long = "login-window", value_name = "SECONDS", default_value_t = 60)]
    login_window: u64,
    #[command(flatten)]
    daemon: cli::Daemon,
    #[command(flatten)]
    timeouts: cli::HttpTimeouts,
    /// Log debug messages too
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
}

fn tls_acceptor(a: &Args) -> Result<Option<openssl::ssl::SslAcceptor>, Fail> {
    let bad = |e: tls::TlsError| Fail::new(exit::CONFIG, format!("cannot set up TLS: {e}"));
    if let (Some(c), Some(k)) = (&a.tls_cert, &a.tls_key) {
        return tls::from_pem(c, k).map(Some).map_err(bad);
    }
    let Some(ks) = &a.tls else { return Ok(None) };
    // The original let the last of -P, -PF, -PP win; clap keeps no order, so here a prompt
    // beats a file beats a literal (skd(8)).
    let password = if a.password_prompt {
        cli::read_password("Keystore password: ")
            .map_err_context(exit::NOINPUT, || "cannot read password".into())?
    } else if let Some(f) = &a.password_file {
        cli::read_password_file(f).map_err_context(exit::NOINPUT, || f.display().to_string())?
    } else {
        let p = a.password.as_deref().unwrap_or("SessionKeyServer");
        keysock::locked::Locked::from_slice(p.as_bytes())
    };
    tls::from_pkcs12(ks, cli::password_str(&password)?)
        .map(Some)
        .map_err(bad)
}

fn run(mut a: Args, conf: config::Source) -> Result<(), Fail> {
    keysock::daemon::log::init(PROGRAM, a.daemon.syslog, a.verbose).map_err_code(exit::OSERR)?;
    if !a.default_module.eq_ignore_ascii_case("pam") {
        return Err(Fail::new(
            exit::CONFIG,
            format!("login module {:?} is not supported: skd supports only \"pam\" (JAAS modules are not available)", a.default_module),
        ));
    }
    if a.password.is_some() {
        // Any user can read a command line (ps, /proc/PID/cmdline).
        log::warn!("keystore-password-in-argv option=--password hint=\"any user can read a command line: use --password-file or --password-prompt\"");
    }
    if a.jaas.is_some() || a.krb5conf.is_some() {
        log::warn!("ignoring -jaas/-krb5conf: skd has no JAAS; logins use PAM");
    }
    let location = match (&a.store, &a.dir) {
        (Some(url), _) => {
            sks::store::Location::parse(url).map_err_context(exit::USAGE, || "--store".into())?
        }
        (None, Some(d)) => sks::store::Location::Sqlite(d.clone()),
        (None, None) => sks::store::Location::Memory,
    };
    let acceptor = tls_acceptor(&a)?.map(Arc::new);
    if let Some(s) = a
        .pam_app
        .as_deref()
        .filter(|s| !keysock::pam::valid_service_name(s))
    {
        return Err(Fail::new(
            exit::USAGE,
            format!("--pam-app {s:?}: not a PAM service name"),
        ));
    }
    let realms = if a.realm.is_empty() {
        None
    } else {
        Some(sks::realm_services(&a.realm, a.pam_app.as_deref()).map_err_code(exit::USAGE)?)
    };
    let location_desc = location.describe();
    if a.check {
        println!(
            "{PROGRAM}: configuration ok: file {conf}; store {}; tls {}",
            location_desc,
            acceptor.is_some()
        );
        return Ok(());
    }
    // clap's copy of -P (the command line itself stays readable in /proc/PID/cmdline).
    drop(a.password.take().map(zeroize::Zeroizing::new));
    let cfg = sks::Config {
        store: location,
        store_password_file: a.store_password_file.clone(),
        default_module: a.default_module.clone(),
        realms,
        pam_app: a.pam_app.clone(),
        allow_stored_token_tcp: a.allow_stored_token,
        token_ttl: a.token_ttl.map(Duration::from_secs),
        login_failures: a.login_failures,
        login_window: Duration::from_secs(a.login_window),
        login_concurrency: a.login_concurrency.max(1),
        ..Default::default()
    };
    let server = sks::Server::new(cfg).map_err(|e| {
        let code = match &e {
            sks::Error::Password(..) => exit::NOINPUT,
            sks::Error::Store(_, sks::store::StoreError::Setup(_)) => exit::CONFIG,
            sks::Error::Store(..) => exit::CANTCREAT,
        };
        Fail::new(code, e.to_string())
    })?;
    let server = Arc::new(server);
    for s in server.pam_services() {
        if !keysock::pam::service_exists(s) {
            log::warn!("pam-service-missing service={s} effect=\"logins through it answer 503 until /etc/pam.d/{s} exists\"");
        }
    }
    if rustix::process::geteuid().is_root() {
        log::warn!("running-as-root effect=\"not needed: PAM's pam_unix reads /etc/shadow as a member of group shadow, as the shipped unit runs skd (DynamicUser=yes, SupplementaryGroups=shadow)\"");
    }
    let opts = http::Options {
        daemon: a.daemon.options(),
        tls: acceptor.clone(),
        limits: Arc::new(a.timeouts.limits()),
    };
    let fallback = [daemon::listen::host_port(&a.address, a.port)];
    let store_desc = location_desc;

    let rt = cli::runtime()?;
    rt.block_on(async move {
        let bound = daemon::listen::open(&a.listen, &fallback).map_err_code(exit::UNAVAILABLE)?;
        log::info!(
            "starting version={} protocol={} store={store_desc} tls={} config=\"{conf}\"",
            env!("CARGO_PKG_VERSION"),
            sks::wire::VERSION,
            acceptor.is_some()
        );
        server.spawn_tasks();
        let ctl = daemon::Control::new();
        let status = server.status();
        let reason = http::serve(bound, opts, ctl, &status, move |req, info| {
            server.clone().handle(req, info)
        })
        .await;
        log::info!("stopped reason={reason}");
        Ok(())
    })
}

fn main() {
    let argv = cli::translate_legacy(std::env::args_os(), LEGACY);
    let (args, conf): (Args, _) = config::parse(argv, &config::Spec::system(PROGRAM));
    if let Err(f) = run(args, conf) {
        cli::exit_with(PROGRAM, f);
    }
}
