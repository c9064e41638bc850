//! Running a command on AF_UNIX socketpairs: standard input and output share one socketpair
//! (the input is written, then that direction is shut down), standard error has its own. The
//! command runs in its own process group with a clean environment; past its time limit, or
//! past its output cap, the whole group is killed. Whatever it leaves behind in its group when
//! it exits is killed too.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// What to run and how.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Absolute path of the program, then its fixed arguments.
    pub argv: Vec<String>,
    /// Run as this uid/gid (needs privilege; supplementary groups are dropped).
    pub user: Option<(u32, u32)>,
    pub timeout: Duration,
    /// Most bytes of standard output plus standard error kept before the command is killed.
    pub max_output: usize,
    /// Environment of the command (nothing else is inherited).
    pub env: Vec<(String, String)>,
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

/// Waits for `pid` to exit without reaping it (its pid, and so its process group id, stays
/// reserved), kills what is left of its group, then reaps it.
fn wait_and_clean(mut child: std::process::Child) -> io::Result<std::process::ExitStatus> {
    let pid = Pid::from_child(&child);
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
    killpg(pid.as_raw_nonzero().get());
    child.wait()
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
    let Some(prog) = spec.argv.first() else {
        return Err(RunError::Spawn(
            String::new(),
            io::ErrorKind::InvalidInput.into(),
        ));
    };
    let (io_ours, io_theirs) = StdUnixStream::pair()?;
    let (err_ours, err_theirs) = StdUnixStream::pair()?;
    let io_theirs = OwnedFd::from(io_theirs);
    let stdout_fd = io_theirs.try_clone()?;
    let mut cmd = Command::new(prog);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::from(io_theirs))
        .stdout(Stdio::from(stdout_fd))
        .stderr(Stdio::from(OwnedFd::from(err_theirs)))
        .process_group(0);
    if let Some((uid, gid)) = spec.user {
        cmd.uid(uid).gid(gid);
    }
    let child = cmd.spawn().map_err(|e| RunError::Spawn(prog.clone(), e))?;
    // Our copies of the child's ends are closed now (moved into `cmd`, dropped with it).
    drop(cmd);
    let pgid = child.id() as i32;
    let waiter = tokio::task::spawn_blocking(move || wait_and_clean(child));

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

/// How [`spawn`] starts a long-lived (interactive) command.
#[derive(Clone, Debug, Default)]
pub struct SpawnOpts {
    /// Working directory (default `/`).
    pub cwd: Option<std::path::PathBuf>,
    /// Standard error on the same socketpair as standard input and output (else its own).
    pub merge_stderr: bool,
}

/// A running command: standard input and output on one socketpair (`io`), standard error on
/// `err` unless merged. Dropping it kills the command's process group and reaps it.
pub struct Proc {
    pub io: UnixStream,
    pub err: Option<UnixStream>,
    pgid: i32,
    child: Option<std::process::Child>,
}

impl Proc {
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
        let waiter = tokio::task::spawn_blocking(move || wait_and_clean(child));
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

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            killpg(self.pgid);
            // Reap it off the async threads; it is dying already.
            let _ = std::thread::Builder::new()
                .name("reap".into())
                .spawn(move || child.wait());
        }
    }
}

/// Starts `spec` (its `timeout` and `max_output` are the caller's to enforce) in its own
/// process group with a clean environment, on AF_UNIX socketpairs. Must be called inside a
/// tokio runtime.
pub fn spawn(spec: &Spec, opts: &SpawnOpts) -> Result<Proc, RunError> {
    let Some(prog) = spec.argv.first() else {
        return Err(RunError::Spawn(
            String::new(),
            io::ErrorKind::InvalidInput.into(),
        ));
    };
    let (io_ours, io_theirs) = StdUnixStream::pair()?;
    let io_theirs = OwnedFd::from(io_theirs);
    let stdout_fd = io_theirs.try_clone()?;
    let (err_ours, err_theirs) = if opts.merge_stderr {
        (None, io_theirs.try_clone()?)
    } else {
        let (a, b) = StdUnixStream::pair()?;
        (Some(a), OwnedFd::from(b))
    };
    let mut cmd = Command::new(prog);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(opts.cwd.as_deref().unwrap_or(std::path::Path::new("/")))
        .stdin(Stdio::from(io_theirs))
        .stdout(Stdio::from(stdout_fd))
        .stderr(Stdio::from(err_theirs))
        .process_group(0);
    if let Some((uid, gid)) = spec.user {
        cmd.uid(uid).gid(gid);
    }
    let child = cmd.spawn().map_err(|e| RunError::Spawn(prog.clone(), e))?;
    drop(cmd);
    let pgid = child.id() as i32;
    let mut proc_ = Proc {
        io: {
            io_ours.set_nonblocking(true)?;
            match UnixStream::from_std(io_ours) {
                Ok(s) => s,
                Err(e) => {
                    killpg(pgid);
                    let mut c = child;
                    let _ = c.wait();
                    return Err(e.into());
                }
            }
        },
        err: None,
        pgid,
        child: Some(child),
    };
    if let Some(e) = err_ours {
        e.set_nonblocking(true)?;
        proc_.err = Some(UnixStream::from_std(e)?);
    }
    Ok(proc_)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn timeout_kills_the_group() {
        let s = spec(&["/bin/sh", "-c", "sleep 30 & sleep 30"], 300);
        let t = std::time::Instant::now();
        let r = rt().block_on(run(&s, b""));
        assert!(matches!(r, Err(RunError::Timeout(_))), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
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
            let s = spec(
                &[
                    "/bin/sh",
                    "-c",
                    "read x; echo got $x; echo err >&2; sleep 30",
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
            assert_eq!(got, b"got hi\nerr\n");
            let pgid = p.pgid();
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
            let s = spec(&["/bin/sh", "-c", "exit 4"], 5000);
            let mut p = spawn(&s, &SpawnOpts::default()).unwrap();
            assert_eq!(p.wait(Duration::from_secs(5)).await.unwrap(), 4);
        });
    }
}
