//! remod's privilege separation, as OpenSSH's: this module is the privileged **monitor**;
//! [`super::server`] runs in the unprivileged **network process** that it starts and starts
//! again when it dies.
//!
//! The monitor keeps the server key, the users database and the session table. It never reads
//! the network: it answers the closed set of requests in [`proto::Request`] on an AF_UNIX
//! socketpair, each checked against what the monitor verified itself (the request table is
//! in remod(8), PRIVILEGE SEPARATION). The network process does all HTTP, JSON, base64,
//! Fernet and command-line splitting, as a user of its own, without capabilities, with
//! `no_new_privs`, non-dumpable and without file-system access ([`confine`]).

pub mod confine;
pub mod proto;

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssl::pkey::{PKey, Private, Public};
use tokio::sync::watch;

use super::{users, wire};
use crate::child::{self, RunAs, SpawnOpts};
use crate::daemon::log::quoted;
use proto::{Channel, NetConfig, Reply, Request, Run};

/// Client keys remembered at most (about 100 bytes each); past it, logins wait for old ones
/// to pass the session timeout rather than forget one (which would let its replay in).
const SEEN_KEYS_MAX: usize = 100_000;

/// The `PATH` of commands (they start in the user's home directory, when it exists).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the monitor is configured with.
pub struct Config {
    pub server_key: PKey<Private>,
    pub users_db: PathBuf,
    pub session_timeout: Duration,
    /// Unix account for users without one in the database; None = refuse them.
    pub default_unix_user: Option<String>,
    pub max_sessions: usize,
    /// Sessions of one remote user at most; a new login ends that user's least recently
    /// used session.
    pub max_sessions_per_user: usize,
    /// `/cmd` processes running at once per session and per remote user.
    pub max_cmds_per_session: usize,
    pub max_cmds_per_user: usize,
    /// Interactive processes alive at once, over all sessions (one per session at most).
    pub max_interactive: usize,
    /// Time limit of `/cmd`, `/get` and `/put` processes (interactive ones live with their
    /// session).
    pub cmd_timeout: Duration,
    /// argv prefix of the put helper (`remod --put-helper`); the target path is appended.
    pub put_helper: Vec<String>,
    /// The network process's identity; `None`: ours (when we are not root).
    pub network_user: Option<(u32, u32)>,
}

#[derive(Debug)]
struct UnixUser {
    name: String,
    home: PathBuf,
    run_as: RunAs,
    shell: String,
}

struct Session {
    user: String,
    unix: Arc<UnixUser>,
    allow: Option<Vec<String>>,
    last: Instant,
    /// `/cmd` processes of this session running now.
    cmds: usize,
    interactive: Option<u64>,
    procs: HashSet<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Command,
    Interactive,
    Transfer,
}

struct Proc {
    sid: String,
    user: String,
    kind: Kind,
    pgid: i32,
    /// The exit status once it has exited.
    status: watch::Receiver<Option<i32>>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    procs: HashMap<u64, Proc>,
    next_proc: u64,
    /// `/cmd` processes running per remote user.
    user_cmds: HashMap<String, usize>,
    interactive: usize,
    /// Client X448 keys of logins within the session timeout: a login is refused if its key
    /// was seen (a replayed `/auth` body; real clients make a fresh key per login).
    seen_keys: HashMap<Vec<u8>, Instant>,
}

pub struct Monitor {
    cfg: Config,
    state: Mutex<State>,
    /// Verified against for unknown users, so they cost the same time as known ones.
    dummy: PKey<Public>,
    root: bool,
}

/// A refusal: the HTTP status for the client and the reason for the log.
/// A login that [`Monitor::verify`] accepted.
struct Verified {
    /// Whom its commands run as.
    unix: Arc<UnixUser>,
    /// The programs it may run (the users database's allowlist); `None`: any.
    allow: Option<Vec<String>>,
    /// The session's Fernet key (from the X448 exchange).
    fernet: Vec<u8>,
    /// The signed answer for the client.
    answer: String,
}

fn refused(status: u16, why: &str) -> Reply {
    Reply::Refused {
        status,
        why: why.into(),
    }
}

impl Monitor {
    pub fn new(cfg: Config) -> Result<Monitor, openssl::error::ErrorStack> {
        let d = PKey::generate_ed448()?;
        let dummy =
            PKey::public_key_from_raw_bytes(&d.raw_public_key()?, openssl::pkey::Id::ED448)?;
        Ok(Monitor {
            cfg,
            state: Mutex::new(State::default()),
            dummy,
            root: rustix::process::geteuid().is_root(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers one request; descriptors to pass come with the reply.
    async fn answer(&'static self, req: Request) -> (Reply, Vec<OwnedFd>, Vec<String>) {
        match req {
            Request::Login {
                user,
                key,
                sign,
                replaces,
            } => {
                let (r, ended) = self.login(user, key, sign, replaces).await;
                (r, vec![], ended)
            }
            Request::Logout { sid } => {
                if let Some(s) = self.end_session(&sid) {
                    log::info!("logout user={}", s);
                }
                (Reply::Done, vec![], vec![])
            }
            Request::Touch { sid } => {
                if let Some(s) = self.state().sessions.get_mut(&sid) {
                    s.last = Instant::now();
                }
                (Reply::Done, vec![], vec![])
            }
            Request::Spawn { sid, what } => match self.spawn(&sid, what) {
                Ok((id, fds)) => (Reply::Spawned { id }, fds, vec![]),
                Err(r) => (r, vec![], vec![]),
            },
            Request::Wait { id } => {
                let rx = self.state().procs.get(&id).map(|p| p.status.clone());
                let Some(mut rx) = rx else {
                    return (refused(404, "no such process"), vec![], vec![]);
                };
                let st = loop {
                    if let Some(st) = *rx.borrow_and_update() {
                        break st;
                    }
                    if rx.changed().await.is_err() {
                        break -1;
                    }
                };
                (Reply::Exited { status: st }, vec![], vec![])
            }
            Request::Kill { id } => {
                // Not once it has exited: its process group id may be another's by now.
                if let Some(p) = self
                    .state()
                    .procs
                    .get(&id)
                    .filter(|p| p.status.borrow().is_none())
                {
                    kill_group(p.pgid);
                }
                (Reply::Done, vec![], vec![])
            }
        }
    }

    /// Verifies a login and opens its session. Also returns the sessions it ended.
    async fn login(
        &self,
        user: String,
        key: Vec<u8>,
        sign: Vec<u8>,
        replaces: Option<String>,
    ) -> (Reply, Vec<String>) {
        let Verified {
            unix,
            allow,
            fernet,
            answer,
        } = match self.verify(&user, &key, &sign).await {
            Ok(x) => x,
            Err(why) => return (refused(403, why), vec![]),
        };
        let sid = wire::b64url(&crate::secret::random_bytes(8))
            .trim_end_matches('=')
            .to_string();
        let mut ended = Vec::new();
        {
            let mut st = self.state();
            // A new id at every login; the old session (and its process) ends.
            if let Some(old) = replaces {
                if st.sessions.get(&old).is_some_and(|s| s.user == user) {
                    ended.push(old);
                }
            }
            // One user's sessions are capped: the least recently used one goes.
            let mine: Vec<(&String, Instant)> = st
                .sessions
                .iter()
                .filter(|(k, s)| s.user == user && !ended.contains(k))
                .map(|(k, s)| (k, s.last))
                .collect();
            if mine.len() >= self.cfg.max_sessions_per_user {
                if let Some((k, _)) = mine.iter().min_by_key(|(_, t)| *t) {
                    log::info!("session-evicted user={user} reason=per-user-cap");
                    ended.push((*k).clone());
                }
            }
            let t = self.cfg.session_timeout;
            if st.sessions.len() >= self.cfg.max_sessions {
                ended.extend(
                    st.sessions
                        .iter()
                        .filter(|(_, s)| s.last.elapsed() > t)
                        .map(|(k, _)| k.clone()),
                );
            }
            for k in &ended {
                end_locked(&mut st, k);
            }
            if st.sessions.len() >= self.cfg.max_sessions {
                log::warn!("login-refused user={user} reason=too-many-sessions");
                return (refused(503, "too-many-sessions"), ended);
            }
            st.sessions.insert(
                sid.clone(),
                Session {
                    user: user.clone(),
                    unix: unix.clone(),
                    allow,
                    last: Instant::now(),
                    cmds: 0,
                    interactive: None,
                    procs: HashSet::new(),
                },
            );
        }
        let reply = Reply::LoggedIn {
            sid,
            fernet,
            answer,
            unix_user: unix.name.clone(),
        };
        (reply, ended)
    }

    /// Checks a login; the reason for a refusal is for the log only (the client always
    /// gets the same 403).
    async fn verify(&self, user: &str, key: &[u8], sign: &[u8]) -> Result<Verified, &'static str> {
        let db = self.cfg.users_db.clone();
        let name = user.to_string();
        let row = tokio::task::spawn_blocking(move || {
            users::open(&db).and_then(|c| users::lookup(&c, &name))
        })
        .await
        .map_err(|_| "lookup failed")?
        .map_err(|e| {
            log::error!("user-database error={qe}", qe = quoted(&e));
            "database error"
        })?;
        let mut msg = user.as_bytes().to_vec();
        msg.extend_from_slice(key);
        let Some(row) = row else {
            let _ = wire::verify(&self.dummy, &msg, sign);
            return Err("unknown-user");
        };
        let pkey = crate::keyfile::parse_public(&row.public).map_err(|_| "unusable-public-key")?;
        if !wire::verify(&pkey, &msg, sign) {
            return Err("bad-signature");
        }
        // Checked after the signature, so only a valid login's key is ever recorded.
        {
            let mut st = self.state();
            let t = self.cfg.session_timeout;
            if st.seen_keys.get(key).is_some_and(|at| at.elapsed() <= t) {
                return Err("replayed-login");
            }
            if st.seen_keys.len() >= SEEN_KEYS_MAX {
                st.seen_keys.retain(|_, at| at.elapsed() <= t);
                if st.seen_keys.len() >= SEEN_KEYS_MAX {
                    return Err("too-many-recent-logins");
                }
            }
            st.seen_keys.insert(key.to_vec(), Instant::now());
        }
        let uname = row
            .unix_user
            .clone()
            .or_else(|| self.cfg.default_unix_user.clone())
            .ok_or("no-unix-user-mapping")?;
        let pw = nix::unistd::User::from_name(&uname)
            .ok()
            .flatten()
            .ok_or("unix-user-not-found")?;
        let me = rustix::process::geteuid().as_raw();
        if !self.root && pw.uid.as_raw() != me {
            return Err("cannot-switch-to-unix-user");
        }
        let unix = Arc::new(UnixUser {
            run_as: RunAs::of(&uname, pw.uid.as_raw(), pw.gid.as_raw()),
            name: uname,
            home: pw.dir,
            shell: pw.shell.to_string_lossy().into_owned(),
        });
        let (eph, eph_pub) = wire::x448_generate().map_err(|_| "key generation failed")?;
        let z = wire::x448_shared(&eph, key).ok_or("bad-client-key")?;
        let fernet = wire::concat_kdf(&z).to_vec();
        let answer =
            wire::auth_answer(&self.cfg.server_key, &eph_pub).map_err(|_| "signing failed")?;
        Ok(Verified {
            unix,
            allow: row.allow,
            fernet,
            answer,
        })
    }

    /// Ends a session: its processes are killed. Returns its user.
    fn end_session(&self, sid: &str) -> Option<String> {
        end_locked(&mut self.state(), sid)
    }

    /// Ends the sessions not used within the session timeout; returns their ids.
    fn purge(&self) -> Vec<String> {
        let t = self.cfg.session_timeout;
        let mut st = self.state();
        let old: Vec<String> = st
            .sessions
            .iter()
            .filter(|(_, s)| s.last.elapsed() > t)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            if let Some(u) = end_locked(&mut st, k) {
                log::info!("session-expired user={u}");
            }
        }
        st.seen_keys.retain(|_, at| at.elapsed() <= t);
        old
    }

    /// Starts what a session asked for, after the checks of remod(8)'s request table.
    fn spawn(&'static self, sid: &str, what: Run) -> Result<(u64, Vec<OwnedFd>), Reply> {
        let mut st = self.state();
        // A start is a use of the session (the network process sends no Touch with it).
        match st.sessions.get_mut(sid) {
            Some(s) => s.last = Instant::now(),
            None => return Err(refused(403, "no-session")),
        }
        let s = &st.sessions[sid];
        let allowed = |what: &str| {
            s.allow
                .as_ref()
                .map_or(true, |l| l.iter().any(|x| x == what))
        };
        let (kind, argv, merge) = match what {
            Run::Command(argv) | Run::Interactive(argv) if argv.is_empty() => {
                return Err(refused(400, "empty command"));
            }
            Run::Command(argv) => (Kind::Command, argv, true),
            Run::Interactive(argv) => (Kind::Interactive, argv, true),
            Run::Get(path) => {
                if !allowed("@get") {
                    return Err(refused(403, "transfers not allowed"));
                }
                let argv = vec!["cat".into(), "--".into(), path];
                (Kind::Transfer, argv, false)
            }
            Run::Put(path) => {
                if !allowed("@put") {
                    return Err(refused(403, "transfers not allowed"));
                }
                let mut argv = self.cfg.put_helper.clone();
                argv.push(path);
                (Kind::Transfer, argv, false)
            }
        };
        if kind != Kind::Transfer && !allowed(&argv[0]) {
            log::warn!(
                "cmd-refused user={} program={:?} reason=not-allowed",
                s.user,
                argv[0]
            );
            return Err(refused(403, "command not allowed"));
        }
        let (user, unix) = (s.user.clone(), s.unix.clone());
        match kind {
            Kind::Command => {
                let n = st.user_cmds.get(&user).copied().unwrap_or(0);
                if n >= self.cfg.max_cmds_per_user || s.cmds >= self.cfg.max_cmds_per_session {
                    log::warn!(
                        "cmd-refused user={user} program={:?} reason=too-many-commands",
                        argv[0]
                    );
                    return Err(refused(503, "too many commands running"));
                }
            }
            Kind::Interactive => {
                // The session's previous process ends here (the original leaked it).
                if let Some(old) = s.interactive {
                    if let Some(p) = st.procs.get(&old).filter(|p| p.status.borrow().is_none()) {
                        kill_group(p.pgid);
                    }
                }
                let mine = usize::from(s.interactive.is_some());
                if st.interactive - mine >= self.cfg.max_interactive {
                    log::warn!("icm-refused user={user} reason=too-many-interactive");
                    return Err(refused(503, "too many interactive processes"));
                }
            }
            Kind::Transfer => {}
        }
        let prog = argv[0].clone();
        let spec = child::Spec {
            argv,
            user: self.root.then(|| unix.run_as.clone()),
            timeout: self.cfg.cmd_timeout,
            max_output: usize::MAX,
            env: vec![
                ("PATH".into(), PATH.into()),
                ("HOME".into(), unix.home.to_string_lossy().into_owned()),
                ("USER".into(), unix.name.clone()),
                ("LOGNAME".into(), unix.name.clone()),
                ("SHELL".into(), unix.shell.clone()),
                ("LANG".into(), "C.UTF-8".into()),
                ("REMO_USER".into(), user.clone()),
            ],
        };
        let opts = SpawnOpts {
            cwd: unix.home.is_dir().then(|| unix.home.clone()),
            merge_stderr: merge,
        };
        let started = child::start_command(&spec, &opts).map_err(|e| {
            log::info!(
                "cmd-failed user={user} program={prog:?} error={qe}",
                qe = quoted(&e)
            );
            let status = match &e {
                child::RunError::Spawn(_, io) if io.kind() == std::io::ErrorKind::NotFound => 404,
                child::RunError::Spawn(_, io)
                    if io.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    403
                }
                _ => 500,
            };
            refused(status, &e.to_string())
        })?;
        st.next_proc += 1;
        let id = st.next_proc;
        let (tx, rx) = watch::channel(None);
        let s = st.sessions.get_mut(sid).expect("checked above");
        s.procs.insert(id);
        match kind {
            Kind::Command => s.cmds += 1,
            Kind::Interactive => s.interactive = Some(id),
            Kind::Transfer => {}
        }
        match kind {
            Kind::Command => *st.user_cmds.entry(user.clone()).or_default() += 1,
            Kind::Interactive => st.interactive += 1,
            Kind::Transfer => {}
        }
        st.procs.insert(
            id,
            Proc {
                sid: sid.to_string(),
                user,
                kind,
                pgid: started.run.pgid(),
                status: rx,
            },
        );
        let mut fds = vec![started.io];
        fds.extend(started.err);
        let mut run = started.run;
        // Interactive processes live with their session; the others have a time limit that
        // the monitor enforces whatever the network process does.
        let limit = match kind {
            Kind::Interactive => Duration::from_secs(u64::from(u32::MAX)),
            _ => self.cfg.cmd_timeout,
        };
        tokio::spawn(async move {
            let st = run.wait(limit).await.unwrap_or(-1);
            let _ = tx.send(Some(st));
            exited(self, id);
            // Kept a moment for a late Wait, then forgotten.
            tokio::time::sleep(Duration::from_secs(30)).await;
            self.state().procs.remove(&id);
        });
        Ok((id, fds))
    }
}

/// Process `id` has exited and was reaped: its slots are free.
fn exited(m: &Monitor, id: u64) {
    let mut st = m.state();
    let Some((sid, user, kind)) = st
        .procs
        .get(&id)
        .map(|p| (p.sid.clone(), p.user.clone(), p.kind))
    else {
        return;
    };
    if let Some(s) = st.sessions.get_mut(&sid) {
        if s.procs.remove(&id) {
            match kind {
                Kind::Command => s.cmds = s.cmds.saturating_sub(1),
                Kind::Interactive if s.interactive == Some(id) => s.interactive = None,
                _ => {}
            }
        }
    }
    match kind {
        Kind::Command => {
            if let Some(n) = st.user_cmds.get_mut(&user) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.user_cmds.remove(&user);
                }
            }
        }
        Kind::Interactive => st.interactive = st.interactive.saturating_sub(1),
        Kind::Transfer => {}
    }
}

/// Ends session `sid` with the state locked: its processes are killed (their slots are
/// freed when they are reaped). Returns its user.
fn end_locked(st: &mut State, sid: &str) -> Option<String> {
    let s = st.sessions.remove(sid)?;
    for id in &s.procs {
        if let Some(p) = st.procs.get(id).filter(|p| p.status.borrow().is_none()) {
            kill_group(p.pgid);
        }
    }
    Some(s.user)
}

fn kill_group(pgid: i32) {
    if let Some(p) = rustix::process::Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
    }
}

impl Monitor {
    /// Starts the network process on `listeners` and serves its requests; starts it again
    /// when it dies (all sessions end: their keys were in it). Returns when it stops by
    /// itself (its exit status 0: SIGTERM or idle).
    pub async fn run(self, listeners: Vec<OwnedFd>, net: NetConfig) -> Result<(), String> {
        // Lives until the process exits: the tasks that reap commands refer to it.
        let me: &'static Monitor = Box::leak(Box::new(self));
        {
            tokio::spawn(async move {
                let every = (me.cfg.session_timeout / 2)
                    .clamp(Duration::from_millis(200), Duration::from_secs(5));
                loop {
                    tokio::time::sleep(every).await;
                    let gone = me.purge();
                    if !gone.is_empty() {
                        if let Some(ch) = CURRENT.lock().ok().and_then(|c| c.clone()) {
                            for sid in gone {
                                let _ =
                                    ch.send(&proto::encode(0, &Reply::Ended { sid }), &[]).await;
                            }
                        }
                    }
                }
            });
        }
        let mut quick_deaths = 0;
        loop {
            let started = Instant::now();
            let status = match me.serve_one(&listeners, &net).await {
                Ok(st) => st,
                Err(e) => {
                    log::error!("network-process-failed error={qe}", qe = quoted(&e));
                    -1
                }
            };
            // Whatever it knew is gone with it: so are the sessions.
            let all: Vec<String> = me.state().sessions.keys().cloned().collect();
            for sid in &all {
                me.end_session(sid);
            }
            if status == 0 {
                return Ok(());
            }
            log::warn!(
                "network-process-died status={status} sessions-ended={}",
                all.len()
            );
            if started.elapsed() < Duration::from_secs(5) {
                quick_deaths += 1;
                if quick_deaths >= 5 {
                    return Err(format!(
                        "the network process died {quick_deaths} times in a row at start"
                    ));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            } else {
                quick_deaths = 0;
            }
        }
    }

    /// One network process, from start to exit; returns its exit status (minus the signal
    /// that killed it).
    async fn serve_one(
        &'static self,
        listeners: &[OwnedFd],
        net: &NetConfig,
    ) -> std::io::Result<i32> {
        let (ours, theirs) = proto::pair()?;
        let mut child = confine::start_network_process(theirs, listeners, self.cfg.network_user)?;
        let pid = child.id();
        log::info!(
            "network-process-started pid={pid} uid={}",
            self.cfg
                .network_user
                .map_or_else(|| "ours".to_string(), |(u, _)| u.to_string())
        );
        let ch = Arc::new(Channel::new(ours)?);
        ch.send(&serde_json::to_vec(net).unwrap_or_default(), &[])
            .await?;
        *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some(ch.clone());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        loop {
            let msg = tokio::select! {
                m = ch.recv() => m,
                _ = term.recv() => { self.stop(pid); continue }
                _ = int.recv() => { self.stop(pid); continue }
            };
            let (data, fds) = match msg {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    log::warn!("network-process-refused error={qe}", qe = quoted(&e));
                    break;
                }
            };
            let Some(env) = proto::decode_request(&data).filter(|_| fds.is_empty()) else {
                // A process that speaks anything else is not ours any more.
                log::error!("network-process-bad-request bytes={}", data.len());
                signal_child(pid, libc::SIGKILL);
                break;
            };
            let ch = ch.clone();
            tokio::spawn(async move {
                let (reply, fds, ended) = self.answer(env.body).await;
                for sid in ended {
                    let _ = ch.send(&proto::encode(0, &Reply::Ended { sid }), &[]).await;
                }
                // Number 0: a notice (Touch, a Kill from a drop) that wants no answer.
                if env.n != 0 {
                    let b: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
                    let _ = ch.send(&proto::encode(env.n, &reply), &b).await;
                }
            });
        }
        *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = None;
        drop(ch);
        let st = tokio::task::spawn_blocking(move || child.wait())
            .await
            .map_err(std::io::Error::other)??;
        use std::os::unix::process::ExitStatusExt;
        Ok(st.code().or_else(|| st.signal().map(|s| -s)).unwrap_or(-1))
    }
}

impl Monitor {
    /// SIGTERM or SIGINT: the network process drains its connections and exits; every
    /// session ends now, so its commands (which may run for --cmd-timeout) do not hold the
    /// stop, and their answers end.
    fn stop(&self, network: u32) {
        signal_child(network, libc::SIGTERM);
        let all: Vec<String> = self.state().sessions.keys().cloned().collect();
        for sid in &all {
            self.end_session(sid);
        }
        if !all.is_empty() {
            log::info!("stopping sessions-ended={}", all.len());
        }
    }
}

/// The channel of the network process now running, for the purger's notices.
static CURRENT: Mutex<Option<Arc<Channel>>> = Mutex::new(None);

fn signal_child(pid: u32, sig: i32) {
    // SAFETY: kill(2) on our own child's pid, which it keeps until we reap it.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}
