//! s5: the SciNet Super Simple Secrets Server protocol (specs/s5.md), both ends.
//!
//! - [`wire`]: the token, the v1 answer of the original and our authenticated v2 answer;
//! - [`server`]: what `s5d` serves on TCP (`POST /`) and on its local control socket;
//! - [`client`]: fetching a secret (`s5client`), and handing one to a running `s5d` (`s5d put`).
//!
//! The client file (`~/.s5client.json`) is shared by both ends and by the original programs.

pub mod client;
pub mod server;
pub mod wire;

use std::path::PathBuf;

pub const DEFAULT_PORT_MIN: u16 = 13500;
pub const DEFAULT_PORT_MAX: u16 = 13599;
pub const DEFAULT_CLIENT_FILE: &str = "~/.s5client.json";
pub const DEFAULT_LOGFILE: &str = "~/s5server.log";
/// Longest secret accepted from any source (v2 answers carry any length up to this).
pub const MAX_SECRET: usize = 64 * 1024;
/// Name of the systemd credential holding the secret (`$CREDENTIALS_DIRECTORY/s5-secret`).
pub const CREDENTIAL: &str = "s5-secret";

/// `~` and `~/...` expanded with `$HOME`, or without it the user's home directory from the
/// passwd database (as Python's `os.path.expanduser`).
pub fn expand_tilde(p: &str) -> PathBuf {
    expand_tilde_in(p, home_dir(std::env::var_os("HOME")))
}

/// `$HOME` (`env`), else the passwd database's home directory of our user.
fn home_dir(env: Option<std::ffi::OsString>) -> Option<PathBuf> {
    env.map(PathBuf::from).or_else(|| {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.dir)
    })
}

/// [`expand_tilde`] with `home` for the home directory (none: `~` stays as it is).
fn expand_tilde_in(p: &str, home: Option<PathBuf>) -> PathBuf {
    match (p.strip_prefix('~'), home) {
        (Some(""), Some(h)) => h,
        (Some(rest), Some(h)) if rest.starts_with('/') => h.join(&rest[1..]),
        _ => PathBuf::from(p),
    }
}

/// This machine's host name, as the original writes it into the client file.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Where `s5d put` finds s5d's control socket: `/run/s5d.sock` for root (the system unit),
/// else `$XDG_RUNTIME_DIR/s5d.sock` (the user unit).
pub fn default_control_path() -> PathBuf {
    let uid = rustix::process::geteuid().as_raw();
    if uid == 0 {
        return PathBuf::from("/run/s5d.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("s5d.sock"),
        _ => PathBuf::from(format!("/run/user/{uid}/s5d.sock")),
    }
}

/// The connection details of one running server: the content of the client file.
#[derive(Clone)]
pub struct ClientFile {
    pub host: String,
    pub bind_address: String,
    pub port: u16,
    /// Base64 text of the 96-byte token.
    pub token: zeroize::Zeroizing<String>,
    /// The server answers v2 (s5d): written as `"protocol": 2`, a key the original client
    /// ignores (it reads only host, port and token), so that s5 refuses a v1 answer, which
    /// only a downgrade on the way could bring, for this token.
    pub v2: bool,
}

impl std::fmt::Debug for ClientFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientFile({}:{})", self.host, self.port)
    }
}

impl ClientFile {
    /// One line of JSON as the original's `json.dump` writes it (Python's default
    /// separators, key order host, bind_address, port, token; no newline), then
    /// `"protocol": 2` for a v2 server.
    pub fn to_json(&self) -> zeroize::Zeroizing<String> {
        let s = |v: &str| serde_json::Value::String(v.to_string()).to_string();
        zeroize::Zeroizing::new(format!(
            "{{\"host\": {}, \"bind_address\": {}, \"port\": {}, \"token\": {}{}}}",
            s(&self.host),
            s(&self.bind_address),
            self.port,
            s(&self.token),
            if self.v2 { ", \"protocol\": 2" } else { "" }
        ))
    }
}

/// What a client takes from a client file: every key optional (command-line flags fill in).
#[derive(Default, Debug)]
pub struct ClientFileIn {
    pub host: Option<String>,
    pub bind_address: Option<String>,
    pub port: Option<String>,
    pub token: Option<zeroize::Zeroizing<String>>,
    /// `"protocol"` is 2 or more: the server of this token answers v2.
    pub v2: bool,
}

/// Parses a client file written by s5d, s5d put or the original s5server.
pub fn parse_client_file(text: &str) -> Result<ClientFileIn, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let str_of = |k: &str| -> Result<Option<String>, String> {
        match obj.get(k) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(format!("\"{k}\" is neither a string nor a number")),
        }
    };
    Ok(ClientFileIn {
        host: str_of("host")?,
        bind_address: str_of("bind_address")?,
        port: str_of("port")?,
        token: str_of("token")?.map(zeroize::Zeroizing::new),
        v2: match obj.get("protocol") {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Number(n)) => n.as_u64().is_some_and(|v| v >= 2),
            Some(_) => return Err("\"protocol\" is not a number".into()),
        },
    })
}

/// Where s5d takes the secret from (`--secret-from`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// One line of standard input, or the terminal with echo off when stdin is one.
    Prompt,
    /// `$CREDENTIALS_DIRECTORY/s5-secret` (systemd `LoadCredential=`/`SetCredential=`).
    Credential,
    /// `s5d put` over the control socket, after start-up.
    Put,
}

/// The credential file, if systemd passed one.
pub fn credential_path() -> Option<PathBuf> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let p = PathBuf::from(dir).join(CREDENTIAL);
    p.exists().then_some(p)
}

/// Reads the secret from a credential file; one trailing newline is dropped.
pub fn read_credential(path: &std::path::Path) -> std::io::Result<crate::locked::Locked> {
    let f = std::fs::File::open(path)?;
    let mut s = crate::locked::read_all(&f, MAX_SECRET)?;
    if s.as_bytes().last() == Some(&b'\n') {
        s.truncate(s.len() - 1);
    }
    Ok(s)
}

/// Reads the secret: one line of standard input when it is not a terminal (a pipe, a file,
/// s5server under setsid); else the prompt `Enter secret: ` on the terminal with echo off.
pub fn read_prompted() -> std::io::Result<crate::locked::Locked> {
    let stdin = std::io::stdin();
    if !rustix::termios::isatty(&stdin) {
        return crate::locked::read_line(stdin, MAX_SECRET);
    }
    crate::locked::prompt_or_stdin("Enter secret: ", MAX_SECRET)
}

/// Why [`bind_port_range`] bound nothing.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("--bind-address {0:?} is not an IP address")]
    NotAnIp(String),
    #[error("--port-min {0} is above --port-max {1}")]
    EmptyRange(u16, u16),
    #[error("{0}: {1}")]
    Socket(String, std::io::Error),
    #[error("could not find a free port in {min}-{max} on {addr}: {last}")]
    NoFreePort {
        min: u16,
        max: u16,
        addr: String,
        last: String,
    },
}

/// Binds the first free port of `min..=max` on `addr`, as s5server does.
pub fn bind_port_range(addr: &str, min: u16, max: u16) -> Result<std::net::TcpListener, BindError> {
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| BindError::NotAnIp(addr.to_string()))?;
    if min > max {
        return Err(BindError::EmptyRange(min, max));
    }
    let mut last = None;
    for port in min..=max {
        match std::net::TcpListener::bind((ip, port)) {
            Ok(l) => {
                return l
                    .set_nonblocking(true)
                    .map(|_| l)
                    .map_err(|e| BindError::Socket(format!("{addr}:{port}"), e))
            }
            Err(e) => last = Some(e),
        }
    }
    Err(BindError::NoFreePort {
        min,
        max,
        addr: addr.to_string(),
        last: last.map(|e| e.to_string()).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_file_is_byte_identical_to_the_originals() {
        let f = ClientFile {
            host: "vm".into(),
            bind_address: "127.0.0.1".into(),
            port: 13500,
            token: zeroize::Zeroizing::new("A".repeat(128)),
            v2: false,
        };
        let want = format!(
            "{{\"host\": \"vm\", \"bind_address\": \"127.0.0.1\", \"port\": 13500, \"token\": \"{}\"}}",
            "A".repeat(128)
        );
        assert_eq!(*f.to_json(), want);
        let back = parse_client_file(&want).unwrap();
        assert_eq!(back.host.as_deref(), Some("vm"));
        assert_eq!(back.port.as_deref(), Some("13500"));
        assert_eq!(back.token.unwrap().as_str(), "A".repeat(128));
        assert!(!back.v2);
        // s5d's: the same, and the protocol key last.
        let f = ClientFile { v2: true, ..f };
        let v2 = format!("{}, \"protocol\": 2}}", &want[..want.len() - 1]);
        assert_eq!(*f.to_json(), v2);
        assert!(parse_client_file(&v2).unwrap().v2);
        assert!(!parse_client_file("{\"protocol\": 1}").unwrap().v2);
        assert!(parse_client_file("{\"protocol\": \"2\"}").is_err());
        assert!(parse_client_file("[1]").is_err());
        assert!(parse_client_file("{\"port\": [1]}").is_err());
    }

    #[test]
    fn tilde_expands_with_home() {
        let h = || Some(PathBuf::from("/home/u"));
        assert_eq!(expand_tilde_in("~/x", h()), PathBuf::from("/home/u/x"));
        assert_eq!(expand_tilde_in("~", h()), PathBuf::from("/home/u"));
        assert_eq!(expand_tilde_in("~x", h()), PathBuf::from("~x"));
        assert_eq!(expand_tilde_in("/a/~", h()), PathBuf::from("/a/~"));
        // Without a home directory, nothing is expanded.
        assert_eq!(expand_tilde_in("~/x", None), PathBuf::from("~/x"));
    }

    #[test]
    fn without_home_the_passwd_home_directory() {
        assert_eq!(home_dir(Some("/h".into())), Some(PathBuf::from("/h")));
        // As getent(1) reads the passwd database.
        let uid = nix::unistd::getuid().to_string();
        let out = std::process::Command::new("getent")
            .args(["passwd", &uid])
            .output()
            .expect("getent runs");
        let line = String::from_utf8(out.stdout).unwrap();
        let dir = line.trim_end().split(':').nth(5).expect("a passwd line");
        assert_eq!(home_dir(None), Some(PathBuf::from(dir)));
    }
}
