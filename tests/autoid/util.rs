//! Helpers for the autoid tests: a server directory (RSA key pair from build-key-pair, an
//! entropy file from `autoidd gen-entropy`, a secrets directory), autoidd started through
//! systemd-socket-activate, autoid runs, and hand-built v1 requests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use crate::common::*;

pub fn autoidd() -> &'static str {
    env!("CARGO_BIN_EXE_autoidd")
}

pub fn autoid() -> &'static str {
    env!("CARGO_BIN_EXE_autoid")
}

pub fn build_key_pair() -> &'static str {
    env!("CARGO_BIN_EXE_build-key-pair")
}

pub const SECRET: &str = "test-secret-value1,test-secret-value2";

/// A server's files in a temporary directory.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn new() -> Setup {
        let s = Setup {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(s.secrets()).unwrap();
        s.new_key("autoid");
        s.gen_entropy(&s.entropy());
        s.put_secret("test-secret", SECRET);
        s
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn key(&self) -> PathBuf {
        self.path("autoid_key.pem")
    }
    /// The OpenSSH `ssh-rsa` line, as the original's public.pem.
    pub fn public(&self) -> PathBuf {
        self.path("autoid.pub")
    }
    pub fn public_pem(&self) -> PathBuf {
        self.path("autoid.pem")
    }
    pub fn entropy(&self) -> PathBuf {
        self.path("info2048.bin")
    }
    pub fn secrets(&self) -> PathBuf {
        self.path("secrets")
    }

    /// `build-key-pair --type rsa PREFIX DIR`, no password.
    pub fn new_key(&self, prefix: &str) {
        let o = Command::new(build_key_pair())
            .args(["--type", "rsa", prefix])
            .arg(self.dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "build-key-pair: {o:?}");
    }

    pub fn gen_entropy(&self, file: &Path) {
        let o = self.gen_entropy_with(file, &[]);
        assert!(o.status.success(), "gen-entropy: {o:?}");
    }

    /// `autoidd gen-entropy [EXTRA...] FILE`.
    pub fn gen_entropy_with(&self, file: &Path, extra: &[&str]) -> std::process::Output {
        Command::new(autoidd())
            .arg("gen-entropy")
            .args(extra)
            .arg(file)
            .output()
            .unwrap()
    }

    pub fn put_secret(&self, id: &str, value: &str) {
        keysock::privfile::write_private(&self.secrets().join(id), value.as_bytes()).unwrap();
    }

    pub fn args(&self) -> Vec<String> {
        vec![
            "--key".into(),
            path_str(&self.key()).into(),
            "--entropy".into(),
            path_str(&self.entropy()).into(),
            "--secrets".into(),
            path_str(&self.secrets()).into(),
        ]
    }

    /// autoidd socket-activated on a loopback port, with `extra` options.
    pub fn start(&self, extra: &[&str]) -> Daemon {
        let mut args = self.args();
        args.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        Daemon::activated(autoidd(), &a, &[])
    }
}

/// Runs autoid against `d` with `entropy` and `key`.
pub fn fetch(
    d: &Daemon,
    path: &str,
    entropy: &Path,
    key: &Path,
    extra: &[&str],
    id: &str,
) -> Output {
    Command::new(autoid())
        .arg("--url")
        .arg(format!("http://{}{path}", d.addr))
        .arg("--entropy")
        .arg(entropy)
        .arg("--server-key")
        .arg(key)
        .args(extra)
        .arg(id)
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn post_json(addr: &str, path: &str, body: &[u8]) -> Resp {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    raw(addr, &req)
}

pub fn read_public(p: &Path) -> openssl::pkey::PKey<openssl::pkey::Public> {
    keysock::keyfile::read_public(p).unwrap()
}

/// A v1 request with chosen intervals and hash, built with only the public key (the
/// attacker of specs/auto-id.md §5). Returns the body and the AES key of the answer.
pub fn v1_body(key: &Path, intervals: &str, hashval: &str, source: &str) -> (String, [u8; 32]) {
    use keysock::autoid::wire;
    let pk = read_public(key);
    let pass = wire::random_passphrase();
    let inner = wire::Inner {
        hashval: hashval.into(),
        intervals: intervals.into(),
        credential_source: source.into(),
    };
    let body = wire::v1_request(&pk, &pass, &inner).unwrap();
    (body, *wire::v1_key(pass.as_bytes()))
}
