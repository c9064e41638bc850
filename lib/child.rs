//! Running a command on AF_UNIX socketpairs: standard input and output share one socketpair
//! (the input is written, then that direction is shut down), standard error has its own. The
//! command runs with a clean environment, only descriptors 0, 1 and 2, and in a session (so a
//! process group) of its own; past its time limit, or past its output cap, it is killed, and
//! when it ends, everything it started is killed too, even what left its process group.
//!
//! How descendants are found (THREATS.md, "Children get only what they need"): the calling
//! process becomes a child subreaper (`PR_SET_CHILD_SUBREAPER`) the first time it starts a
//! command, and so does each command (set before `execve`, which keeps it). While a command
//! runs, whatever its descendants orphan (a double fork, `setsid()` and exit) is re-parented
//! to the command itself, so its tree stays whole; when it exits, the tree is re-parented to
//! us. After every command, [`sweep`] kills and reaps our children that are in another
//! session than ours and are no running command, round after round until none is left (each
//! round hands it the children of the processes it killed). A command cannot join our
//! session or process group (`setsid()` put it in its own), so nothing of a command's tree
//! can pass for one of our own children, and running commands keep their trees. This works
//! the same under systemd and without it; a cgroup per command would need a delegated
//! subtree (`Delegate=`) and cgroup writes the units forbid (`ProtectControlGroups=`).
//! A command that clears its own subreaper flag lets its orphans reach us while it still
//! runs, and they are killed at the next sweep: its loss.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Mutex, MutexGuard, Once, RwLock};
use std::time::Duration;

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// What to run and how.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Absolute path of the program, then its fixed arguments.
    pub argv: Vec<String>,
    /// Run as this user (needs privilege); `None`: as this process.
    pub user: Option<RunAs>,
    pub timeout: Duration,
    /// Most bytes of standard output plus standard error kept before the command is killed.
    pub max_output: usize,
    /// Environment of the command (nothing else is inherited).
    pub env: Vec<(String, String)>,
}

/// The identity a command runs as: a user, its primary group and its supplementary groups
/// (as `initgroups(3)` would set them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl RunAs {
    /// `name`'s identity with the groups the group database lists it in (no supplementary
    /// group if the look-up fails: never more than the database says).
    pub fn of(name: &str, uid: u32, gid: u32) -> RunAs {
        let groups = std::ffi::CString::new(name)
            .ok()
            .and_then(|n| nix::unistd::getgrouplist(&n, nix::unistd::Gid::from_raw(gid)).ok())
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_else(|| vec![gid]);
        RunAs { uid, gid, groups }
    }
}

/// How a command ended.
#[derive(Debug)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Exit code, or minus the signal number that ended it (as Python's `subprocess`).
    pub status: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start {0}: {1}")]
    Spawn(String, io::Error),
    #[error("timed out after {0:?}; process group killed")]
    Timeout(Duration),
    #[error("output over {0} bytes; process group killed")]
    TooMuchOutput(usize),
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn killpg(pgid: i32) {
    if let Some(p) = Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(p, Signal::KILL);
    }
}

/// Pids of the commands started and not reaped yet: children of ours in sessions of their
/// own that [`sweep`] must leave alone. Reaping one holds the lock until its pid is out.
static LEADERS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn leaders() -> MutexGuard<'static, BTreeSet<i32>> {
    LEADERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Held for reading while a command is being started (from fork until its pid is in
/// [`LEADERS`]), for writing while [`sweep`] lists our children: a sweep never sees a command
/// it does not know, and commands start concurrently.
static STARTING: RwLock<()> = RwLock::new(());

/// Sweeps run one at a time: a pid one sweep reaped is never signalled by another.
static SWEEP: Mutex<()> = Mutex::new(());

/// Orphaned descendants of our commands are re-parented to this process (see the module
/// documentation). Process-wide, set once.
fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
            log::warn!("cannot become a child subreaper: {e}; orphans of commands are not killed");
        }
    });
}

/// Our children that orphans can be among. The kernel re-parents an orphan to the first
/// live thread of its subreaper, our main thread (its tid is our pid), so its
/// `/proc/self/task/PID/children` lists them all (with the commands it started itself);
/// kernels without that file (`CONFIG_PROC_CHILDREN`) get a scan of every `/proc/PID/stat`.
fn our_children() -> Vec<i32> {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    if let Ok(list) = std::fs::read_to_string(format!("/proc/self/task/{me}/children")) {
        return list
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
            .collect();
    }
    let me = me.to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, a)| a.split_whitespace().nth(1));
        if ppid == Some(me.as_str()) {
            out.extend(e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

/// Our children in a session other than `ours` that are no command: what finished commands
/// left behind.
fn strays(ours: Option<i32>) -> Vec<Pid> {
    let leaders = leaders();
    our_children()
        .into_iter()
        .filter(|p| !leaders.contains(p))
        // getsid fails only for a pid that is gone (reaped by its own waiter).
        .filter(|p| session_of(*p) != ours)
        .filter_map(Pid::from_raw)
        .collect()
}

/// The session id of `pid` (0: ourselves). Raw, because it is 0 when the session's leader
/// lives outside our pid namespace (containers, CI), which rustix's `Pid` cannot hold.
fn session_of(pid: i32) -> Option<i32> {
    // SAFETY: getsid only reads the process table.
    let sid = unsafe { libc::getsid(pid) };
    (sid >= 0).then_some(sid)
}

/// Kills and reaps what is left of finished commands ([`strays`]). Each round's dead hand
/// their own children to us (we are their subreaper), so rounds go on until none is left.
/// Returns how many were killed.
fn sweep() -> usize {
    let ours = session_of(0);
    // The usual case, nothing left behind, without stopping commands from starting. (A command
    // being started may look like a stray here: the locked rounds below tell.)
    if strays(ours).is_empty() {
        return 0;
    }
    let _one = SWEEP.lock().unwrap_or_else(|e| e.into_inner());
    let mut killed = 0;
    for _ in 0..10_000 {
        let strays = {
            let _no_start = STARTING.write().unwrap_or_else(|e| e.into_inner());
            strays(ours)
        };
        if strays.is_empty() {
            return killed;
        }
        for p in &strays {
            let _ = rustix::process::kill_process(*p, Signal::KILL);
        }
        for p in &strays {
            while let Err(rustix::io::Errno::INTR) =
                rustix::process::waitpid(Some(*p), rustix::process::WaitOptions::empty())
            {
            }
        }
        killed += strays.len();
    }
    log::warn!("command-sweep rounds=10000 killed={killed}: processes still forking");
    killed
}

/// A started command's process, ours to wait for.
struct Child {
    pid: i32,
}

impl Child {
    fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Reaps it (blocking).
    fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own child, with a valid pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                return Ok(std::process::ExitStatus::from_raw(status));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// What a command is started with: everything the child needs, made before it exists (the
/// child shares our memory until its `execve` and must not allocate).
struct Launch {
    path: CString,
    /// Owned here for the child: `argv_ptrs` and `env_ptrs` point into them.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _env: Vec<CString>,
    env_ptrs: Vec<*const libc::c_char>,
    cwd: CString,
    fds: [RawFd; 3],
    ids: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    /// The signal mask the command starts with (empty).
    mask: libc::sigset_t,
    /// Set by the child when it fails before `execve`: the errno.
    error: i32,
}

/// The program's path: as given when it has a slash, else the first executable regular file
/// named so in the command's `PATH` (as `execvp` looks, but here, before the child exists).
fn find_program(prog: &str, env: &[(String, String)]) -> io::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if prog.contains('/') {
        return Ok(prog.into());
    }
    if prog.is_empty() {
        return Err(io::ErrorKind::NotFound.into());
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = std::path::Path::new(dir).join(prog);
        if let Ok(m) = std::fs::metadata(&p) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(p);
            }
        }
    }
    Err(io::ErrorKind::NotFound.into())
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in argument"))
}

/// The child, on its own stack in our memory (`CLONE_VM|CLONE_VFORK`, as `posix_spawn`
/// does): only system calls, no allocation, no lock, until `execve` or `_exit`.
extern "C" fn launch_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Launch` of `start`, whose thread is suspended until we exec or
    // exit, so it stays valid and unchanged; everything below is a plain system call.
    unsafe {
        let l = &mut *(arg as *mut Launch);
        let fail = |l: &mut Launch| -> ! {
            l.error = *libc::__errno_location();
            libc::_exit(127)
        };
        // Default dispositions for every signal (our handlers are in our memory, and an
        // ignored SIGPIPE would be inherited), then the command's mask.
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..65 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        if libc::pthread_sigmask(libc::SIG_SETMASK, &l.mask, std::ptr::null_mut()) != 0 {
            fail(l);
        }
        // A session and process group of its own (pgid = sid = its pid): it cannot join
        // ours, so `sweep` tells its tree from our own children.
        if libc::setsid() < 0 {
            fail(l);
        }
        // Its orphaned descendants stay in its tree while it runs (see the module doc).
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0 {
            fail(l);
        }
        for (i, fd) in l.fds.iter().enumerate() {
            if libc::dup2(*fd, i as libc::c_int) < 0 {
                fail(l);
            }
        }
        close_others_on_exec();
        if let Some((uid, gid, groups)) = &l.ids {
            // Groups first, while still privileged; then the group, then the user. Raw system
            // calls: glibc's wrappers would switch every thread of the process it believes
            // it is in (ours), taking its locks and signalling our threads.
            if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) < 0
                || libc::syscall(libc::SYS_setgid, *gid) < 0
                || libc::syscall(libc::SYS_setuid, *uid) < 0
            {
                fail(l);
            }
        }
        if libc::chdir(l.cwd.as_ptr()) < 0 {
            fail(l);
        }
        libc::execve(l.path.as_ptr(), l.argv_ptrs.as_ptr(), l.env_ptrs.as_ptr());
        fail(l)
    }
}

/// Starts a command's leader with `fds` as its standard input, output and error, and records
/// it in [`LEADERS`]. Spawned as `posix_spawn` does (the child borrows our memory until its
/// `execve`), which costs a fraction of a `fork` of a daemon's address space; `posix_spawn`
/// itself cannot switch groups and users or make a subreaper.
fn start(
    argv: &[String],
    env: &[(String, String)],
    cwd: &std::path::Path,
    fds: [BorrowedFd<'_>; 3],
    user: Option<&RunAs>,
) -> Result<Child, RunError> {
    use std::os::unix::ffi::OsStrExt;
    let Some(prog) = argv.first() else {
        return Err(RunError::Spawn(
            String::new(),
            io::ErrorKind::InvalidInput.into(),
        ));
    };
    let spawn_err = |e: io::Error| RunError::Spawn(prog.to_string(), e);
    become_subreaper();
    let path = find_program(prog, env).map_err(spawn_err)?;
    // Above 2, so that no dup2 onto 0, 1, 2 overwrites a source (a daemon whose 0-2 were
    // closed may get them from socketpair()).
    let high: Vec<OwnedFd> = fds
        .iter()
        .map(|f| rustix::io::fcntl_dupfd_cloexec(f, 3))
        .collect::<Result<_, _>>()
        .map_err(|e| spawn_err(e.into()))?;
    let mk = |v: Vec<CString>| {
        let mut p: Vec<*const libc::c_char> = v.iter().map(|c| c.as_ptr()).collect();
        p.push(std::ptr::null());
        (v, p)
    };
    let (argv_c, argv_ptrs) = mk(argv
        .iter()
        .map(|a| cstring(a))
        .collect::<io::Result<_>>()
        .map_err(spawn_err)?);
    let (env_c, env_ptrs) = mk(env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}")))
        .collect::<io::Result<_>>()
        .map_err(spawn_err)?);
    let mut l = Launch {
        path: CString::new(path.as_os_str().as_bytes()).map_err(|e| spawn_err(e.into()))?,
        _argv: argv_c,
        argv_ptrs,
        _env: env_c,
        env_ptrs,
        cwd: CString::new(cwd.as_os_str().as_bytes()).map_err(|e| spawn_err(e.into()))?,
        fds: [
            high[0].as_raw_fd(),
            high[1].as_raw_fd(),
            high[2].as_raw_fd(),
        ],
        ids: user.map(|u| (u.uid, u.gid, u.groups.clone())),
        // SAFETY: sigemptyset initialises the set it is given.
        mask: unsafe {
            let mut m = std::mem::zeroed();
            libc::sigemptyset(&mut m);
            m
        },
        error: 0,
    };
    let mut stack = vec![0u8; 64 * 1024];
    let _starting = STARTING.read().unwrap_or_else(|e| e.into_inner());
    // SAFETY: every signal is blocked around clone, so none of our handlers runs on the
    // child's stack before it resets them; the stack and `l` outlive the child's use of them
    // (CLONE_VFORK: we resume only after its execve or _exit); the stack grows down from its
    // 16-byte aligned top.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let top = stack.as_mut_ptr().add(stack.len());
        let top = (top as usize & !15) as *mut libc::c_void;
        let pid = libc::clone(
            launch_child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &mut l as *mut Launch as *mut libc::c_void,
        );
        let e = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(spawn_err(e));
        }
        pid
    };
    let mut child = Child { pid };
    if l.error != 0 {
        let _ = child.wait();
        return Err(spawn_err(io::Error::from_raw_os_error(l.error)));
    }
    leaders().insert(pid);
    Ok(child)
}

/// In the child before `execve`: every descriptor above 2 gets close-on-exec, so the command
/// gets only 0, 1 and 2, whatever this process inherited without `FD_CLOEXEC` (a shell's fds,
/// a leaked descriptor). Not closed here: std's pipe that reports a failed `execve` is among
/// them and must stay open until then.
///
/// # Safety
/// Only async-signal-safe system calls: callable between fork and exec.
unsafe fn close_others_on_exec() {
    if libc::syscall(
        libc::SYS_close_range,
        3 as libc::c_uint,
        libc::c_uint::MAX,
        libc::CLOSE_RANGE_CLOEXEC,
    ) == 0
    {
        return;
    }
    // Before Linux 5.11: each possible descriptor in turn.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let top = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
        lim.rlim_cur.min(1 << 20) as libc::c_int
    } else {
        1 << 16
    };
    for fd in 3..top {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

/// [`wait_and_clean`] for async callers: where the kernel has pidfds (Linux 5.3), the wait is
/// the pidfd turning readable, on the caller's runtime (no thread, no hop between threads on
/// every command); the sweep goes to a blocking thread only when something is left to kill.
async fn wait_and_clean_async(child: Child) -> io::Result<std::process::ExitStatus> {
    let pidfd = Pid::from_raw(child.pid)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
        .and_then(|fd| {
            // SAFETY: the pidfd is owned by the AsyncFd, which deregisters it before closing.
            unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            }
            .ok()
        });
    let Some(pidfd) = pidfd else {
        return tokio::task::spawn_blocking(move || wait_and_clean(child))
            .await
            .map_err(io::Error::other)?;
    };
    // Readable once it has exited; not reaped yet, so its pid and group id stay ours.
    let _ready = pidfd.readable().await?;
    let st = reap_exited(child);
    if !strays(session_of(0)).is_empty() {
        tokio::task::spawn_blocking(sweep)
            .await
            .map_err(io::Error::other)?;
    }
    st
}

/// Waits for the command `child` to exit without reaping it (its pid, and so its process
/// group id, stays reserved), kills what is left of its group, reaps it, then [`sweep`]s
/// what it left outside its group.
fn wait_and_clean(child: Child) -> io::Result<std::process::ExitStatus> {
    let pid = Pid::from_raw(child.pid).ok_or(io::ErrorKind::InvalidInput)?;
    loop {
        match rustix::process::waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let st = reap_exited(child);
    sweep();
    st
}

/// The command `child` has exited (unreaped): kills what is left of its group, then reaps it.
fn reap_exited(mut child: Child) -> io::Result<std::process::ExitStatus> {
    killpg(child.pid);
    let mut l = leaders();
    let st = child.wait();
    l.remove(&child.pid);
    st
}

/// A command that exits without reading all its input resets the socketpair (ECONNRESET on
/// our side): that is its end of output, not an error.
fn eof_on_reset(r: io::Result<usize>) -> io::Result<usize> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(0),
        r => r,
    }
}

/// Runs `spec` with `input` on standard input; collects standard output and error.
pub async fn run(spec: &Spec, input: &[u8]) -> Result<Outcome, RunError> {
    let (io_ours, io_theirs) = StdUnixStream::pair()?;
    let (err_ours, err_theirs) = StdUnixStream::pair()?;
    let child = start(
        &spec.argv,
        &spec.env,
        std::path::Path::new("/"),
        [io_theirs.as_fd(), io_theirs.as_fd(), err_theirs.as_fd()],
        spec.user.as_ref(),
    )?;
    // Our copies of the child's ends are closed now: only the child holds them.
    drop((io_theirs, err_theirs));
    let pgid = child.id() as i32;
    let waiter = tokio::spawn(wait_and_clean_async(child));

    io_ours.set_nonblocking(true)?;
    err_ours.set_nonblocking(true)?;
    let mut io = UnixStream::from_std(io_ours)?;
    let mut err = UnixStream::from_std(err_ours)?;
    let max = spec.max_output;
    let talk = async {
        let (mut rd, mut wr) = io.split();
        let feed = async {
            // A command that does not read its input may close it early: not an error.
            let _ = wr.write_all(input).await;
            let _ = wr.shutdown().await;
        };
        let collect = async {
            let (mut out, mut errb) = (Vec::new(), Vec::new());
            let (mut out_done, mut err_done) = (false, false);
            let (mut b1, mut b2) = ([0u8; 8192], [0u8; 8192]);
            while !(out_done && err_done) {
                tokio::select! {
                    r = rd.read(&mut b1), if !out_done => match eof_on_reset(r)? {
                        0 => out_done = true,
                        n => out.extend_from_slice(&b1[..n]),
                    },
                    r = err.read(&mut b2), if !err_done => match eof_on_reset(r)? {
                        0 => err_done = true,
                        n => errb.extend_from_slice(&b2[..n]),
                    },
                }
                if out.len() + errb.len() > max {
                    return Err(RunError::TooMuchOutput(max));
                }
            }
            Ok::<_, RunError>((out, errb))
        };
        let ((), got) = tokio::join!(feed, collect);
        got
    };
    let got = match tokio::time::timeout(spec.timeout, talk).await {
        Ok(r) => r,
        Err(_) => Err(RunError::Timeout(spec.timeout)),
    };
    if got.is_err() {
        killpg(pgid);
    }
    // The pipes are at EOF (or the group was killed): the child is exiting or gone.
    let status = match tokio::time::timeout(spec.timeout, waiter).await {
        Ok(Ok(Ok(st))) => st,
        Ok(Ok(Err(e))) => return Err(e.into()),
        Ok(Err(e)) => return Err(io::Error::other(e.to_string()).into()),
        Err(_) => {
            // Output closed but the program lives on (it closed its descriptors).
            killpg(pgid);
            return Err(RunError::Timeout(spec.timeout));
        }
    };
    let (stdout, stderr) = got?;
    let status = status
        .code()
        .or_else(|| status.signal().map(|s| -s))
        .unwrap_or(-1);
    Ok(Outcome {
        stdout,
        stderr,
        status,
    })
}

/// How [`start_command`] starts a long-lived (interactive) command.
#[derive(Clone, Debug, Default)]
pub struct SpawnOpts {
    /// Working directory (default `/`).
    pub cwd: Option<std::path::PathBuf>,
    /// Standard error on the same socketpair as standard input and output (else its own).
    pub merge_stderr: bool,
}

/// A started command's process group: kill it, wait for it. Dropping it kills the group and
/// reaps the command.
pub struct Running {
    pgid: i32,
    child: Option<Child>,
}

impl Running {
    /// Process group id (= the command's pid).
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Kills the process group now.
    pub fn kill(&self) {
        killpg(self.pgid);
    }

    /// Waits (at most `limit`) for the command to exit, then kills what is left of its group;
    /// returns the exit code, or minus the signal number. Past `limit` the group is killed.
    pub async fn wait(&mut self, limit: Duration) -> io::Result<i32> {
        let Some(child) = self.child.take() else {
            return Err(io::ErrorKind::NotFound.into());
        };
        let pgid = self.pgid;
        let waiter = tokio::spawn(wait_and_clean_async(child));
        let st = match tokio::time::timeout(limit, waiter).await {
            Ok(Ok(r)) => r?,
            Ok(Err(e)) => return Err(io::Error::other(e.to_string())),
            Err(_) => {
                killpg(pgid);
                return Err(io::ErrorKind::TimedOut.into());
            }
        };
        Ok(st.code().or_else(|| st.signal().map(|s| -s)).unwrap_or(-1))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            killpg(self.pgid);
            // Reap it (and sweep) off the async threads; it is dying already.
            let _ = std::thread::Builder::new()
                .name("reap".into())
                .spawn(move || wait_and_clean(child));
        }
    }
}

/// Our ends of a started command's socketpairs (standard input and output; standard error
/// unless merged), and its process group.
pub struct Started {
    pub io: OwnedFd,
    pub err: Option<OwnedFd>,
    pub run: Running,
}

/// Starts `spec` (its `timeout` and `max_output` are the caller's to enforce) in its own
/// process group with a clean environment, on AF_UNIX socketpairs; the caller gets the
/// descriptors as they are (blocking), to use here or to pass to another process.
pub fn start_command(spec: &Spec, opts: &SpawnOpts) -> Result<Started, RunError> {
    let (io_ours, io_theirs) = StdUnixStream::pair()?;
    let io_theirs = OwnedFd::from(io_theirs);
    let (err_ours, err_theirs) = if opts.merge_stderr {
        (None, io_theirs.try_clone()?)
    } else {
        let (a, b) = StdUnixStream::pair()?;
        (Some(OwnedFd::from(a)), OwnedFd::from(b))
    };
    let cwd = opts.cwd.as_deref().unwrap_or(std::path::Path::new("/"));
    let child = start(
        &spec.argv,
        &spec.env,
        cwd,
        [io_theirs.as_fd(), io_theirs.as_fd(), err_theirs.as_fd()],
        spec.user.as_ref(),
    )?;
    drop((io_theirs, err_theirs));
    Ok(Started {
        io: OwnedFd::from(io_ours),
        err: err_ours,
        run: Running {
            pgid: child.id() as i32,
            child: Some(child),
        },
    })
}

/// Wraps a blocking socketpair end for tokio.
pub fn async_stream(fd: OwnedFd) -> io::Result<UnixStream> {
    let s = StdUnixStream::from(fd);
    s.set_nonblocking(true)?;
    UnixStream::from_std(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A running command: standard input and output on one socketpair (`io`), standard error on
    /// `err` unless merged. Dropping it kills the command's process group and reaps it.
    struct Proc {
        io: UnixStream,
        /// Standard error, held open.
        _err: Option<UnixStream>,
        run: Running,
    }

    impl Proc {
        /// [`Running::wait`].
        async fn wait(&mut self, limit: Duration) -> io::Result<i32> {
            self.run.wait(limit).await
        }
    }

    /// [`start_command`], with the descriptors ready for tokio. Must be called inside a tokio
    /// runtime.
    fn spawn(spec: &Spec, opts: &SpawnOpts) -> Result<Proc, RunError> {
        let Started { io, err, run } = start_command(spec, opts)?;
        // On an error here `run` is dropped: the command is killed and reaped.
        Ok(Proc {
            io: async_stream(io)?,
            _err: err.map(async_stream).transpose()?,
            run,
        })
    }

    fn spec(argv: &[&str], timeout_ms: u64) -> Spec {
        Spec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            user: None,
            timeout: Duration::from_millis(timeout_ms),
            max_output: 1 << 16,
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn input_output_and_status() {
        let s = spec(&["/bin/sh", "-c", "cat; echo oops >&2; exit 3"], 5000);
        let o = rt().block_on(run(&s, b"{\"a\": 1}")).unwrap();
        assert_eq!(o.stdout, b"{\"a\": 1}");
        assert_eq!(o.stderr, b"oops\n");
        assert_eq!(o.status, 3);
    }

    /// True while `pid` runs (not gone, not a zombie waiting to be reaped).
    fn alive(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, f)| !f.starts_with('Z')),
            Err(_) => false,
        }
    }

    /// The pids the command wrote to `files`, each of which must be gone within 5 s; those
    /// still running are killed so that a failure leaves nothing behind.
    fn assert_all_gone(files: &[std::path::PathBuf]) {
        let pids: Vec<i32> = files
            .iter()
            .map(|f| {
                let t = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{f:?}: {e}"));
                t.trim().parse().unwrap()
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pids.iter().any(|p| alive(*p)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let left: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        for p in &left {
            let _ = rustix::process::kill_process(Pid::from_raw(*p).unwrap(), Signal::KILL);
        }
        assert!(left.is_empty(), "still running: {left:?} of {pids:?}");
    }

    /// A script that starts `sleep 30` twice in the background, once in its group and once in
    /// a session of its own (`setsid`, as a daemonizing program would), writing their pids
    /// to `DIR/in` and `DIR/out`.
    fn leaver(dir: &std::path::Path) -> (String, Vec<std::path::PathBuf>) {
        let (a, b) = (dir.join("in"), dir.join("out"));
        let script = format!(
            "sh -c 'echo $$ > {a}.t; mv {a}.t {a}; exec sleep 30' & \
             setsid sh -c 'echo $$ > {b}.t; mv {b}.t {b}; exec sleep 30' & \
             while [ ! -e {a} ] || [ ! -e {b} ]; do sleep 0.05; done; echo started; ",
            a = a.display(),
            b = b.display()
        );
        (script, vec![a, b])
    }

    #[test]
    fn timeout_kills_the_group_and_what_left_it() {
        let d = tempfile::tempdir().unwrap();
        let (script, pids) = leaver(d.path());
        let s = spec(&["/bin/sh", "-c", &format!("{script} sleep 30")], 2000);
        let t = std::time::Instant::now();
        let r = rt().block_on(run(&s, b""));
        assert!(matches!(r, Err(RunError::Timeout(_))), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_all_gone(&pids);
    }

    #[test]
    fn what_a_command_leaves_behind_is_killed_when_it_exits() {
        let d = tempfile::tempdir().unwrap();
        let (script, pids) = leaver(d.path());
        let s = spec(&["/bin/sh", "-c", &format!("{script} exit 5")], 10_000);
        let o = rt().block_on(run(&s, b"")).unwrap();
        assert_eq!((o.stdout.as_slice(), o.status), (&b"started\n"[..], 5));
        assert_all_gone(&pids);
    }

    /// Lists the shell's own descriptors (`ls` runs as its child: `$$` holds none of its
    /// pipes or directories meanwhile).
    const FD_LIST: &str = "ls -l /proc/$$/fd/";

    /// The descriptor numbers in `ls -l` lines (`... 0 -> socket:[1]`).
    fn fd_numbers(ls: &str) -> Vec<&str> {
        ls.lines()
            .filter_map(|l| l.split_once(" -> "))
            .filter_map(|(a, _)| a.rsplit(' ').next())
            .collect()
    }

    #[test]
    fn a_running_command_keeps_its_orphans_until_it_ends() {
        rt().block_on(async {
            let d = tempfile::tempdir().unwrap();
            let f = d.path().join("orphan");
            // The subshell exits at once: its child is an orphan (in a session of its own)
            // while the command itself still runs.
            let script = format!(
                "(setsid sh -c 'echo $$ > {f}.t; mv {f}.t {f}; exec sleep 30' &); \
                 while [ ! -e {f} ]; do sleep 0.05; done; echo ready; read x",
                f = f.display()
            );
            let mut p = spawn(
                &spec(&["/bin/sh", "-c", &script], 5000),
                &SpawnOpts::default(),
            )
            .unwrap();
            let mut b = [0u8; 6];
            p.io.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"ready\n");
            let pid: i32 = std::fs::read_to_string(&f).unwrap().trim().parse().unwrap();
            // Another command ends (and sweeps): the first one's orphan is not its business.
            let o = run(&spec(&["/bin/true"], 5000), b"").await.unwrap();
            assert_eq!(o.status, 0);
            assert!(alive(pid), "a running command's orphan was killed");
            drop(p);
            assert_all_gone(&[f]);
        });
    }

    #[test]
    fn only_descriptors_0_1_2_reach_the_command() {
        // A descriptor of ours without close-on-exec, as a daemon may inherit one.
        let leak = std::fs::File::open("/etc/hostname").unwrap();
        rustix::io::fcntl_setfd(&leak, rustix::io::FdFlags::empty()).unwrap();
        let s = spec(&["/bin/sh", "-c", FD_LIST], 5000);
        let o = rt().block_on(run(&s, b"")).unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(fd_numbers(&out), ["0", "1", "2"], "{out}");
        drop(leak);
    }

    #[test]
    fn unread_input_is_no_error() {
        let s = spec(&["/bin/sh", "-c", "echo done"], 5000);
        let big = vec![b'x'; 1 << 20];
        let o = rt().block_on(run(&s, &big)).unwrap();
        assert_eq!((o.stdout.as_slice(), o.status), (&b"done\n"[..], 0));
    }

    #[test]
    fn output_cap() {
        let mut s = spec(&["/bin/sh", "-c", "yes"], 5000);
        s.max_output = 10_000;
        let r = rt().block_on(run(&s, b""));
        assert!(matches!(r, Err(RunError::TooMuchOutput(_))), "{r:?}");
    }

    #[test]
    fn signal_status_and_missing_program() {
        let s = spec(&["/bin/sh", "-c", "kill -TERM $$"], 5000);
        assert_eq!(rt().block_on(run(&s, b"")).unwrap().status, -15);
        let s = spec(&["/nonexistent/prog"], 5000);
        assert!(matches!(
            rt().block_on(run(&s, b"")),
            Err(RunError::Spawn(..))
        ));
    }
    #[test]
    fn spawned_process_talks_and_dies_with_its_handle() {
        rt().block_on(async {
            let d = tempfile::tempdir().unwrap();
            let (script, pids) = leaver(d.path());
            let s = spec(
                &[
                    "/bin/sh",
                    "-c",
                    &format!("{script} read x; echo got $x; echo err >&2; sleep 30"),
                ],
                5000,
            );
            let opts = SpawnOpts {
                merge_stderr: true,
                ..Default::default()
            };
            let mut p = spawn(&s, &opts).unwrap();
            p.io.write_all(b"hi\n").await.unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 64];
            while !got.ends_with(b"err\n") {
                let n = p.io.read(&mut b).await.unwrap();
                assert!(n > 0);
                got.extend_from_slice(&b[..n]);
            }
            assert_eq!(got, b"started\ngot hi\nerr\n");
            let pgid = p.run.pgid();
            drop(p);
            std::thread::sleep(Duration::from_millis(200));
            // Nothing of the group runs any more (orphaned zombies wait for init).
            for e in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                    continue;
                };
                let Some(after) = stat.rsplit_once(") ").map(|x| x.1) else {
                    continue;
                };
                let f: Vec<&str> = after.split(' ').collect();
                if f.get(2) == Some(&pgid.to_string().as_str()) {
                    assert_eq!(f[0], "Z", "process group member still alive: {stat}");
                }
            }
            // And what left the group.
            assert_all_gone(&pids);
            let s = spec(&["/bin/sh", "-c", "exit 4"], 5000);
            let mut p = spawn(&s, &SpawnOpts::default()).unwrap();
            assert_eq!(p.wait(Duration::from_secs(5)).await.unwrap(), 4);
        });
    }
}
