//! s5d: a drop-in, hardened replacement for s5server (specs/s5.md). Takes every s5server
//! flag with the same meaning and default; under socket activation it serves the sockets
//! systemd hands it. `s5d put` and `s5d token` talk to a running s5d over its control socket.
//! Parses the command line and wires the library together.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keysock::cli::{self, exit, Fail, FailContext};
use keysock::daemon::{self, Bound, Listener};
use keysock::locked::Locked;
use keysock::s5::server::{AccessLog, Config, Server};
use keysock::s5::{self, client, Source};
use keysock::{config, detach, http, privfile};

const PROGRAM: &str = "s5d";

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum SecretFrom {
    /// $CREDENTIALS_DIRECTORY/s5-secret if present, else `s5d put` when socket-activated, else prompt
    Auto,
    /// One line of standard input, or the terminal with echo off when stdin is one
    Prompt,
    /// The systemd credential s5-secret
    Credential,
    /// `s5d put` over the control socket
    Put,
}

#[derive(clap::Parser, Debug)]
#[command(
    name = "s5d",
    version,
    about = "Serve one secret to s5client, drop-in for s5server (SciNet Super Simple Secrets Server)",
    args_conflicts_with_subcommands = true,
    after_help = "Every option of the server but --config and --check is also a key of the configuration file\n(failure-max = 10); the command line wins. See s5d(1).",
    mut_arg("max_connections", |a| a.default_value("64"))
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    serve: Args,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Read a secret (one line of standard input, or the terminal with echo off) and hand it to
    /// the s5d listening on the control socket; write the client file s5d did not write
    Put(Local),
    /// Ask the running s5d for its connection details and write the client file
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

#[derive(clap::Args, Debug)]
struct Args {
    /// Configuration file (TOML; keys are the long options) [default:
    /// $XDG_CONFIG_HOME/keysock/s5d.toml, else ~/.config/keysock/s5d.toml; a missing default file means defaults]
    #[arg(short = 'c', long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration and the secret's source, report, and exit (non-zero on a problem)
    #[arg(long)]
    check: bool,
    /// Listen on ADDR (host:port or [v6]:port; port 0: any free one) instead of the port search
    /// of --bind-address, --port-min and --port-max (without socket activation)
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// IP address to bind (without socket activation)
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0")]
    bind_address: String,
    /// First port tried (without socket activation)
    #[arg(long, value_name = "PORT", default_value_t = s5::DEFAULT_PORT_MIN)]
    port_min: u16,
    /// Last port tried, inclusive
    #[arg(long, value_name = "PORT", default_value_t = s5::DEFAULT_PORT_MAX)]
    port_max: u16,
    /// Where to write the connection details (host, port, token), 0600
    #[arg(long, value_name = "FILE", default_value = s5::DEFAULT_CLIENT_FILE)]
    client_file: String,
    /// Write no client file; print "Token: <base64>" instead (never under systemd)
    #[arg(long)]
    no_client_file: bool,
    /// Leave the client file in place when s5d exits (default: remove it)
    #[arg(long)]
    keep_client_file: bool,
    /// Stay in the foreground (default: go to the background once serving)
    #[arg(long)]
    foreground: bool,
    /// Access log, appended to; "stdout" for standard output [default: ~/s5server.log, or
    /// the journal when socket-activated]
    #[arg(long, value_name = "FILE")]
    logfile: Option<String>,
    /// Stop after serving the secret this many times; 0 = unlimited
    #[arg(long, value_name = "N", default_value_t = 1)]
    success_max: u64,
    /// Stop after this many failed requests (wrong identifier); 0 = unlimited
    #[arg(long, value_name = "N", default_value_t = 0)]
    failure_max: u64,
    /// Stop after SECONDS, served or not
    #[arg(long, value_name = "SECONDS")]
    expire: Option<u64>,
    /// Where the secret comes from
    #[arg(long, value_name = "SOURCE", value_enum, default_value = "auto")]
    secret_from: SecretFrom,
    /// Control socket for `s5d put` [default: $XDG_RUNTIME_DIR/s5d.sock, /run/s5d.sock for
    /// root; bound only with --secret-from put or this flag]
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Seconds a client may take to send its request
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    timeout: u64,
    #[command(flatten)]
    conn: cli::Connections,
    /// Log to syslog instead of stderr
    #[arg(long)]
    syslog: bool,
    /// Log debug messages too
    #[arg(short = 'v', long)]
    verbose: bool,
}

fn source(a: &Args, activated: bool) -> Source {
    match a.secret_from {
        SecretFrom::Prompt => Source::Prompt,
        SecretFrom::Credential => Source::Credential,
        SecretFrom::Put => Source::Put,
        SecretFrom::Auto if s5::credential_path().is_some() => Source::Credential,
        SecretFrom::Auto if activated => Source::Put,
        SecretFrom::Auto => Source::Prompt,
    }
}

fn intake(src: Source) -> Result<Option<Locked>, Fail> {
    let s = match src {
        Source::Put => return Ok(None),
        Source::Credential => {
            let p = s5::credential_path().ok_or_else(|| {
                Fail::new(
                    exit::NOINPUT,
                    format!("no credential {}: $CREDENTIALS_DIRECTORY is unset or has no such file (LoadCredential=s5-secret:FILE)", s5::CREDENTIAL),
                )
            })?;
            s5::read_credential(&p).map_err(|e| {
                Fail::new(exit::NOINPUT, format!("{}: cannot read: {e}", p.display()))
            })?
        }
        Source::Prompt => s5::read_prompted()
            .map_err_context(exit::NOINPUT, || "cannot read the secret".into())?,
    };
    Ok(Some(s))
}

fn bind_control(path: &std::path::Path) -> Result<std::os::unix::net::UnixListener, Fail> {
    // A live s5d answering on it keeps its socket (bind_unix refuses to replace it).
    daemon::listen::bind_unix(path, 0o600).map_err_context(exit::CANTCREAT, || {
        format!("cannot listen on {}", path.display())
    })
}

fn access_log(a: &Args, activated: bool) -> Result<(AccessLog, Option<std::fs::File>), Fail> {
    let name = match (&a.logfile, activated) {
        (Some(n), _) => n.clone(),
        (None, true) => return Ok((AccessLog::None, None)),
        (None, false) => s5::DEFAULT_LOGFILE.to_string(),
    };
    if name == "stdout" {
        return Ok((AccessLog::Stdout, None));
    }
    let path = s5::expand_tilde(&name);
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .map_err_context(exit::CANTCREAT, || path.display().to_string())?;
    let dup = f.try_clone().ok();
    Ok((AccessLog::File(Mutex::new(f)), dup))
}

/// The TCP listener s5d binds itself: --listen's address, else the original's port search.
fn bind_tcp(a: &Args) -> Result<std::net::TcpListener, Fail> {
    let Some(addr) = &a.listen else {
        return s5::bind_port_range(&a.bind_address, a.port_min, a.port_max)
            .map_err_context(exit::UNAVAILABLE, || "cannot listen".into());
    };
    daemon::listen::bind_tcp(addr)
        .map_err_context(exit::UNAVAILABLE, || format!("cannot listen: {addr}"))
}

/// --check: what s5d would serve with, without binding or reading a secret.
fn check(a: &Args, conf: &config::Source) -> Result<(), Fail> {
    let src = source(a, daemon::listen::activated());
    if src == Source::Credential {
        let p = s5::credential_path()
            .ok_or_else(|| Fail::new(exit::NOINPUT, format!("no credential {}", s5::CREDENTIAL)))?;
        std::fs::File::open(&p)
            .map_err_context(exit::NOINPUT, || format!("{}: cannot read", p.display()))?;
    }
    if let Some(l) = &a.listen {
        std::net::ToSocketAddrs::to_socket_addrs(l.as_str())
            .map_err_context(exit::CONFIG, || format!("--listen {l}"))?;
    } else if a.bind_address.parse::<std::net::IpAddr>().is_err() || a.port_min > a.port_max {
        return Err(Fail::new(
            exit::CONFIG,
            format!(
                "--bind-address {} --port-min {} --port-max {}: not an IP address and a port range",
                a.bind_address, a.port_min, a.port_max
            ),
        ));
    }
    println!(
        "{PROGRAM}: configuration ok: file {conf}; secret from {}",
        format!("{src:?}").to_lowercase()
    );
    Ok(())
}

/// What s5d listens on, bound before any fork so that a failure reaches the caller:
/// systemd's sockets when activated (taken on `rt`, built for that), else the TCP port and
/// the control socket s5d binds itself.
struct Listeners {
    systemd: Vec<Bound>,
    tcp: Option<std::net::TcpListener>,
    control: Option<(std::os::unix::net::UnixListener, PathBuf)>,
    rt: Option<tokio::runtime::Runtime>,
}

fn runtime() -> Result<tokio::runtime::Runtime, Fail> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err_context(exit::OSERR, || "cannot start runtime".into())
}

impl Listeners {
    fn open(a: &Args, src: Source, activated: bool) -> Result<Listeners, Fail> {
        // The runtime's threads must not exist before a fork: built here only when activated.
        let (systemd, rt) = if activated {
            let rt = runtime()?;
            let b = rt
                .block_on(async { daemon::listen::from_systemd() })
                .map_err_context(exit::OSERR, || "cannot take sockets from systemd".into())?
                .unwrap_or_default();
            (b, Some(rt))
        } else {
            (Vec::new(), None)
        };
        // Socket-activated with only the control socket (the user unit's default, so that
        // users of a shared node do not all want one port): the original's port search.
        let has_tcp = systemd
            .iter()
            .any(|b| matches!(b.listener, Listener::Tcp(_)));
        let tcp = if has_tcp { None } else { Some(bind_tcp(a)?) };
        let control = match (&a.control, src) {
            (Some(p), _) if !activated => Some(p.clone()),
            (None, Source::Put) if !activated => Some(s5::default_control_path()),
            _ => None,
        };
        let control = match control {
            Some(p) => Some((bind_control(&p)?, p)),
            None => None,
        };
        Ok(Listeners {
            systemd,
            tcp,
            control,
            rt,
        })
    }

    /// Where clients reach s5d: host name, bind address and port, for the client file.
    fn address(&self, a: &Args) -> Result<(String, String, u16), Fail> {
        if let Some(l) = &self.tcp {
            let addr = l
                .local_addr()
                .map_err_context(exit::OSERR, || "cannot read the bound address".into())?;
            let bind_address = match &a.listen {
                Some(_) => addr.ip().to_string(),
                None => a.bind_address.clone(),
            };
            return Ok((s5::hostname(), bind_address, addr.port()));
        }
        let addr = self.systemd.iter().find_map(|b| match &b.listener {
            Listener::Tcp(t) => t.local_addr().ok(),
            Listener::Unix(_) => None,
        });
        let addr = addr.ok_or_else(|| Fail::new(exit::SOFTWARE, "no TCP listener"))?;
        Ok((s5::hostname(), addr.ip().to_string(), addr.port()))
    }

    /// Every listener as the daemon serves them; needs the runtime.
    fn into_bound(self) -> Result<Vec<Bound>, Fail> {
        let mut bound = self.systemd;
        let cannot = || "cannot use the socket".to_string();
        if let Some(l) = self.tcp {
            bound.push(Bound::tcp("http", l).map_err_context(exit::OSERR, cannot)?);
        }
        if let Some((l, p)) = self.control {
            bound.push(Bound::unix("control", l, &p).map_err_context(exit::OSERR, cannot)?);
        }
        Ok(bound)
    }
}

/// Reads the secret when it does not come from `s5d put`, with the original's fingerprint
/// line and a warning when only keysock's client can fetch it.
fn secret(src: Source, activated: bool) -> Result<Option<Locked>, Fail> {
    let secret = intake(src)?;
    if let Some(s) = &secret {
        if !activated {
            // As s5server: a short fingerprint to check the right secret was typed.
            let h = keysock::secret::sha256_hex(s.as_bytes());
            println!("Secret's sha256: {}...", &h[..6]);
        }
        if s.len() > s5::wire::V1_MAX {
            eprintln!(
                "{PROGRAM}: warning: the secret is {} bytes, longer than the {} the original s5client can take: only keysock's s5client (v2) will be able to fetch it",
                s.len(),
                s5::wire::V1_MAX
            );
        }
    }
    Ok(secret)
}

/// The client file s5d wrote, removed again when it exits (unless --keep-client-file).
struct ClientFile {
    written: Option<(PathBuf, privfile::FileId)>,
}

impl ClientFile {
    fn write(path: Option<PathBuf>, server: &Server, keep: bool) -> Result<ClientFile, Fail> {
        let Some(p) = path else {
            return Ok(ClientFile { written: None });
        };
        let id = privfile::write_private(&p, server.client_file().to_json().as_bytes())
            .map_err_context(exit::CANTCREAT, || p.display().to_string())?;
        Ok(ClientFile {
            written: (!keep).then_some((p, id)),
        })
    }

    fn remove(&self) {
        if let Some((p, id)) = &self.written {
            match privfile::remove_if_same(p, *id) {
                Ok(true) => log::info!("client-file-removed path={}", p.display()),
                Ok(false) => {}
                Err(e) => log::warn!("client-file-not-removed path={} error=\"{e}\"", p.display()),
            }
        }
    }
}

fn run(a: Args, conf: config::Source) -> Result<(), Fail> {
    if a.check {
        return check(&a, &conf);
    }
    daemon::log::init(PROGRAM, a.syslog, a.verbose).map_err_code(exit::OSERR)?;
    let activated = daemon::listen::activated();
    let src = source(&a, activated);
    let secret = secret(src, activated)?;
    let (log, log_dup) = access_log(&a, activated)?;
    let mut listeners = Listeners::open(&a, src, activated)?;
    let (host, bind_address, port) = listeners.address(&a)?;

    let client_path = (!a.no_client_file).then(|| s5::expand_tilde(&a.client_file));
    let cfg = Config {
        success_max: a.success_max,
        failure_max: a.failure_max,
        read_timeout: Duration::from_secs(a.timeout.max(1)),
        access_log: log,
        client_file: client_path.clone(),
        expire: a.expire.map(Duration::from_secs),
        token: Server::new_token(),
        host: host.clone(),
        bind_address,
        port,
    };
    let ctl = daemon::Control::new();
    let server = match Server::new(cfg, ctl.clone()) {
        Ok(s) => Arc::new(s),
        Err(e) => match e {},
    };
    let client_file = ClientFile::write(client_path.clone(), &server, a.keep_client_file)?;

    let announce = |pid: u32| {
        println!("Process {pid} listening on {host} on port {port}.");
        if client_path.is_none() && !activated {
            println!("Token: {}", *server.client_file().token);
        }
    };
    if activated || a.foreground {
        announce(std::process::id());
    } else {
        match detach::fork(a.logfile.as_deref() == Some("stdout"), log_dup) {
            Ok(detach::Side::Parent(child)) => {
                announce(child);
                std::process::exit(0);
            }
            Ok(detach::Side::Child) => {}
            Err(e) => {
                client_file.remove();
                return Err(Fail::new(exit::OSERR, format!("cannot fork: {e}")));
            }
        }
    }

    let rt = match listeners.rt.take() {
        Some(rt) => rt,
        None => runtime()?,
    };
    let opts = http::Options {
        daemon: daemon::Options {
            shutdown_grace: Duration::from_secs(5),
            ..a.conn.options(None)
        },
        tls: None,
        limits: Arc::new(http::Limits {
            header_timeout: Duration::from_secs(a.timeout.max(1)),
            body_timeout: Duration::from_secs(a.timeout.max(1)),
            max_head: 16 * 1024,
            ..Default::default()
        }),
    };
    let reason = rt.block_on(async {
        let bound = listeners.into_bound()?;
        log::info!(
            "starting version={} port={port} source={src:?} success_max={} failure_max={} expire={}",
            env!("CARGO_PKG_VERSION"),
            a.success_max,
            a.failure_max,
            a.expire.map(|s| format!("{s}s")).unwrap_or_else(|| "never".into())
        );
        if let Some(s) = secret {
            let _ = server.load(s, &format!("{src:?}").to_lowercase());
        }
        server.spawn_tasks();
        let status = server.status();
        let srv = server.clone();
        Ok::<_, Fail>(
            daemon::serve(bound, opts.daemon, ctl, &status, move |conn| {
                let (srv, limits) = (srv.clone(), opts.limits.clone());
                async move {
                    if conn.peer.is_unix() {
                        srv.serve_control(conn).await
                    } else {
                        srv.serve_tcp(conn, limits).await
                    }
                }
            })
            .await,
        )
    });
    server.wipe();
    client_file.remove();
    let reason = reason?;
    log::info!("stopped reason=\"{reason}\"");
    Ok(())
}

/// `s5d put` / `s5d token`: a client of a running s5d's control socket.
fn local(l: Local, put: bool) -> Result<(), Fail> {
    let path = l.control.unwrap_or_else(s5::default_control_path);
    let timeout = Duration::from_secs(l.timeout.max(1));
    let answer = if put {
        let secret = s5::read_prompted()
            .map_err_context(exit::NOINPUT, || "cannot read the secret".into())?;
        client::put(&path, &secret, timeout)
    } else {
        client::token(&path, timeout)
    }
    .map_err_code(exit::UNAVAILABLE)?;
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
            .map_err_context(exit::CANTCREAT, || p.display().to_string())?;
        eprintln!(
            "{PROGRAM}: {what}; port {}; client file {} written",
            c.port,
            p.display()
        );
    }
    Ok(())
}

fn main() {
    let spec = config::Spec {
        default_path: config::user_path(PROGRAM),
        sections: &[],
    };
    let (args, conf): (Cli, _) = config::parse(std::env::args_os().collect(), &spec);
    let r = match args.cmd {
        None => run(args.serve, conf),
        Some(Cmd::Put(l)) => local(l, true),
        Some(Cmd::Token(l)) => local(l, false),
    };
    if let Err(f) = r {
        cli::exit_with(PROGRAM, f);
    }
}
