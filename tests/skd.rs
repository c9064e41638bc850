//! skd end to end: persistence across kill -9, concurrency, bad input, the fixes of skd(8),
//! socket activation with sd_notify, idle exit, TLS, and tokenctl on the same store.

use crate::common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

fn login(d: &Daemon, realm: &str, user: &str, pwd: &str) -> String {
    let r = d.get(&format!("/auth_token?realm={realm}&user={user}&pwd={pwd}"));
    assert_eq!(r.status, 200, "login {user}: {r:?}");
    let t = r.first_line();
    assert!(is_token(&t), "{t}");
    t
}

#[test]
fn tokens_and_keys_survive_kill_9() {
    pam_setup();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let args = [
        "-d",
        path_str(&store),
        "-pam-app",
        PAM_SERVICE,
        "--allow-stored-token",
    ];
    let mut d = Daemon::direct(skd(), &args);
    let t1 = login(&d, "r1", "alice", "wonderland");
    let t2 = login(&d, "r1", "alice", "wonderland");
    let t3 = login(&d, "r1", "nobody", "nopass");
    assert_eq!(
        d.get("/stored_token?realm=r2&user=carol&token=abc").status,
        200
    );
    let key = d.get(&format!("/gen_key?realm=r1&token={t2}")).text();
    assert_eq!(key.len(), 128);
    assert_eq!(
        d.get(&format!("/create_group?realm=r1&token={t2}&group=g"))
            .text(),
        "OK\n"
    );
    let hash = d
        .get(&format!("/group_hash?realm=r1&token={t2}&group=g&salt=s"))
        .text();
    let probes = [
        format!("/valid?realm=r1&token={t1}"),
        format!("/valid?realm=r1&token={t2}"),
        format!("/valid?realm=r1&token={t3}"),
        "/valid?realm=r2&token=abc".to_string(),
    ];
    let before: Vec<String> = probes.iter().map(|p| d.get(p).text()).collect();
    let nobody = keysock::pam::lookup_ids("nobody");
    let (uid, gid) = (nobody.uid.unwrap(), nobody.gid.unwrap());
    assert_eq!(
        before,
        [
            "SUPERCEDED\nalice\nauth/pam\n\n".to_string(),
            "YES\nalice\nauth/pam\n\n".to_string(),
            format!("YES\nnobody\nauth/pam\nuid={uid}\ngid={gid}\n\n"),
            "YES\ncarol\nstored\n\n".to_string(),
        ]
    );
    // The documented formula: SHA-256 of "salt\ngroup-key", the key read from the store.
    let q = format!(
        "SELECT v FROM kv WHERE k = 'grk:{}'",
        keysock::secret::sha1_hex(b"g")
    );
    let out = Command::new("sqlite3")
        .arg(store.join("skd.sqlite"))
        .arg(&q)
        .output()
        .unwrap();
    let group_key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(!group_key.is_empty(), "no group key in the store");
    let out = Command::new("sh")
        .args(["-c", "printf 's\\n%s' \"$1\" | sha256sum", "sh", &group_key])
        .output()
        .unwrap();
    let want = String::from_utf8(out.stdout).unwrap();
    let want = want.split_whitespace().next().unwrap();
    assert_eq!(hash, format!("{want}\n"));
    Command::new("kill")
        .arg("-9")
        .arg(d.child.id().to_string())
        .status()
        .unwrap();
    d.wait(Duration::from_secs(5)).expect("killed");

    let d = Daemon::direct(skd(), &args);
    let after: Vec<String> = probes.iter().map(|p| d.get(p).text()).collect();
    assert_eq!(before, after);
    assert_eq!(d.get(&format!("/get_key?realm=r1&token={t2}")).text(), key);
    assert_eq!(
        d.get(&format!("/group_hash?realm=r1&token={t2}&group=g&salt=s"))
            .text(),
        hash
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&store).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700, "store directory is private");
    let db = std::fs::metadata(store.join("skd.sqlite")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&db.permissions()) & 0o777,
        0o600
    );
    for t in [&t1, &t2, &t3] {
        assert!(!d.log_text().contains(t.as_str()), "token in log");
    }
}

/// 8 clients x 500 mixed requests (login, valid, replace, revoke), each on its own user so
/// every answer is known in advance: nothing lost, nothing wrong.
#[test]
fn eight_clients_five_hundred_requests_each() {
    pam_setup();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::direct(
        skd(),
        &["-d", path_str(dir.path()), "-pam-app", PAM_SERVICE],
    );
    let addr = d.addr.clone();
    let workers: Vec<_> = (1..=8)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let (user, pwd) = (format!("c{i}"), format!("pw{i}"));
                let n = std::cell::Cell::new(0usize);
                let check = |path: String, want: &dyn Fn(&Resp) -> bool| {
                    let r = get(&addr, &path);
                    n.set(n.get() + 1);
                    assert!(want(&r), "client {i} request {} {path}: {r:?}", n.get());
                    r
                };
                while n.get() < 500 {
                    let t = check(
                        format!("/auth_token?realm=conc&user={user}&pwd={pwd}"),
                        &|r| {
                            r.status == 200
                                && r.text().ends_with(&format!(
                                    "\n{}\nauth/pam\n",
                                    "c".to_string() + &i.to_string()
                                ))
                        },
                    )
                    .first_line();
                    check(format!("/valid?realm=conc&token={t}"), &|r| {
                        r.text().starts_with("YES\n")
                    });
                    let t2 = check(format!("/replace?realm=conc&token={t}"), &|r| {
                        r.status == 200
                    })
                    .first_line();
                    check(format!("/valid?realm=conc&token={t}"), &|r| {
                        r.text() == "NO\n"
                    });
                    check(format!("/valid?realm=conc&token={t2}"), &|r| {
                        r.text().starts_with("YES\n")
                    });
                    check(format!("/revoke?realm=conc&token={t2}"), &|r| {
                        r.text() == "OK\n"
                    });
                    check(format!("/valid?realm=conc&token={t2}"), &|r| {
                        r.text() == "NO\n"
                    });
                    check(format!("/replace?realm=conc&token={t2}"), &|r| {
                        r.status == 403
                    });
                }
                n.get()
            })
        })
        .collect();
    let total: usize = workers
        .into_iter()
        .map(|w| w.join().expect("client failed"))
        .sum();
    assert!(total >= 4000);
    assert_eq!(d.get("/version").text(), "1.5\n");
}

#[test]
fn bad_input_gets_error_answers_and_others_are_served_meanwhile() {
    let d = Daemon::direct(skd(), &["--header-timeout", "2"]);
    // A client that sends its headers one byte a second is cut off by the header timeout...
    wait_connections_closed(&d.addr);
    let addr = d.addr.clone();
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let start = Instant::now();
        for b in b"GET /version HTTP/1.1\r\nHost: slow-client-header\r\n\r\n" {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1000));
            if start.elapsed() > Duration::from_secs(6) {
                break;
            }
        }
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        (start.elapsed(), buf)
    });
    // ...while everyone else keeps being served.
    wait_for("the slow client's connection", || {
        (!server_sockets(&d.addr).is_empty()).then_some(())
    });
    for _ in 0..20 {
        assert_eq!(d.get("/version").text(), "1.5\n");
    }
    // A 1 MiB URL: refused with an error status, not a crash.
    let long = format!("/valid?realm=r&token={}", "a".repeat(1 << 20));
    let r = raw(
        &d.addr,
        format!("GET {long} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(
        r.status == 431 || r.status == 414 || r.status == 400,
        "{:?}",
        r.head
    );
    // Binary garbage.
    let r = raw(
        &d.addr,
        &[0u8, 0xff, 0x13, 0x37, b'\r', b'\n', b'\r', b'\n', 0x80],
    );
    assert_eq!(r.status, 400, "{:?}", r.head);
    // Malformed queries, the original's answers.
    assert_eq!(d.get("/valid?token=x").text(), "ERR: missing realm\n");
    let r = d.get("/valid?realm=r&token=%zz");
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "<h1>400 Bad Request</h1>URISyntaxException thrown")
    );
    assert_eq!(d.get("/valid?realm=r&token").text(), "NO\n");
    // Bytes that are not UTF-8 would collide once replaced by U+FFFD: refused instead.
    let r = d.get("/valid?realm=%E9&token=x");
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "ERR: parameter \"realm\" is not UTF-8\n")
    );
    assert_eq!(d.get("/valid?realm=%C3%A9&token=x").text(), "NO\n");
    assert_eq!(d.get("/valid?realm=r&&&==&token=x=y").text(), "NO\n");
    assert_eq!(d.get("/VALID?realm=r").status, 404);
    let r = raw(
        &d.addr,
        b"DELETE /valid?realm=r HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((r.status, r.text().as_str()), (404, "Unknown path"));
    // Headers that never end are cut at the size limit.
    let many: String = (0..5000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw(
        &d.addr,
        format!("GET /version HTTP/1.1\r\nHost: t\r\n{many}\r\n").as_bytes(),
    );
    assert_ne!(r.status, 200);

    let (took, answer) = slow.join().unwrap();
    assert!(
        took < Duration::from_secs(6),
        "slow client was not cut off: {took:?}"
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains("1.5"),
        "slow client got an answer"
    );
    assert_eq!(d.get("/version").text(), "1.5\n");
}

#[test]
fn form_logins_keep_passwords_out_of_urls() {
    pam_setup();
    let d = Daemon::direct(skd(), &["-pam-app", PAM_SERVICE]);
    let r = post_form(&d.addr, "/auth_token", "realm=f&user=alice&pwd=wonderland");
    assert_eq!(r.status, 200, "{r:?}");
    let t = r.first_line();
    assert_eq!(r.text(), format!("{t}\nalice\nauth/pam\n"));
    assert!(d
        .get(&format!("/valid?realm=f&token={t}"))
        .text()
        .starts_with("YES\n"));
    let r = post_form(&d.addr, "/pam_token?realm=f", "user=alice&pwd=wonderland");
    assert_eq!(r.text(), format!("{}\nalice\npam\n", r.first_line()));
    assert_eq!(
        post_form(&d.addr, "/auth_token", "realm=f&user=alice&pwd=nope").status,
        403
    );
    assert_eq!(
        post_form(
            &d.addr,
            "/auth_token",
            &format!("realm=f&user=alice&pwd={}", "x".repeat(20000))
        )
        .status,
        413
    );
    // Other POSTs keep the original's answer.
    assert_eq!(
        post_form(&d.addr, "/valid?realm=f", "token=x").text(),
        "Unknown path"
    );
    assert!(!d.log_text().contains("wonderland"));
}

#[test]
fn stored_token_only_on_unix_sockets_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("skd.sock");
    let mut d = Daemon::on_free_port(|addr| {
        let mut c = Command::new(skd());
        c.args(["--listen", addr, "--listen", path_str(&sock)]);
        c
    });
    let tcp = d.addr.clone();
    let r = get(&tcp, "/stored_token?realm=r&user=bob&token=T1");
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            403,
            "ERR: /stored_token is served on the Unix socket only (skd --allow-stored-token)\n"
        )
    );
    let mut u = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    u.write_all(b"GET /stored_token?realm=r&user=bob&token=T1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    u.read_to_end(&mut buf).unwrap();
    let r = parse(&buf);
    assert_eq!((r.status, r.text().as_str()), (200, "T1\nbob\nstored\n"));
    assert_eq!(
        get(&tcp, "/valid?realm=r&token=T1").text(),
        "YES\nbob\nstored\n\n"
    );
    assert!(d.signal_and_wait("TERM").success());
    assert!(!sock.exists(), "socket file removed on exit");
}

#[test]
fn failed_logins_are_throttled() {
    pam_setup();
    let d = Daemon::direct(
        skd(),
        &[
            "-pam-app",
            PAM_SERVICE,
            "--login-failures",
            "3",
            "--login-window",
            "60",
        ],
    );
    for _ in 0..3 {
        assert_eq!(d.get("/auth_token?realm=t&user=alice&pwd=bad").status, 403);
    }
    // Right password, but the (user, PAM service) pair is locked out for the window...
    assert_eq!(
        d.get("/auth_token?realm=t&user=alice&pwd=wonderland")
            .status,
        403
    );
    assert!(d.log_text().contains("reason=throttled"));
    // ...in every realm that uses the same service.
    assert_eq!(
        d.get("/auth_token?realm=t2&user=alice&pwd=wonderland")
            .status,
        403
    );
    // Another user is not locked out.
    assert_eq!(
        d.get("/auth_token?realm=t&user=nobody&pwd=nopass").status,
        200
    );
    // The failure says what PAM said.
    assert!(
        d.log_text()
            .contains("result=failed reason=\"Authentication failure\""),
        "{}",
        d.log_text()
    );
}

/// A request never picks the PAM service: a realm named after a system service (whose stack
/// may start with pam_rootok, as chsh's does, and skd runs as root here) logs in through the
/// admin's service, or is refused when the admin lists realms.
#[test]
fn realm_never_picks_the_pam_service() {
    pam_setup();
    let root_login = |d: &Daemon, realm: &str| {
        post_form(
            &d.addr,
            "/auth_token",
            &format!("realm={realm}&user=root&pwd=anything"),
        )
    };
    // No --realm, no --pam-app: every realm goes through the service "skd".
    let d = Daemon::direct(skd(), &[]);
    for realm in ["chsh", "su", "login", "other"] {
        let r = root_login(&d, realm);
        assert!(r.status == 403 || r.status == 503, "realm {realm}: {r:?}");
        assert!(!r.text().contains("uid=0"), "realm {realm}: {r:?}");
    }
    assert!(d.log_text().contains("running-as-root"), "{}", d.log_text());
    // --pam-app: one service for all.
    let d = Daemon::direct(skd(), &["--pam-app", PAM_SERVICE]);
    for realm in ["chsh", "su", "login", "other"] {
        assert_eq!(root_login(&d, realm).status, 403, "realm {realm}");
    }
    // --realm: only the listed realms, each with its service; others refused before PAM.
    let before = pam_calls("root").len();
    let d = Daemon::direct(
        skd(),
        &[
            "--realm",
            PAM_SERVICE,
            "--realm",
            &format!("web={PAM_SERVICE}"),
        ],
    );
    for realm in ["chsh", "su", "login", "other"] {
        let r = root_login(&d, realm);
        assert_eq!(
            (r.status, r.text()),
            (403, format!("ERR: realm \"{realm}\" is not served here\n")),
            "realm {realm}"
        );
    }
    assert_eq!(
        pam_calls("root").len(),
        before,
        "an unserved realm reached PAM"
    );
    let ok = |realm: &str| {
        post_form(
            &d.addr,
            "/auth_token",
            &format!("realm={realm}&user=alice&pwd=wonderland"),
        )
    };
    assert_eq!(ok(PAM_SERVICE).status, 200);
    assert_eq!(ok("web").status, 200);
    assert_eq!(ok("other").status, 403);
    // A realm that is not served cannot store tokens either.
    let d = Daemon::direct(skd(), &["--realm", "web", "--allow-stored-token"]);
    let r = d.get("/stored_token?realm=chsh&user=u&token=tok");
    assert_eq!(r.status, 403, "{r:?}");
    // A service name that is a path is refused at start.
    let out = Command::new(skd())
        .args(["--realm", "x=../../tmp/evil", "--listen", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
}

/// 40 wrong passwords at once for one user: an attempt counts when it starts, so at most the
/// limit reaches PAM; more from other loopback addresses and realms reach it not at all; the
/// right password works again once the window has passed.
#[test]
fn concurrent_guesses_reach_pam_at_most_the_limit() {
    pam_setup();
    let d = Daemon::direct(
        skd(),
        &[
            "--pam-app",
            PAM_SERVICE,
            "--login-failures",
            "5",
            "--login-window",
            "3",
        ],
    );
    let before = pam_calls("victim").len();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(40));
    let threads: Vec<_> = (0..40)
        .map(|i| {
            let (addr, b) = (d.addr.clone(), barrier.clone());
            std::thread::spawn(move || {
                b.wait();
                post_form(
                    &addr,
                    "/auth_token",
                    &format!("realm=r{i}&user=victim&pwd=guess{i}"),
                )
                .status
            })
        })
        .collect();
    let codes: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(codes.iter().all(|c| *c == 403), "{codes:?}");
    let reached = pam_calls("victim").len() - before;
    assert!(
        (1..=5).contains(&reached),
        "{reached} of 40 concurrent guesses reached PAM"
    );
    // Other loopback addresses and realms are the same source and the same (user, service).
    for i in 0..18u8 {
        let from = std::net::IpAddr::from([127, 0, 1, i + 2]);
        let req = form_request(
            "/auth_token",
            &format!("realm=x{i}&user=victim&pwd=again{i}"),
        );
        assert_eq!(raw_from(from, &d.addr, &req).status, 403);
    }
    assert_eq!(
        pam_calls("victim").len() - before,
        reached,
        "guesses from other addresses reached PAM"
    );
    std::thread::sleep(Duration::from_millis(3300));
    let r = post_form(&d.addr, "/auth_token", "realm=r&user=victim&pwd=victimpw");
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn pam_sees_user_and_remote_host() {
    pam_setup();
    let d = Daemon::direct(skd(), &["--pam-app", PAM_SERVICE]);
    let line = format!("alice 127.0.0.77 {PAM_SERVICE}");
    let seen = || pam_calls("alice").iter().filter(|l| **l == line).count();
    let before = seen();
    let from = std::net::IpAddr::from([127, 0, 0, 77]);
    let req = form_request("/auth_token", "realm=r&user=alice&pwd=wonderland");
    assert_eq!(raw_from(from, &d.addr, &req).status, 200);
    assert_eq!(
        seen(),
        before + 1,
        "no new {line:?}; last call: {:?}",
        pam_calls("alice").last()
    );
}

/// Names with control characters would forge record lines: refused before PAM and the store.
#[test]
fn control_characters_in_names_are_refused() {
    pam_setup();
    let d = Daemon::direct(skd(), &["--pam-app", PAM_SERVICE, "--allow-stored-token"]);
    let r = d.get("/stored_token?realm=r&user=mallory%0Aauth/pam%0Auid=0%0Agid=0&token=tok");
    assert_eq!(
        (r.status, r.text()),
        (400, "ERR: control character in \"user\"\n".to_string())
    );
    assert_eq!(d.get("/valid?realm=r&token=tok").text(), "NO\n");
    let before = pam_calls("alice%0D").len();
    let r = post_form(
        &d.addr,
        "/auth_token",
        "realm=r&user=alice%0D%0A&pwd=wonderland",
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(
        pam_calls("alice\r").len() + pam_calls("alice%0D").len(),
        before
    );
    assert_eq!(d.get("/valid?realm=a%0Ab&token=x").status, 400);
    assert_eq!(
        d.get("/create_group?realm=r&token=x&group=g%0Ax").status,
        400
    );
    // Tokens skd could never hold are refused when stored, and NO without a look-up.
    let r = d.get(&format!(
        "/stored_token?realm=r&user=u&token={}",
        "t".repeat(200)
    ));
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(
        d.get("/stored_token?realm=r&user=u&token=a%20b").status,
        400
    );
}

/// 2,000 /valid with 60 KB random tokens and 30,000 with random 40-hex ones: the answer
/// cache stays bounded.
#[test]
fn valid_cache_stays_bounded() {
    let d = Daemon::direct(skd(), &[]);
    let mut s = TcpStream::connect(&d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rng = std::fs::File::open("/dev/urandom").unwrap();
    let ask = |s: &mut TcpStream, token: &str| {
        s.write_all(
            format!("GET /valid?realm=r&token={token} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut buf = Vec::new();
        let mut b = [0u8; 4096];
        loop {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0, "connection closed");
            buf.extend_from_slice(&b[..n]);
            if buf.ends_with(b"NO\n") {
                break;
            }
        }
    };
    let mut hex = |len: usize| {
        let mut raw = vec![0u8; len / 2];
        rng.read_exact(&mut raw).unwrap();
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    for _ in 0..200 {
        let t = hex(40);
        ask(&mut s, &t);
    }
    let base = rss_kib(d.child.id());
    for _ in 0..2000 {
        let t = hex(60_000);
        ask(&mut s, &t);
    }
    for _ in 0..30_000 {
        let t = hex(40);
        ask(&mut s, &t);
    }
    let grown = rss_kib(d.child.id()).saturating_sub(base);
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB");
}

#[test]
fn token_ttl_expires_tokens() {
    let d = Daemon::direct(skd(), &["--allow-stored-token", "--token-ttl", "1"]);
    assert_eq!(d.get("/stored_token?realm=r&user=u&token=tok").status, 200);
    assert!(d
        .get("/valid?realm=r&token=tok")
        .text()
        .starts_with("YES\n"));
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(d.get("/valid?realm=r&token=tok").text(), "NO\n");
}

#[test]
fn socket_activation_notifies_and_idle_exit_stops() {
    let dir = tempfile::tempdir().unwrap();
    let nsock = dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&nsock).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // WATCHDOG_PID must be skd's own pid: the shell execs systemd-socket-activate, which
    // execs skd, all in one process.
    let mut d = Daemon::on_free_port(|addr| {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"exec systemd-socket-activate -l "$1" -E NOTIFY_SOCKET="$2" -E WATCHDOG_USEC=200000 -E WATCHDOG_PID=$$ "$3" --idle-exit 1"#)
            .args(["sh", addr, path_str(&nsock), skd()]);
        cmd
    });
    assert_eq!(d.get("/version").text(), "1.5\n");
    // Everything skd tells the service manager, up to STOPPING=1.
    let mut msgs = Vec::new();
    let mut buf = [0u8; 512];
    while !msgs.iter().any(|m: &String| m.contains("STOPPING=1")) {
        let n = notify
            .recv(&mut buf)
            .expect("a notification before the timeout");
        msgs.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    assert!(
        msgs[0].contains("READY=1") && msgs[0].contains("STATUS=serving"),
        "{msgs:?}"
    );
    // One second idle with a 200 ms watchdog: pinged every 100 ms.
    let pings = msgs.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(pings >= 5, "{pings} watchdog pings: {msgs:?}");
    let st = d
        .wait(Duration::from_secs(10))
        .expect("skd exits when idle");
    assert!(st.success());
    assert!(
        d.log_text().contains("stopped reason=idle"),
        "{}",
        d.log_text()
    );
}

#[test]
fn sigterm_lets_the_request_in_flight_finish() {
    pam_setup();
    let mut d = Daemon::direct(skd(), &["-pam-app", PAM_SERVICE]);
    // The PAM check of user "slow" takes a second; SIGTERM arrives while it runs.
    let addr = d.addr.clone();
    let inflight =
        std::thread::spawn(move || get(&addr, "/auth_token?realm=s&user=slow&pwd=slowpw"));
    // SIGTERM once PAM has been called (tests/pam-setup.sh logs each call first).
    let before = pam_calls("slow").len();
    crate::common::wait_for("the PAM call for slow", || {
        (pam_calls("slow").len() > before).then_some(())
    });
    let st = d.signal_and_wait("TERM");
    assert!(st.success(), "{st:?}");
    let r = inflight.join().unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.text().ends_with("\nslow\nauth/pam\n"));
    // And nothing listens any more.
    assert!(TcpStream::connect(&d.addr).is_err());
    assert!(d.log_text().contains("stopped reason=SIGTERM"));
}

#[test]
fn connections_over_the_cap_get_503() {
    let d = Daemon::direct(
        skd(),
        &[
            "--max-connections",
            "2",
            "--max-connections-per-source",
            "2",
        ],
    );
    // Let the start-up probe's connection close first (a connection flagged busy while it
    // was counted would leave a slot free once it closed).
    crate::common::wait_connections_closed(&d.addr);
    let _a = TcpStream::connect(&d.addr).unwrap();
    let _b = TcpStream::connect(&d.addr).unwrap();
    // Both are queued before the next (skd accepts in arrival order).
    wait_for("two connections held", || {
        (server_sockets(&d.addr).len() == 2).then_some(())
    });
    let r = d.get("/version");
    assert_eq!(
        (r.status, r.text().as_str()),
        (503, "ERR: too many connections\n")
    );
    drop((_a, _b));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(d.get("/version").status, 200);
}

#[test]
fn command_line_errors_are_clear() {
    let run = |args: &[&str]| {
        let o = Command::new(skd()).args(args).output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let (code, out) = run(&["-h"]);
    assert_eq!(code, 0);
    for flag in [
        "--dir",
        "--pam-app",
        "--password-file",
        "--tls-cert",
        "--listen",
        "--idle-exit",
    ] {
        assert!(out.contains(flag), "{flag} missing from --help");
    }
    assert_eq!(run(&["--version"]).0, 0);
    assert_eq!(run(&["-p", "abc"]).0, 64);
    assert_eq!(run(&["-p", "70000"]).0, 64);
    assert_eq!(run(&["--no-such-flag"]).0, 64);
    let (code, out) = run(&["-default", "ldap"]);
    assert_eq!(code, 78);
    assert!(out.contains("supports only \"pam\""), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let jks = dir.path().join("ks.jks");
    std::fs::write(&jks, [0xFE, 0xED, 0xFE, 0xED, 0, 0, 0, 2]).unwrap();
    let (code, out) = run(&["-tls", path_str(&jks)]);
    assert_eq!(code, 78);
    assert!(out.contains("keytool -importkeystore"), "{out}");
    let (code, out) = run(&["-tls", "/nonexistent.p12"]);
    assert_eq!(code, 78);
    assert!(out.contains("/nonexistent.p12"), "{out}");
    // An encrypted PEM key is an error, never a passphrase prompt.
    let (cert, _) = keysock::tls::self_signed("localhost").unwrap();
    let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&c, cert).unwrap();
    let enc = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let enc = enc
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"pw")
        .unwrap();
    std::fs::write(&k, enc).unwrap();
    let (code, out) = run(&["--tls-cert", path_str(&c), "--tls-key", path_str(&k)]);
    assert_eq!(code, 78);
    assert!(out.contains("not an unencrypted PEM private key"), "{out}");
    let (code, out) = run(&["-PF", "/nonexistent", "-tls", path_str(&jks)]);
    assert_eq!(code, 66, "{out}");
    // A port in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let (code, out) = run(&["-l", "127.0.0.1", "-p", &port]);
    assert_eq!(code, 69);
    assert!(out.contains("cannot listen"), "{out}");
    // IPv6 literals with or without brackets.
    for l in ["::1", "[::1]"] {
        let err = dir.path().join("v6.err");
        let c = with_free_port(|p| {
            let p = p.to_string();
            let mut c = Command::new(skd())
                .args(["-l", l, "-p", &p])
                .stderr(std::fs::File::create(&err).unwrap())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            let want = format!("listening [::1]:{p}");
            while !std::fs::read_to_string(&err).unwrap().contains(&want) {
                assert!(Instant::now() < deadline, "skd -l {l} did not listen");
                if c.try_wait().unwrap().is_some() {
                    return None; // the port was taken on ::1
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Some((c, p))
        });
        assert!(TcpStream::connect(format!("[::1]:{}", c.1)).is_ok());
        let mut c = c.0;
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

/// PEM and PKCS#12 TLS set-ups, checked with the openssl client.
#[test]
fn tls_with_pem_and_pkcs12() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = keysock::tls::self_signed("localhost").unwrap();
    let (c, k, p12) = (
        dir.path().join("c.pem"),
        dir.path().join("k.pem"),
        dir.path().join("ks.p12"),
    );
    std::fs::write(&c, &cert).unwrap();
    std::fs::write(&k, &key).unwrap();
    let st = Command::new("openssl")
        .args([
            "pkcs12",
            "-export",
            "-in",
            path_str(&c),
            "-inkey",
            path_str(&k),
            "-out",
            path_str(&p12),
        ])
        .args(["-passout", "pass:SessionKeyServer"])
        .status()
        .unwrap();
    assert!(st.success());
    for args in [
        vec!["--tls-cert", path_str(&c), "--tls-key", path_str(&k)],
        vec!["-tls", path_str(&p12)],
    ] {
        let d = Daemon::direct(skd(), &args);
        let out = Command::new("curl")
            .args(["-sk", &format!("https://{}/version", d.addr)])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "1.5\n", "{args:?}");
        // Plain HTTP on a TLS port gets nothing useful, and the server carries on.
        let r = get(&d.addr, "/version");
        assert_ne!(r.status, 200);
    }
    let o = Command::new(skd())
        .args(["-tls", path_str(&p12), "-P", "wrong"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong password"));
}

/// A PKCS#12 keystore in `dir` with a self-signed certificate, protected by `password`.
fn keystore(dir: &std::path::Path, password: &str) -> std::path::PathBuf {
    let (cert, key) = keysock::tls::self_signed("localhost").unwrap();
    let (c, k, p12) = (dir.join("c.pem"), dir.join("k.pem"), dir.join("ks.p12"));
    std::fs::write(&c, &cert).unwrap();
    std::fs::write(&k, &key).unwrap();
    let st = Command::new("openssl")
        .args([
            "pkcs12",
            "-export",
            "-in",
            path_str(&c),
            "-inkey",
            path_str(&k),
        ])
        .args([
            "-out",
            path_str(&p12),
            "-passout",
            &format!("pass:{password}"),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    p12
}

/// What skd answers on `https://ADDR/version` (curl, certificate not checked).
fn https_version(addr: &str) -> String {
    let out = Command::new("curl")
        .args(["-sk", "-m", "5", &format!("https://{addr}/version")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// skd(8) -PF FILE: the keystore password is the first line of FILE, without its line end;
/// it wins over -P; an empty file is the empty password.
#[test]
fn keystore_password_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let p12 = keystore(dir.path(), "pf-S3cret");
    let pf = dir.path().join("pw");
    std::fs::write(&pf, "pf-S3cret\nnot this line\n").unwrap();
    let d = Daemon::direct(
        skd(),
        &["-tls", path_str(&p12), "-P", "wrong", "-PF", path_str(&pf)],
    );
    assert_eq!(https_version(&d.addr), "1.5\n");
    drop(d);
    // Only the first line counts: the right password on the second is refused.
    std::fs::write(&pf, "wrong\npf-S3cret\n").unwrap();
    let o = Command::new(skd())
        .args(["-tls", path_str(&p12), "-PF", path_str(&pf), "-p", "0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("wrong password"),
        "{o:?}"
    );
    // An empty file: the empty password.
    let empty_dir = tempfile::tempdir().unwrap();
    let p12 = keystore(empty_dir.path(), "");
    std::fs::write(&pf, "").unwrap();
    let d = Daemon::direct(skd(), &["-tls", path_str(&p12), "-PF", path_str(&pf)]);
    assert_eq!(https_version(&d.addr), "1.5\n");
}

/// skd(8) -PP: the keystore password is asked on the terminal with echo off (a pseudo-terminal
/// from script(1)); without a terminal it is one line of standard input. -PP wins over -PF
/// and -P.
#[test]
fn keystore_password_from_the_terminal_or_stdin() {
    use std::io::BufRead;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let p12 = keystore(dir.path(), "pp-S3cret");
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "wrong\n").unwrap();
    let stdin = dir.path().join("stdin");
    std::fs::write(&stdin, "pp-S3cret\n").unwrap();
    // No terminal (setsid: no controlling one, even when cargo test runs in a terminal).
    let d = Daemon::on_free_port(|addr| {
        let mut c = Command::new("setsid");
        c.args(["/bin/sh", "-c", "exec \"$0\" \"$@\" < \"$PW\""])
            .env("PW", &stdin)
            .arg(skd())
            .args(["-tls", path_str(&p12), "-P", "wrong"])
            .args(["-PF", path_str(&wrong), "-PP", "--listen", addr]);
        c
    });
    assert_eq!(https_version(&d.addr), "1.5\n");
    drop(d);
    // A terminal: the prompt comes, the password is typed after it and never echoed.
    let (mut script, addr, out) = with_free_port(|port| {
        let addr = format!("127.0.0.1:{port}");
        let cmd = format!("exec {} -tls {} -PP --listen {addr}", skd(), path_str(&p12));
        let mut script = Command::new("script")
            .args(["-qfec", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // What the terminal shows, as it comes.
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut r = std::io::BufReader::new(script.stdout.take().unwrap());
        let o = out.clone();
        std::thread::spawn(move || loop {
            let mut b = Vec::new();
            match r.read_until(b' ', &mut b) {
                Ok(0) | Err(_) => break,
                Ok(_) => o.lock().unwrap().push_str(&String::from_utf8_lossy(&b)),
            }
        });
        wait_for("the password prompt", || {
            out.lock()
                .unwrap()
                .contains("Keystore password: ")
                .then_some(())
        });
        let mut w = script.stdin.take().unwrap();
        w.write_all(b"pp-S3cret\n").unwrap();
        let listening = wait_for("skd to listen or exit", || {
            if out.lock().unwrap().contains("listening ") {
                return Some(true);
            }
            script.try_wait().unwrap().map(|_| false)
        });
        if !listening {
            return None; // the port was taken meanwhile
        }
        Some((script, (addr, w), out))
    });
    assert_eq!(https_version(&addr.0), "1.5\n");
    let shown = out.lock().unwrap().clone();
    assert!(
        !shown.contains("pp-S3cret"),
        "the password was echoed: {shown:?}"
    );
    // skd is script's only child; stop it, then script ends with its status.
    let skd_pid =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", script.id())).unwrap();
    Command::new("kill").arg(skd_pid.trim()).status().unwrap();
    let st = script.wait().unwrap();
    assert!(st.success(), "{st:?}: {shown}");
}

#[test]
fn tokenctl_works_on_the_live_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = path_str(dir.path());
    let d = Daemon::direct(skd(), &["-d", db]);
    let tc = |args: &[&str]| {
        let o = Command::new(tokenctl()).args(args).output().unwrap();
        (
            o.status.code().unwrap(),
            String::from_utf8_lossy(&o.stdout).to_string(),
        )
    };
    let (code, t) = tc(&[
        "skd", "issue", "--db", db, "--realm", "svc", "--user", "robot",
    ]);
    assert_eq!(code, 0);
    let t = t.trim().to_string();
    assert!(is_token(&t));
    assert_eq!(
        d.get(&format!("/valid?realm=svc&token={t}")).text(),
        "YES\nrobot\nstored\n\n"
    );
    assert_eq!(
        tc(&["skd", "check", "--db", db, "--realm", "svc", &t]),
        (0, "YES\n".into())
    );
    assert_eq!(
        tc(&["skd", "check", "--db", db, "--realm", "other", &t]).0,
        1
    );
    // --json before or after the subcommand: one record a line, the same shape everywhere.
    for args in [
        &["skd", "list", "--db", db, "--realm", "svc", "--json"][..],
        &["--json", "skd", "list", "--db", db, "--realm", "svc"][..],
    ] {
        let (code, list) = tc(args);
        assert_eq!(code, 0);
        let v: serde_json::Value = serde_json::from_str(list.trim()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"format": 1, "kind": "token", "realm": "svc", "token": t,
                "state": "YES", "user": "robot", "source": "stored", "expires": null})
        );
    }
    let (code, out) = tc(&["--json", "skd", "check", "--db", db, "--realm", "svc", &t]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["kind"].as_str(), v["state"].as_str()),
        (Some("token"), Some("YES"))
    );
    // A superseded token has its own exit status: 2 (NO is 1).
    let (_, t_new) = tc(&[
        "skd", "issue", "--db", db, "--realm", "svc", "--user", "robot",
    ]);
    assert_eq!(
        tc(&["skd", "check", "--db", db, "--realm", "svc", &t]),
        (2, "SUPERCEDED\n".into())
    );
    let (_, t) = (t, t_new.trim().to_string());
    // Revoked by the daemon, seen by the tool, and the other way round.
    let (_, t2) = tc(&[
        "skd", "issue", "--db", db, "--realm", "svc", "--user", "robot2",
    ]);
    assert_eq!(
        d.get(&format!("/revoke?realm=svc&token={t}")).text(),
        "OK\n"
    );
    assert_eq!(
        tc(&["skd", "check", "--db", db, "--realm", "svc", &t]),
        (1, "NO\n".into())
    );
    // skd has answered for t2 (and may keep that answer) before the tool revokes it.
    for _ in 0..3 {
        let v = d.get(&format!("/valid?realm=svc&token={}", t2.trim()));
        assert_eq!(v.text(), "YES\nrobot2\nstored\n\n");
    }
    assert_eq!(
        tc(&["skd", "revoke", "--db", db, "--realm", "svc", t2.trim()]).0,
        0
    );
    assert_eq!(
        d.get(&format!("/valid?realm=svc&token={}", t2.trim()))
            .text(),
        "NO\n"
    );
    assert_eq!(
        tc(&["skd", "revoke", "--db", db, "--realm", "svc", t2.trim()]).0,
        1
    );
    assert_eq!(
        tc(&["skd", "list", "--db", "/nonexistent", "--realm", "svc"]).0,
        66
    );
    // Without --db: the packaged store.
    let o = Command::new(tokenctl())
        .args(["skd", "list", "--realm", "svc"])
        .output()
        .unwrap();
    if !std::path::Path::new("/var/lib/skd/skd.sqlite").exists() {
        assert_eq!(o.status.code(), Some(66));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("/var/lib/skd"),
            "{o:?}"
        );
    }
    // A directory without a store is not turned into one by the tool.
    let empty = tempfile::tempdir().unwrap();
    let e = path_str(empty.path());
    assert_eq!(
        tc(&["skd", "issue", "--db", e, "--realm", "r", "--user", "u"]).0,
        66
    );
    assert!(!empty.path().join("skd.sqlite").exists());
}

/// The original's store, dumped with JE's DbDump (print format), imported with tokenctl:
/// tokens, the current-token pointer and the user key answer through skd as before.
#[test]
fn tokenctl_imports_the_originals_store() {
    let r = keysock::secret::sha1_hex(b"r1");
    let tok = "0123456789abcdef0123456789abcdef01234567";
    let old = "89abcdef0123456789abcdef0123456789abcdef";
    let key = "ab".repeat(64);
    let dump = format!(
        "VERSION=3\nformat=print\ntype=btree\ndatabase=sessionKeyStore\nHEADER=END\n \
         t:{r}:{tok}\n alice\\0aauth/pam\\0a\n t:{r}:{old}\n alice\\0aauth/pam\\0a\n \
         ut:{r}:alice\n {tok}\n k:alice\\0aauth/pam\\0a\n {key}\nDATA=END\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sks.dump");
    std::fs::write(&file, dump).unwrap();
    let store = dir.path().join("store");
    let import = |extra: &[&str]| {
        let o = Command::new(tokenctl())
            .args(["skd", "import", "--db", path_str(&store)])
            .args(extra)
            .arg(&file)
            .output()
            .unwrap();
        (
            o.status.code().unwrap(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let (code, msg) = import(&[]);
    assert_eq!(code, 0, "{msg}");
    assert!(msg.contains("imported 4 of 4"), "{msg}");
    // Again: nothing replaced unless asked.
    assert!(import(&[]).1.contains("imported 0 of 4"));
    assert!(import(&["--overwrite"]).1.contains("imported 4 of 4"));

    let d = Daemon::direct(skd(), &["-d", path_str(&store)]);
    assert_eq!(
        d.get(&format!("/valid?realm=r1&token={tok}")).text(),
        "YES\nalice\nauth/pam\n\n"
    );
    assert!(d
        .get(&format!("/valid?realm=r1&token={old}"))
        .text()
        .starts_with("SUPERCEDED\n"));
    assert_eq!(d.get(&format!("/get_key?realm=r1&token={tok}")).text(), key);

    drop(d);

    // CopyKeys: the key of alice's PAM logins, copied to her stored tokens' identity.
    let tc = |args: &[&str]| {
        let o = Command::new(tokenctl()).args(args).output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        (
            o.status.code().unwrap(),
            out,
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let db = path_str(&store);
    assert_eq!(tc(&["skd", "keys", "--db", db]).1, "alice auth/pam\n");
    let (code, _, msg) = tc(&["skd", "copy-keys", "--db", db, "auth/pam", "stored"]);
    assert_eq!(code, 0);
    assert!(msg.contains("copied 1 of 1"), "{msg}");
    assert_eq!(
        tc(&["skd", "keys", "--db", db]).1,
        "alice auth/pam\nalice stored\n"
    );
    let (_, t, _) = tc(&[
        "skd", "issue", "--db", db, "--realm", "r2", "--user", "alice",
    ]);
    let d = Daemon::direct(skd(), &["-d", db]);
    assert_eq!(
        d.get(&format!("/get_key?realm=r2&token={}", t.trim()))
            .text(),
        key
    );
    assert!(tc(&["skd", "copy-keys", "--db", db, "auth/pam", "stored"])
        .2
        .contains("copied 0 of 1"));

    std::fs::write(&file, "not a dump").unwrap();
    let (code, msg) = import(&[]);
    assert_eq!(code, 65, "{msg}");
    assert!(msg.contains("not a DbDump"), "{msg}");
}

#[test]
fn slow_bodies_block_nobody_and_are_cut_after_the_body_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("skd.sock");
    let d = Daemon::direct(skd(), &["--listen", path_str(&sock), "--body-timeout", "5"]);
    let stall = b"POST /auth_token HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10000\r\n\r\nrealm=r&user=a";
    let real = b"GET /version HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_slow_bodies_block_nobody(
        &d.addr,
        &sock,
        stall,
        real,
        200,
        300,
        Duration::from_secs(5),
    );
    assert_eq!(d.get("/version").text(), "1.5\n");
}

#[test]
fn half_closed_failed_logins_are_answered() {
    pam_setup();
    let d = Daemon::direct(
        skd(),
        &["-pam-app", PAM_SERVICE, "--login-failures", "1000"],
    );
    // A failed login checks the password (PAM) before answering: a client that half-closes
    // meanwhile still gets its 403.
    assert_half_closed_answered(
        &d.addr,
        b"GET /auth_token?realm=r&user=alice&pwd=wrong HTTP/1.1\r\nHost: t\r\n\r\n",
        403,
    );
    assert_half_closed_answered(&d.addr, b"GET /version HTTP/1.1\r\nHost: t\r\n\r\n", 200);
}

#[test]
fn a_100_kib_head_is_refused_with_431() {
    let d = Daemon::direct(skd(), &[]);
    assert_big_head_refused(&d.addr);
    assert_eq!(d.get("/version").text(), "1.5\n");
}

/// Writers that bypass skd's change counter (the sqlite3 shell) are still seen, within a
/// second; tokenctl's are seen at once (tokenctl_works_on_the_live_store).
#[test]
fn foreign_writes_to_the_store_are_seen_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let d = Daemon::direct(skd(), &["-d", path_str(&store), "--allow-stored-token"]);
    assert_eq!(d.get("/stored_token?realm=r&user=u&token=tok").status, 200);
    for _ in 0..3 {
        assert!(d
            .get("/valid?realm=r&token=tok")
            .text()
            .starts_with("YES\n"));
    }
    let out = Command::new("sqlite3")
        .arg(store.join("skd.sqlite"))
        .arg("DELETE FROM kv WHERE k LIKE 't:%'")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let t = Instant::now();
    while d.get("/valid?realm=r&token=tok").text() != "NO\n" {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "still valid after 3 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The group endpoints of skd(8): create (names global, `ERROR: group exists` without a
/// newline), mod_group by admins only (lists with empty items, self-removal skipped),
/// group_hash for members and admins of the realm only, with the documented formula.
#[test]
fn groups_are_created_modified_and_hashed_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let d = Daemon::direct(skd(), &["-d", path_str(&store), "--allow-stored-token"]);
    let token = |realm: &str, user: &str| {
        let t = format!("{user}-{realm}-tok");
        let r = d.get(&format!(
            "/stored_token?realm={realm}&user={user}&token={t}"
        ));
        assert_eq!(r.status, 200, "{r:?}");
        t
    };
    let (adm, mem, other) = (token("r", "adm"), token("r", "mem"), token("r", "other"));
    let adm2 = token("r2", "adm");
    let bare403 = |path: String| {
        let r = d.get(&path);
        assert_eq!((r.status, r.text().as_str()), (403, ""), "{path}");
    };
    let ok = |path: String, want: &str| {
        let r = d.get(&path);
        assert_eq!((r.status, r.text().as_str()), (200, want), "{path}");
    };
    ok(format!("/create_group?realm=r&token={adm}&group=g"), "OK\n");
    // Names are global: taken in every realm, for every user, without a final newline.
    for (realm, t) in [("r", &adm), ("r", &other), ("r2", &adm2)] {
        let r = d.get(&format!("/create_group?realm={realm}&token={t}&group=g"));
        assert_eq!(
            (r.status, r.text().as_str()),
            (403, "ERROR: group exists"),
            "{realm} {t}"
        );
    }
    bare403(format!("/create_group?realm=r&token={adm}"));
    bare403("/create_group?realm=r&token=nosuchtoken&group=h".into());
    // Only members and admins of the realm get the hash; only admins change the group.
    let hash = |t: &str, realm: &str, salt: &str| {
        let r = d.get(&format!(
            "/group_hash?realm={realm}&token={t}&group=g{salt}"
        ));
        (r.status, r.text())
    };
    let (st, h_adm) = hash(&adm, "r", "&salt=pepper");
    assert_eq!(st, 200);
    assert_eq!(hash(&mem, "r", "&salt=pepper"), (403, String::new()));
    assert_eq!(hash(&adm2, "r2", "&salt=pepper"), (403, String::new()));
    bare403(format!(
        "/mod_group?realm=r&token={mem}&group=g&add_members=mem"
    ));
    bare403(format!(
        "/mod_group?realm=r2&token={adm2}&group=g&add_members=mem"
    ));
    ok(
        format!("/mod_group?realm=r&token={adm}&group=g&add_members=mem,,x"),
        "OK\n",
    );
    assert_eq!(hash(&mem, "r", "&salt=pepper"), (200, h_adm.clone()));
    assert_eq!(hash(&other, "r", "&salt=pepper"), (403, String::new()));
    // The formula: SHA-256 of "salt\ngroup-key", the key read from the store; no salt and
    // an empty salt are the same.
    let q = format!(
        "SELECT v FROM kv WHERE k = 'grk:{}'",
        keysock::secret::sha1_hex(b"g")
    );
    let out = Command::new("sqlite3")
        .arg(store.join("skd.sqlite"))
        .arg(&q)
        .output()
        .unwrap();
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(key.len(), 40, "group key {key:?}");
    assert!(key.bytes().all(|c| c.is_ascii_hexdigit()));
    let sha = |s: String| keysock::secret::sha256_hex(s.as_bytes()) + "\n";
    assert_eq!(h_adm, sha(format!("pepper\n{key}")));
    let no_salt = sha(format!("\n{key}"));
    assert_eq!(hash(&mem, "r", ""), (200, no_salt.clone()));
    assert_eq!(hash(&mem, "r", "&salt="), (200, no_salt));
    // A member is not an admin; add_admins makes one, who can then remove others.
    bare403(format!("/mod_group?realm=r&token={mem}&group=g&remove=x"));
    ok(
        format!("/mod_group?realm=r&token={adm}&group=g&add_admins=mem"),
        "OK\n",
    );
    ok(
        format!("/mod_group?realm=r&token={mem}&group=g&add_members=other"),
        "OK\n",
    );
    assert_eq!(hash(&other, "r", "&salt=pepper"), (200, h_adm.clone()));
    // Removing yourself is skipped (and said); the others in the list are removed.
    ok(
        format!("/mod_group?realm=r&token={adm}&group=g&remove=adm,other"),
        "WARN: self-removal ignored\n",
    );
    assert_eq!(hash(&adm, "r", "&salt=pepper"), (200, h_adm.clone()));
    assert_eq!(hash(&other, "r", "&salt=pepper"), (403, String::new()));
    ok(
        format!("/mod_group?realm=r&token={mem}&group=g&remove=adm"),
        "OK\n",
    );
    assert_eq!(hash(&adm, "r", "&salt=pepper"), (403, String::new()));
    bare403(format!(
        "/mod_group?realm=r&token={adm}&group=g&add_members=adm"
    ));
}

/// Per-source throttling (four times --login-failures from one source, 127.0.0.0/8 as one),
/// a Unix-socket client counted apart, and the counts gone once --login-window has passed
/// since the last counted attempt.
#[test]
fn failed_logins_are_throttled_per_source_until_the_window_passes() {
    pam_setup();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("skd.sock");
    let d = Daemon::on_free_port(|addr| {
        let mut c = Command::new(skd());
        c.args(["--listen", addr, "--listen", path_str(&sock)])
            .args(["-pam-app", PAM_SERVICE])
            .args(["--login-failures", "1", "--login-window", "1"]);
        c
    });
    let login = |user: &str, pwd: &str| format!("/auth_token?realm=t&user={user}&pwd={pwd}");
    let from = |last: u8, path: &str| {
        let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, last));
        raw_from(
            ip,
            &d.addr,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    };
    // One failure each for four users, from four addresses of 127/8: one source, at its
    // limit of 4 x 1 (no user is at its own limit twice).
    for (i, u) in ["c1", "c2", "c3", "c4"].iter().enumerate() {
        assert_eq!(from(1 + i as u8, &login(u, "bad")).status, 403);
    }
    let refused = from(9, &login("alice", "wonderland"));
    assert_eq!((refused.status, refused.text().as_str()), (403, ""));
    let throttled = d.log_text().matches("reason=throttled").count();
    assert_eq!(throttled, 1, "{}", d.log_text());
    // The Unix socket is another source.
    let r = raw_unix(
        &sock,
        format!(
            "GET {} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            login("alice", "wonderland")
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{r:?}");
    // Once the window has passed since the last counted attempt, 127/8 is served again, and
    // c1, locked out by its own failure, too.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(from(1, &login("alice", "wonderland")).status, 200);
    assert_eq!(from(1, &login("c1", "pw1")).status, 200);
}

/// --login-failures 0 turns throttling off: any number of failures, then the right password.
#[test]
fn login_failures_0_turns_throttling_off() {
    pam_setup();
    let d = Daemon::direct(skd(), &["-pam-app", PAM_SERVICE, "--login-failures", "0"]);
    for _ in 0..30 {
        assert_eq!(d.get("/auth_token?realm=z&user=c5&pwd=bad").status, 403);
    }
    let r = d.get("/auth_token?realm=z&user=c5&pwd=pw5");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!d.log_text().contains("reason=throttled"));
}

/// tokenctl(1) skd: issue --ttl and --source, list --user, revoke of several tokens (and of
/// those on standard input), check -, import -, and the exits 64 (usage), 74 (the store
/// refuses a write).
#[test]
fn tokenctl_options_stdin_and_exit_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let db = path_str(dir.path());
    drop(Daemon::direct(skd(), &["-d", db])); // makes the store
    let tc = |args: &[&str], stdin: &str| {
        let mut c = Command::new(tokenctl())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        (
            o.status.code().unwrap(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let skd_ = |sub: &str, extra: &[&str], stdin: &str| {
        let mut a = vec!["skd", sub, "--db", db, "--realm", "r"];
        a.extend_from_slice(extra);
        tc(&a, stdin)
    };
    let issue = |extra: &[&str]| {
        let (code, out, err) = skd_("issue", extra, "");
        assert_eq!(code, 0, "{err}");
        out.trim().to_string()
    };
    // --ttl: the record says when, and the token is gone after it.
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (code, out, err) = skd_("issue", &["--user", "brief", "--ttl", "1", "--json"], "");
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let expires = v["expires"].as_u64().expect("expires");
    assert!((t0 + 1..=t0 + 3).contains(&expires), "{v}");
    let brief = v["token"].as_str().unwrap().to_string();
    // --source: recorded with the token.
    let pam = issue(&["--user", "alice", "--source", "auth/pam"]);
    let (code, out, _) = skd_("check", &["--json", &pam], "");
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["user"].as_str(), v["source"].as_str()),
        (Some("alice"), Some("auth/pam"))
    );
    assert_eq!(v["expires"], serde_json::Value::Null, "no --ttl: never");
    // list --user: that user's live tokens only (current and superseded), in text order.
    let a2 = issue(&["--user", "alice"]);
    let b1 = issue(&["--user", "bob"]);
    let mut want = [pam.clone(), a2.clone()];
    want.sort();
    let (code, out, _) = skd_("list", &["--user", "alice"], "");
    assert_eq!((code, out), (0, want.join("\n") + "\n"));
    // check -: the first line of standard input.
    assert_eq!(
        skd_("check", &["-"], &format!("{a2}\nignored\n")).1,
        "YES\n"
    );
    assert_eq!(skd_("check", &["-"], &format!("{pam}\n")).0, 2);
    // revoke of several: an unknown one is said and the others are still revoked (exit 1).
    let (code, out, err) = skd_(
        "revoke",
        &[&pam, "0000000000000000000000000000000000000000", &a2],
        "",
    );
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert_eq!(err, "tokenctl: token not known in realm \"r\"\n");
    assert_eq!(skd_("list", &["--user", "alice"], "").1, "");
    // revoke -: the tokens on standard input, blank lines skipped.
    let b2 = issue(&["--user", "bob"]);
    let (code, _, err) = skd_("revoke", &["-"], &format!("{b1}\n\n{b2}\n"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(skd_("list", &["--user", "bob"], "").1, "");
    // The --ttl token, a second later.
    let left = Duration::from_secs(expires).saturating_sub(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap(),
    );
    std::thread::sleep(left + Duration::from_millis(1100));
    assert_eq!(
        skd_("check", &[&brief], ""),
        (1, "NO\n".into(), String::new())
    );
    // Usage: 64, one line.
    for extra in [
        &["--user", ""][..],
        &["--user", "a\nb"],
        &["--user", "u", "--source", ""],
        &["--user", "u", "--ttl", "soon"],
    ] {
        let (code, _, err) = skd_("issue", extra, "");
        assert_eq!(code, 64, "{extra:?}: {err}");
        assert!(
            err.starts_with("tokenctl: ") || err.starts_with("error: "),
            "{err}"
        );
    }
    assert_eq!(tc(&["skd", "issue", "--db", db, "--user", "u"], "").0, 64);
    assert_eq!(tc(&["skd", "nope"], "").0, 64);
    // import -: the dump on standard input.
    let store2 = dir.path().join("imported");
    let r1 = keysock::secret::sha1_hex(b"r1");
    let tok = "0123456789abcdef0123456789abcdef01234567";
    let dump = format!(
        "VERSION=3\nformat=print\ntype=btree\ndatabase=sessionKeyStore\nHEADER=END\n \
         t:{r1}:{tok}\n carol\\0astored\\0a\n ut:{r1}:carol\n {tok}\nDATA=END\n"
    );
    let (code, _, err) = tc(&["skd", "import", "--db", path_str(&store2), "-"], &dump);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("imported 2 of 2"), "{err}");
    let (code, out, _) = tc(
        &[
            "skd",
            "check",
            "--db",
            path_str(&store2),
            "--realm",
            "r1",
            tok,
        ],
        "",
    );
    assert_eq!((code, out.as_str()), (0, "YES\n"));
    // 74: the store refuses writes (a trigger stands in for a failing disk).
    let st = Command::new("sqlite3")
        .arg(dir.path().join("skd.sqlite"))
        .arg("CREATE TRIGGER refuse BEFORE INSERT ON kv BEGIN SELECT RAISE(ABORT, 'no space left'); END;")
        .status()
        .unwrap();
    assert!(st.success());
    let (code, out, err) = skd_("issue", &["--user", "u"], "");
    assert_eq!((code, out.as_str()), (74, ""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no space left"), "{err}");
}

/// skd(8): a failure of the store is a bare 500, logged at error level; reads still work
/// and skd keeps serving.
#[test]
fn a_store_failure_is_a_bare_500() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::direct(skd(), &["-d", path_str(dir.path()), "--allow-stored-token"]);
    assert_eq!(d.get("/stored_token?realm=r&user=u&token=T0").status, 200);
    // Writes refused from now on (a trigger stands in for a full or failing disk).
    let st = Command::new("sqlite3")
        .arg(dir.path().join("skd.sqlite"))
        .arg("CREATE TRIGGER refuse BEFORE INSERT ON kv BEGIN SELECT RAISE(ABORT, 'disk full'); END;")
        .status()
        .unwrap();
    assert!(st.success());
    let r = d.get("/stored_token?realm=r&user=v&token=T1");
    assert_eq!((r.status, r.text().as_str()), (500, ""), "{r:?}");
    let log = d.log_text();
    assert!(
        log.contains("error: store-error path=/stored_token") && log.contains("disk full"),
        "{log}"
    );
    assert_eq!(
        d.get("/valid?realm=r&token=T0").text(),
        "YES\nu\nstored\n\n"
    );
    assert_eq!(d.get("/version").text(), "1.5\n");
}
