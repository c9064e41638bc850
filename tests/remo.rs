//! remod, remo, add-user and build-key-pair end to end: keys and database as the originals
//! make them (checked with openssl and sqlite3), every client command against the daemon,
//! 5 MiB transfers byte for byte, an interactive session with half-close, and the fixes
//! (replay refused, one answer for unknown users and bad signatures, no unauthenticated
//! requests, user mapping, allowlist, session key never logged).

use crate::common::*;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use keysock::remo::wire::{self, Fernet, Head};

fn remod() -> &'static str {
    env!("CARGO_BIN_EXE_remod")
}
fn remo_bin() -> &'static str {
    env!("CARGO_BIN_EXE_remo")
}
fn add_user() -> &'static str {
    env!("CARGO_BIN_EXE_add-user")
}
fn build_key_pair() -> &'static str {
    env!("CARGO_BIN_EXE_build-key-pair")
}

fn me() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap()
        .name
}

/// Runs a program in `dir` with `stdin` as its standard input.
fn run_in(dir: &Path, prog: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut c = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin).unwrap();
    c.wait_with_output().unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
    d: Daemon,
}

impl Setup {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn port(&self) -> String {
        self.d.addr.rsplit(':').next().unwrap().to_string()
    }
    /// remo as alice with `args`, to be spawned (for clients that run in the background).
    fn remo_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(remo_bin());
        c.current_dir(self.dir.path())
            .args([
                "127.0.0.1",
                &self.port(),
                "-s",
                "remo_serv.pem",
                "-u",
                "alice",
            ])
            .args(["-k", "alice_key.pem", "--password-file", "pw"])
            .args(args);
        c
    }
    /// remo as `user` with its key, password `foo` from a file.
    fn remo(&self, user: &str, args: &[&str], stdin: &[u8]) -> Output {
        let port = self.port();
        let key = format!("{user}_key.pem");
        let mut a = vec![
            "127.0.0.1",
            port.as_str(),
            "-s",
            "remo_serv.pem",
            "-u",
            user,
            "-k",
            key.as_str(),
            "--password-file",
            "pw",
        ];
        a.extend_from_slice(args);
        run_in(self.dir.path(), remo_bin(), &a, stdin)
    }
}

/// build-key-pair never replaces a key silently: exit 73 (CANTCREAT), the key unchanged;
/// --force replaces it.
#[test]
fn build_key_pair_refuses_to_replace_a_key_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let o = run_in(p, build_key_pair(), &["remo_serv"], b"\n");
    assert!(o.status.success(), "{o:?}");
    let key = std::fs::read(p.join("remo_serv_key.pem")).unwrap();
    let o = run_in(p, build_key_pair(), &["remo_serv"], b"\n");
    assert_eq!(o.status.code(), Some(73), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("build-key-pair: ./remo_serv_key.pem: exists") && err.contains("--force"),
        "{err}"
    );
    assert!(std::fs::read(p.join("remo_serv_key.pem")).unwrap() == key);
    let o = run_in(p, build_key_pair(), &["--force", "remo_serv"], b"\n");
    assert!(o.status.success(), "{o:?}");
    assert!(std::fs::read(p.join("remo_serv_key.pem")).unwrap() != key);
}

/// Keys and a database made with our tools; remod started on them.
fn setup(extra: &[&str]) -> Setup {
    setup_with(extra, false)
}

/// As [`setup`]; with `leak_fd`, remod inherits descriptor 7 without close-on-exec (as from
/// a careless shell).
fn setup_with(extra: &[&str], leak_fd: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let o = run_in(p, build_key_pair(), &["remo_serv"], b"\n");
    assert!(o.status.success(), "{o:?}");
    for u in ["alice", "limited", "unmapped"] {
        let o = run_in(p, build_key_pair(), &[u], b"foo\n");
        assert!(o.status.success(), "{o:?}");
    }
    std::fs::write(p.join("pw"), "foo\n").unwrap();
    let me = me();
    let o = run_in(p, add_user(), &["alice", "--unix-user", &me], b"");
    assert!(o.status.success(), "{o:?}");
    let o = run_in(
        p,
        add_user(),
        &[
            "-b",
            "users_db",
            "limited",
            "limited.pem",
            "-U",
            &me,
            "--allow",
            "echo,@get",
        ],
        b"",
    );
    assert!(o.status.success(), "{o:?}");
    let o = run_in(p, add_user(), &["unmapped"], b"");
    assert!(o.status.success(), "{o:?}");
    let key = p.join("remo_serv_key.pem");
    let db = format!("SqliteUserService:{}", p.join("users_db.sqlite").display());
    let mut args = vec!["-k", path_str(&key), "-u", db.as_str(), "-d"];
    args.extend_from_slice(extra);
    let d = if leak_fd {
        Daemon::on_free_port(|addr| {
            let mut c = Command::new("/bin/sh");
            c.args(["-c", "exec 7</etc/hostname; exec \"$0\" \"$@\""])
                .arg(remod())
                .args(["--listen", addr])
                .args(&args);
            c
        })
    } else {
        Daemon::direct(remod(), &args)
    };
    Setup { dir, d }
}

#[test]
fn keys_and_database_load_in_openssl_and_sqlite3() {
    let s = setup(&[]);
    let o = Command::new("openssl")
        .args([
            "pkey",
            "-in",
            path_str(&s.path("alice_key.pem")),
            "-passin",
            "pass:foo",
            "-pubout",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(o.stdout, std::fs::read(s.path("alice.pem")).unwrap());
    let o = Command::new("openssl")
        .args(["asn1parse", "-in", path_str(&s.path("alice_key.pem"))])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(
        t.contains("PBES2") && t.contains("hmacWithSHA256") && t.contains("aes-256-cbc"),
        "{t}"
    );
    let o = Command::new("openssl")
        .args([
            "pkey",
            "-in",
            path_str(&s.path("remo_serv_key.pem")),
            "-noout",
            "-text",
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ED448"),
        "{o:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    for k in ["alice_key.pem", "remo_serv_key.pem"] {
        let m = std::fs::metadata(s.path(k)).unwrap().permissions().mode();
        assert_eq!(m & 0o777, 0o600, "{k}");
    }
    // The public key is stored as the raw PEM bytes, a BLOB, as the original does.
    let o = Command::new("sqlite3")
        .arg(s.path("users_db.sqlite"))
        .arg("SELECT user, typeof(pub), length(pub), unix_user FROM users ORDER BY id")
        .output()
        .expect("sqlite3");
    let t = String::from_utf8_lossy(&o.stdout);
    let me = me();
    assert_eq!(
        t,
        format!("alice|blob|146|{me}\nlimited|blob|146|{me}\nunmapped|blob|146|\n")
    );
    let o = Command::new("sqlite3")
        .arg(s.path("users_db.sqlite"))
        .arg("SELECT pub FROM users WHERE user='alice'")
        .output()
        .unwrap();
    assert_eq!(
        o.stdout,
        [std::fs::read(s.path("alice.pem")).unwrap(), b"\n".to_vec()].concat()
    );
    // A second add of the same user is refused.
    let o = run_in(s.dir.path(), add_user(), &["alice"], b"");
    assert_eq!(o.status.code(), Some(65), "{o:?}");
}

#[test]
fn every_command_and_5mib_transfers() {
    let s = setup(&[]);
    let o = s.remo(
        "alice",
        &["exec", "sh", "-c", "echo out; echo err >&2; exit 3"],
        b"",
    );
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert_eq!(o.stdout, b"out\nerr\n");
    let o = s.remo("alice", &["exec", "id", "-un"], b"");
    assert_eq!(
        (o.status.code(), String::from_utf8_lossy(&o.stdout).trim()),
        (Some(0), me().as_str())
    );
    let o = s.remo("alice", &["info"], b"");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "remo_serv 0.6.0 here\n");

    let mut big = vec![0u8; 5 << 20];
    openssl::rand::rand_bytes(&mut big).unwrap();
    std::fs::write(s.path("big"), &big).unwrap();
    let up = s.path("uploaded");
    let o = s.remo("alice", &["put", path_str(&up), "big"], b"");
    assert!(o.status.success(), "{o:?}");
    assert!(std::fs::read(&up).unwrap() == big, "put changed the data");
    let o = s.remo("alice", &["get", path_str(&s.path("big")), "fetched"], b"");
    assert!(o.status.success(), "{o:?}");
    assert!(
        std::fs::read(s.path("fetched")).unwrap() == big,
        "get changed the data"
    );

    // The interactive loop from a pipe: the first line is the key's password (no terminal).
    let script = format!(
        "foo\nexec echo hi there\nget {} small\nput {} big\nset_encoding latin_1\niexec sort\nidata b\nidata a\niend\nexec printf x\nget /nonexistent/file nf\nbogus\nquit\nexec echo not reached\n",
        path_str(&s.path("pw")),
        path_str(&s.path("up2")),
    );
    let port = s.port();
    let o = run_in(
        s.dir.path(),
        remo_bin(),
        &[
            "127.0.0.1",
            &port,
            "-s",
            "remo_serv.pem",
            "-u",
            "alice",
            "-k",
            "alice_key.pem",
        ],
        script.as_bytes(),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{o:?}");
    // sort prints nothing before its input is half-closed by iend.
    assert_eq!(
        out, "hi there\na\nb\nx\n*** Unknown syntax: bogus\n",
        "stderr: {err}"
    );
    assert!(
        err.contains("HTTP Error 404") && err.contains("No such file"),
        "{err}"
    );
    assert_eq!(std::fs::read(s.path("small")).unwrap(), b"foo\n");
    assert!(std::fs::read(s.path("up2")).unwrap() == big);
    assert!(!s.path("nf").exists(), "no file left by a failed get");
    // Interactive output before the end, and a process that exits by itself.
    let o = s.remo(
        "alice",
        &[],
        b"iexec sh -c 'echo ready; read x; echo got $x'\nidata one\nidata two\niend\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "ready\ngot one\n",
        "{o:?}"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("HTTP Error 400"),
        "{o:?}"
    );
    let log = s.d.log_text();
    assert!(
        log.contains("login user=alice") && log.contains("put user=alice"),
        "{log}"
    );
}

/// A logged-in raw session: cookie and session key, for hand-made requests.
struct Raw {
    addr: String,
    cookie: String,
    f: Fernet,
}

fn raw_login(s: &Setup, user: &str) -> Result<Raw, Resp> {
    let key = keysock::keyfile::read_private_pem(&s.path(&format!("{user}_key.pem")), Some(b"foo"))
        .unwrap();
    let (eph, eph_pub) = wire::x448_generate().unwrap();
    let body = wire::auth_body(user, &eph_pub, &key).unwrap();
    let r = post_form(&s.d.addr, "/auth", &body);
    if r.status != 200 {
        return Err(r);
    }
    let cookie = r
        .head
        .lines()
        .find_map(|l| l.strip_prefix("Set-Cookie: SESSION_ID="))
        .unwrap()
        .trim()
        .to_string();
    let server = keysock::keyfile::read_public(&s.path("remo_serv.pem")).unwrap();
    let spub = wire::check_auth_answer(&server, &r.body).unwrap();
    let z = wire::x448_shared(&eph, &spub).unwrap();
    Ok(Raw {
        addr: s.d.addr.clone(),
        cookie,
        f: wire::session_fernet(&z),
    })
}

impl Raw {
    fn request(&self, path: &str, req: i16, payload: &[u8]) -> Vec<u8> {
        let h = Head {
            first: true,
            last: true,
            req,
            tok: 0,
        };
        let tok = self.f.encrypt(&wire::request_plain(h, path, payload));
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: SESSION_ID={c}; SESSION_ID={c}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{tok}",
            tok.len(),
            c = self.cookie
        )
        .into_bytes()
    }
    fn cmd_path(&self, cmd: &str) -> String {
        format!("/cmd/{}", self.f.encrypt(cmd.as_bytes()))
    }
    /// Decrypts a chunked framed answer: (status digits, payload).
    fn decode(&self, r: &Resp) -> (String, Vec<u8>) {
        let mut status = String::new();
        let mut out = Vec::new();
        for line in dechunk(&r.body).split(|&b| b == b'\n') {
            if line.len() < 20 {
                continue;
            }
            let p = self
                .f
                .decrypt(line, Some(wire::TTL))
                .expect("token decrypts");
            let (h, rest) = Head::parse(&p).unwrap();
            if h.first {
                status = String::from_utf8_lossy(&rest[..3]).into_owned();
                out.extend_from_slice(&rest[3..]);
            } else if !h.last {
                out.extend_from_slice(rest);
            }
        }
        (status, out)
    }
}

fn dechunk(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = b;
    while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&rest[..i]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&rest[i + 2..i + 2 + n]);
        rest = &rest[i + 4 + n..];
    }
    out
}

#[test]
fn replay_and_unauthenticated_requests_are_refused() {
    let s = setup(&[]);
    let raw = raw_login(&s, "alice").unwrap();
    let path = raw.cmd_path("echo once");
    let req1 = raw.request(&path, 1, b"");
    let r = raw_bytes(&raw.addr, &req1);
    assert_eq!(r.status, 200, "{r:?}");
    // The original client needs: no Content-Length, chunked, the real status in the token.
    assert!(
        !r.head.to_ascii_lowercase().contains("content-length"),
        "{}",
        r.head
    );
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{}",
        r.head
    );
    assert_eq!(raw.decode(&r), ("200".to_string(), b"once\n".to_vec()));
    // The same bytes again: refused; the session survives for the next number.
    let again = raw_bytes(&raw.addr, &req1);
    assert_eq!(again.status, 400, "{again:?}");
    // Skipping a number (reordering) is refused too.
    let r3 = raw_bytes(&raw.addr, &raw.request(&raw.cmd_path("echo three"), 3, b""));
    assert_eq!(r3.status, 400);
    let r2 = raw_bytes(&raw.addr, &raw.request(&raw.cmd_path("echo two"), 2, b""));
    assert_eq!(raw.decode(&r2), ("200".to_string(), b"two\n".to_vec()));
    // A token for another path is refused.
    let other = raw.cmd_path("echo y");
    let forged = String::from_utf8(raw.request(&raw.cmd_path("echo x"), 3, b"")).unwrap();
    let p0 = forged.split(' ').nth(1).unwrap().to_string();
    let r = raw_bytes(&raw.addr, forged.replace(&p0, &other).as_bytes());
    assert_eq!(r.status, 400);
    // A bodiless /get with only the cookie (weakness 1) is refused.
    let get = format!(
        "GET /get/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: SESSION_ID={}\r\n\r\n",
        raw.f.encrypt(path_str(&s.path("pw")).as_bytes()),
        raw.cookie
    );
    let r = raw_bytes(&raw.addr, get.as_bytes());
    assert_eq!(
        (r.status, r.text()),
        (400, "Missing magic tokens".to_string())
    );
    // Without a session: 403 everywhere but /info.
    assert_eq!(get_plain(&raw.addr, "/cmd/x").status, 403);
    let info = get_plain(&raw.addr, "/info");
    assert_eq!(
        (info.status, dechunk(&info.body)),
        (200, b"remo_serv 0.6.0 here".to_vec())
    );
    // A damaged upload leaves the target as it was, and no temporary file behind.
    std::fs::write(s.path("keep"), "old").unwrap();
    let put = format!(
        "/put/{}",
        raw.f.encrypt(path_str(&s.path("keep")).as_bytes())
    );
    let h = Head {
        first: true,
        last: false,
        req: 3,
        tok: 0,
    };
    let t0 = raw.f.encrypt(&wire::request_plain(h, &put, b"new data"));
    let h1 = Head {
        first: false,
        last: true,
        req: 3,
        tok: 2,
    };
    let t1 = raw.f.encrypt(&wire::request_plain(h1, &put, b""));
    let body = format!("{t0}\r\n{t1}");
    let req = format!(
        "POST {put} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: SESSION_ID={}\r\nContent-Length: {}\r\n\r\n{body}",
        raw.cookie,
        body.len()
    );
    let r = raw_bytes(&raw.addr, req.as_bytes());
    assert_eq!(raw.decode(&r).0, "400", "{r:?}");
    assert_eq!(std::fs::read_to_string(s.path("keep")).unwrap(), "old");
    let leftovers: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The session key never appears in the log.
    let log = s.d.log_text();
    assert!(!log.contains(&raw.f.key_b64()), "session key logged");
    assert!(log.contains("reason=request-number"), "{log}");
}

fn raw_bytes(addr: &str, req: &[u8]) -> Resp {
    raw(addr, req)
}

fn get_plain(addr: &str, path: &str) -> Resp {
    get(addr, path)
}

#[test]
fn failed_logins_look_alike_and_mapping_and_allowlist_hold() {
    let s = setup(&["--login-failures", "100"]);
    // Unknown user, bad signature, bad base64: the same empty 403.
    let key = keysock::keyfile::read_private_pem(&s.path("alice_key.pem"), Some(b"foo")).unwrap();
    let (_, eph_pub) = wire::x448_generate().unwrap();
    let unknown = wire::auth_body("mallory", &eph_pub, &key).unwrap();
    let badsig = wire::auth_body("alice", &eph_pub, &key)
        .unwrap()
        .replace("\"alice\"", "\"limited\"");
    let badb64 = "{\"user\": \"alice\", \"key\": \"!!!\", \"sign\": \"???\"}";
    let answers: Vec<(u16, Vec<u8>)> = [unknown.as_str(), badsig.as_str(), badb64]
        .iter()
        .map(|b| {
            let r = post_form(&s.d.addr, "/auth", b);
            (r.status, r.body)
        })
        .collect();
    assert_eq!(answers, vec![(403, vec![]); 3]);
    assert_eq!(post_form(&s.d.addr, "/auth", "not json").status, 400);
    // An answer not signed by the server's key is refused by remo.
    let port = s.port();
    let o = run_in(
        s.dir.path(),
        remo_bin(),
        &[
            "127.0.0.1",
            &port,
            "-s",
            "alice.pem",
            "-u",
            "alice",
            "-k",
            "alice_key.pem",
            "--password-file",
            "pw",
            "info",
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(76), "{o:?}");
    // A wrong key password is an error, not a login.
    std::fs::write(s.path("badpw"), "bar\n").unwrap();
    let o = run_in(
        s.dir.path(),
        remo_bin(),
        &[
            "127.0.0.1",
            &port,
            "-u",
            "alice",
            "-k",
            "alice_key.pem",
            "--password-file",
            "badpw",
            "info",
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(65), "{o:?}");
    // A user the database maps to no Unix account is refused (no default set).
    assert!(matches!(raw_login(&s, "unmapped"), Err(r) if r.status == 403));
    assert!(s.d.log_text().contains("reason=no-unix-user-mapping"));
    // Allowlist: echo and @get only.
    let o = s.remo("limited", &["exec", "echo", "fine"], b"");
    assert_eq!(
        (o.status.code(), o.stdout.as_slice()),
        (Some(0), &b"fine\n"[..]),
        "{o:?}"
    );
    let o = s.remo("limited", &["exec", "id"], b"");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("HTTP Error 403"),
        "{o:?}"
    );
    assert_ne!(o.status.code(), Some(0));
    let o = s.remo("limited", &["put", "x", "pw"], b"");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("HTTP Error 403"),
        "{o:?}"
    );
    let o = s.remo("limited", &["get", path_str(&s.path("pw")), "copy"], b"");
    assert!(o.status.success(), "{o:?}");
}

#[test]
fn default_unix_user_and_switching_when_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (remod switches to the mapped users)"
    );
    let s = setup(&["--default-unix-user", "nobody"]);
    let o = s.remo("unmapped", &["exec", "id", "-un"], b"");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "nobody", "{o:?}");
    // Files are read as the mapped user too.
    std::fs::write(s.path("secret"), "x").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(s.path("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = s.remo(
        "unmapped",
        &["get", path_str(&s.path("secret")), "/tmp/never"],
        b"",
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("HTTP Error 403"),
        "{o:?}"
    );
}

#[test]
fn original_client_stand_in_works_unchanged() {
    let s = setup(&[]);
    let mut data = vec![0u8; 200_000];
    openssl::rand::rand_bytes(&mut data).unwrap();
    std::fs::write(s.path("local.bin"), &data).unwrap();
    let o = Command::new("python3")
        .arg(root().join("tests/remo/spec_client.py"))
        .arg(s.port())
        .arg(s.path("remo_serv.pem"))
        .arg("alice")
        .arg(s.path("alice_key.pem"))
        .arg(s.dir.path())
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "spec_client.py: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want = serde_json::json!([
        ["exec", 200, "hi there\n"],
        ["get", 200, "200000"],
        ["put", 200, ""],
        ["exec-status", 200, "out\n"],
        ["iexec", 200, ""],
        ["idata", 200, "hello\n"],
        ["iend", 200, ""],
        ["missing", 404, ""],
        ["info", 200, "remo_serv 0.6.0 here"]
    ]);
    assert_eq!(serde_json::Value::Array(lines), want);
    assert!(
        std::fs::read(s.path("fetched.bin")).unwrap() == data,
        "get corrupted"
    );
    assert!(
        std::fs::read(s.path("put.bin")).unwrap() == data,
        "put corrupted"
    );
}

#[test]
fn commands_get_only_descriptors_0_1_2() {
    let s = setup_with(&[], true);
    let o = s.remo("alice", &["exec", "sh", "-c", "ls -l /proc/$$/fd/"], b"");
    assert!(o.status.success(), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    let fds: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once(" -> "))
        .filter_map(|(a, _)| a.rsplit(' ').next())
        .collect();
    assert_eq!(fds, ["0", "1", "2"], "{out}");
}

#[test]
fn interactive_limits_and_expiry_kill_the_process() {
    let s = setup(&["-s", "1", "--max-interactive", "1"]);
    // A client that dies without logging out (SIGKILL) leaves its session to expire. Its
    // process also starts one in a session of its own (setsid), out of its process group.
    let left = s.path("left.pid");
    let mut c = s
        .remo_command(&[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    stdin
        .write_all(
            format!(
                "iexec sh -c 'setsid sh -c \"echo \\$\\$ > {0}.t; mv {0}.t {0}; exec sleep 300\" & while [ ! -e {0} ]; do sleep 0.05; done; echo $$; exec sleep 300'\n",
                path_str(&left)
            )
            .as_bytes(),
        )
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(c.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let pid: u32 = line.trim().parse().expect("pid");
    c.kill().unwrap();
    c.wait().unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let left: u32 = std::fs::read_to_string(&left)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(Path::new(&format!("/proc/{left}")).exists());
    // The one interactive slot is taken by the first session's process.
    let o = s.remo("alice", &[], b"iexec cat\n");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("HTTP Error 503"),
        "{o:?}"
    );
    // Its session expires after 1 s idle: the process is killed and reaped, the slot freed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for p in [pid, left] {
        while Path::new(&format!("/proc/{p}")).exists() {
            if std::time::Instant::now() > deadline {
                let _ = Command::new("kill")
                    .args(["-KILL", &p.to_string()])
                    .status();
                panic!("process {p} outlived its session");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let o = s.remo("alice", &[], b"iexec cat\nidata again\niend\n");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "again\n", "{o:?}");
    assert!(s.d.log_text().contains("session-expired user=alice"));
}

#[test]
fn original_toml_configuration_and_socket_activation() {
    let s = setup(&[]);
    // The original launcher's TOML keys; -p on the command line beats the file's port.
    let conf = s.path("remo.toml");
    std::fs::write(
        &conf,
        format!(
            "port = 1\nhost = \"127.0.0.1\"\ntimeout = 30\nkey-file = \"{}\"\nuser-service = \"SqliteUserService:{}\"\n",
            path_str(&s.path("remo_serv_key.pem")),
            path_str(&s.path("users_db.sqlite"))
        ),
    )
    .unwrap();
    // A port found free may be taken before remod binds it: then it exits, and another is tried.
    let (mut d, addr) = with_free_port(|port| {
        let mut d = Command::new(remod())
            .args([
                "-c",
                path_str(&conf),
                "-p",
                &port.to_string(),
                "-l",
                "logging.ini",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return Some((d, addr));
            }
            if let Ok(Some(_)) = d.try_wait() {
                return None;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "remod -c did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    let info = get(&addr, "/info");
    let _ = d.kill();
    let _ = d.wait();
    assert_eq!(dechunk(&info.body), b"remo_serv 0.6.0 here");
    // A bad user service or key is a configuration error (78).
    let o = Command::new(remod())
        .args([
            "-u",
            "MemoryUserService:a",
            "-k",
            path_str(&s.path("remo_serv_key.pem")),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).starts_with("remod: user service"),
        "{o:?}"
    );
    let o = Command::new(remod())
        .args(["-k", path_str(&s.path("alice_key.pem"))])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78), "{o:?}");

    // Socket activation: READY, a login, then an idle exit once the session has expired.
    let key = s.path("remo_serv_key.pem");
    let db = format!("SqliteUserService:{}", path_str(&s.path("users_db.sqlite")));
    let mut d = Daemon::activated(
        remod(),
        &[
            "-k",
            path_str(&key),
            "-u",
            &db,
            "-s",
            "1",
            "--idle-exit",
            "1",
        ],
        &[],
    );
    let port = d.addr.rsplit(':').next().unwrap().to_string();
    let o = run_in(
        s.dir.path(),
        remo_bin(),
        &[
            "127.0.0.1",
            &port,
            "-u",
            "alice",
            "-k",
            "alice_key.pem",
            "--password-file",
            "pw",
            "exec",
            "echo",
            "activated",
        ],
        b"",
    );
    assert_eq!(o.stdout, b"activated\n", "{o:?}");
    let st = d
        .wait(std::time::Duration::from_secs(15))
        .expect("idle exit");
    assert!(st.success(), "{st:?}");
    assert!(
        d.log_text().contains("stopped reason=idle"),
        "{}",
        d.log_text()
    );
}

/// Keys and a database as the original tools make them (Python's `cryptography` and
/// `sqlite3`, following specs/remo_serv.md §1.3, §1.4, §3.2) work with remod and remo.
#[test]
fn keys_and_database_made_like_the_originals_work() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let py = r#"
import sqlite3, sys
from cryptography.hazmat.primitives import serialization as s
from cryptography.hazmat.primitives.asymmetric import ed448
def pair(prefix, pw):
    k = ed448.Ed448PrivateKey.generate()
    enc = s.BestAvailableEncryption(pw) if pw else s.NoEncryption()
    open(prefix + "_key.pem", "wb").write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, enc))
    pub = k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo)
    open(prefix + ".pem", "wb").write(pub)
    return pub
pair("remo_serv", None)
pub = pair("bob", b"foo")
c = sqlite3.connect("users_db.sqlite")
c.execute("CREATE TABLE IF NOT EXISTS users(id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT UNIQUE, key TEXT, pub TEXT)")
c.execute("INSERT INTO users(user, pub) VALUES (?, ?)", ("bob", pub))
c.commit()
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(py)
        .current_dir(p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Map bob to us in the original's database, then log in with the original's keys.
    let o = run_in(
        p,
        add_user(),
        &["bob", "bob.pem", "--force", "-U", &me()],
        b"",
    );
    assert!(o.status.success(), "{o:?}");
    let db = format!("SqliteUserService:{}", path_str(&p.join("users_db.sqlite")));
    let d = Daemon::direct(
        remod(),
        &["-k", path_str(&p.join("remo_serv_key.pem")), "-u", &db],
    );
    let port = d.addr.rsplit(':').next().unwrap().to_string();
    let o = run_in(
        p,
        remo_bin(),
        &[
            "127.0.0.1",
            &port,
            "-s",
            "remo_serv.pem",
            "-u",
            "bob",
            "-k",
            "bob_key.pem",
            "exec",
            "echo",
            "bob",
        ],
        b"foo\n",
    );
    assert_eq!(
        (o.status.code(), o.stdout.as_slice()),
        (Some(0), &b"bob\n"[..]),
        "{o:?}"
    );
    let o = Command::new("sqlite3")
        .arg(p.join("users_db.sqlite"))
        .arg("SELECT typeof(pub), length(pub) FROM users WHERE user='bob'")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "blob|146\n");
}

/// An RSA user key pair `PREFIX_key.pem` (password foo) and `PREFIX.pem` in `s`'s directory.
fn rsa_pair(s: &Setup, prefix: &str) {
    let o = run_in(
        s.dir.path(),
        build_key_pair(),
        &["--type", "rsa", prefix],
        b"foo\n",
    );
    assert!(o.status.success(), "{o:?}");
    let pem = std::fs::read_to_string(s.path(&format!("{prefix}.pem"))).unwrap();
    let k = openssl::pkey::PKey::public_key_from_pem(pem.as_bytes()).unwrap();
    assert_eq!(k.id(), openssl::pkey::Id::RSA);
}

/// remo(1), remod(8): a user key may be RSA (PKCS#1 v1.5 signature over SHA-512): carol,
/// added with her RSA public key, logs in and runs a command.
#[test]
fn rsa_user_key_logs_in_and_runs_a_command() {
    let s = setup(&[]);
    rsa_pair(&s, "carol");
    let o = run_in(
        s.dir.path(),
        add_user(),
        &["carol", "carol.pem", "-U", &me()],
        b"",
    );
    assert!(o.status.success(), "{o:?}");
    let o = s.remo("carol", &["exec", "echo", "rsa", "login"], b"");
    assert_eq!(
        (o.status.code(), o.stdout.as_slice()),
        (Some(0), &b"rsa login\n"[..]),
        "{o:?}"
    );
    let log = s.d.log_text();
    assert!(log.contains("login user=carol"), "{log}");
}

/// An RSA key that is not the one in the database (another RSA key, valid in itself) is
/// refused: exit 77, nothing run, the refusal logged as a bad signature.
#[test]
fn a_wrong_rsa_key_is_refused() {
    let s = setup(&[]);
    rsa_pair(&s, "carol");
    rsa_pair(&s, "mallory");
    let o = run_in(
        s.dir.path(),
        add_user(),
        &["carol", "carol.pem", "-U", &me()],
        b"",
    );
    assert!(o.status.success(), "{o:?}");
    let marker = s.path("ran");
    let port = s.port();
    let o = run_in(
        s.dir.path(),
        remo_bin(),
        &[
            "127.0.0.1",
            &port,
            "-s",
            "remo_serv.pem",
            "-u",
            "carol",
            "-k",
            "mallory_key.pem",
            "--password-file",
            "pw",
            "exec",
            "touch",
            path_str(&marker),
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(77), "{o:?}");
    assert!(!marker.exists(), "the command ran");
    let log = s.d.log_text();
    assert!(
        log.contains("login-refused user=\"carol\"") && log.contains("reason=bad-signature"),
        "{log}"
    );
    assert!(!log.contains("login user=carol"), "{log}");
}

/// Processes whose command line is exactly `argv` (NUL-separated in /proc/PID/cmdline).
fn processes(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

/// Waits up to `secs` for `cond`.
fn eventually(secs: u64, cond: impl Fn() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    cond()
}

#[test]
fn replayed_logins_and_finished_clients_leave_no_session() {
    let s = setup(&[]);
    let key = keysock::keyfile::read_private_pem(&s.path("alice_key.pem"), Some(b"foo")).unwrap();
    let (_eph, eph_pub) = wire::x448_generate().unwrap();
    let body = wire::auth_body("alice", &eph_pub, &key).unwrap();
    assert_eq!(post_form(&s.d.addr, "/auth", &body).status, 200);
    // The captured body, replayed: no new session.
    for _ in 0..3 {
        assert_eq!(post_form(&s.d.addr, "/auth", &body).status, 403);
    }
    assert_eq!(s.d.log_text().matches("reason=replayed-login").count(), 3);
    // Clients log out when they are done.
    for i in 0..200 {
        let o = s.remo("alice", &["exec", "true"], b"");
        assert!(o.status.success(), "run {i}: {o:?}");
    }
    let log = s.d.log_text();
    let (logins, logouts) = (
        log.matches("info: login user=alice ").count(),
        log.matches("info: logout user=alice").count(),
    );
    assert_eq!((logins, logouts), (201, 200), "only the raw login may stay");
}

#[test]
fn command_caps_and_clients_that_leave() {
    let s = setup(&["--max-session-commands", "1", "--max-user-commands", "2"]);
    // A session's second command while its first runs: an encrypted 503.
    let raw = raw_login(&s, "alice").unwrap();
    let first = raw.request(&raw.cmd_path("sleep 2.5"), 1, b"");
    let addr = raw.addr.clone();
    let t = std::thread::spawn(move || raw_bytes(&addr, &first));
    assert!(eventually(5, || !processes(&["sleep", "2.5"]).is_empty()));
    let r = raw_bytes(&raw.addr, &raw.request(&raw.cmd_path("true"), 2, b""));
    assert_eq!(
        raw.decode(&r),
        ("503".to_string(), b"too many commands running".to_vec()),
        "{r:?}"
    );
    // The user's second command (another session) runs; a third is refused.
    let mut bg = s.remo_command(&["exec", "sleep", "2.75"]).spawn().unwrap();
    assert!(eventually(5, || !processes(&["sleep", "2.75"]).is_empty()));
    let o = s.remo("alice", &["exec", "true"], b"");
    assert!(!o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("too many commands running"),
        "{o:?}"
    );
    assert!(bg.wait().unwrap().success());
    assert_eq!(t.join().unwrap().status, 200);
    // A client killed outright: its command goes with its connection.
    let mut c = s
        .remo_command(&["exec", "sleep", "100.25"])
        .spawn()
        .unwrap();
    assert!(eventually(5, || !processes(&["sleep", "100.25"]).is_empty()));
    c.kill().unwrap();
    c.wait().unwrap();
    assert!(
        eventually(10, || processes(&["sleep", "100.25"]).is_empty()),
        "sleep 100.25 outlived its client: {}",
        s.d.log_text()
    );
    // A client stopped by SIGTERM logs out; its command goes with the session.
    let mut c = s.remo_command(&["exec", "sleep", "100.5"]).spawn().unwrap();
    assert!(eventually(5, || !processes(&["sleep", "100.5"]).is_empty()));
    Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(c.wait().unwrap().code(), Some(143));
    assert!(
        eventually(10, || processes(&["sleep", "100.5"]).is_empty()),
        "sleep 100.5 outlived its session"
    );
    assert!(s.d.log_text().contains("cmd-killed user=alice reason="));
}

#[test]
fn slow_bodies_block_nobody_and_are_cut_after_the_body_timeout() {
    let sdir = tempfile::tempdir().unwrap();
    let sock = sdir.path().join("remod.sock");
    let s = setup(&["--listen", path_str(&sock), "--body-timeout", "5"]);
    let stall = b"POST /auth HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10000\r\n\r\nuser=al";
    let real = b"GET /info HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_slow_bodies_block_nobody(
        &s.d.addr,
        &sock,
        stall,
        real,
        200,
        300,
        std::time::Duration::from_secs(5),
    );
    assert!(get_plain(&s.d.addr, "/info")
        .text()
        .contains("remo_serv 0.6.0 here"));
}

#[test]
fn half_closed_failed_logins_are_answered() {
    let s = setup(&["--login-failures", "1000"]);
    // A login signed with alice's key under another name: looked up and checked before the
    // answer, which a client that half-closes meanwhile still gets.
    let key = keysock::keyfile::read_private_pem(&s.path("alice_key.pem"), Some(b"foo")).unwrap();
    let (_, eph_pub) = wire::x448_generate().unwrap();
    let body = wire::auth_body("limited", &eph_pub, &key).unwrap();
    let req = format!(
        "POST /auth HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_half_closed_answered(&s.d.addr, req.as_bytes(), 403);
}

#[test]
fn a_stalled_first_token_is_cut_after_the_body_timeout() {
    let s = setup(&["--body-timeout", "2"]);
    let raw = raw_login(&s, "alice").unwrap();
    // A session's request whose body (its first token) stops half-way.
    let req = format!(
        "POST /info HTTP/1.1\r\nHost: x\r\nCookie: SESSION_ID={}\r\nContent-Length: 1000\r\n\r\ngAAAAA",
        raw.cookie
    );
    let mut c = std::net::TcpStream::connect(&raw.addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    c.write_all(req.as_bytes()).unwrap();
    let t = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut c, &mut buf);
    assert_eq!(parse(&buf).status, 400, "{:?}", parse(&buf).head);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(12),
        "closed after {:?}",
        t.elapsed()
    );
}

/// A stand-in for the original remo_serv's framing in front of remod: every answer goes out
/// with `Connection: close`, and a `/cmd/` answer loses its final token (the original never
/// sends one).
fn drop_final_token_proxy(upstream: String) -> String {
    use std::io::Read;
    use std::net::TcpStream;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let up = upstream.clone();
            std::thread::spawn(move || {
                let mut req = Vec::new();
                let mut b = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match c.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&req[..head_end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                while req.len() < head_end + len {
                    match c.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                }
                let cmd = head.starts_with("POST /cmd/");
                let mut u = TcpStream::connect(&up).unwrap();
                let head = head.replacen("\r\n", "\r\nConnection: close\r\n", 1);
                u.write_all(head.as_bytes()).unwrap();
                u.write_all(&req[head_end..]).unwrap();
                let mut resp = Vec::new();
                let _ = u.read_to_end(&mut resp);
                let r = parse(&resp);
                let mut head = r.head.replacen("\r\n", "\r\nConnection: close\r\n", 1);
                let body = if cmd {
                    let mut toks: Vec<&[u8]> = Vec::new();
                    let plain = dechunk(&r.body);
                    for t in plain.split(|&x| x == b'\n') {
                        if t.len() > 1 {
                            toks.push(t);
                        }
                    }
                    toks.pop();
                    let joined: Vec<u8> = toks.iter().flat_map(|t| [*t, b"\n"].concat()).collect();
                    format!("{:x}\r\n", joined.len())
                        .into_bytes()
                        .into_iter()
                        .chain(joined)
                        .chain(b"\r\n0\r\n\r\n".iter().copied())
                        .collect()
                } else {
                    head = r.head.replacen("\r\n", "\r\nConnection: close\r\n", 1);
                    r.body.clone()
                };
                let _ = c.write_all(head.as_bytes());
                let _ = c.write_all(&body);
            });
        }
    });
    addr
}

#[test]
fn a_server_without_final_tokens_needs_legacy_server() {
    let s = setup(&[]);
    let proxy = drop_final_token_proxy(s.d.addr.clone());
    let port = proxy.rsplit(':').next().unwrap().to_string();
    let remo = |extra: &[&str]| {
        let mut a = vec![
            "127.0.0.1",
            port.as_str(),
            "-s",
            "remo_serv.pem",
            "-u",
            "alice",
        ];
        a.extend_from_slice(&["-k", "alice_key.pem", "--password-file", "pw"]);
        a.extend_from_slice(extra);
        run_in(s.dir.path(), remo_bin(), &a, b"")
    };
    let o = remo(&["exec", "echo", "hi"]);
    assert_eq!(o.status.code(), Some(76), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--legacy-server"), "{err}");
    let o = remo(&["--legacy-server", "exec", "echo", "hi"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hi\n");
}

/// A mapped user's commands get its supplementary groups, as a login would.
#[test]
fn commands_get_the_users_supplementary_groups() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it makes a Unix account and group)"
    );
    let sh = |c: &str| Command::new("sh").args(["-c", c]).status().unwrap();
    assert!(sh("getent group keysock-remo-g >/dev/null || groupadd keysock-remo-g").success());
    assert!(sh(
        "id keysock-remo-u >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin -G keysock-remo-g keysock-remo-u"
    )
    .success());
    let s = setup(&["--default-unix-user", "keysock-remo-u"]);
    let o = s.remo("unmapped", &["exec", "id", "-Gn"], b"");
    let groups = String::from_utf8_lossy(&o.stdout);
    assert!(
        groups.split_whitespace().any(|g| g == "keysock-remo-g"),
        "id -Gn printed {groups:?}: {o:?}"
    );
}

/// The pid of remod `monitor`'s network process (`remod --network-process`).
fn network_pid(monitor: u32) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, a)| a.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if ppid == Some(monitor) && cmd.ends_with(b"--network-process\0") {
            return Some(pid);
        }
    }
    None
}

/// Privilege separation: the network process runs as a user of its own, without
/// capabilities, with no_new_privs and non-dumpable; its user cannot read the server key or
/// /etc/shadow; killed, it is started again by the monitor, which serves on.
#[test]
fn the_network_process_is_unprivileged_and_started_again() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (the monitor switches the network process's user)"
    );
    let s = setup(&["--privsep-user", "64123:64123"]);
    let o = s.remo("alice", &["exec", "true"], b"");
    assert!(o.status.success(), "{o:?}");
    let monitor = s.d.child.id();
    // The server key is in OpenSSL's secure heap: 64 KiB locked in the monitor's memory.
    let mst = std::fs::read_to_string(format!("/proc/{monitor}/status")).unwrap();
    let locked = mst
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .unwrap_or("");
    assert_eq!(
        locked.split_whitespace().next(),
        Some("64"),
        "VmLck: {locked}"
    );
    let net = network_pid(monitor).expect("a network process");
    let status = std::fs::read_to_string(format!("/proc/{net}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), ["64123"; 4], "{status}");
    assert_eq!(field("Gid:"), ["64123"; 4], "{status}");
    assert_eq!(field("Groups:"), Vec::<&str>::new(), "{status}");
    for cap in ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:"] {
        assert_eq!(field(cap), ["0000000000000000"], "{cap} {status}");
    }
    assert_eq!(field("NoNewPrivs:"), ["1"], "{status}");
    // Non-dumpable: its /proc files belong to root, not to its own user.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(format!("/proc/{net}/environ")).unwrap();
    assert_eq!(m.uid(), 0, "/proc/{net}/environ belongs to uid {}", m.uid());
    let key = s.path("remo_serv_key.pem");
    for f in [key.to_str().unwrap(), "/etc/shadow", "/etc/hostname"] {
        let o = Command::new("setpriv")
            .args(["--reuid=64123", "--regid=64123", "--clear-groups", "--"])
            .args(["head", "-c1", f])
            .output()
            .unwrap();
        let readable = o.status.success();
        assert_eq!(readable, f == "/etc/hostname", "{f}: {o:?}");
    }
    // Killed: the monitor starts another and the next client is served.
    assert!(Command::new("kill")
        .args(["-KILL", &net.to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let again = loop {
        if let Some(p) = network_pid(monitor).filter(|p| *p != net) {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new network process"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(Path::new(&format!("/proc/{monitor}")).exists());
    let o = s.remo("alice", &["exec", "echo", "again"], b"");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "again\n", "{o:?}");
    assert_eq!(network_pid(monitor), Some(again));
    assert!(s.d.log_text().contains("network-process-died status=-9"));
}

/// remod(8): commands get a clean environment; --cmd-timeout kills a command that runs too
/// long; past --login-failures failed logins from one source, even a good login is refused
/// for the --login-window.
#[test]
fn clean_environment_command_timeout_and_login_throttling() {
    let s = setup(&["--login-failures", "2", "--cmd-timeout", "1"]);
    let o = s.remo("alice", &["exec", "env"], b"");
    assert!(o.status.success(), "{o:?}");
    let mut names: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "HOME",
            "LANG",
            "LOGNAME",
            "PATH",
            "REMO_USER",
            "SHELL",
            "USER"
        ],
        "{o:?}"
    );
    let t = std::time::Instant::now();
    let o = s.remo("alice", &["exec", "sleep", "30"], b"");
    assert!(t.elapsed() < std::time::Duration::from_secs(10), "{o:?}");
    assert!(!o.status.success(), "{o:?}");
    let log = s.d.log_text();
    assert!(
        log.contains("cmd-killed user=alice reason=timeout"),
        "{log}"
    );
    // "unmapped" signs correctly but maps to no Unix account: a failed login.
    for _ in 0..2 {
        let o = s.remo("unmapped", &["exec", "true"], b"");
        assert!(!o.status.success(), "{o:?}");
    }
    let o = s.remo("alice", &["exec", "true"], b"");
    assert!(!o.status.success(), "{o:?}");
    let log = s.d.log_text();
    assert!(log.contains("reason=throttled"), "{log}");
}

/// remod(8): SIGTERM stops remod at once, and the commands it runs end with it (not after
/// their --cmd-timeout).
#[test]
fn sigterm_stops_remod_and_ends_its_commands() {
    let mut s = setup(&[]);
    let mut c = s
        .remo_command(&["exec", "sleep", "107"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(10, || !processes(&["sleep", "107"]).is_empty()),
        "the command did not start"
    );
    let t = std::time::Instant::now();
    Command::new("kill")
        .arg(s.d.child.id().to_string())
        .status()
        .unwrap();
    let st =
        s.d.wait(std::time::Duration::from_secs(20))
            .expect("remod exits after SIGTERM");
    assert!(st.success(), "{st:?}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(8),
        "stopping took {:?}",
        t.elapsed()
    );
    assert!(
        eventually(5, || processes(&["sleep", "107"]).is_empty()),
        "sleep 107 outlived remod"
    );
    let _ = c.kill();
    let _ = c.wait();
    assert!(s.d.log_text().contains("stopping sessions-ended=1"));
}
