//! Helpers for the s5 tests: start s5d or the original s5server (from a virtual environment
//! cached under target/) on a loopback port, run s5 or the original s5client.
#![allow(dead_code)]

#[allow(unused_imports)]
pub use crate::common::{closed_port, free_port, root, with_free_port};

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn s5d() -> &'static str {
    env!("CARGO_BIN_EXE_s5d")
}

pub fn s5client() -> &'static str {
    env!("CARGO_BIN_EXE_s5client")
}

/// The original s5 0.0.3 (s5server, s5client) in a virtual environment under target/,
/// made once (PyPI) and reused; a lock file keeps concurrent test binaries apart.
pub fn venv() -> PathBuf {
    let dir = root().join("target/s5-venv");
    let ok = dir.join(".keysock-ok");
    if ok.exists() {
        return dir;
    }
    std::fs::create_dir_all(root().join("target")).unwrap();
    let lock = std::fs::File::create(root().join("target/s5-venv.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    if !ok.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let st = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .expect("python3 (Debian: python3-venv) is needed for the interop tests");
        assert!(st.success(), "python3 -m venv failed");
        let out = Command::new(dir.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "s5==0.0.3",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pip install s5==0.0.3 failed (PyPI reachable?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&ok, "s5==0.0.3\n").unwrap();
    }
    dir
}

pub fn original_s5client() -> PathBuf {
    venv().join("bin/s5client")
}

pub fn s5server() -> PathBuf {
    venv().join("bin/s5server")
}

/// A server process (s5d or s5server) on 127.0.0.1:port, killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub client_file: PathBuf,
}

impl Server {
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
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
    /// The client file's token text.
    pub fn token(&self) -> String {
        let t = std::fs::read_to_string(&self.client_file).unwrap();
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        v["token"].as_str().unwrap().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` (already given its program) with the original's flags on a fresh port, the
/// secret on standard input, in a new session (no controlling terminal, as under setsid).
pub fn start(program: &Path, secret: &[u8], extra: &[&str], env: &[(&str, &str)]) -> Server {
    // A port found free can be taken by a parallel test before the server binds it: then the
    // server exits, and another port is tried.
    for _ in 0..5 {
        if let Some(s) = try_start(program, secret, extra, env) {
            return s;
        }
    }
    panic!(
        "{} could not bind a free port in 5 tries",
        program.display()
    );
}

fn try_start(
    program: &Path,
    secret: &[u8],
    extra: &[&str],
    env: &[(&str, &str)],
) -> Option<Server> {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let client_file = dir.path().join("s5client.json");
    let mut cmd = Command::new("setsid");
    cmd.arg(program)
        .args(["--foreground", "--bind-address", "127.0.0.1"])
        .args([
            "--port-min",
            &port.to_string(),
            "--port-max",
            &port.to_string(),
        ])
        .arg("--client-file")
        .arg(&client_file)
        .arg("--logfile")
        .arg(dir.path().join("access.log"))
        .args(extra)
        .env("PYTHONUNBUFFERED", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
    let mut child = cmd.spawn().expect("spawn server");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(secret).unwrap();
    stdin.write_all(b"\n").unwrap();
    drop(stdin);
    let mut s = Server {
        child,
        port,
        dir,
        client_file,
    };
    s.wait_ready(extra.contains(&"--no-client-file"))
        .then_some(s)
}

impl Server {
    /// True once serving; false if the server exited first (its port was taken).
    fn wait_ready(&mut self, no_file: bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if (no_file || self.client_file.exists()) && TcpStream::connect(self.addr()).is_ok() {
                return true;
            }
            if self.child.try_wait().ok().flatten().is_some() {
                eprintln!(
                    "server exited before serving: {} {}",
                    self.stdout(),
                    self.stderr()
                );
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "server did not start on {}: {} {}",
            self.addr(),
            self.stdout(),
            self.stderr()
        );
    }
}

/// s5d with `secret` on standard input.
pub fn start_s5d(secret: &[u8], extra: &[&str]) -> Server {
    start(Path::new(s5d()), secret, extra, &[])
}

/// The original s5server with `secret` on standard input.
pub fn start_original(secret: &[u8], extra: &[&str]) -> Server {
    start(&s5server(), secret, extra, &[])
}

/// Runs a client (s5 or s5client) against `srv` with its client file and `--host 127.0.0.1`.
pub fn fetch_with(client: &Path, srv: &Server, extra: &[&str]) -> Output {
    Command::new(client)
        .arg("--client-file")
        .arg(&srv.client_file)
        .args(["--host", "127.0.0.1"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn fetch_s5(srv: &Server) -> Output {
    fetch_with(Path::new(s5client()), srv, &[])
}

/// Asserts a client printed exactly `secret` (no newline) and exited 0.
#[track_caller]
pub fn assert_got(o: &Output, secret: &[u8]) {
    assert!(
        o.status.success(),
        "client failed: {:?} stdout={:?} stderr={}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.stdout, secret, "stdout is exactly the secret");
}

/// Asserts a client printed `FAILED\n` and exited 1.
#[track_caller]
pub fn assert_failed(o: &Output) {
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "FAILED\n",
        "stderr={}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1));
}

/// Sends raw bytes, reads until the server closes (10 s at most); (status, head, body).
pub fn raw(addr: &str, request: &[u8]) -> (u16, String, Vec<u8>) {
    let r = crate::common::raw(addr, request);
    (r.status, r.head, r.body)
}

/// A `POST /` with `body` as the original client sends it.
pub fn post(addr: &str, body: &[u8], extra_headers: &str) -> (u16, String, Vec<u8>) {
    let mut req = format!(
        "POST / HTTP/1.1\r\nAccept-Encoding: identity\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nHost: {addr}\r\nUser-Agent: Python-urllib/3.11\r\nConnection: close\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    raw(addr, &req)
}

/// Base64 decoding for tests (standard alphabet, padded).
pub fn b64d(s: &str) -> Vec<u8> {
    keysock::s5::wire::b64decode(s.as_bytes()).unwrap().to_vec()
}
