//! iscepd end to end over TCP and TLS: the spec's exchanges (§6.2, §4.1), auth with reloads,
//! framing (1-byte writes, a 10 MiB size field), connection cap, idle timeout, 100 idle
//! connections, commands that hang or print too much, the iscep client, tokenctl iscep.

use crate::common::*;
use keysock::iscep::client::{Client, Tls};
use keysock::iscep::wire::{self, Body, Packet, Read, Type};
use serde_json::{json, Value};
use std::io::{Read as _, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn iscepd() -> &'static str {
    env!("CARGO_BIN_EXE_iscepd")
}
fn iscep() -> &'static str {
    env!("CARGO_BIN_EXE_iscep")
}

fn fixture(name: &str) -> String {
    root()
        .join("tests/iscep")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

/// A configuration with the spec's three tasks (§6.2) and a few of ours.
fn config(dir: &Path) -> PathBuf {
    let pidfile = dir.join("hang.pid");
    let outfile = dir.join("hang-out.pid");
    let text = format!(
        r#"
[commands.test_task]
exec = ["/usr/bin/python3", "{task}"]
args = {{ message = "str", numb = "int" }}
log_args = true

[commands.boom]
exec = ["/bin/sh", "-c", "echo failing >&2; exit 1"]

[commands.none_task]
exec = ["/bin/true"]
args = {{ x = "any" }}

[commands.text]
exec = ["/bin/sh", "-c", "cat; echo to-stderr >&2; exit 3"]
output = "text"
args = {{ secret = "str" }}

[commands.hang]
exec = ["/bin/sh", "-c", "echo $$ > {pid}; setsid sh -c 'echo $$ > {out}; exec sleep 60' & sleep 60 & while [ ! -s {out} ]; do sleep 0.05; done; sleep 60"]
timeout = 1

[commands.flood]
exec = ["/bin/sh", "-c", "yes"]
output = "text"
max_output = 100000

[commands.whoami]
exec = ["/usr/bin/id", "-u"]
output = "text"
user = "nobody"

[commands.fds]
exec = ["/bin/sh", "-c", "ls -l /proc/$$/fd/"]
output = "text"

[commands.alice_only]
exec = ["/bin/sh", "-c", "echo '{{\"who\": \"alice\"}}'"]
allow = ["alice"]
"#,
        task = fixture("test_task.py"),
        pid = pidfile.display(),
        out = outfile.display()
    );
    let p = dir.join("iscepd.toml");
    std::fs::write(&p, text).unwrap();
    p
}

struct Setup {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    tokens: PathBuf,
    alice: String,
    bob: String,
}

fn tokenctl_out(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(tokenctl()).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).trim_end().to_string(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let tokens = dir.path().join("tokens.json");
    let t = path_str(&tokens).to_string();
    let (rc, alice, _) = tokenctl_out(&["iscep", "add", "alice", "--tokens", &t]);
    assert_eq!(rc, 0);
    let (rc, bob, _) = tokenctl_out(&["iscep", "add", "bob", "--tokens", &t]);
    assert_eq!(rc, 0);
    Setup {
        dir,
        cfg,
        tokens,
        alice,
        bob,
    }
}

impl Setup {
    fn start(&self, extra: &[&str]) -> Daemon {
        let mut args = vec![
            "--config",
            path_str(&self.cfg),
            "--tokens",
            path_str(&self.tokens),
        ];
        args.extend_from_slice(extra);
        Daemon::direct(iscepd(), &args)
    }
    fn start_no_auth(&self, extra: &[&str]) -> Daemon {
        let mut args = vec!["--config", path_str(&self.cfg), "--no-auth"];
        args.extend_from_slice(extra);
        Daemon::direct(iscepd(), &args)
    }
}

fn port(d: &Daemon) -> u16 {
    d.addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn client(d: &Daemon, token: Option<&str>) -> Client {
    let mut c = Client::connect("127.0.0.1", port(d), None, Duration::from_secs(10)).unwrap();
    c.set_token(token.map(|t| zeroize::Zeroizing::new(t.to_string())));
    c
}

fn tls_client(d: &Daemon, ca: &Path, token: Option<&str>) -> Client {
    let tls = Tls { ca, pinned: false };
    let mut c = Client::connect("127.0.0.1", port(d), Some(tls), Duration::from_secs(10)).unwrap();
    c.set_token(token.map(|t| zeroize::Zeroizing::new(t.to_string())));
    c
}

fn raw_frame(ty: u16, body: &[u8], upper: bool) -> Vec<u8> {
    let mut sum = wire::md5_hex(body);
    if upper {
        sum = sum.to_uppercase();
    }
    let mut f = ((2 + body.len() + 32) as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&ty.to_be_bytes());
    f.extend_from_slice(body);
    f.extend_from_slice(sum.as_bytes());
    f
}

fn connect(d: &Daemon) -> TcpStream {
    let s = TcpStream::connect(&d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn read_packet(s: &mut TcpStream) -> Option<Packet> {
    match wire::read_frame_blocking(s, 1 << 20).unwrap() {
        Read::Packet(p) => Some(p),
        Read::Closed => None,
        r => panic!("unexpected {r:?}"),
    }
}

fn at_eof(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(0))
}

fn is_error(p: &Packet, msg: Option<&str>) -> bool {
    p.ty == Type::Error
        && p.body
            == Body {
                error: msg.map(String::from),
                ..Default::default()
            }
}

/// The exchanges of spec §6.2 on a server without auth, then every bad input of §4.1.
#[test]
fn spec_exchanges_and_bad_input_without_auth() {
    let s = setup();
    let d = s.start_no_auth(&[]);
    let mut c = client(&d, None);

    let p = c
        .command("test_task", Some(json!({"message": "hello", "numb": 1})))
        .unwrap();
    assert_eq!(p.ty, Type::CmdResponse);
    assert_eq!(
        p.body,
        Body::response(json!({"message": "echo hello", "numb": 1}))
    );
    assert!(is_error(
        &c.command("nope", None).unwrap(),
        Some("command not found")
    ));
    let no_cmd = c.request(Type::SendCmd, Body::default()).unwrap();
    assert!(is_error(&no_cmd, Some("command not found")));
    // Missing, extra or wrongly typed arguments, and a failing command: bare ERROR.
    for args in [
        json!({"message": "hello"}),
        json!({"message": "hello", "numb": 1, "x": 1}),
        json!({"message": "hello", "numb": "1"}),
    ] {
        assert!(is_error(&c.command("test_task", Some(args)).unwrap(), None));
    }
    assert!(is_error(&c.command("boom", None).unwrap(), None));
    let p = c.command("none_task", Some(json!({"x": [1]}))).unwrap();
    assert_eq!((p.ty, p.body), (Type::CmdResponse, Body::default()));

    // DISCOVER: type 1, configuration order, "_empty" for an untyped argument; alice_only
    // is not listed (no owner without auth).
    let p = c.discover().unwrap();
    assert_eq!(p.ty, Type::Discover);
    assert_eq!(
        p.body.response.unwrap(),
        json!({"test_task": {"message": "str", "numb": "int"}, "boom": {}, "none_task": {"x": "_empty"},
               "text": {"secret": "str"}, "hang": {}, "flood": {}, "whoami": {}, "fds": {}})
    );
    assert!(is_error(
        &c.command("alice_only", None).unwrap(),
        Some("command not found")
    ));

    // ECHO comes back re-serialized in the canonical order.
    let p = c
        .request(
            Type::Echo,
            Body {
                auth_token: Some("T".into()),
                response: Some(json!({"echo": "echo"})),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(p.ty, Type::Echo);
    assert_eq!(p.body.auth_token.as_deref(), Some("T"));
    assert_eq!(p.body.response, Some(json!({"echo": "echo"})));

    // Types 3, 5 and 6 sent to the server.
    for ty in [Type::CmdResponse, Type::Unauthorized, Type::Error] {
        assert!(is_error(
            &c.request(ty, Body::default()).unwrap(),
            Some("unknown packet type")
        ));
    }

    // Frames that do not decode: bare ERROR, and the connection goes on.
    let mut r = connect(&d);
    let body = br#"{"command": "boom"}"#;
    let bad: Vec<Vec<u8>> = vec![
        raw_frame(2, body, true),              // uppercase checksum
        raw_frame(7, b"{}", false),            // type 7
        raw_frame(2, br#"{"foo": 1}"#, false), // unknown key
        raw_frame(2, b"[1, 2]", false),        // not an object
        raw_frame(2, b"", false),              // 34 bytes of content
        {
            let mut f = raw_frame(2, body, false); // wrong checksum
            let n = f.len();
            f[n - 1] = if f[n - 1] == b'0' { b'1' } else { b'0' };
            f
        },
    ];
    for f in &bad {
        r.write_all(f).unwrap();
        let p = read_packet(&mut r).expect("an answer");
        assert!(is_error(&p, None), "{f:?}: {p:?}");
    }
    // Compact JSON is accepted; the answer is the same as for the spaced form.
    r.write_all(&raw_frame(
        2,
        br#"{"command":"none_task","args":{"x":1}}"#,
        false,
    ))
    .unwrap();
    assert_eq!(read_packet(&mut r).unwrap().ty, Type::CmdResponse);
    // A size of 0 closes without an answer.
    r.write_all(&[0, 0, 0, 0]).unwrap();
    assert!(at_eof(&mut r));

    // CLOSE_CONNECTION: no answer, EOF.
    assert!(c.close().unwrap().is_none());
}

#[test]
fn auth_per_packet_allow_lists_and_reload() {
    let s = setup();
    let mut d = s.start(&[]);
    let mut c = client(&d, None);
    // No token: UNAUTHORIZED for every type, even CLOSE_CONNECTION, and the connection stays.
    for ty in [
        Type::Echo,
        Type::Discover,
        Type::SendCmd,
        Type::CloseConnection,
        Type::Error,
    ] {
        let p = c.request(ty, Body::default()).unwrap();
        assert_eq!((p.ty, &p.body), (Type::Unauthorized, &Body::default()));
    }
    // Empty and unknown tokens too, including alice's with one character changed.
    let mut wrong = s.alice.clone();
    wrong.replace_range(..1, if wrong.starts_with('0') { "1" } else { "0" });
    for t in ["", "abc", wrong.as_str()] {
        c.set_token(Some(zeroize::Zeroizing::new(t.to_string())));
        assert_eq!(c.echo("x").unwrap().ty, Type::Unauthorized);
    }
    c.set_token(Some(zeroize::Zeroizing::new(s.alice.clone())));
    let p = c.echo("echo").unwrap();
    assert_eq!(p.ty, Type::Echo);
    assert_eq!(p.body.response, Some(json!({"echo": "echo"})));
    let p = c.command("alice_only", None).unwrap();
    assert_eq!(p.body.response, Some(json!({"who": "alice"})));
    let names = |c: &mut Client| -> Vec<String> {
        let r = c.discover().unwrap().body.response.unwrap();
        r.as_object().unwrap().keys().cloned().collect()
    };
    assert!(names(&mut c).contains(&"alice_only".to_string()));
    // A later packet without a token on the same connection is refused again.
    let p = c
        .request(
            Type::Echo,
            Body {
                auth_token: Some(String::new()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(p.ty, Type::Unauthorized);

    // bob may not see or run alice_only.
    let mut b = client(&d, Some(&s.bob));
    assert!(!names(&mut b).contains(&"alice_only".to_string()));
    assert!(is_error(
        &b.command("alice_only", None).unwrap(),
        Some("command not found")
    ));

    // Rotating bob's token takes effect without a restart (file change seen), and SIGHUP
    // reloads too.
    let t = path_str(&s.tokens);
    let (rc, bob2, _) = tokenctl_out(&["iscep", "rotate", "bob", "--tokens", t]);
    assert_eq!(rc, 0);
    assert_eq!(bob2.len(), 512);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if b.echo("x").unwrap().ty == Type::Unauthorized {
            break;
        }
        assert!(Instant::now() < deadline, "old token still accepted");
        std::thread::sleep(Duration::from_millis(200));
    }
    b.set_token(Some(zeroize::Zeroizing::new(bob2.clone())));
    assert_eq!(b.echo("x").unwrap().ty, Type::Echo);
    let (rc, _, _) = tokenctl_out(&["iscep", "remove", "bob", "--tokens", t]);
    assert_eq!(rc, 0);
    Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.echo("x").unwrap().ty != Type::Unauthorized {
        assert!(Instant::now() < deadline, "removed token still accepted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        d.log_text().contains("reload what=tokens why=SIGHUP"),
        "{}",
        d.log_text()
    );
    assert!(c.close().unwrap().is_none());
    assert_eq!(d.signal_and_wait("TERM").code(), Some(0));
    let log = d.log_text();
    for secret in [&s.alice, &s.bob, &bob2] {
        assert!(!log.contains(&secret[..16]), "token in the log");
    }
    assert!(
        log.contains("command name=\"alice_only\" owner=alice"),
        "{log}"
    );
}

#[test]
fn start_up_errors_are_clear() {
    let s = setup();
    let run = |args: &[&str]| {
        let o = Command::new(iscepd()).args(args).output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let cfg = path_str(&s.cfg);
    let missing = s.dir.path().join("missing.json");
    let (code, err) = run(&[
        "--config",
        cfg,
        "--tokens",
        path_str(&missing),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(78));
    assert!(
        err.starts_with("iscepd: cannot read tokens file") && err.contains("--no-auth"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, err) = run(&[
        "--config",
        cfg,
        "--no-auth",
        "--tls-cert",
        "/nonexistent/c.pem",
        "--tls-key",
        "/nonexistent/k.pem",
    ]);
    assert_eq!(code, Some(78));
    assert!(
        err.starts_with("iscepd: cannot set up TLS: cannot read /nonexistent/c.pem"),
        "{err}"
    );
    let bad = s.dir.path().join("bad.toml");
    std::fs::write(&bad, "[commands.x]\nexec = [\"sh\"]\n").unwrap();
    let (code, err) = run(&["--config", path_str(&bad), "--no-auth"]);
    assert_eq!(code, Some(78));
    assert!(err.contains("absolute path"), "{err}");
    let (code, out) = {
        let o = Command::new(iscepd())
            .args(["--config", cfg, "--tokens", path_str(&s.tokens), "--check"])
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    assert_eq!(code, Some(0));
    assert!(out.contains("9 commands, 2 token owners"), "{out}");
}

#[test]
fn frames_in_one_byte_writes_and_a_10_mib_size_field() {
    let s = setup();
    let d = s.start(&[]);
    let mut r = connect(&d);
    r.set_nodelay(true).unwrap();
    let body = serde_json::to_vec(&json!({"auth_token": s.alice, "command": "test_task",
        "args": {"message": "split", "numb": 7}}))
    .unwrap();
    let f = raw_frame(2, &body, false);
    for b in &f {
        r.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    let p = read_packet(&mut r).unwrap();
    assert_eq!(
        p.body.response,
        Some(json!({"message": "echo split", "numb": 7}))
    );

    // A 10 MiB size field: ERROR, then the connection closes; nothing else was read.
    // The sender goes on writing a body the server never reads; the ERROR still arrives.
    r.write_all(&(10u32 << 20).to_be_bytes()).unwrap();
    let mut w = r.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'z'; 64 * 1024];
        for _ in 0..160 {
            if w.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let p = read_packet(&mut r).unwrap();
    assert!(is_error(&p, Some("frame too large")), "{p:?}");
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing after the ERROR");
    writer.join().unwrap();
    // A frame of 900 KiB (under the 1 MiB default) round-trips through ECHO.
    let mut c = client(&d, Some(&s.alice));
    let big = "x".repeat(900 * 1024);
    let p = c.echo(&big).unwrap();
    assert_eq!(p.body.response, Some(json!({"echo": big})));
}

#[test]
fn connection_cap_gets_an_error_frame_and_idle_connections_close() {
    let s = setup();
    // All from 127/8, one source: its own cap as high as the overall one.
    let d = s.start(&[
        "--max-connections",
        "2",
        "--max-connections-per-source",
        "2",
        "--idle-timeout",
        "1",
    ]);
    // Let the start-up probe's connection close first.
    crate::common::wait_connections_closed(&d.addr);
    let mut a = client(&d, Some(&s.alice));
    let mut b = client(&d, Some(&s.alice));
    assert_eq!(a.echo("1").unwrap().ty, Type::Echo);
    assert_eq!(b.echo("2").unwrap().ty, Type::Echo);
    let mut third = connect(&d);
    let p = read_packet(&mut third).expect("an ERROR frame");
    assert!(is_error(&p, Some("too many connections")), "{p:?}");
    assert!(at_eof(&mut third));
    // Idle timeout: the server closes without a packet after about 1 s.
    let t = Instant::now();
    let mut idle = {
        drop(a);
        drop(b);
        std::thread::sleep(Duration::from_millis(200));
        connect(&d)
    };
    assert!(at_eof(&mut idle));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn commands_text_output_timeout_and_output_cap() {
    let s = setup();
    let d = s.start(&[]);
    let mut c = client(&d, Some(&s.alice));
    let p = c
        .command("text", Some(json!({"secret": "hidden-arg"})))
        .unwrap();
    assert_eq!(p.ty, Type::CmdResponse);
    assert_eq!(
        p.body.response.unwrap(),
        json!({"stdout": "{\"secret\": \"hidden-arg\"}", "stderr": "to-stderr\n", "status": 3})
    );
    // A command that hangs: ERROR after its 1 s timeout, its whole process group killed,
    // and what it started in a session of its own (setsid) too.
    let t = Instant::now();
    let p = c.command("hang", None).unwrap();
    assert!(is_error(&p, None), "{p:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let pgid = std::fs::read_to_string(s.dir.path().join("hang.pid")).unwrap();
    let pgid: i32 = pgid.trim().parse().unwrap();
    assert!(pgid > 0);
    assert_eq!(
        live_members(pgid),
        0,
        "process group {pgid} still has members"
    );
    let left = std::fs::read_to_string(s.dir.path().join("hang-out.pid")).unwrap();
    assert_gone(left.trim().parse().unwrap());
    // user = "nobody": the command runs as that user (switching users needs root: a test
    // that cannot check it fails rather than passes).
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (iscepd switches to user nobody)"
    );
    let p = c.command("whoami", None).unwrap();
    let uid = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
    assert_eq!(
        p.body.response.unwrap()["stdout"],
        json!(format!("{uid}\n"))
    );
    // Output over max_output: killed, ERROR; the connection still serves.
    assert!(is_error(&c.command("flood", None).unwrap(), None));
    assert_eq!(c.echo("still here").unwrap().ty, Type::Echo);
    let log = d.log_text();
    assert!(
        !log.contains("hidden-arg"),
        "arguments logged without log_args"
    );
    assert!(log.contains("timed out"), "{log}");
}

#[test]
fn commands_get_only_descriptors_0_1_2() {
    let s = setup();
    // iscepd inherits descriptor 7 without close-on-exec, as from a careless shell.
    let d = Daemon::on_free_port(|addr| {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "exec 7</etc/hostname; exec \"$0\" \"$@\""])
            .arg(iscepd())
            .args(["--listen", addr, "--config", path_str(&s.cfg)])
            .args(["--tokens", path_str(&s.tokens)]);
        c
    });
    // (Readable only when we may look into the daemon: it is not dumpable.)
    if let Ok(t) = std::fs::read_link(format!("/proc/{}/fd/7", d.child.id())) {
        assert_eq!(t, Path::new("/etc/hostname"));
    }
    let mut c = client(&d, Some(&s.alice));
    let p = c.command("fds", None).unwrap();
    let r = p.body.response.unwrap();
    let out = r["stdout"].as_str().unwrap();
    let fds: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once(" -> "))
        .filter_map(|(a, _)| a.rsplit(' ').next())
        .collect();
    assert_eq!(fds, ["0", "1", "2"], "{out}");
}

#[test]
fn iscep_client_exit_codes_and_output() {
    let s = setup();
    let d = s.start(&[]);
    let tf = s.dir.path().join("alice.token");
    std::fs::write(&tf, format!("{}\n", s.alice)).unwrap();
    let p = port(&d).to_string();
    let run = |args: &[&str]| {
        let o = Command::new(iscep())
            .args(["--port", &p, "--token-file", path_str(&tf)])
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&["run", "test_task", "message=hi", "numb=42"]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, json!({"message": "echo hi", "numb": 42}));
    let (code, out, _) = run(&["run", "test_task", "message:=\"x\"", "numb:=1"]);
    assert_eq!(
        (code, out.trim()),
        (Some(0), r#"{"message":"echo x","numb":1}"#)
    );
    let (code, out, err) = run(&["--raw", "run", "text", "secret=s"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (Some(0), "{\"secret\": \"s\"}", "to-stderr\n")
    );
    let (code, out, _) = run(&["echo", "hello"]);
    assert_eq!((code, out.trim()), (Some(0), r#"{"echo":"hello"}"#));
    let (code, out, _) = run(&["discover"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains(r#""test_task":{"message":"str","numb":"int"}"#),
        "{out}"
    );
    let (code, _, err) = run(&["run", "nope"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err.trim(),
        "iscep: server answered ERROR: command not found"
    );
    let (code, _, _) = run(&["run", "test_task", "message=hi", "numb=notanumber"]);
    assert_eq!(code, Some(64));
    let o = Command::new(iscep())
        .args(["--port", &p, "echo"])
        .env_remove("ISCEP_TOKEN")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let (_held, closed) = closed_port();
    let o = Command::new(iscep())
        .args(["--port", &closed.to_string(), "echo"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("iscep: cannot connect to 127.0.0.1:"));
}

/// Waits (at most 5 s) for process `pid` to be gone or a zombie; kills it if it is not.
fn assert_gone(pid: i32) {
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
            st.rsplit_once(") ")
                .is_some_and(|(_, f)| !f.starts_with('Z'))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if running() {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        panic!("process {pid}, which left the command's process group, outlived the command");
    }
}

/// Processes of group `pgid` that are not zombies (a zombie waits for whoever reaps orphans).
fn live_members(pgid: i32) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a) else {
            continue;
        };
        let f: Vec<&str> = after.split_whitespace().collect();
        if f.len() > 2 && f[2] == pgid.to_string() && f[0] != "Z" {
            n += 1;
        }
    }
    n
}

/// A self-signed certificate naming localhost and 127.0.0.1, and its key.
fn make_cert(dir: &Path) -> (PathBuf, PathBuf) {
    make_cert_for(dir, &["localhost", "127.0.0.1"])
}

fn make_cert_for(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
    let (cert, key) = keysock::tls::self_signed_for(names).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    (c, k)
}

/// Every packet type over TLS, a frame far above one TLS record, a plaintext client refused,
/// and 100 idle TCP connections (no ClientHello) while a TLS client is still served at once.
#[test]
fn tls_and_a_hundred_idle_connections() {
    let s = setup();
    let (cert, key) = make_cert(s.dir.path());
    let d = s.start(&[
        "--tls-cert",
        path_str(&cert),
        "--tls-key",
        path_str(&key),
        "--max-connections",
        "200",
        // The idle connections and the client all come from 127/8, one source.
        "--max-connections-per-source",
        "200",
        "--idle-timeout",
        "30",
        "--handshake-timeout",
        "30",
    ]);
    let idle: Vec<TcpStream> = (0..100).map(|_| connect(&d)).collect();
    wait_for("the 100 idle connections", || {
        (server_sockets(&d.addr).len() >= 100).then_some(())
    });
    let t = Instant::now();
    let mut c = tls_client(&d, &cert, Some(&s.alice));
    let p = c.echo("tls").unwrap();
    assert_eq!(p.body.response, Some(json!({"echo": "tls"})));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(c.discover().unwrap().ty, Type::Discover);
    let p = c
        .command("test_task", Some(json!({"message": "hello", "numb": 1})))
        .unwrap();
    assert_eq!(
        p.body.response,
        Some(json!({"message": "echo hello", "numb": 1}))
    );
    assert!(is_error(
        &c.command("nope", None).unwrap(),
        Some("command not found")
    ));
    assert!(is_error(&c.command("boom", None).unwrap(), None));
    assert!(is_error(
        &c.request(Type::CmdResponse, Body::default()).unwrap(),
        Some("unknown packet type")
    ));
    let big = "y".repeat(100_000);
    assert_eq!(
        c.echo(&big).unwrap().body.response,
        Some(json!({"echo": big}))
    );
    let mut anon = tls_client(&d, &cert, None);
    assert_eq!(anon.echo("x").unwrap().ty, Type::Unauthorized);
    assert!(c.close().unwrap().is_none());
    drop(idle);

    // A plaintext client gets no packet: the connection is dropped.
    let mut plain = connect(&d);
    plain
        .write_all(&wire::encode(Type::Echo, &Body::default()))
        .unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(!buf.starts_with(&[0, 0, 0]), "a plaintext answer: {buf:?}");
    // A client pinning another certificate refuses the server.
    let other = tempfile::tempdir().unwrap();
    let (other_cert, _) = make_cert(other.path());
    let tls = Tls {
        ca: &other_cert,
        pinned: false,
    };
    assert!(Client::connect("127.0.0.1", port(&d), Some(tls), Duration::from_secs(5)).is_err());
    assert!(
        d.log_text().contains("connection-error"),
        "{}",
        d.log_text()
    );
}

/// `iscep --tls-ca` checks the certificate's names against --host: a certificate of another
/// name is refused, even when it is the very file trusted, unless --tls-pinned says the file
/// is the server's own certificate (the original client's case: `openssl req -x509` with
/// whatever name); --tls-pinned still refuses a certificate other than the pinned one.
#[test]
fn iscep_tls_checks_the_host_name_unless_pinned() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert_for(dir.path(), &["server.example"]);
    let d = s.start(&["--tls-cert", path_str(&cert), "--tls-key", path_str(&key)]);
    let tf = s.dir.path().join("alice.token");
    std::fs::write(&tf, format!("{}\n", s.alice)).unwrap();
    let p = port(&d).to_string();
    let run = |host: &str, ca: &Path, extra: &[&str]| {
        let o = Command::new(iscep())
            .args(["--host", host, "--port", &p, "--token-file", path_str(&tf)])
            .arg("--tls-ca")
            .arg(ca)
            .args(extra)
            .args(["echo", "hi"])
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let ok = (Some(0), r#"{"echo":"hi"}"#.to_string());
    for host in ["127.0.0.1", "localhost"] {
        let (code, out, err) = run(host, &cert, &[]);
        assert_eq!(code, Some(78), "{host}: {out} {err}");
        assert!(
            err.starts_with("iscep: TLS: the server's certificate is not for ")
                && err.contains("--tls-pinned"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        let (code, out, err) = run(host, &cert, &["--tls-pinned"]);
        assert_eq!((code, out), ok.clone(), "{host}: {err}");
    }
    // Pinned, but the server presents another certificate: refused.
    let other = tempfile::tempdir().unwrap();
    let (other_cert, _) = make_cert_for(other.path(), &["server.example"]);
    let (code, _, err) = run("127.0.0.1", &other_cert, &["--tls-pinned"]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("not trusted"), "{err}");
    // A certificate naming the host it is reached by: accepted without --tls-pinned.
    let (cert, key) = make_cert(dir.path());
    let d = s.start(&["--tls-cert", path_str(&cert), "--tls-key", path_str(&key)]);
    let p = port(&d).to_string();
    for host in ["127.0.0.1", "localhost"] {
        let o = Command::new(iscep())
            .args(["--host", host, "--port", &p, "--token-file", path_str(&tf)])
            .arg("--tls-ca")
            .arg(&cert)
            .args(["echo", "hi"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            r#"{"echo":"hi"}"#,
            "{host}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // --tls-pinned needs --tls-ca.
    let o = Command::new(iscep())
        .args(["--port", &p, "--tls-pinned", "echo"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
}

#[test]
fn socket_activation_and_notify() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut d = Daemon::activated(
        iscepd(),
        &[
            "--config",
            path_str(&s.cfg),
            "--tokens",
            path_str(&s.tokens),
            "--idle-exit",
            "1",
        ],
        &[("NOTIFY_SOCKET", path_str(&sock))],
    );
    let mut buf = [0u8; 512];
    let n = listener.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        msg.contains("READY=1")
            && msg.contains("STATUS=serving iscep: 9 commands, 2 token owners, plain TCP"),
        "{msg}"
    );
    let mut c = client(&d, Some(&s.alice));
    assert_eq!(c.echo("a").unwrap().ty, Type::Echo);
    assert!(c.close().unwrap().is_none());
    let st = d.wait(Duration::from_secs(10)).expect("idle exit");
    assert_eq!(st.code(), Some(0));
    assert!(d.log_text().contains("stopped reason=idle"));
}

#[test]
fn tokenctl_iscep_file_handling() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.json");
    let t = path_str(&f);
    let (rc, tok, _) = tokenctl_out(&["iscep", "add", "user", "--tokens", t]);
    assert_eq!(rc, 0);
    assert!(
        tok.len() == 512
            && tok
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&f).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        format!("{{\n    \"user\": \"{tok}\"\n}}")
    );
    let (rc, _, err) = tokenctl_out(&["iscep", "add", "user", "--tokens", t]);
    assert_eq!(rc, 65, "{err}");
    let (_, tok2, _) = tokenctl_out(&["iscep", "add", "other", "--tokens", t]);
    let (rc, list, _) = tokenctl_out(&["iscep", "list", "--tokens", t]);
    assert_eq!((rc, list.as_str()), (0, "user\nother"));
    let (rc, list, _) = tokenctl_out(&["--json", "iscep", "list", "--tokens", t]);
    assert_eq!(
        (rc, list.as_str()),
        (
            0,
            "{\"format\":1,\"kind\":\"iscep-owner\",\"owner\":\"user\"}\n{\"format\":1,\"kind\":\"iscep-owner\",\"owner\":\"other\"}"
        )
    );
    let (rc, tok3, _) = tokenctl_out(&["iscep", "rotate", "user", "--tokens", t]);
    assert_eq!(rc, 0);
    assert_ne!(tok3, tok);
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        format!("{{\n    \"user\": \"{tok3}\",\n    \"other\": \"{tok2}\"\n}}")
    );
    assert_eq!(
        tokenctl_out(&["iscep", "remove", "user", "--tokens", t]).0,
        0
    );
    assert_eq!(
        tokenctl_out(&["iscep", "remove", "user", "--tokens", t]).0,
        1
    );
    assert_eq!(
        tokenctl_out(&["iscep", "rotate", "user", "--tokens", t]).0,
        1
    );
    let missing = dir.path().join("none.json");
    let (rc, _, err) = tokenctl_out(&["iscep", "list", "--tokens", path_str(&missing)]);
    assert_eq!(rc, 66);
    assert!(
        err.starts_with("tokenctl: cannot read tokens file"),
        "{err}"
    );
    // The original's file (written by Python with 0644) is read as is.
    std::fs::write(&f, "{\n    \"user\": \"abc\"\n}").unwrap();
    let (rc, list, _) = tokenctl_out(&["iscep", "list", "--tokens", t]);
    assert_eq!((rc, list.as_str()), (0, "user"));
    std::fs::write(&f, "not json").unwrap();
    assert_eq!(tokenctl_out(&["iscep", "list", "--tokens", t]).0, 65);
}

/// Where iscep(1) takes its token from (--token, then --token-file, then ISCEP_TOKEN), and
/// its exits when no answer comes: 65/66 for the token file, 74 for a connection that breaks
/// or an answer that does not decode, 78 for TLS that cannot be set up.
#[test]
fn iscep_token_sources_and_exits_without_an_answer() {
    let s = setup();
    let d = s.start(&[]);
    let p = port(&d).to_string();
    let run = |port: &str, args: &[&str], env: Option<&str>| {
        let mut c = Command::new(iscep());
        c.args(["--port", port, "--timeout", "5"]).args(args);
        match env {
            Some(t) => c.env("ISCEP_TOKEN", t),
            None => c.env_remove("ISCEP_TOKEN"),
        };
        let o = c.output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let echoed = (Some(0), r#"{"echo":"hi"}"#.to_string());
    let answer = |port: &str, args: &[&str], env: Option<&str>| {
        let (code, out, _) = run(port, &[args, &["echo", "hi"]].concat(), env);
        (code, out)
    };
    assert_eq!(answer(&p, &["--token", &s.alice], None), echoed);
    assert_eq!(answer(&p, &[], Some(&s.alice)), echoed);
    assert_eq!(answer(&p, &[], Some("not-a-token")).0, Some(2));
    assert_eq!(answer(&p, &[], Some("")).0, Some(2));
    // --token and --token-file come before the environment.
    assert_eq!(
        answer(&p, &["--token", &s.alice], Some("not-a-token")),
        echoed
    );
    let tf = s.dir.path().join("alice.token");
    std::fs::write(&tf, format!("{}\nsecond line\n", s.alice)).unwrap();
    assert_eq!(
        answer(&p, &["--token-file", path_str(&tf)], Some("not-a-token")),
        echoed
    );
    // The token file: empty (65), unreadable (66).
    let empty = s.dir.path().join("empty.token");
    std::fs::write(&empty, "\n").unwrap();
    let (code, _, err) = run(&p, &["--token-file", path_str(&empty), "echo"], None);
    assert_eq!(code, Some(65), "{err}");
    assert!(err.contains("no token in the file"), "{err}");
    let (code, _, err) = run(&p, &["--token-file", "/nonexistent/t", "echo"], None);
    assert_eq!(code, Some(66), "{err}");
    // 78: TLS asked of a plain server, or a CA file that is not there (no fall-back to TCP).
    let (cert, _) = make_cert(s.dir.path());
    let (code, _, err) = run(&p, &["--tls-ca", path_str(&cert), "echo"], Some(&s.alice));
    assert_eq!(code, Some(78), "{err}");
    let (code, out, err) = run(
        &p,
        &["--tls-ca", "/nonexistent/ca.pem", "echo"],
        Some(&s.alice),
    );
    assert_eq!((code, out.as_str()), (Some(78), ""), "{err}");
    // 74: a server that closes without answering, and one whose answer is not a frame.
    for reply in [&b""[..], b"HTTP/1.1 400 Bad Request\r\n\r\n"] {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fake = l.local_addr().unwrap().port().to_string();
        let h = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut b = [0u8; 64];
            let _ = c.read(&mut b);
            c.write_all(reply).unwrap();
        });
        let (code, out, err) = run(&fake, &["echo"], Some(&s.alice));
        h.join().unwrap();
        assert_eq!((code, out.as_str()), (Some(74), ""), "{reply:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// SIGTERM (iscepd(8)): iscepd stops accepting, lets the command in progress finish and
/// answer, and exits 0.
#[test]
fn sigterm_lets_the_command_in_progress_finish() {
    let s = setup();
    let mut cfg = std::fs::read_to_string(&s.cfg).unwrap();
    // The command marks its start in a file: SIGTERM comes while it runs.
    let started = s.dir.path().join("started");
    cfg.push_str(&format!(
        "\n[commands.slow]\nexec = [\"/bin/sh\", \"-c\", \": > {}; sleep 1; echo '{{\\\"slept\\\": 1}}'\"]\n",
        path_str(&started)
    ));
    std::fs::write(&s.cfg, cfg).unwrap();
    let mut d = s.start(&[]);
    let mut c = client(&d, Some(&s.alice));
    assert_eq!(c.echo("up").unwrap().ty, Type::Echo);
    let inflight = std::thread::spawn(move || c.command("slow", None));
    crate::common::wait_for("the command to start", || started.exists().then_some(()));
    Command::new("kill")
        .arg(d.child.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(&d.addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let p = inflight.join().unwrap().unwrap();
    assert_eq!(p.ty, Type::CmdResponse, "{p:?}");
    assert_eq!(p.body.response, Some(json!({"slept": 1})));
    let st = d
        .wait(Duration::from_secs(15))
        .expect("no exit after SIGTERM");
    assert_eq!(st.code(), Some(0), "{}", d.log_text());
    assert!(
        d.log_text().contains("stopped reason=SIGTERM"),
        "{}",
        d.log_text()
    );
}
