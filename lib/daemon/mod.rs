//! What every daemon shares: listeners (systemd's or `--listen`), `sd_notify` (READY, STATUS,
//! STOPPING, watchdog), idle exit, connection caps (overall and per [`Source`]), graceful
//! shutdown on SIGTERM/SIGINT, and logging (see [`log`]).
//!
//! # One shape for every daemon
//!
//! The five daemons (s5d, skd, iscepd, autoidd, remod) follow one convention, written here so
//! that a sixth is built the same way. It is a convention, not a trait: nothing calls these
//! methods generically, and each protocol's request type differs.
//!
//! - **`Config`**, in the protocol's `server` module: the parsed options and file, plain
//!   data. The bin turns its clap `Args` into it and does nothing else of substance.
//! - **`Server::new(config) -> Result<Server, Error>`**: loads what must be right at start
//!   (keys, stores, command files) so that a bad configuration fails before serving. `Error`
//!   is the module's `thiserror` enum; a server that cannot fail says
//!   `Result<Server, Infallible>`. A handle from the serving loop it needs (s5d's
//!   [`Control`], remod's link to its monitor) is a second argument. Never `Arc<Server>`:
//!   the caller wraps it.
//! - **`status()`**: the `STATUS=` line for systemd, passed to [`serve`] and sent again
//!   through [`Control::set_status`] when it changes.
//! - **`is_busy()`**, only where the daemon holds state that idle exit must not drop
//!   (remod's sessions): handed to [`Options::is_busy`], as systemd's own `check_idle`, so no
//!   daemon runs an idle loop of its own.
//! - **`spawn_tasks()`**: every timer and background task (purgers, reloads, expiry),
//!   started by the library, called once inside the runtime before serving.
//! - **`handle(request)`** for HTTP daemons (given to [`crate::http::serve`]), or
//!   `serve_conn(conn)` for a framed protocol (given to [`serve`]).
//!
//! Errors are typed inside the library and turned into an answer once, at the boundary: an
//! HTTP status or an error frame in the server, an exit status and `PROGRAM: message` in
//! the bin (through [`crate::cli::FailContext::map_err_context`]).

pub mod listen;
pub mod log;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};

pub use listen::{Bound, Listener, Peer, Source, Stream};

/// Serving limits common to every daemon.
#[derive(Clone, Debug)]
pub struct Options {
    /// Exit after this long with no open connection (systemd starts us again on the next one).
    pub idle_exit: Option<Duration>,
    /// Connections served at once. Connections beyond this many are still accepted, but
    /// flagged `over_capacity` so the protocol can answer with its own "busy" error instead of
    /// a silent close; beyond twice this many open connections, new ones are closed at once.
    pub max_connections: usize,
    /// The same two limits for the connections of one [`Source`], so that one party cannot
    /// take every slot: beyond this many it gets "busy", beyond twice it is closed at once.
    pub max_per_source: usize,
    /// How long in-flight connections may take to finish after a stop is requested.
    pub shutdown_grace: Duration,
    /// Threads accepting and serving connections, each with a single-threaded runtime; the
    /// caller's runtime is the first. Blocking work goes to tokio's blocking pool anyway.
    pub workers: usize,
    /// The daemon's own idle check, as systemd's `check_idle`: while it says busy (sessions
    /// held in memory, say), idle exit waits even with no connection open.
    pub is_busy: Option<IsBusy>,
}

/// A daemon's "am I busy?" check for [`Options::is_busy`].
#[derive(Clone)]
pub struct IsBusy(pub Arc<dyn Fn() -> bool + Send + Sync>);

impl IsBusy {
    pub fn new(f: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        IsBusy(Arc::new(f))
    }
}

impl std::fmt::Debug for IsBusy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IsBusy(..)")
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            idle_exit: None,
            max_connections: 256,
            max_per_source: Options::per_source_default(256),
            shutdown_grace: Duration::from_secs(10),
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            is_busy: None,
        }
    }
}

impl Options {
    /// The default of `--max-connections-per-source`: a quarter of `--max-connections`.
    pub fn per_source_default(max_connections: usize) -> usize {
        (max_connections / 4).max(1)
    }
}

/// `max_per_source` from the `--max-connections` and `--max-connections-per-source` options.
pub fn per_source(max_connections: usize, per_source: Option<usize>) -> usize {
    per_source
        .unwrap_or_else(|| Options::per_source_default(max_connections))
        .max(1)
}

/// An accepted connection, handed to the protocol's handler.
pub struct Conn {
    pub stream: Stream,
    pub peer: Peer,
    /// Name of the listener (`FileDescriptorName=` or the `--listen` address).
    pub listener: Arc<str>,
    pub over_capacity: bool,
}

struct Shared {
    stop: watch::Sender<bool>,
    reason: Mutex<String>,
    /// The last `STATUS=` sent through `set_status`; held while notifying, so READY never
    /// sends an older status after a newer one.
    status: Mutex<Option<String>>,
    /// Open connections (served, busy, or being closed); idle exit and draining wait on it.
    active: AtomicUsize,
    counts: Mutex<Counts>,
    /// Connections closed at once over the hard limits, and when that was last logged.
    refused: Mutex<(u64, Option<Instant>)>,
    last_idle: Mutex<Instant>,
    drained: Notify,
}

/// Connections counted against the caps.
#[derive(Default)]
struct Counts {
    open: usize,
    served: usize,
    by_source: HashMap<Source, PerSource>,
}

#[derive(Default)]
struct PerSource {
    open: usize,
    served: usize,
}

/// What the caps decide for a new connection.
enum Admission {
    Serve(ConnGuard),
    Busy(ConnGuard),
    /// Over a hard limit: closed without an answer.
    Refuse,
}

/// Why a server stops, as `stopped reason=` and `STATUS=stopping:` say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM or SIGINT (its name).
    Signal(&'static str),
    /// `--idle-exit` passed with nothing to do.
    Idle,
    /// The handlers for SIGTERM and SIGINT could not be installed.
    NoSignalHandlers,
    /// remod's network process lost its monitor.
    MonitorGone,
    /// The service says it is done (s5d: a limit reached), in its words.
    Done(String),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Signal(name) => f.write_str(name),
            Stop::Idle => f.write_str("idle"),
            Stop::NoSignalHandlers => f.write_str("signal handlers unavailable"),
            Stop::MonitorGone => f.write_str("monitor-gone"),
            Stop::Done(why) => f.write_str(why),
        }
    }
}

/// A handle to the running server: ask it to stop, publish a status line.
#[derive(Clone)]
pub struct Control(Arc<Shared>);

impl Default for Control {
    fn default() -> Self {
        Self::new()
    }
}

impl Control {
    pub fn new() -> Self {
        Control(Arc::new(Shared {
            stop: watch::channel(false).0,
            reason: Mutex::new(String::new()),
            status: Mutex::new(None),
            active: AtomicUsize::new(0),
            counts: Mutex::new(Counts::default()),
            refused: Mutex::new((0, None)),
            last_idle: Mutex::new(Instant::now()),
            drained: Notify::new(),
        }))
    }

    /// Asks the server to stop accepting and wind down; the first reason given is kept.
    pub fn stop(&self, reason: Stop) {
        if let Ok(mut r) = self.0.reason.lock() {
            if r.is_empty() {
                *r = reason.to_string();
            }
        }
        self.0.stop.send_replace(true);
    }

    pub fn is_stopping(&self) -> bool {
        *self.0.stop.borrow()
    }

    /// Resolves once a stop has been requested.
    pub async fn stopping(&self) {
        let mut rx = self.0.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Open connections right now.
    pub fn active(&self) -> usize {
        self.0.active.load(Ordering::Relaxed)
    }

    /// `STATUS=` for systemd (a no-op when not run by systemd).
    pub fn set_status(&self, status: &str) {
        let mut last = self.0.status.lock().unwrap_or_else(|p| p.into_inner());
        notify(&[sd_notify::NotifyState::Status(status)]);
        *last = Some(status.to_string());
    }

    /// Counts a new connection from `src` against the caps of `opts`.
    fn admit(&self, src: Source, opts: &Options) -> Admission {
        let max = opts.max_connections.max(1);
        let per = opts.max_per_source.max(1);
        let mut c = self.0.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.open >= 2 * max {
            return self.refuse("hard-limit");
        }
        let served = c.served;
        let s = c.by_source.entry(src).or_default();
        if s.open >= 2 * per {
            return self.refuse("source-hard-limit");
        }
        let serve = served < max && s.served < per;
        s.open += 1;
        if serve {
            s.served += 1;
            c.served += 1;
        }
        c.open += 1;
        self.0.active.fetch_add(1, Ordering::SeqCst);
        let g = ConnGuard {
            shared: self.0.clone(),
            src,
            served: serve,
        };
        if serve {
            Admission::Serve(g)
        } else {
            Admission::Busy(g)
        }
    }

    fn refuse(&self, why: &'static str) -> Admission {
        let mut r = self.0.refused.lock().unwrap_or_else(|p| p.into_inner());
        r.0 += 1;
        // One line per 10 s at most: the refused connections may come by the thousand.
        if r.1.map_or(true, |t| t.elapsed() >= Duration::from_secs(10)) {
            ::log::warn!("connections-refused count={} reason={why}", r.0);
            *r = (0, Some(Instant::now()));
        }
        Admission::Refuse
    }
}

struct ConnGuard {
    shared: Arc<Shared>,
    src: Source,
    served: bool,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        {
            let mut c = self.shared.counts.lock().unwrap_or_else(|p| p.into_inner());
            c.open = c.open.saturating_sub(1);
            if self.served {
                c.served = c.served.saturating_sub(1);
            }
            if let Some(s) = c.by_source.get_mut(&self.src) {
                s.open = s.open.saturating_sub(1);
                if self.served {
                    s.served = s.served.saturating_sub(1);
                }
                if s.open == 0 {
                    c.by_source.remove(&self.src);
                }
            }
        }
        let sh = &self.shared;
        if sh.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Ok(mut t) = sh.last_idle.lock() {
                *t = Instant::now();
            }
            sh.drained.notify_waiters();
        }
    }
}

fn notify(states: &[sd_notify::NotifyState]) {
    // Keep NOTIFY_SOCKET: STATUS= and WATCHDOG=1 are sent again later.
    let _ = sd_notify::notify(false, states);
}

/// Serves `bound` until SIGTERM/SIGINT, idle exit or [`Control::stop`]: each accepted
/// connection runs `handler` on its own task. Returns the reason for stopping.
pub async fn serve<H, Fut>(
    bound: Vec<Bound>,
    opts: Options,
    ctl: Control,
    status: &str,
    handler: H,
) -> String
where
    H: Fn(Conn) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let where_ = describe_all(&bound);
    let own_paths: Vec<_> = bound.iter().filter_map(|b| b.own_path.clone()).collect();
    start_workers(&bound, &opts, &ctl, &handler);
    let accepters: Vec<_> = bound
        .into_iter()
        .map(|b| tokio::spawn(accept_loop(b, ctl.clone(), handler.clone(), opts.clone())))
        .collect();
    ::log::info!("listening {}", where_.join(" "));
    announce_ready(&ctl, status);
    spawn_watchdog();

    let reason = wait_for_stop(&ctl, &opts).await;
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status(&format!("stopping: {reason}")),
    ]);
    for a in &accepters {
        a.abort();
    }
    finish_open(&ctl, opts.shutdown_grace).await;
    for p in own_paths {
        let _ = std::fs::remove_file(p);
    }
    reason
}

/// Each listener as `name=where` (or just `where` when the name says it), for the log.
fn describe_all(bound: &[Bound]) -> Vec<String> {
    bound
        .iter()
        .map(|b| match listen::describe(&b.listener) {
            d if d == b.name => d,
            d => format!("{}={d}", b.name),
        })
        .collect()
}

fn worker_not_started(w: usize, e: impl std::fmt::Display) {
    ::log::warn!(
        "worker-not-started worker={w} error={qe}",
        qe = log::quoted(&e)
    );
}

/// Starts `opts.workers - 1` extra workers: each its own single-threaded runtime accepting
/// on duplicates of the listeners (nginx's model). Cheaper than one work-stealing runtime,
/// whose cross-thread wake-ups cost more than a token look-up. A worker that cannot start
/// is logged and left out.
fn start_workers<H, Fut>(bound: &[Bound], opts: &Options, ctl: &Control, handler: &H)
where
    H: Fn(Conn) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    for w in 1..opts.workers.max(1) {
        let mut dups = Vec::new();
        for b in bound {
            match b.listener.duplicate() {
                Ok(fd) => dups.push((b.name.clone(), fd)),
                Err(e) => worker_not_started(w, e),
            }
        }
        let (ctl, handler, opts) = (ctl.clone(), handler.clone(), opts.clone());
        let started = std::thread::Builder::new()
            .name(format!("worker-{w}"))
            .spawn(move || run_worker(w, dups, ctl, handler, opts));
        if let Err(e) = started {
            worker_not_started(w, e);
        }
    }
}

/// One extra worker's thread: accepts on `dups` until a stop, then lets its connections end.
fn run_worker<H, Fut>(
    w: usize,
    dups: Vec<(String, std::os::fd::OwnedFd)>,
    ctl: Control,
    handler: H,
    opts: Options,
) where
    H: Fn(Conn) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return worker_not_started(w, e),
    };
    rt.block_on(async move {
        for (name, fd) in dups {
            match listen::adopt(fd) {
                Ok(listener) => {
                    let b = Bound {
                        name,
                        listener,
                        own_path: None,
                    };
                    tokio::spawn(accept_loop(b, ctl.clone(), handler.clone(), opts.clone()));
                }
                Err(e) => worker_not_started(w, e),
            }
        }
        ctl.stopping().await;
        drain(&ctl, opts.shutdown_grace).await;
    });
}

/// READY=1 with the status: one set while starting up (a secret loaded already) beats the
/// initial `status`.
fn announce_ready(ctl: &Control, status: &str) {
    let last = ctl.0.status.lock().unwrap_or_else(|p| p.into_inner());
    let status = last.as_deref().unwrap_or(status);
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// WATCHDOG=1 at half the period systemd asks for, when it asks.
fn spawn_watchdog() {
    let mut wd_usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut wd_usec) && wd_usec > 0 {
        let period = Duration::from_micros(wd_usec / 2);
        tokio::spawn(async move {
            loop {
                notify(&[sd_notify::NotifyState::Watchdog]);
                tokio::time::sleep(period).await;
            }
        });
    }
}

/// Waits for SIGTERM/SIGINT, idle exit or [`Control::stop`]; returns the reason.
async fn wait_for_stop(ctl: &Control, opts: &Options) -> String {
    let reason = || ctl.0.reason.lock().map(|r| r.clone()).unwrap_or_default();
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            ::log::error!("cannot install signal handlers");
            ctl.stop(Stop::NoSignalHandlers);
            return reason();
        }
    };
    let tick = opts
        .idle_exit
        .map(|d| (d / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)));
    loop {
        tokio::select! {
            _ = term.recv() => ctl.stop(Stop::Signal("SIGTERM")),
            _ = int.recv() => ctl.stop(Stop::Signal("SIGINT")),
            _ = ctl.stopping() => break,
            _ = tokio::time::sleep(tick.unwrap_or(Duration::from_secs(3600))), if tick.is_some() => {
                if is_idle(ctl, opts) {
                    ctl.stop(Stop::Idle);
                }
            }
        }
    }
    reason()
}

/// True once no connection has been open for `opts.idle_exit` and the daemon's own
/// [`Options::is_busy`] check (sessions in memory, say) has said no for as long.
fn is_idle(ctl: &Control, opts: &Options) -> bool {
    let Some(limit) = opts.idle_exit else {
        return false;
    };
    let mut last = ctl.0.last_idle.lock().unwrap_or_else(|p| p.into_inner());
    if opts.is_busy.as_ref().is_some_and(|b| (b.0)()) {
        *last = Instant::now();
        return false;
    }
    ctl.active() == 0 && last.elapsed() >= limit
}

/// Lets open connections finish within `grace` after a stop.
async fn finish_open(ctl: &Control, grace: Duration) {
    let open = ctl.active();
    if open > 0 {
        ::log::info!("draining connections={open} grace={}s", grace.as_secs());
        if !drain(ctl, grace).await {
            ::log::warn!("shutdown-timeout abandoned-connections={}", ctl.active());
        }
    }
}

/// Accepts connections on one listener until a stop is requested; each runs `handler` on its
/// own task of the current runtime, flagged `over_capacity` over a soft cap, or is closed at
/// once over a hard one.
async fn accept_loop<H, Fut>(b: Bound, ctl: Control, handler: H, opts: Options)
where
    H: Fn(Conn) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let name: Arc<str> = b.name.into();
    loop {
        let accepted = tokio::select! {
            _ = ctl.stopping() => break,
            r = b.listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let (guard, over_capacity) = match ctl.admit(peer.source(), &opts) {
                    Admission::Serve(g) => (g, false),
                    Admission::Busy(g) => (g, true),
                    Admission::Refuse => {
                        drop(stream);
                        continue;
                    }
                };
                let conn = Conn {
                    stream,
                    peer,
                    listener: name.clone(),
                    over_capacity,
                };
                let h = handler.clone();
                tokio::spawn(async move {
                    h(conn).await;
                    drop(guard);
                });
            }
            Err(e) => {
                ::log::warn!(
                    "accept-failed listener={name} error={qe}",
                    qe = log::quoted(&e)
                );
                // Out of descriptors or memory: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Waits until no connection is open, at most `grace`; false if some were still open.
async fn drain(ctl: &Control, grace: Duration) -> bool {
    let all_closed = async {
        loop {
            let n = ctl.0.drained.notified();
            if ctl.active() == 0 {
                break;
            }
            n.await;
        }
    };
    tokio::time::timeout(grace, all_closed).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(s: &str) -> Source {
        Source::of_ip(s.parse().unwrap())
    }

    #[test]
    fn caps_serve_then_busy_then_refuse_per_source_and_overall() {
        let ctl = Control::new();
        let opts = Options {
            max_connections: 4,
            max_per_source: 2,
            ..Default::default()
        };
        let kind = |a: &Admission| match a {
            Admission::Serve(_) => "serve",
            Admission::Busy(_) => "busy",
            Admission::Refuse => "refuse",
        };
        let a = src("10.0.0.1");
        let mut held = Vec::new();
        for want in ["serve", "serve", "busy", "busy", "refuse", "refuse"] {
            let adm = ctl.admit(a, &opts);
            assert_eq!(kind(&adm), want);
            held.push(adm);
        }
        assert_eq!(ctl.active(), 4);
        // Another source is served while the first is over its caps; 127/8 is one source.
        let b = src("127.0.0.1");
        let b1 = ctl.admit(b, &opts);
        let b2 = ctl.admit(src("127.9.9.9"), &opts);
        let b3 = ctl.admit(b, &opts);
        assert_eq!(
            (kind(&b1), kind(&b2), kind(&b3)),
            ("serve", "serve", "busy")
        );
        // Overall: 4 served, 7 open; the 8th open connection is the last allowed.
        let c1 = ctl.admit(src("10.0.0.3"), &opts);
        assert_eq!(kind(&c1), "busy");
        assert_eq!(kind(&ctl.admit(src("10.0.0.4"), &opts)), "refuse");
        // Closing frees the slots again.
        drop((held, b1, b2, b3, c1));
        assert_eq!(ctl.active(), 0);
        let c = ctl.0.counts.lock().unwrap();
        assert_eq!((c.open, c.served, c.by_source.len()), (0, 0, 0));
        drop(c);
        assert_eq!(kind(&ctl.admit(a, &opts)), "serve");
    }
}
