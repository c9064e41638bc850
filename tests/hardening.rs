//! Hostile clients and careless hosts, across the binaries: no core dumps (every unit has
//! LimitCORE=0, every process is non-dumpable), secrets off the command line (tokenctl reads
//! tokens from standard input; skd warns about -P), and `--listen /path.sock` (the socket's
//! mode, a live socket left alone, a stale one replaced).

use crate::common::*;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `[Service]` of every unit has LimitCORE=0 (as scripts/unit-gate.sh checks).
#[test]
fn every_service_unit_forbids_core_dumps() {
    let mut units = Vec::new();
    for dir in ["units", "units/user"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "service") {
                units.push(e.path());
            }
        }
    }
    assert!(units.len() >= 6, "{units:?}");
    for u in units {
        let text = std::fs::read_to_string(&u).unwrap();
        let mut section = "";
        let mut core = None;
        for l in text.lines() {
            if l.starts_with('[') {
                section = l;
            } else if section == "[Service]" {
                if let Some(v) = l.strip_prefix("LimitCORE=") {
                    core = Some(v.to_string());
                }
            }
        }
        assert_eq!(core.as_deref(), Some("0"), "{}", u.display());
    }
}

/// The owner of `/proc/PID/environ`: root when the process is not dumpable, else the
/// process's effective user (`/proc/PID` itself always belongs to the latter).
fn proc_owner(pid: u32) -> u32 {
    std::fs::metadata(format!("/proc/{pid}/environ"))
        .unwrap()
        .uid()
}

/// The real uid of process `pid`, from /proc/PID/status.
fn real_uid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// As root, a command is run as `nobody`: a dumpable process's /proc/PID files would then
/// belong to nobody, a non-dumpable one's to root. Not root: it runs as us, and the same holds.
fn unprivileged(cmd: &mut Command) -> &mut Command {
    if rustix::process::geteuid().is_root() {
        cmd.uid(65534).gid(65534);
    }
    cmd
}

#[test]
fn daemons_and_tools_are_not_dumpable_and_skd_warns_about_a_password_in_argv() {
    // A daemon: skd (no store: nothing for nobody to open), with -P on its command line.
    let d = Daemon::on_free_port(|addr| {
        let mut c = Command::new(skd());
        c.args(["--listen", addr, "-P", "kspass"]);
        unprivileged(&mut c);
        c
    });
    let pid = d.child.id();
    assert_ne!(
        real_uid(pid),
        0,
        "the test needs skd to run as another user"
    );
    assert_eq!(proc_owner(pid), 0, "skd is dumpable");
    let log = d.log_text();
    assert!(log.contains("keystore-password-in-argv"), "{log}");
    assert!(!log.contains("kspass"), "{log}");

    // A tool: tokenctl waiting for a token on its standard input.
    let mut t = Command::new(tokenctl());
    t.args(["skd", "check", "--db", "/nonexistent", "--realm", "r", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut t = unprivileged(&mut t).spawn().unwrap();
    // Until it is tokenctl (past exec) and non-dumpable; its exe link is readable to root
    // only once it is non-dumpable (and to us before, when we are not root).
    let pid = t.id();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut owner = proc_owner(pid);
    loop {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
        let is_tokenctl = exe.as_ref().map_or(true, |e| e.ends_with("tokenctl"));
        if (owner == 0 && is_tokenctl) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        owner = proc_owner(pid);
    }
    assert_ne!(real_uid(pid), 0);
    drop(t.stdin.take());
    let _ = t.wait();
    assert_eq!(owner, 0, "tokenctl is dumpable");
}

#[test]
fn tokenctl_reads_tokens_from_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let db = path_str(dir.path());
    // skd -d creates the store.
    drop(Daemon::direct(skd(), &["-d", db]));
    let tc = |args: &[&str], input: &str| {
        let mut c = Command::new(tokenctl())
            .args(["skd"])
            .args(args)
            .args(["--db", db, "--realm", "svc"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let issue = |user: &str| {
        let (code, t) = tc(&["issue", "--user", user], "");
        assert_eq!(code, 0);
        t.trim().to_string()
    };
    let (a, b) = (issue("robot"), issue("robot2"));
    assert_eq!(tc(&["check", "-"], &format!("{a}\n")), (0, "YES\n".into()));
    assert_eq!(tc(&["check", "-"], "0000\n").0, 1);
    // Several tokens, one a line; an unknown one makes the exit status 1.
    let (code, _) = tc(&["revoke", "--json", "-"], &format!("{a}\n\n{b}\r\nffff\n"));
    assert_eq!(code, 1);
    assert_eq!(tc(&["check", "-"], &a), (1, "NO\n".into()));
    assert_eq!(tc(&["check", "-"], &b), (1, "NO\n".into()));
    // The argv form still works.
    let c = issue("robot3");
    assert_eq!(tc(&["check", &c], ""), (0, "YES\n".into()));
    assert_eq!(tc(&["revoke", &c], "").0, 0);
}

/// Waits (at most 10 s) for `c` to exit; kills it if it does not.
fn exit_of(mut c: std::process::Child) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(st) = c.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
    None
}

/// An HTTP answer over the AF_UNIX socket at `path`.
fn get_unix(path: &Path) -> String {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /valid?realm=r&token=x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn listen_on_a_path_makes_a_0660_socket_and_leaves_a_live_one_alone() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("skd.sock");
    let sock_s = path_str(&sock).to_string();
    // A permissive umask: the mode comes from skd, not from whoever starts it.
    let d = Daemon::on_free_port(|addr| {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "umask 0; exec \"$0\" \"$@\""])
            .arg(skd())
            .args(["--listen", addr, "--listen", &sock_s]);
        c
    });
    let m = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o660);
    assert!(get_unix(&sock).starts_with("HTTP/1.1 200"));

    // A second skd on the same path must not take the socket away from the first.
    let err = dir.path().join("second.err");
    let second = Command::new(skd())
        .args(["--listen", &sock_s])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let st = exit_of(second).expect("a second skd started on a live socket");
    assert_eq!(st.code(), Some(69));
    let err = std::fs::read_to_string(&err).unwrap();
    assert!(
        err.contains(&format!(
            "cannot listen on {sock_s}: another process is listening on it"
        )),
        "{err}"
    );
    let m2 = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!((m2.dev(), m2.ino()), (m.dev(), m.ino()), "socket replaced");
    assert!(get_unix(&sock).starts_with("HTTP/1.1 200"));
    drop(d);

    // A socket nobody listens on any more (a crashed daemon's) is replaced.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let _d = Daemon::direct(skd(), &["--listen", path_str(&stale)]);
    assert!(get_unix(&stale).starts_with("HTTP/1.1 200"));
    // Any other file is never replaced.
    let file = dir.path().join("file");
    std::fs::write(&file, "keep").unwrap();
    let o = Command::new(skd())
        .args(["--listen", path_str(&file)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(69));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("exists and is not a socket"),
        "{o:?}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
}
