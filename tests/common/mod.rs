//! Test helpers: start the real binaries on loopback, talk HTTP/1.1 to them over plain sockets.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

pub const PAM_SERVICE: &str = "keysock-test";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Installs the throw-away PAM service once per test binary (root only; see tests/pam-setup.sh).
pub fn pam_setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let st = Command::new(root().join("tests/pam-setup.sh")).arg(PAM_SERVICE).status().expect("run pam-setup.sh");
        assert!(st.success(), "tests/pam-setup.sh failed: the PAM tests need root or an installed keysock-test service");
    });
}

/// A loopback port free now. Another test (or an outgoing connection) may take it before it
/// is bound: bind it through [`with_free_port`] or [`Daemon::on_free_port`], which try again.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `try_on(port)` with a free loopback port, again with another (5 tries) while it returns
/// `None`: it must return `None` when what it started could not bind the port.
pub fn with_free_port<T>(mut try_on: impl FnMut(u16) -> Option<T>) -> T {
    for _ in 0..5 {
        if let Some(t) = try_on(free_port()) {
            return t;
        }
    }
    panic!("nothing could bind a free port in 5 tries");
}

/// Polls `f` every 10 ms until it gives `Some`, for at most 10 s (then panics, naming `what`):
/// a test waits for a condition, never for a fixed time.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A connection the daemon at `addr` holds open (/proc/net/tcp, this network namespace).
#[derive(Debug)]
pub struct ServerSocket {
    pub peer_port: u16,
    /// Bytes received that the daemon has not read yet.
    pub unread: u64,
}

/// The connections to `addr` (an IPv4 loopback `IP:PORT`) whose descriptor the daemon still
/// holds: its side is ESTABLISHED (accepted or waiting in the backlog) or CLOSE_WAIT (the
/// client has gone, the daemon has not closed yet). The listener itself and sockets the
/// daemon has closed (FIN_WAIT, TIME_WAIT, LAST_ACK) are not listed.
pub fn server_sockets(addr: &str) -> Vec<ServerSocket> {
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let hex_port = |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap(), 16).unwrap();
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, remote, state, queues) = (f[1], f[2], f[3], f[4]);
            let open = state == "01" || state == "08";
            (open && hex_port(local) == port).then(|| ServerSocket {
                peer_port: hex_port(remote),
                unread: u64::from_str_radix(queues.rsplit(':').next().unwrap(), 16).unwrap(),
            })
        })
        .collect()
}

/// Waits until the daemon at `addr` has closed every connection it accepted (the cap tests:
/// the start-up probe's connection must not hold a slot when they count).
pub fn wait_connections_closed(addr: &str) {
    wait_for("the daemon to close its connections", || {
        server_sockets(addr).is_empty().then_some(())
    });
}

/// A loopback port where nothing listens, held so that nobody can listen there (bound, not
/// listening: a connection is refused) until the socket is dropped.
pub fn closed_port() -> (rustix::fd::OwnedFd, u16) {
    use rustix::net::{AddressFamily, SocketType};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&fd, &"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap()).unwrap();
    let s = TcpStream::from(fd);
    let port = s.local_addr().unwrap().port();
    (s.into(), port)
}

/// A running daemon, killed when dropped. Its stderr goes to a file for inspection.
pub struct Daemon {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// `bin` started through `systemd-socket-activate -l ADDR`, as systemd would.
    pub fn activated(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Self::on_free_port(|addr| {
            let mut cmd = Command::new("systemd-socket-activate");
            cmd.arg("-l").arg(addr);
            for (k, v) in env {
                cmd.arg("-E").arg(format!("{k}={v}"));
            }
            cmd.arg(bin).args(args);
            cmd
        })
    }

    /// `bin` started by hand with `--listen ADDR`.
    pub fn direct(bin: &str, args: &[&str]) -> Daemon {
        Self::on_free_port(|addr| {
            let mut cmd = Command::new(bin);
            cmd.arg("--listen").arg(addr).args(args);
            cmd
        })
    }

    /// The command `make` builds for a free loopback address; another port if that one was
    /// taken meanwhile (tests run in parallel: a port found free can be gone a moment later,
    /// and then a test would talk to another test's daemon).
    pub fn on_free_port(make: impl Fn(&str) -> Command) -> Daemon {
        for _ in 0..5 {
            let addr = format!("127.0.0.1:{}", free_port());
            if let Some(d) = Self::try_spawn(make(&addr), addr) {
                return d;
            }
        }
        panic!("no daemon could bind a free port in 5 tries");
    }

    /// `cmd`, which must end up listening on `addr`.
    pub fn spawn(cmd: Command, addr: String) -> Daemon {
        let what = format!("{cmd:?}");
        Self::try_spawn(cmd, addr).unwrap_or_else(|| panic!("{what} did not start"))
    }

    /// Starts `cmd` and waits until it has bound `addr` itself: systemd-socket-activate says
    /// "Listening on", our daemons log "listening". `None` if it exited first.
    fn try_spawn(mut cmd: Command, addr: String) -> Option<Daemon> {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr.log");
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("spawn daemon");
        let mut d = Daemon {
            child,
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = d.log_text();
            if text.contains("Listening on ") || text.contains("listening ") {
                break;
            }
            if d.child.try_wait().unwrap().is_some() {
                eprintln!("daemon exited before listening on {}: {text}", d.addr);
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not listen on {}: {text}",
                d.addr
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        d.wait_ready();
        Some(d)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "daemon did not listen on {}: {}",
            self.addr,
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> Resp {
        get(&self.addr, path)
    }

    /// Sends a signal and waits (at most 15 s) for the exit status.
    pub fn signal_and_wait(&mut self, sig: &str) -> std::process::ExitStatus {
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        self.wait(Duration::from_secs(15))
            .expect("daemon did not exit")
    }

    pub fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// First line of the body (the token of a login answer).
    pub fn first_line(&self) -> String {
        self.text().lines().next().unwrap_or("").to_string()
    }
}

/// Sends raw bytes, reads until the server closes, splits status/head/body.
pub fn raw(addr: &str, request: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse(&buf)
}

pub fn parse(buf: &[u8]) -> Resp {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Resp {
        status,
        head,
        body: buf[split..].to_vec(),
    }
}

pub fn get(addr: &str, path: &str) -> Resp {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

pub fn post_form(addr: &str, path: &str, form: &str) -> Resp {
    raw(addr, &form_request(path, form))
}

pub fn skd() -> &'static str {
    env!("CARGO_BIN_EXE_skd")
}

pub fn tokenctl() -> &'static str {
    env!("CARGO_BIN_EXE_tokenctl")
}

pub fn is_token(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A TCP connection to `addr` from the local address `from` (e.g. another 127/8 address).
pub fn connect_from(from: std::net::IpAddr, addr: &str) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType};
    let to: std::net::SocketAddr = addr.parse().unwrap();
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&fd, &std::net::SocketAddr::new(from, 0)).unwrap();
    rustix::net::connect(&fd, &to).unwrap();
    TcpStream::from(fd)
}

/// `raw` from the local address `from`.
pub fn raw_from(from: std::net::IpAddr, addr: &str, request: &[u8]) -> Resp {
    let mut s = connect_from(from, addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse(&buf)
}

/// A form POST as `post_form` sends it, as raw bytes.
pub fn form_request(path: &str, form: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .into_bytes()
}

/// Lines of the test PAM service's call log (tests/pam-setup.sh) that start with `user `.
pub fn pam_calls(user: &str) -> Vec<String> {
    let log = format!("/usr/local/lib/{PAM_SERVICE}/calls");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(&format!("{user} ")))
        .map(str::to_string)
        .collect()
}

/// Resident memory of process `pid` in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Raises this process's soft limit on open files to its hard limit (tests holding hundreds
/// of sockets; the daemons they start inherit it too).
pub fn raise_nofile() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let l = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: l.maximum,
            maximum: l.maximum,
        },
    );
}

/// Sends `request` on `s`, tolerating a server that closes before taking it all (an
/// oversized head), and reads until the server closes, at most 10 s.
pub fn exchange(mut s: impl Read + Write, request: &[u8]) -> Resp {
    let _ = s.write_all(request);
    read_answer(s)
}

fn read_answer(mut s: impl Read) -> Resp {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    parse(&buf)
}

/// `request` over the Unix socket `path` (a client of another source than 127/8).
pub fn raw_unix(path: &Path, request: &[u8]) -> Resp {
    let s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    exchange(s, request)
}

/// `request`, then shut the write side (as `nc -N` does), then read the answer.
pub fn half_closed(addr: &str, request: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    read_answer(s)
}

/// Asserts that `request`, sent by a client that half-closes after it, is answered `status`
/// 100 times in a row.
pub fn assert_half_closed_answered(addr: &str, request: &[u8], status: u16) {
    for i in 0..100 {
        let r = half_closed(addr, request);
        assert_eq!(r.status, status, "try {i}: {:?}", r.head);
    }
}

/// A head of about 100 KiB (one header line), refused with 431 (limit: 64 KiB).
pub fn assert_big_head_refused(addr: &str) {
    let req = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = exchange(s, req.as_bytes());
    assert_eq!(r.status, 431, "{:?}", r.head);
}

/// The slow-body attack: `n` connections from 127.0.0.1 to `addr` send `stall` (a head
/// announcing a longer body than follows) and then nothing. Meanwhile a client on the Unix
/// socket `unix` (another source) sends `real` 5 times and must get `want` within 1 s each;
/// then every stalled connection must be closed by the daemon within `body_timeout` plus
/// 15 s. Returns how many stalled connections got a 503 at once (over the per-source cap).
pub fn assert_slow_bodies_block_nobody(
    addr: &str,
    unix: &Path,
    stall: &[u8],
    real: &[u8],
    want: u16,
    n: usize,
    body_timeout: Duration,
) -> usize {
    raise_nofile();
    let start = Instant::now();
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        // Connections beyond the hard caps are closed at once: a failed write is fine.
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = s.write_all(stall);
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..5 {
        let t = Instant::now();
        let r = raw_unix(unix, real);
        assert_eq!(r.status, want, "real client, try {i}: {:?}", r.head);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "real client, try {i}: answered after {:?}",
            t.elapsed()
        );
    }
    assert!(
        start.elapsed() < body_timeout,
        "the stalled connections were not all open while the real client was served (took {:?}); use a longer body timeout",
        start.elapsed()
    );
    // Closed by the daemon: EOF (after a 503 or the handler's answer) or a reset.
    let deadline = Instant::now() + body_timeout + Duration::from_secs(15);
    let mut busy = 0;
    for (i, s) in conns.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    panic!(
                        "stalled connection {i} still open {:?} after the start",
                        start.elapsed()
                    )
                }
                Err(_) => break,
            }
        }
        if parse(&buf).status == 503 {
            busy += 1;
        }
    }
    busy
}

/// keysock(7): on SIGTERM a daemon stops accepting and lets the requests in progress finish.
/// `first` (a head and part of its body) is sent to `addr`, then SIGTERM to `pid`; once new
/// connections are refused, `rest`. Returns the answer (the caller checks it and the exit).
pub fn sigterm_midway(addr: &str, pid: u32, first: &[u8], rest: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(first).unwrap();
    // The daemon has read the head (and waits for the rest) before the signal comes: its
    // side of this connection has nothing left unread.
    let me = s.local_addr().unwrap().port();
    wait_for("the daemon to read the first part", || {
        server_sockets(addr)
            .iter()
            .any(|k| k.peer_port == me && k.unread == 0)
            .then_some(())
    });
    Command::new("kill").arg(pid.to_string()).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        Path::new(&format!("/proc/{pid}/status")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .contains("State:\tZ"),
        "exited with a request in progress"
    );
    s.write_all(rest).unwrap();
    read_answer(s)
}

/// A throw-away PostgreSQL cluster for the skd tests: `initdb` in a temporary directory as an
/// unprivileged user (nobody, when the tests run as root: PostgreSQL refuses root), listening
/// on a Unix socket in that directory only, stopped when dropped. Role `postgres` is the
/// superuser and logs in without a password; every other role needs its password (SCRAM).
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// `runuser -u nobody --` when root, nothing otherwise.
    as_user: Vec<String>,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .max_by_key(|b| {
                let v = b.parent().unwrap().file_name().unwrap().to_string_lossy().to_string();
                v.parse::<u32>().unwrap_or(0)
            })
            .expect("no /usr/lib/postgresql/*/bin/initdb: run scripts/install-deps.sh (Debian's postgresql)");
        let dir = tempfile::tempdir().unwrap();
        let as_user = if rustix::process::geteuid().is_root() {
            let ids = keysock::pam::lookup_ids("nobody");
            let (uid, gid) = (ids.uid.unwrap(), ids.gid.unwrap());
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
            vec!["runuser".into(), "-u".into(), "nobody".into(), "--".into()]
        } else {
            Vec::new()
        };
        let c = PgCluster { dir, bin, as_user };
        let data = c.data();
        c.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
                "--auth-local=trust",
            ],
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all postgres trust\nlocal all all scram-sha-256\n",
        )
        .unwrap();
        c.start_again();
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory of the server's socket (the URL's host).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// `--store` for database `db` as role `user`.
    pub fn url_as(&self, db: &str, user: &str) -> String {
        format!(
            "postgresql:///{db}?host={}&user={user}&sslmode=disable",
            self.socket_dir().display()
        )
    }

    /// `--store` for database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        self.url_as(db, "postgres")
    }

    /// Runs PostgreSQL's program `prog` as the cluster's owner; panics if it fails.
    fn run(&self, prog: &str, args: &[&str]) -> String {
        let mut argv: Vec<String> = self.as_user.clone();
        argv.push(path_str(&self.bin.join(prog)).to_string());
        argv.extend(args.iter().map(|s| s.to_string()));
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        assert!(
            out.status.success(),
            "{argv:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `sql` in database `db` as the superuser; returns the rows, `|`-separated.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let host = self.socket_dir().display().to_string();
        self.run(
            "psql",
            &[
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                &host,
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ],
        )
    }

    /// A new empty database.
    pub fn createdb(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// Stops the server (fast shutdown: clients are disconnected at once), waiting for it.
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-D", path_str(&self.data()), "-m", "fast", "-w", "stop"],
        );
    }

    /// Freezes (`STOP`) or thaws (`CONT`) the server and every backend: a hung database,
    /// whose connections stay open but never answer.
    pub fn signal_all(&self, sig: &str) {
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_string();
        // The postmaster's children: the processes whose /proc/PID/stat names it as parent.
        let mut pids = vec![pid.clone()];
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1));
            if ppid == Some(pid.as_str()) {
                pids.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .args(&pids)
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig} {pids:?}");
    }

    /// Starts the server, waiting until it takes connections.
    pub fn start_again(&self) {
        let opts = format!(
            "-k {} -c listen_addresses='' -c fsync=off",
            self.socket_dir().display()
        );
        let log = self.dir.path().join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data()),
                "-l",
                path_str(&log),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let mut argv: Vec<String> = self.as_user.clone();
        argv.push(path_str(&self.bin.join("pg_ctl")).to_string());
        let _ = Command::new(&argv[0])
            .args(&argv[1..])
            .args([
                "-D",
                path_str(&self.data()),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
