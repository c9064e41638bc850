//! s5d, s5d put and s5client end to end: v1/v2 answers, the client file, every secret intake (stdin, the
//! terminal with echo off, a systemd credential, s5d put over the control socket), the
//! limits, bad input, concurrency and timeouts, socket activation, background mode.

pub mod util;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use util::*;

#[test]
fn s5_gets_any_secret_from_s5d_through_v2() {
    let secrets: Vec<Vec<u8>> = vec![
        b"s".to_vec(),
        b"".to_vec(),
        "é".repeat(23).into_bytes(),
        "ключ🔑".as_bytes().to_vec(),
        vec![b'x'; 47],
        vec![b'y'; 48],
        (0..5000).map(|i| b'a' + (i % 26) as u8).collect(),
    ];
    for secret in secrets {
        let mut srv = start_s5d(&secret, &[]);
        assert_got(&fetch_s5(&srv), &secret);
        assert!(srv.wait(Duration::from_secs(10)).unwrap().success());
        assert!(!srv.client_file.exists());
        let err = srv.stderr();
        assert!(err.contains("success-max reached"), "{err}");
        let text = String::from_utf8_lossy(&secret);
        if secret.len() > 3 {
            assert!(!err.contains(&*text), "secret in the log");
        }
    }
}

#[test]
fn v1_answer_is_48_bytes_with_a_fresh_tail_and_no_pad_in_clear() {
    let secret = vec![b'k'; 47];
    let srv = start_s5d(&secret, &["--success-max", "0"]);
    let token = b64d(&srv.token());
    let (id, pad) = token.split_at(48);
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let (status, head, body) = post(&srv.addr(), id, "");
        assert_eq!(status, 200, "{head}");
        assert!(head
            .to_lowercase()
            .contains("content-type: text/plain; charset=utf-8"));
        assert_eq!(
            body.len(),
            64,
            "48 bytes in base64, even for 47-byte secrets"
        );
        let ct = b64d(std::str::from_utf8(&body).unwrap());
        assert_eq!(ct.len(), 48);
        let m: Vec<u8> = ct.iter().zip(pad).map(|(c, p)| c ^ p).collect();
        assert_eq!(m[0], 47);
        assert_eq!(&m[1..], &secret[..]);
        bodies.push(body);
    }
    // A short secret: the tail differs between answers (random), so it is not the pad.
    let srv = start_s5d(b"short", &["--success-max", "0"]);
    let token = b64d(&srv.token());
    let (id, pad) = token.split_at(48);
    let a = b64d(std::str::from_utf8(&post(&srv.addr(), id, "").2).unwrap());
    let b = b64d(std::str::from_utf8(&post(&srv.addr(), id, "").2).unwrap());
    assert_eq!(a[..6], b[..6]);
    assert_ne!(a[6..], b[6..]);
    assert_ne!(a[6..], pad[6..], "tail is not the raw pad");
    // v2 when asked for.
    let (status, head, body) = post(&srv.addr(), id, "Accept: application/x-s5-v2\r\n");
    assert_eq!(status, 200);
    assert!(head.contains("application/x-s5-v2"), "{head}");
    let raw = b64d(std::str::from_utf8(&body).unwrap());
    assert_eq!(*keysock::s5::wire::open_v2(&raw, pad).unwrap(), b"short");
}

/// A proxy on a free loopback port to `upstream` that drops the client's Accept header, so
/// s5d answers the original's unauthenticated v1: a downgrade on the way. Serves `n`
/// connections, one request each.
fn downgrading_proxy(upstream: String, n: usize) -> (u16, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        for _ in 0..n {
            let (mut c, _) = l.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") && c.read(&mut b).unwrap() == 1 {
                req.push(b[0]);
            }
            let head = String::from_utf8(req).unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            c.read_exact(&mut body).unwrap();
            let head: String = head
                .split_inclusive("\r\n")
                .filter(|l| !l.to_lowercase().starts_with("accept:"))
                .collect();
            let mut up = TcpStream::connect(&upstream).unwrap();
            up.write_all(head.as_bytes()).unwrap();
            up.write_all(&body).unwrap();
            let mut answer = Vec::new();
            up.read_to_end(&mut answer).unwrap();
            c.write_all(&answer).unwrap();
        }
    });
    (port, h)
}

/// s5d marks its client file `"protocol": 2`; with such a file s5 refuses a v1 answer (here
/// from s5d itself, through a proxy that strips the v2 request): FAILED, exit 1, a clear
/// reason. Without the key (the original server's file) the same answer is taken, and the
/// original client reads the marked file (tests/s5_interop.rs).
#[test]
fn s5_refuses_a_v1_answer_when_the_client_file_says_v2() {
    let secret = b"not for downgrades";
    let srv = start_s5d(secret, &["--success-max", "0"]);
    let text = std::fs::read_to_string(&srv.client_file).unwrap();
    assert!(text.ends_with(", \"protocol\": 2}"), "{text}");
    let (port, proxy) = downgrading_proxy(srv.addr(), 2);
    let via_proxy = |file: &Path| {
        Command::new(s5client())
            .arg("--client-file")
            .arg(file)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = via_proxy(&srv.client_file);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "FAILED\n");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unauthenticated v1 answer, but the client file says its server answers v2"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // The original server's file has no such key: v1 is what that server speaks.
    let plain = srv.dir.path().join("plain.json");
    std::fs::write(&plain, text.replace(", \"protocol\": 2", "")).unwrap();
    assert_got(&via_proxy(&plain), secret);
    proxy.join().unwrap();
    // Straight to s5d: v2, served.
    assert_got(&fetch_s5(&srv), secret);
}

#[test]
fn client_file_is_private_atomic_and_removed_unless_kept() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    let cf = dir.path().join("cf.json");
    std::os::unix::fs::symlink(&victim, &cf).unwrap();
    let (mut child, port) = with_free_port(|port| {
        let p = port.to_string();
        let mut child = Command::new("setsid")
            .arg(s5d())
            .args(["--foreground", "--bind-address", "127.0.0.1"])
            .args(["--port-min", &p, "--port-max", &p])
            .args(["--logfile", "stdout", "--client-file"])
            .arg(&cf)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"pw\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::symlink_metadata(&cf)
            .unwrap()
            .file_type()
            .is_symlink()
        {
            if child.try_wait().unwrap().is_some() {
                return None; // the port was taken meanwhile
            }
            assert!(Instant::now() < deadline, "client file not written");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some((child, p))
    });
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    let m = std::fs::metadata(&cf).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&cf).unwrap();
    assert!(
        text.starts_with("{\"host\": ") && !text.ends_with('\n'),
        "{text}"
    );
    assert!(text.contains(&format!(
        "\"bind_address\": \"127.0.0.1\", \"port\": {port}, "
    )));
    let o = Command::new(s5client())
        .arg("--client-file")
        .arg(&cf)
        .args(["--host", "127.0.0.1"])
        .output()
        .unwrap();
    assert_got(&o, b"pw");
    assert!(child.wait().unwrap().success());
    assert!(!cf.exists(), "removed on exit");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp files left"
    );
}

#[test]
fn wrong_identifiers_count_once_each_until_failure_max() {
    let mut srv = start_s5d(b"topsecret", &["--failure-max", "4", "--success-max", "0"]);
    let addr = srv.addr();
    let token = b64d(&srv.token());
    let wrong = keysock::s5::wire::b64encode(&[9u8; 96]);
    // 1: s5client with a wrong token.
    let o = fetch_with(Path::new(s5client()), &srv, &["--token", &wrong]);
    assert_failed(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong token (404)"));
    // 2: 47 bytes of the right identifier; the original's answer: 404, JSON type, no body.
    let (st, head, body) = post(&addr, &token[..47], "");
    assert_eq!(st, 404);
    assert!(
        head.to_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert!(body.is_empty());
    // Not counted: other methods, other paths, garbage.
    let (st, head, body) = raw(&addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(st, 405);
    assert!(
        head.to_lowercase().contains("allow: post, options"),
        "{head}"
    );
    assert_eq!(body, b"{\"title\": \"405 Method Not Allowed\"}");
    let (st, head, _) = raw(&addr, b"OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(st, 200);
    assert!(head.to_lowercase().contains("allow: post\r\n"), "{head}");
    let (st, _, body) = raw(
        &addr,
        b"POST /foo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(st, 404);
    assert_eq!(body, b"{\"title\": \"404 Not Found\"}");
    for g in [
        &b"\x00\xff\x13\x37\r\n\r\n"[..],
        b"POST / HTTP/9.9\r\n\r\n",
        b"\r\n\r\n",
    ] {
        let (st, _, _) = raw(&addr, g);
        assert!(st == 400 || st == 505 || st == 0, "garbage answered {st}");
    }
    // 3: an oversized body (1 MiB).
    let (st, _, _) = post(&addr, &vec![b'A'; 1 << 20], "");
    assert_eq!(st, 404);
    assert!(
        srv.child.try_wait().unwrap().is_none(),
        "still serving after 3 failures"
    );
    // The right identifier still works in between, and is not a failure.
    assert_got(&fetch_s5(&srv), b"topsecret");
    // 4: a truncated body (Content-Length 48, 10 bytes, then the client hangs up).
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 48\r\n\r\n0123456789")
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    let st = srv
        .wait(Duration::from_secs(10))
        .expect("exits at --failure-max 4");
    assert!(st.success());
    let err = srv.stderr();
    assert!(
        err.contains("failure-max reached (4 failed requests)"),
        "{err}"
    );
    assert_eq!(err.matches("outcome=failure").count(), 4, "{err}");
}

#[test]
fn an_idle_or_slow_client_blocks_nobody_and_consumes_nothing() {
    let mut srv = start_s5d(b"patience", &["--timeout", "2"]);
    let addr = srv.addr();
    // One connection that says nothing, one that stalls half-way through its body.
    let idle = TcpStream::connect(&addr).unwrap();
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 48\r\n\r\nabc")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    assert_got(&fetch_s5(&srv), b"patience");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "served at once: {:?}",
        t.elapsed()
    );
    assert!(srv.wait(Duration::from_secs(10)).unwrap().success());
    drop((idle, slow));
}

#[test]
fn timeouts_cut_idle_connections_and_count_a_stalled_body_once() {
    let srv = start_s5d(b"x1", &["--timeout", "1", "--success-max", "0"]);
    let mut slow = TcpStream::connect(srv.addr()).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 48\r\n\r\nabc")
        .unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "cut after the timeout"
    );
    assert_eq!(crate::common::parse(&buf).status, 404);
    let mut idle = TcpStream::connect(srv.addr()).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t = Instant::now();
    let _ = idle.read_to_end(&mut buf);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "idle connection closed"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        srv.stderr().matches("outcome=failure").count(),
        1,
        "{}",
        srv.stderr()
    );
}

#[test]
fn concurrent_clients_get_exactly_success_max_secrets() {
    let mut srv = start_s5d(b"only-once", &["--success-max", "2", "--keep-client-file"]);
    let cf = srv.client_file.clone();
    let outs: Vec<_> = (0..8)
        .map(|_| {
            let cf = cf.clone();
            std::thread::spawn(move || {
                Command::new(s5client())
                    .arg("--client-file")
                    .arg(&cf)
                    .args(["--host", "127.0.0.1", "--timeout", "10"])
                    .output()
                    .unwrap()
            })
        })
        .map(|t| t.join().unwrap())
        .collect();
    let got = outs.iter().filter(|o| o.stdout == b"only-once").count();
    assert_eq!(got, 2, "{outs:?}");
    for o in &outs {
        assert!(o.status.success() || o.stdout == b"FAILED\n", "{o:?}");
    }
    assert!(srv.wait(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn expire_stops_s5d_and_says_why() {
    let mut srv = start_s5d(b"short-lived", &["--expire", "1"]);
    let st = srv.wait(Duration::from_secs(10)).expect("expired");
    assert!(st.success());
    assert!(
        srv.stderr().contains("expired after 1s"),
        "{}",
        srv.stderr()
    );
    assert!(!srv.client_file.exists());
    assert_failed(
        &Command::new(s5client())
            .args(["--no-client-file", "--host", "127.0.0.1", "--port"])
            .arg(srv.port.to_string())
            .args(["--token", &keysock::s5::wire::b64encode(&[1u8; 96])])
            .output()
            .unwrap(),
    );
}

#[test]
fn secret_from_a_systemd_credential() {
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("s5-secret"), "from-credential\n").unwrap();
    let dir = creds.path().to_str().unwrap();
    // Standard input is ignored when the credential is there.
    let mut srv = start(
        Path::new(s5d()),
        b"not-this",
        &[],
        &[("CREDENTIALS_DIRECTORY", dir)],
    );
    assert_got(&fetch_s5(&srv), b"from-credential");
    assert!(srv.wait(Duration::from_secs(10)).unwrap().success());
    // --secret-from credential without one: a clear error.
    let o = Command::new(s5d())
        .args(["--foreground", "--secret-from", "credential"])
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(66));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("s5d: no credential s5-secret"), "{err}");
}

/// The terminal prompt, with echo off: `script` gives s5d a pseudo-terminal, and what the
/// terminal shows must have the prompt but not the secret.
#[test]
fn secret_from_the_terminal_with_echo_off() {
    let dir = tempfile::tempdir().unwrap();
    let cf = dir.path().join("cf.json");
    let (mut child, shown, stdin) = with_free_port(|port| {
        let cmdline = format!(
            "{} --foreground --bind-address 127.0.0.1 --port-min {port} --port-max {port} --client-file {} --logfile stdout",
            s5d(),
            cf.display()
        );
        let mut child = Command::new("script")
            .args(["-q", "-e", "-c", &cmdline, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("script(1), from util-linux");
        let mut stdin = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let shown = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = shown.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 1024];
            while let Ok(n @ 1..) = out.read(&mut chunk) {
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        let text = || String::from_utf8_lossy(&shown.lock().unwrap()).into_owned();
        // Type once the prompt is up: s5d turns echo off before it prompts.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !text().contains("Enter secret: ") {
            assert!(Instant::now() < deadline, "no prompt: {:?}", text());
            std::thread::sleep(Duration::from_millis(20));
        }
        stdin.write_all(b"typed-secret\n").unwrap();
        while !cf.exists() {
            if child.try_wait().unwrap().is_some() {
                return None; // the port was taken meanwhile
            }
            assert!(Instant::now() < deadline, "s5d did not start: {:?}", text());
            std::thread::sleep(Duration::from_millis(20));
        }
        Some((child, shown, stdin))
    });
    let o = Command::new(s5client())
        .arg("--client-file")
        .arg(&cf)
        .args(["--host", "127.0.0.1"])
        .output()
        .unwrap();
    assert_got(&o, b"typed-secret");
    drop(stdin);
    let _ = child.wait();
    let shown = String::from_utf8_lossy(&shown.lock().unwrap()).into_owned();
    assert!(shown.contains("Enter secret: "), "{shown:?}");
    assert!(!shown.contains("typed-secret"), "echoed: {shown:?}");
    assert!(shown.contains("Secret's sha256: "), "{shown:?}");
}

fn put(control: &Path, secret: &[u8], extra: &[&str]) -> std::process::Output {
    let mut c = Command::new("setsid")
        .arg(s5d())
        .arg("put")
        .arg("--control")
        .arg(control)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(secret).unwrap();
    c.wait_with_output().unwrap()
}

#[test]
fn secret_from_s5d_put_over_the_control_socket() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("ctl.sock");
    let ctl_s = ctl.to_str().unwrap();
    let mut srv = start_s5d(b"", &["--secret-from", "put", "--control", ctl_s]);
    let mode = std::fs::metadata(&ctl).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "control socket is private");
    // Before the secret: the client fails, nothing is counted.
    let o = fetch_s5(&srv);
    assert_failed(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no secret loaded yet"));
    // `s5d token` tells where s5d is.
    let o = Command::new(s5d())
        .args(["token", "--control", ctl_s, "--no-client-file"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("Token: {}\n", srv.token())
    );
    // Another user is refused by SO_PEERCRED (changing uid with setpriv needs root: a test
    // that cannot check it fails rather than passes).
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (setpriv to another uid)"
    );
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(s5d())
        .args(["token", "--control", ctl_s, "--no-client-file"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(69), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("permission denied: uid 65534"), "{err}");
    let o = put(&ctl, "put-sécret".as_bytes(), &[]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("written by s5d"),
        "{o:?}"
    );
    // A second put is refused: one secret per run.
    let o = put(&ctl, b"other", &[]);
    assert_eq!(o.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already loaded"));
    assert_got(&fetch_s5(&srv), "put-sécret".as_bytes());
    assert!(srv.wait(Duration::from_secs(10)).unwrap().success());
    assert!(!ctl.exists(), "control socket removed on exit");
    let err = srv.stderr();
    assert!(err.contains("secret-loaded source=put"), "{err}");
    assert!(!err.contains("put-s"), "no secret in the log");
}

/// Under socket activation (as systemd does it): s5d serves the sockets it is handed, takes
/// the secret from `s5d put` on the control socket, writes the client file, exits at the limit.
#[test]
fn socket_activated_with_put() {
    activated_put(true);
}

/// Handed only the control socket (the user unit's default: no port shared by every user),
/// s5d finds a port itself, as unactivated, and writes it to the client file.
#[test]
fn socket_activated_without_tcp_searches_a_port() {
    activated_put(false);
}

fn activated_put(tcp_from_systemd: bool) {
    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("s5d.sock");
    let cf = dir.path().join("cf.json");
    let stderr = dir.path().join("stderr");
    let mine = dir.path().join("mine.json");
    let (mut act, port) = with_free_port(|port| {
        let mut act = Command::new("systemd-socket-activate");
        if tcp_from_systemd {
            act.arg("-l").arg(format!("127.0.0.1:{port}"));
        }
        act.arg("-l").arg(&ctl).arg(s5d());
        if !tcp_from_systemd {
            let p = port.to_string();
            act.args(["--bind-address", "127.0.0.1"])
                .args(["--port-min", &p, "--port-max", &p]);
        }
        let _ = std::fs::remove_file(&ctl);
        let mut act = act
            .args(["--success-max", "1", "--client-file"])
            .arg(&cf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ctl.exists() {
            if act.try_wait().unwrap().is_some() {
                return None; // the port was taken meanwhile
            }
            assert!(
                Instant::now() < deadline,
                "systemd-socket-activate did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The first connection (the put) starts s5d.
        let o = put(
            &ctl,
            b"activated",
            &["--client-file", mine.to_str().unwrap()],
        );
        if !o.status.success() {
            let log = std::fs::read_to_string(&stderr).unwrap();
            if log.contains("could not find a free port") {
                let _ = act.kill();
                let _ = act.wait();
                return None; // s5d found its port taken
            }
            panic!("{o:?} {log}");
        }
        Some((act, port))
    });
    assert!(
        !mine.exists(),
        "s5d wrote the client file itself, so put writes none"
    );
    let text = std::fs::read_to_string(&cf).expect("s5d wrote the client file");
    assert!(text.contains(&format!("\"port\": {port}")), "{text}");
    let o = Command::new(s5client())
        .arg("--client-file")
        .arg(&cf)
        .args(["--host", "127.0.0.1"])
        .output()
        .unwrap();
    assert_got(&o, b"activated");
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        if let Some(st) = act.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "s5d did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(st.success());
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(log.contains("source=Put"), "{log}");
    assert!(log.contains("success-max reached"), "{log}");
    assert!(!cf.exists());
}

#[test]
fn background_mode_reports_startup_errors_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let cf = dir.path().join("cf.json");
    let log = dir.path().join("s5.log");
    let run = |port: &str, args: &[&str], cf: &Path| {
        let mut c = Command::new("setsid")
            .arg(s5d())
            .args([
                "--bind-address",
                "127.0.0.1",
                "--port-min",
                port,
                "--port-max",
                port,
            ])
            .arg("--client-file")
            .arg(cf)
            .arg("--logfile")
            .arg(&log)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(b"bg-secret\n").unwrap();
        let t = Instant::now();
        let o = c.wait_with_output().unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the parent returns at once"
        );
        o
    };
    let (port, o) = with_free_port(|port| {
        let port = port.to_string();
        let o = run(&port, &[], &cf);
        // 69: the port was taken meanwhile.
        (o.status.code() != Some(69)).then_some((port, o))
    });
    assert!(o.status.success(), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!(
            "listening on {} on port {port}.",
            keysock::s5::hostname()
        )),
        "{out}"
    );
    let pid: i32 = out
        .split("Process ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert_ne!(pid as u32, 0);
    // The port is taken by the child now: a second s5d fails, and says so (exit 69).
    let o = run(&port, &[], &dir.path().join("other.json"));
    assert_eq!(o.status.code(), Some(69), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("s5d: cannot listen: could not find a free port"),
        "{err}"
    );
    let o = Command::new(s5client())
        .arg("--client-file")
        .arg(&cf)
        .args(["--host", "127.0.0.1"])
        .output()
        .unwrap();
    assert_got(&o, b"bg-secret");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "background s5d did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!cf.exists());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("\"POST / HTTP/1.1\" 200 76"), "{text}");
    // An unwritable client file is reported by the parent too.
    let o = run(&port, &[], Path::new("/nonexistent/dir/cf.json"));
    assert_eq!(o.status.code(), Some(73), "{o:?}");
}

#[test]
fn s5client_errors_are_one_line_with_sysexits() {
    let cases: [(&[&str], i32, &str); 3] = [
        (
            &["--client-file", "/nonexistent/cf.json"],
            66,
            "s5client: /nonexistent/cf.json: cannot read",
        ),
        (
            &["--no-client-file", "--port", "1"],
            64,
            "s5client: no host",
        ),
        (
            &[
                "--no-client-file",
                "--host",
                "h",
                "--port",
                "1",
                "--token",
                "abc",
            ],
            65,
            "s5client: bad token",
        ),
    ];
    for (args, code, msg) in cases {
        let o = Command::new(s5client())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(
            err.starts_with(msg) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    // `s5d put` with no s5d on the control socket.
    let o = Command::new(s5d())
        .args(["put", "--control", "/nonexistent/s5d.sock"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(69), "{err}");
    assert!(
        err.starts_with("s5d: cannot connect to /nonexistent/s5d.sock") && err.lines().count() == 1,
        "{err}"
    );
    // A refused connection: FAILED on stdout, exit 1, and the reason on stderr.
    let (_held, port) = closed_port();
    let port = port.to_string();
    let o = Command::new(s5client())
        .args(["--no-client-file", "--host", "127.0.0.1", "--port", &port])
        .args(["--token", &keysock::s5::wire::b64encode(&[1u8; 96])])
        .output()
        .unwrap();
    assert_failed(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot connect"));
}

#[test]
fn half_closed_wrong_identifiers_are_answered_and_counted() {
    let mut srv = start_s5d(b"halfway", &["--failure-max", "100", "--success-max", "0"]);
    let wrong = vec![b'A'; 48];
    let req = [
        &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 48\r\n\r\n"[..],
        &wrong,
    ]
    .concat();
    // As `nc -N` sends it: the request, then the write side shut.
    crate::common::assert_half_closed_answered(&srv.addr(), &req, 404);
    let st = srv
        .wait(Duration::from_secs(10))
        .expect("exits at --failure-max 100");
    assert!(st.success());
    let err = srv.stderr();
    assert!(
        err.contains("failure-max reached (100 failed requests)"),
        "{err}"
    );
}

/// tests/s5/v2_kat.py: the v2 answer computed from s5d(1) with Python's cryptography
/// (Debian: python3-cryptography), independently of keysock's code.
fn v2_kat(args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut c = Command::new("python3")
        .arg(root().join("tests/s5/v2_kat.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    c.stdin.take().unwrap().write_all(stdin).unwrap();
    let o = c.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("No module named 'cryptography'"),
        "the s5 v2 known answers need Python's cryptography (Debian: python3-cryptography)"
    );
    o
}

/// One connection on a free loopback port answered with `body` as a v2 answer; the thread
/// returns the request head it got.
fn serve_one_v2(body: String) -> (u16, std::thread::JoinHandle<String>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = Vec::new();
        let mut b = [0u8; 1];
        while !req.ends_with(b"\r\n\r\n") && c.read(&mut b).unwrap() == 1 {
            req.push(b[0]);
        }
        let mut id = [0u8; 48];
        c.read_exact(&mut id).unwrap();
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-s5-v2\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        c.write_all(answer.as_bytes()).unwrap();
        String::from_utf8(req).unwrap()
    });
    (port, h)
}

/// Known answers for v2 from an independent implementation of s5d(1), THE V2 ANSWER: each
/// answer s5d serves is byte for byte the man page's for its iv, and s5client opens an
/// answer made by Python and refuses it with one byte changed.
#[test]
fn v2_known_answers_from_an_independent_implementation() {
    let secrets: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"short".to_vec(),
        "ключ🔑".as_bytes().to_vec(),
        (0..1000).map(|i| b'!' + (i * 7 % 90) as u8).collect(),
    ];
    for secret in &secrets {
        let srv = start_s5d(secret, &["--success-max", "0"]);
        let token = srv.token();
        let (status, head, body) = post(
            &srv.addr(),
            &b64d(&token)[..48],
            "Accept: application/x-s5-v2\r\n",
        );
        assert_eq!(status, 200, "{head}");
        let o = v2_kat(&["check", &token, &keysock::secret::hex(secret)], &body);
        assert!(
            o.status.success(),
            "secret of {} bytes: {}{}",
            secret.len(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // The other way: an answer sealed by Python for a fixed token and iv.
    let token_raw: Vec<u8> = (0..96u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    let token = keysock::s5::wire::b64encode(&token_raw);
    let iv = "000102030405060708090a0b0c0d0e0f";
    for secret in &secrets {
        let o = v2_kat(&["seal", &token, iv, &keysock::secret::hex(secret)], b"");
        assert!(o.status.success(), "{o:?}");
        let body = String::from_utf8(o.stdout).unwrap();
        for tamper in [false, true] {
            let mut sent = body.clone().into_bytes();
            if tamper {
                // One base64 character of the ciphertext (or of the tag) changed.
                let i = 24.min(sent.len() - 4);
                sent[i] = if sent[i] == b'A' { b'B' } else { b'A' };
            }
            let (port, h) = serve_one_v2(String::from_utf8(sent).unwrap());
            let o = Command::new(s5client())
                .args(["--no-client-file", "--host", "127.0.0.1"])
                .args(["--port", &port.to_string(), "--token", &token])
                .args(["--timeout", "10"])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let head = h.join().unwrap();
            assert!(
                head.to_lowercase().contains("accept: application/x-s5-v2"),
                "{head}"
            );
            if tamper {
                assert_failed(&o);
                assert!(
                    String::from_utf8_lossy(&o.stderr).contains("authentication"),
                    "{o:?}"
                );
            } else {
                assert_got(&o, secret);
            }
        }
    }
}

/// SIGTERM (keysock(7)): s5d stops accepting, answers the request in progress (a success,
/// counted), exits 0 and removes its client file.
#[test]
fn sigterm_lets_the_request_in_progress_finish() {
    let mut srv = start_s5d(b"drained", &["--success-max", "5"]);
    let token = b64d(&srv.token());
    let mut first =
        b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 48\r\n\r\n".to_vec();
    first.extend_from_slice(&token[..20]);
    let r = crate::common::sigterm_midway(&srv.addr(), srv.child.id(), &first, &token[20..48]);
    assert_eq!(r.status, 200, "{r:?}");
    let ct = b64d(std::str::from_utf8(&r.body).unwrap());
    assert_eq!(
        *keysock::s5::wire::open_v1(&ct, &token[48..]).unwrap(),
        b"drained"
    );
    let st = srv
        .wait(Duration::from_secs(15))
        .expect("no exit after SIGTERM");
    assert_eq!(st.code(), Some(0), "{}", srv.stderr());
    assert!(!srv.client_file.exists(), "client file left behind");
    assert!(srv.stderr().contains("SIGTERM"), "{}", srv.stderr());
}

/// s5d(1): with --no-client-file (and no socket activation) the token is printed as
/// `Token: BASE64` on standard output, as the original, after the lines the original prints;
/// --max-connections answers 503 beyond the cap.
#[test]
fn token_line_without_a_client_file_and_the_connection_cap() {
    let srv = start_s5d(
        b"printed",
        &[
            "--no-client-file",
            "--success-max",
            "0",
            "--max-connections",
            "1",
            "--max-connections-per-source",
            "1",
        ],
    );
    assert!(!srv.client_file.exists());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !srv.stdout().contains("Token: ") {
        assert!(
            Instant::now() < deadline,
            "no Token: line: {}",
            srv.stdout()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = srv.stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 3, "{out:?}");
    let sha = keysock::secret::sha256_hex(b"printed");
    assert_eq!(lines[0], format!("Secret's sha256: {}...", &sha[..6]));
    assert_eq!(
        lines[1],
        format!(
            "Process {} listening on {} on port {}.",
            srv.child.id(),
            keysock::s5::hostname(),
            srv.port
        )
    );
    let token = lines[2].strip_prefix("Token: ").expect("Token: line third");
    assert_eq!(token.len(), 128);
    assert_eq!(b64d(token).len(), 96);
    assert!(!srv.stderr().contains(token), "token in the log");
    let o = Command::new(s5client())
        .args(["--no-client-file", "--host", "127.0.0.1"])
        .args(["--port", &srv.port.to_string(), "--token", token])
        .output()
        .unwrap();
    assert_got(&o, b"printed");
    // One connection open (after the start-up probe's has closed): the next gets 503.
    crate::common::wait_connections_closed(&srv.addr());
    let held = TcpStream::connect(srv.addr()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let (status, head, _) = post(&srv.addr(), &b64d(token)[..48], "");
    assert_eq!(status, 503, "{head}");
    drop(held);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(post(&srv.addr(), &b64d(token)[..48], "").0, 200);
}
