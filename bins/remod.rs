//! remod: remote administration daemon, wire-compatible with remo_serv 0.6.0. Parses the
//! original launcher's flags and TOML file (plus our own), and wires the library together.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use keysock::cli::{self, exit, Fail, FailContext};
use keysock::remo::monitor::{self, confine, proto::NetConfig, Monitor};
use keysock::remo::server;
use keysock::{config, daemon, keyfile};

const PROGRAM: &str = "remod";

#[derive(clap::Parser, Debug)]
#[command(
    name = "remod",
    version,
    about = "Remote administration over HTTP, wire-compatible with remo_serv 0.6.0",
    after_help = "Every option but --config and --check is also a key of the configuration file (idle-exit = 600),\nas are the original's keys host and timeout; the command line wins. See remod(8).",
    mut_arg("idle_exit", |a| a.help("Exit after SECONDS with no open connection and no session (for socket activation)")),
    mut_arg("body_timeout", |a| a.help("Seconds allowed to send a whole request body (uploads and command input: --cmd-timeout)"))
)]
struct Args {
    /// Configuration file (TOML; keys are the long options, and the original's); a missing default file means defaults
    #[arg(
        short = 'c',
        long = "config",
        alias = "conf",
        value_name = "FILE",
        default_value = "/etc/keysock/remod.toml"
    )]
    config: PathBuf,
    /// Check the configuration and the server key, report, and exit (non-zero on a problem)
    #[arg(long = "check")]
    check: bool,
    /// Port to bind without socket activation or --listen [default: 8080]
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    port: Option<u16>,
    /// Address to bind without socket activation or --listen [default: 0.0.0.0]
    #[arg(short = 'i', long = "interface", alias = "host", value_name = "HOST")]
    interface: Option<String>,
    /// User database, SqliteUserService:PATH [default: SqliteUserService:users_db.sqlite]
    #[arg(short = 'u', long = "user-service", value_name = "SPEC")]
    user_service: Option<String>,
    /// Server Ed448 private key, unencrypted PKCS#8 PEM [default: remo_serv_key.pem]
    #[arg(short = 'k', long = "key-file", value_name = "PEM")]
    key_file: Option<PathBuf>,
    /// Python logging configuration of the original; accepted and ignored
    #[arg(short = 'l', long = "log", value_name = "FILE")]
    log: Option<PathBuf>,
    /// Session inactivity timeout in seconds [default: 600]
    #[arg(
        short = 's',
        long = "session",
        alias = "timeout",
        value_name = "SECONDS"
    )]
    session: Option<u64>,
    /// Log debug messages too (-d, --debug: the original's spelling)
    #[arg(short = 'v', long = "verbose", short_alias = 'd', alias = "debug")]
    debug: bool,
    /// Listen on ADDR (host:port, [v6]:port or /abs/path.sock); repeatable; replaces -i/-p
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<String>,
    /// Unix account for remote users the database maps to none (default: refuse them)
    #[arg(long = "default-unix-user", value_name = "NAME")]
    default_unix_user: Option<String>,
    /// Most sessions at once
    #[arg(long = "max-sessions", value_name = "N", default_value_t = 1024)]
    max_sessions: usize,
    /// Most sessions of one remote user; a new login ends that user's least recently used one
    #[arg(long = "max-user-sessions", value_name = "N", default_value_t = 8)]
    max_user_sessions: usize,
    /// Most commands (/cmd) running at once in one session
    #[arg(long = "max-session-commands", value_name = "N", default_value_t = 4)]
    max_session_commands: usize,
    /// Most commands (/cmd) running at once for one remote user, over all sessions
    #[arg(long = "max-user-commands", value_name = "N", default_value_t = 16)]
    max_user_commands: usize,
    /// Most interactive processes at once, over all sessions (one per session)
    #[arg(long = "max-interactive", value_name = "N", default_value_t = 32)]
    max_interactive: usize,
    /// Time limit of a command, a transfer, or the end of an interactive process, in seconds
    #[arg(long = "cmd-timeout", value_name = "SECONDS", default_value_t = 600)]
    cmd_timeout: u64,
    /// Failed logins per source address before refusing for --login-window
    #[arg(long = "login-failures", value_name = "N", default_value_t = 5)]
    login_failures: u32,
    /// Window of the failed-login count, in seconds
    #[arg(long = "login-window", value_name = "SECONDS", default_value_t = 60)]
    login_window: u64,
    #[command(flatten)]
    daemon: cli::Daemon,
    #[command(flatten)]
    timeouts: cli::HttpTimeouts,
    /// Identity of the unprivileged network process: a user name or UID[:GID] [default:
    /// _remod, else an unused id of systemd's dynamic range]
    #[arg(long = "privsep-user", value_name = "USER")]
    privsep_user: Option<String>,
}

/// The network process's identity when we are root (None: ours).
fn network_user(spec: Option<&str>) -> Result<Option<(u32, u32)>, Fail> {
    if !rustix::process::geteuid().is_root() {
        log::warn!("not root: the network process runs as this user too");
        return Ok(None);
    }
    match spec {
        Some(s) => confine::network_user(s)
            .map(Some)
            .map_err_code(exit::CONFIG),
        None => match confine::network_user("_remod") {
            Ok(ids) => Ok(Some(ids)),
            Err(_) => {
                let id = confine::unused_dynamic_id().ok_or_else(|| {
                    Fail::new(exit::CONFIG, "no user _remod and no unused dynamic id")
                })?;
                log::warn!(
                    "no user _remod (systemd-sysusers creates it): the network process runs as the unused uid {id}"
                );
                Ok(Some((id, id)))
            }
        },
    }
}

fn user_db(spec: &str) -> Result<PathBuf, Fail> {
    match spec.split_once(':') {
        Some(("SqliteUserService", path)) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(Fail::new(
            exit::CONFIG,
            format!("user service {spec:?}: only SqliteUserService:PATH is supported"),
        )),
    }
}

fn load_key(path: &Path) -> Result<openssl::pkey::PKey<openssl::pkey::Private>, Fail> {
    let k = keyfile::read_private_pem(path, None).map_err_code(exit::CONFIG)?;
    if k.id() != openssl::pkey::Id::ED448 {
        return Err(Fail::new(
            exit::CONFIG,
            format!("{}: the server key must be Ed448", path.display()),
        ));
    }
    Ok(k)
}

fn run(a: Args, conf: config::Source) -> Result<(), Fail> {
    keysock::daemon::log::init(PROGRAM, a.daemon.syslog, a.debug).map_err_code(exit::OSERR)?;
    if a.log.is_some() {
        log::warn!("ignoring the Python logging configuration (--log): remod logs to the journal, syslog or stderr");
    }
    let port = a.port.unwrap_or(8080);
    let host = a.interface.clone().unwrap_or_else(|| "0.0.0.0".into());
    let timeout = a.session.map(|s| s as f64).unwrap_or(600.0);
    if !(timeout.is_finite() && timeout > 0.0) {
        return Err(Fail::new(exit::CONFIG, "session timeout must be positive"));
    }
    let spec = a
        .user_service
        .clone()
        .unwrap_or_else(|| "SqliteUserService:users_db.sqlite".into());
    let users_db = user_db(&spec)?;
    let key_file = a
        .key_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("remo_serv_key.pem"));
    // The server key and every session's X448 key: in locked memory, out of core dumps.
    match keysock::secret::secure_key_heap(64 * 1024) {
        keysock::secret::SecureHeap::Locked => {}
        other => log::warn!("keys-not-locked secure-heap={other:?}: keys may be swapped out"),
    }
    let server_key = load_key(&key_file)?;
    if a.check {
        println!(
            "{PROGRAM}: configuration ok: file {conf}; key {}; users {}",
            key_file.display(),
            users_db.display()
        );
        return Ok(());
    }
    // The database must open (and gets our columns) before we serve.
    keysock::remo::users::open(&users_db)
        .map_err_context(exit::CONFIG, || users_db.display().to_string())?;
    let exe = std::env::current_exe()
        .map_err_context(exit::OSERR, || "cannot find own executable".into())?;
    let network_user = network_user(a.privsep_user.as_deref())?;
    let cmd_timeout = Duration::from_secs(a.cmd_timeout.max(1));
    let cfg = monitor::Config {
        server_key,
        users_db: users_db.clone(),
        session_timeout: Duration::from_secs_f64(timeout),
        default_unix_user: a.default_unix_user.clone(),
        max_sessions: a.max_sessions.max(1),
        max_sessions_per_user: a.max_user_sessions.max(1),
        max_cmds_per_session: a.max_session_commands.max(1),
        max_cmds_per_user: a.max_user_commands.max(1),
        max_interactive: a.max_interactive,
        cmd_timeout,
        put_helper: vec![exe.to_string_lossy().into_owned(), "--put-helper".into()],
        network_user,
    };
    let monitor = Monitor::new(cfg).map_err_context(exit::SOFTWARE, || "cannot start".into())?;
    let limits = a.timeouts.limits();
    let mut net = NetConfig {
        session_timeout: Duration::from_secs_f64(timeout),
        cmd_timeout,
        login_failures: a.login_failures,
        login_window: Duration::from_secs(a.login_window),
        max_connections: a.daemon.conn.max_connections.max(1),
        max_per_source: daemon::per_source(
            a.daemon.conn.max_connections,
            a.daemon.conn.max_connections_per_source,
        ),
        header_timeout: limits.header_timeout,
        body_timeout: limits.body_timeout,
        // An upload is read within --cmd-timeout before it is answered.
        request_timeout: cmd_timeout + Duration::from_secs(60),
        idle_exit: a.daemon.idle_exit.map(Duration::from_secs),
        syslog: a.daemon.syslog,
        debug: a.debug,
        status: format!(
            "serving remo_serv 0.6.0 protocol, users {}",
            users_db.display()
        ),
        listeners: Vec::new(),
    };
    let fallback = [daemon::listen::host_port(&host, port)];
    let rt = cli::runtime()?;
    rt.block_on(async move {
        let bound = daemon::listen::open(&a.listen, &fallback).map_err_code(exit::UNAVAILABLE)?;
        let mut fds = Vec::new();
        for b in &bound {
            fds.push(
                b.listener
                    .duplicate()
                    .map_err_context(exit::OSERR, || b.name.to_string())?,
            );
            net.listeners.push(b.name.clone());
        }
        log::info!(
            "starting version={} protocol=remo_serv-0.6.0 users={} key={}",
            env!("CARGO_PKG_VERSION"),
            users_db.display(),
            key_file.display()
        );
        let r = monitor.run(fds, net).await;
        for p in bound.iter().filter_map(|b| b.own_path.as_ref()) {
            let _ = std::fs::remove_file(p);
        }
        r.map_err_code(exit::SOFTWARE)
    })
}

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Internal: the upload helper, run as the mapped user by remod itself.
    if argv.len() == 3 && argv[1] == "--put-helper" {
        std::process::exit(server::put_helper(Path::new(&argv[2])));
    }
    // Internal: the unprivileged network process, started by remod itself.
    if argv.len() == 2 && argv[1] == "--network-process" {
        std::process::exit(server::network_process());
    }
    let (args, conf): (Args, _) = config::parse(argv, &config::Spec::system(PROGRAM));
    if let Err(f) = run(args, conf) {
        cli::exit_with(PROGRAM, f);
    }
}
