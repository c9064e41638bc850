//! One iscepd connection (specs/iscep.md §2): TLS handshake with a time limit, frames read
//! whole under a size cap, per-packet auth in constant time, ECHO, DISCOVER, SEND_CMD running
//! a configured command (crate::child), the original's ERROR/UNAUTHORIZED answers, an idle
//! timeout, and an ERROR frame for connections over the cap. Configuration and tokens are held
//! in memory and replaced by [`Server::reload`] (SIGHUP, or a change seen by [`Server::watch`]).
//!
//! Log lines, the original's four kinds: `access ...`, `connection-error ...`,
//! `request-error ...` and `command ...`; never a token.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openssl::ssl::SslAcceptor;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::config::{self, Config as Commands, Output};
use super::tokens::Tokens;
use super::wire::{self, Body, Packet, Read, Type};
use super::Ordered;
use crate::child;
use crate::daemon::log::quoted;
use crate::daemon::{Conn, Control, Peer};
use crate::privfile::Stamp;

/// iscepd's parsed options: limits, where the commands and tokens are, TLS.
pub struct Config {
    pub max_frame: usize,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    /// Environment given to every command.
    pub command_env: Vec<(String, String)>,
    pub sources: Sources,
    /// `None`: plain TCP.
    pub tls: Option<SslAcceptor>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame: super::DEFAULT_MAX_FRAME,
            idle_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            command_env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())],
            sources: Sources::default(),
            tls: None,
        }
    }
}

/// Where the configuration and tokens come from.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub config: PathBuf,
    /// None: --no-auth.
    pub tokens: Option<PathBuf>,
}

/// Why [`Server::new`] failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Commands(#[from] config::LoadError),
    #[error(transparent)]
    Tokens(#[from] super::tokens::TokensError),
}

pub struct Server {
    cfg: Config,
    config: RwLock<Arc<Commands>>,
    tokens: RwLock<Arc<Tokens>>,
    stamps: std::sync::Mutex<[Option<Stamp>; 2]>,
}

/// Why the files are read again: SIGHUP reloads them as they are, a timer tick only when
/// their [`Stamp`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reload {
    Signal,
    Changed,
}

impl std::fmt::Display for Reload {
    /// As logged (`why=`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reload::Signal => "SIGHUP",
            Reload::Changed => "changed",
        })
    }
}

/// The stamp of `p`; `None` when it cannot be read (a removed file is a change too).
fn stamp(p: &std::path::Path) -> Option<Stamp> {
    Stamp::of(p).ok()
}

impl Server {
    /// Loads the configuration and the tokens; any failure is an error (no silent fallback).
    pub fn new(cfg: Config) -> Result<Server, Error> {
        let sources = &cfg.sources;
        let stamps = [
            stamp(&sources.config),
            sources.tokens.as_deref().and_then(stamp),
        ];
        let commands = config::load(&sources.config)?;
        let tokens = match &sources.tokens {
            Some(p) => Tokens::load(p)?,
            None => Tokens::default(),
        };
        Ok(Server {
            cfg,
            config: RwLock::new(Arc::new(commands)),
            tokens: RwLock::new(Arc::new(tokens)),
            stamps: std::sync::Mutex::new(stamps),
        })
    }

    pub fn commands(&self) -> Arc<Commands> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn tokens(&self) -> Arc<Tokens> {
        match self.tokens.read() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn auth(&self) -> bool {
        self.cfg.sources.tokens.is_some()
    }

    pub fn status(&self) -> String {
        format!(
            "serving iscep: {} commands, {}, {}",
            self.commands().commands.len(),
            if self.auth() {
                format!("{} token owners", self.tokens().len())
            } else {
                "no auth".into()
            },
            if self.cfg.tls.is_some() {
                "TLS"
            } else {
                "plain TCP"
            }
        )
    }

    /// Reads the configuration and the tokens again. A file that fails to load keeps the
    /// previous contents (logged); a tokens file that was removed empties the token set.
    fn reload(&self, why: Reload) {
        match config::load(&self.cfg.sources.config) {
            Ok(c) => {
                log::info!("reload what=config why={why} commands={}", c.commands.len());
                if let Ok(mut g) = self.config.write() {
                    *g = Arc::new(c);
                }
            }
            Err(e) => log::error!("reload-failed what=config why={why} error={}", quoted(&e)),
        }
        if let Some(p) = &self.cfg.sources.tokens {
            match Tokens::load_or_empty(p) {
                Ok(t) => {
                    if t.is_empty() {
                        log::warn!("reload what=tokens why={why} owners=0 (every packet will be UNAUTHORIZED)");
                    } else {
                        log::info!("reload what=tokens why={why} owners={}", t.len());
                    }
                    if let Ok(mut g) = self.tokens.write() {
                        *g = Arc::new(t);
                    }
                }
                Err(e) => log::error!("reload-failed what=tokens why={why} error={}", quoted(&e)),
            }
        }
    }

    /// The background tasks: [`Server::watch`] every two seconds.
    pub fn spawn_tasks(self: &Arc<Self>, ctl: &Control) {
        tokio::spawn(self.clone().watch(ctl.clone(), Duration::from_secs(2)));
    }

    /// Reloads on SIGHUP, and when either file changes (checked every `every`), until stop.
    async fn watch(self: Arc<Self>, ctl: Control, every: Duration) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::warn!("no-sighup error={}", quoted(&e));
                None
            }
        };
        loop {
            let why = tokio::select! {
                _ = ctl.stopping() => return,
                Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => Reload::Signal,
                _ = tokio::time::sleep(every) => Reload::Changed,
            };
            let now = [
                stamp(&self.cfg.sources.config),
                self.cfg.sources.tokens.as_deref().and_then(stamp),
            ];
            let changed = match self.stamps.lock() {
                Ok(mut s) => {
                    let c = *s != now;
                    *s = now;
                    c
                }
                Err(_) => true,
            };
            if why == Reload::Signal || changed {
                self.reload(why);
                ctl.set_status(&self.status());
            }
        }
    }

    /// Serves one accepted connection to its end.
    pub async fn serve_conn(self: Arc<Self>, conn: Conn) {
        let peer = conn.peer.clone();
        log::info!(
            "access peer={peer} listener={} tls={}{}",
            conn.listener,
            self.cfg.tls.is_some(),
            if conn.over_capacity {
                " refused=over-capacity"
            } else {
                ""
            }
        );
        if let crate::daemon::Stream::Tcp(t) = &conn.stream {
            // Room for a whole answer in the send buffer, so that it leaves in one piece: a
            // Python peer reads each frame with a single recv (spec §4.2). The kernel's
            // initial 16 KiB would split larger answers.
            let _ = rustix::net::sockopt::set_socket_send_buffer_size(
                t,
                (self.cfg.max_frame + 64).min(SNDBUF_MAX),
            );
        }
        match &self.cfg.tls {
            Some(acc) => {
                match crate::tls::accept(acc, conn.stream, self.cfg.handshake_timeout).await {
                    Ok(s) => self.session(s, &peer, conn.over_capacity).await,
                    Err(e) => log::warn!("connection-error peer={peer} error={}", quoted(&e)),
                }
            }
            None => self.session(conn.stream, &peer, conn.over_capacity).await,
        }
    }

    async fn session<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut s: S,
        peer: &Peer,
        over_capacity: bool,
    ) {
        if over_capacity {
            let _ = send(&mut s, Type::Error, &Body::error("too many connections")).await;
            let _ = s.shutdown().await;
            return;
        }
        let idle = self.cfg.idle_timeout;
        loop {
            // The idle timeout counts from the last reply to the first byte of a frame; the
            // rest of the frame must then follow within the same time again.
            let mut head = [0u8; 4];
            let first = match tokio::time::timeout(idle, s.read(&mut head)).await {
                Err(_) => {
                    log::debug!("idle-close peer={peer}");
                    break;
                }
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    log::warn!("connection-error peer={peer} error={}", quoted(&e));
                    break;
                }
            };
            let rest = async {
                if first < 4 {
                    s.read_exact(&mut head[first..]).await?;
                }
                wire::read_content(&mut s, u32::from_be_bytes(head), self.cfg.max_frame).await
            };
            let read = match tokio::time::timeout(idle, rest).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    log::warn!("connection-error peer={peer} error={}", quoted(&e));
                    break;
                }
                Err(_) => {
                    log::warn!(
                        "connection-error peer={peer} error=\"frame not completed in time\""
                    );
                    break;
                }
            };
            let reply = match read {
                Read::Closed => break,
                Read::TooLarge(n) => {
                    log::warn!(
                        "request-error peer={peer} error=\"frame of {n} bytes over the limit of {}\"",
                        self.cfg.max_frame
                    );
                    let _ = send(&mut s, Type::Error, &Body::error("frame too large")).await;
                    // Close gently: a close with the peer's data still unread would send a
                    // reset, which can destroy the ERROR before the peer reads it.
                    let _ = s.shutdown().await;
                    let mut sink = [0u8; 8192];
                    let drain =
                        async { while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {} };
                    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
                    return;
                }
                Read::Bad(e) => {
                    log::warn!("request-error peer={peer} error={}", quoted(&e));
                    Some(wire::encode(Type::Error, &Body::default()))
                }
                Read::Packet(p) => self.handle(p, peer).await,
            };
            let Some(frame) = reply else { break };
            if let Err(e) = write_frame(&mut s, &frame).await {
                log::warn!("connection-error peer={peer} error={}", quoted(&e));
                break;
            }
        }
        let _ = s.shutdown().await;
    }

    /// The answer to one packet, or None to close the connection.
    async fn handle(&self, p: Packet, peer: &Peer) -> Option<Vec<u8>> {
        let tokens = self.tokens();
        let owner: Option<&str> = match p.body.auth_token.as_deref() {
            Some(t) if self.auth() && !t.is_empty() => tokens.owner_of(t),
            _ => None,
        };
        if self.auth() && owner.is_none() {
            log::warn!(
                "request-error peer={peer} type={} error=unauthorized",
                p.ty.name()
            );
            return Some(wire::encode(Type::Unauthorized, &Body::default()));
        }
        let by = owner.unwrap_or("-");
        log::debug!("packet peer={peer} type={} owner={by}", p.ty.name());
        match p.ty {
            // The original sends the content back as it came, token included (spec §2.4).
            Type::Echo => Some(wire::encode(Type::Echo, &p.body)),
            Type::Discover => {
                let cfg = self.commands();
                let list: Ordered<Ordered<&str>> = Ordered(
                    cfg.commands
                        .iter()
                        .filter(|c| c.allows(owner))
                        .map(|c| {
                            (
                                c.name.clone(),
                                Ordered(
                                    c.args.iter().map(|(n, t)| (n.clone(), t.name())).collect(),
                                ),
                            )
                        })
                        .collect(),
                );
                Some(wire::encode_any(
                    Type::Discover,
                    &DiscoverBody { response: list },
                ))
            }
            Type::SendCmd => {
                let (ty, body) = self.run_command(&p.body, owner, peer).await;
                Some(wire::encode(ty, &body))
            }
            Type::CloseConnection => None,
            Type::CmdResponse | Type::Unauthorized | Type::Error => {
                log::warn!(
                    "request-error peer={peer} type={} owner={by} error=\"unknown packet type\"",
                    p.ty.name()
                );
                Some(wire::encode(
                    Type::Error,
                    &Body::error("unknown packet type"),
                ))
            }
        }
    }

    async fn run_command(&self, body: &Body, owner: Option<&str>, peer: &Peer) -> (Type, Body) {
        let by = owner.unwrap_or("-");
        let cfg = self.commands();
        let name = body.command.as_deref().unwrap_or("");
        let Some(cmd) = cfg.get(name).filter(|c| c.allows(owner)) else {
            log::warn!(
                "request-error peer={peer} owner={by} command={name:?} error=\"command not found\""
            );
            return (Type::Error, Body::error("command not found"));
        };
        let input = match cmd.check_args(body.args.as_ref()) {
            Ok(v) => v,
            Err(e) => {
                log::warn!(
                    "request-error peer={peer} owner={by} command={name:?} error={}",
                    quoted(&e)
                );
                return (Type::Error, Body::default());
            }
        };
        let shown_args = if cmd.log_args {
            format!(" args={}", quoted(&input))
        } else {
            String::new()
        };
        let spec = child::Spec {
            argv: cmd.exec.clone(),
            user: cmd
                .user
                .as_ref()
                .map(|(n, u, g)| child::RunAs::of(n, *u, *g)),
            timeout: cmd.timeout,
            max_output: cmd.max_output,
            env: self.cfg.command_env.clone(),
        };
        let t0 = Instant::now();
        let stdin = crate::pyjson::dumps(&input);
        let outcome = child::run(&spec, &stdin).await;
        let ms = t0.elapsed().as_millis();
        let o = match outcome {
            Ok(o) => o,
            Err(e) => {
                log::error!(
                    "command name={name:?} owner={by} peer={peer} ms={ms}{shown_args} error={}",
                    quoted(&e)
                );
                return (Type::Error, Body::default());
            }
        };
        log::info!(
            "command name={name:?} owner={by} peer={peer} status={} ms={ms}{shown_args}",
            o.status
        );
        match cmd.output {
            Output::Text => (
                Type::CmdResponse,
                Body::response(json!({
                    "stdout": String::from_utf8_lossy(&o.stdout),
                    "stderr": String::from_utf8_lossy(&o.stderr),
                    "status": o.status,
                })),
            ),
            Output::Json => {
                if o.status != 0 {
                    log::warn!("request-error peer={peer} owner={by} command={name:?} error=\"exit status {}\"", o.status);
                    return (Type::Error, Body::default());
                }
                if o.stdout.iter().all(|b| b.is_ascii_whitespace()) {
                    return (Type::CmdResponse, Body::default());
                }
                match serde_json::from_slice::<Value>(&o.stdout) {
                    Ok(v @ Value::Object(_)) => (Type::CmdResponse, Body::response(v)),
                    _ => {
                        log::warn!("request-error peer={peer} owner={by} command={name:?} error=\"output is not one JSON object\"");
                        (Type::Error, Body::default())
                    }
                }
            }
        }
    }
}

/// Largest send buffer asked for (the kernel doubles it and caps it at `wmem_max`).
const SNDBUF_MAX: usize = 4 << 20;

#[derive(serde::Serialize)]
struct DiscoverBody<'a> {
    response: Ordered<Ordered<&'a str>>,
}

async fn write_frame<S: AsyncWrite + Unpin>(s: &mut S, frame: &[u8]) -> std::io::Result<()> {
    s.write_all(frame).await?;
    s.flush().await
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, ty: Type, body: &Body) -> std::io::Result<()> {
    write_frame(s, &wire::encode(ty, body)).await
}

#[cfg(test)]
mod handler_tests {
    use super::*;

    const COMMANDS: &str = r#"
[commands.hello]
exec = ["/bin/echo", "{\"said\": \"hello\"}"]
allow = ["alice"]

[commands.other]
exec = ["/bin/true"]
allow = ["bob"]
"#;

    fn server(dir: &std::path::Path) -> Server {
        let commands = dir.join("iscepd.toml");
        std::fs::write(&commands, COMMANDS).unwrap();
        let tokens = dir.join("tokens.json");
        std::fs::write(
            &tokens,
            r#"{"alice": "alice-token-0123456789", "bob": "bob-token-0123456789"}"#,
        )
        .unwrap();
        Server::new(Config {
            sources: Sources {
                config: commands,
                tokens: Some(tokens),
            },
            ..Default::default()
        })
        .unwrap()
    }

    /// Answers one packet built here; the reply decoded.
    async fn ask(s: &Server, ty: Type, token: &str, command: Option<&str>) -> Packet {
        let p = Packet {
            ty,
            body: Body {
                auth_token: Some(token.into()),
                command: command.map(Into::into),
                ..Default::default()
            },
        };
        let peer = Peer::Tcp("127.0.0.1:5000".parse().unwrap());
        let frame = s.handle(p, &peer).await.expect("an answer");
        wire::decode(&frame[4..]).unwrap()
    }

    #[tokio::test]
    async fn auth_echo_discover_and_a_command() {
        let d = tempfile::tempdir().unwrap();
        let s = server(d.path());
        let r = ask(&s, Type::Echo, "wrong", None).await;
        assert_eq!(r.ty, Type::Unauthorized);
        let r = ask(&s, Type::Echo, "alice-token-0123456789", Some("x")).await;
        assert_eq!((r.ty, r.body.command.as_deref()), (Type::Echo, Some("x")));
        // DISCOVER lists only the commands the owner may run.
        let r = ask(&s, Type::Discover, "alice-token-0123456789", None).await;
        assert_eq!(r.ty, Type::Discover);
        assert_eq!(r.body.response, Some(json!({"hello": {}})));
        let r = ask(&s, Type::SendCmd, "alice-token-0123456789", Some("hello")).await;
        assert_eq!(
            (r.ty, r.body.response),
            (Type::CmdResponse, Some(json!({"said": "hello"})))
        );
        let r = ask(&s, Type::SendCmd, "alice-token-0123456789", Some("other")).await;
        assert_eq!(
            (r.ty, r.body.error.as_deref()),
            (Type::Error, Some("command not found"))
        );
    }

    #[test]
    fn a_missing_tokens_file_is_a_tokens_error() {
        let d = tempfile::tempdir().unwrap();
        let e = Server::new(Config {
            sources: Sources {
                config: d.path().join("none.toml"),
                tokens: Some(d.path().join("tokens.json")),
            },
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(matches!(e, Error::Tokens(_)), "{e}");
        std::fs::write(d.path().join("bad.toml"), "[commands.x]\nexec = 1\n").unwrap();
        let e = Server::new(Config {
            sources: Sources {
                config: d.path().join("bad.toml"),
                tokens: None,
            },
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(
            matches!(e, Error::Commands(config::LoadError::Parse(..))),
            "{e}"
        );
    }
}
