//! skd on PostgreSQL (`--store postgresql://…`) against a real, throw-away cluster
//! (tests/common PgCluster): several skd on one database, outages, migration from SQLite,
//! passwords from files, and the start-up errors.

use crate::common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn login(d: &Daemon, realm: &str, user: &str, pwd: &str) -> String {
    let r = d.get(&format!("/auth_token?realm={realm}&user={user}&pwd={pwd}"));
    assert_eq!(r.status, 200, "login {user}: {r:?} {}", d.log_text());
    let t = r.first_line();
    assert!(is_token(&t), "{t}");
    t
}

fn valid(d: &Daemon, token: &str) -> Resp {
    d.get(&format!("/valid?realm=r&token={token}"))
}

/// Polls `/valid` of `token` on `d` every 10 ms until its first line is `want` (or the
/// status is `status`); returns how long that took, panicking after `limit`.
fn until(d: &Daemon, token: &str, status: u16, want: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let r = valid(d, token);
        if r.status == status && (want.is_empty() || r.first_line() == want) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "after {:?}: still {} {:?}, wanted {status} {want}; skd log:\n{}",
            t0.elapsed(),
            r.status,
            r.text(),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn skd_on(url: &str) -> Daemon {
    Daemon::direct(
        skd(),
        &[
            "--store",
            url,
            "-pam-app",
            PAM_SERVICE,
            "--allow-stored-token",
        ],
    )
}

#[test]
fn two_skd_on_one_database_agree_and_ride_out_an_outage() {
    pam_setup();
    let pg = PgCluster::start();
    pg.createdb("skd");
    let url = pg.url("skd");
    let (a, b) = (skd_on(&url), skd_on(&url));

    // Issued through A: YES on B at once.
    let t = login(&a, "r", "alice", "wonderland");
    assert_eq!(valid(&b, &t).text(), "YES\nalice\nauth/pam\n\n");
    // Both cache it; revoked through B: NO on A within 1 s.
    for _ in 0..3 {
        assert_eq!(valid(&a, &t).first_line(), "YES");
        assert_eq!(valid(&b, &t).first_line(), "YES");
    }
    assert_eq!(b.get(&format!("/revoke?realm=r&token={t}")).text(), "OK\n");
    let took = until(&a, &t, 200, "NO", Duration::from_secs(1));
    eprintln!("revocation on B seen on A after {took:?}");

    // Replaced through A: the old token NO on B within 1 s, the new one YES at once.
    let t = login(&b, "r", "alice", "wonderland");
    assert_eq!(valid(&a, &t).first_line(), "YES");
    let r = a.get(&format!("/replace?realm=r&token={t}"));
    assert_eq!(r.status, 200);
    let n = r.first_line();
    assert_eq!(valid(&b, &n).first_line(), "YES");
    until(&b, &t, 200, "NO", Duration::from_secs(1));

    // Revoked by tokenctl beside them: NO on both within 1 s.
    let mut rev = Command::new(tokenctl())
        .args(["skd", "revoke", "--store", &url, "--realm", "r", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(rev.stdin.as_mut().unwrap(), n.as_bytes()).unwrap();
    drop(rev.stdin.take());
    assert!(rev.wait().unwrap().success());
    until(&a, &n, 200, "NO", Duration::from_secs(1));
    until(&b, &n, 200, "NO", Duration::from_secs(1));

    // PostgreSQL stopped: 503 on both within 1 s, never a cached YES.
    let t = login(&a, "r", "alice", "wonderland");
    for _ in 0..3 {
        assert_eq!(valid(&a, &t).first_line(), "YES");
        assert_eq!(valid(&b, &t).first_line(), "YES");
    }
    pg.stop();
    let down = Instant::now();
    for d in [&a, &b] {
        until(d, &t, 503, "", Duration::from_secs(1));
    }
    assert!(down.elapsed() < Duration::from_secs(1));
    let r = a.get("/auth_token?realm=r&user=alice&pwd=wonderland");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.text(), "ERR: token store unavailable, try later\n");
    // Still 503 a while later (nothing cached comes back).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(valid(&b, &t).status, 503);

    // Started again: YES on both without restarting skd, and logins work again.
    pg.start_again();
    for d in [&a, &b] {
        until(d, &t, 200, "YES", Duration::from_secs(10));
    }
    let t2 = login(&b, "r", "alice", "wonderland");
    assert_eq!(valid(&a, &t2).first_line(), "YES");
    until(&a, &t, 200, "SUPERCEDED", Duration::from_secs(1));
    for d in [&a, &b] {
        // The listener is back within its longest retry delay (1 s).
        let t0 = Instant::now();
        while !d.log_text().contains("store-channel-up") && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = d.log_text();
        assert!(log.contains("store-channel-lost"), "{log}");
        assert!(log.contains("store-channel-up"), "{log}");
        for tok in [&t, &t2, &n] {
            assert!(!log.contains(tok.as_str()), "token in log: {log}");
        }
    }
    // Back to normal: cached again, and invalidated again.
    for _ in 0..3 {
        assert_eq!(valid(&a, &t2).first_line(), "YES");
    }
    assert_eq!(b.get(&format!("/revoke?realm=r&token={t2}")).text(), "OK\n");
    until(&a, &t2, 200, "NO", Duration::from_secs(1));
}

/// A database that hangs (its processes stopped, connections open): no cached YES more than
/// 1 s later, and everything back once it runs again.
#[test]
fn a_hung_database_stops_cached_answers_within_a_second() {
    pam_setup();
    let pg = PgCluster::start();
    pg.createdb("skd");
    let d = skd_on(&pg.url("skd"));
    let t = login(&d, "r", "alice", "wonderland");
    for _ in 0..3 {
        assert_eq!(valid(&d, &t).first_line(), "YES");
    }
    pg.signal_all("STOP");
    std::thread::sleep(Duration::from_secs(1));
    // Asked 1 s after: 503, or no answer while the database hangs, never YES.
    let mut s = std::net::TcpStream::connect(&d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let req =
        format!("GET /valid?realm=r&token={t} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = exchange(&mut s, req.as_bytes());
    pg.signal_all("CONT");
    assert_ne!(
        r.status,
        200,
        "answered {:?} with the database hung",
        r.text()
    );
    until(&d, &t, 200, "YES", Duration::from_secs(10));
    assert!(
        d.log_text().contains("store-channel-lost"),
        "{}",
        d.log_text()
    );
}

/// Every answer a store gives for the tokens, keys and groups of the migration test.
fn answers(d: &Daemon, tokens: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for t in tokens {
        for p in [
            format!("/valid?realm=r&token={t}"),
            format!("/get_key?realm=r&token={t}"),
            format!("/group_hash?realm=r&token={t}&group=g&salt=s"),
            format!("/group_hash?realm=r&token={t}&group=h"),
        ] {
            let r = d.get(&p);
            out.push(format!("{p} -> {} {:?}", r.status, r.text()));
        }
    }
    out
}

fn tokenctl_out(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(tokenctl()).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn migrate_from_sqlite_keeps_every_answer() {
    pam_setup();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let sqlite = format!("sqlite:{}", store.display());
    let d = Daemon::direct(
        skd(),
        &[
            "-d",
            path_str(&store),
            "-pam-app",
            PAM_SERVICE,
            "--allow-stored-token",
        ],
    );
    let old = login(&d, "r", "alice", "wonderland");
    let alice = login(&d, "r", "alice", "wonderland");
    let nobody = login(&d, "r", "nobody", "nopass");
    let gone = login(&d, "r", "c1", "pw1");
    assert_eq!(d.get(&format!("/revoke?realm=r&token={gone}")).status, 200);
    assert_eq!(
        d.get("/stored_token?realm=r&user=carol&token=carol-token")
            .status,
        200
    );
    let carol = "carol-token".to_string();
    for t in [&alice, &carol] {
        assert_eq!(d.get(&format!("/gen_key?realm=r&token={t}")).status, 200);
    }
    for (t, g) in [(&alice, "g"), (&carol, "h")] {
        let r = d.get(&format!("/create_group?realm=r&token={t}&group={g}"));
        assert_eq!(r.text(), "OK\n");
    }
    let r = d.get(&format!(
        "/mod_group?realm=r&token={alice}&group=g&add_members=nobody&add_admins=carol"
    ));
    assert_eq!(r.text(), "OK\n");
    let tokens = vec![old, alice, nobody, gone, carol, "unknown".to_string()];
    let before = answers(&d, &tokens);
    assert!(before.iter().any(|a| a.contains("200 \"YES")));
    drop(d);
    let list =
        |store: &str| tokenctl_out(&["skd", "list", "--json", "--store", store, "--realm", "r"]);
    let keys = |store: &str| tokenctl_out(&["skd", "keys", "--store", store]);

    let pg = PgCluster::start();
    pg.createdb("skd");
    let url = pg.url("skd");
    let (code, _, err) = tokenctl_out(&["skd", "migrate", "--from", &sqlite, "--to", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("copied"), "{err}");
    assert_eq!(list(&sqlite), list(&url));
    assert_eq!(keys(&sqlite), keys(&url));
    assert!(!list(&url).1.is_empty());

    let d = skd_on(&url);
    assert_eq!(answers(&d, &tokens), before);
    // The migrated store goes on living: a new login supersedes the migrated token.
    let alice = &tokens[1];
    assert_eq!(valid(&d, alice).first_line(), "YES");
    login(&d, "r", "alice", "wonderland");
    assert_eq!(valid(&d, alice).first_line(), "SUPERCEDED");

    // Never into a store that holds records; nothing is written then.
    let n = pg.psql("skd", "SELECT count(*) FROM skd_kv");
    let (code, _, err) = tokenctl_out(&["skd", "migrate", "--from", &sqlite, "--to", &url]);
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(pg.psql("skd", "SELECT count(*) FROM skd_kv"), n);
    // And back, PostgreSQL to a new SQLite store: the same listing.
    let back = format!("sqlite:{}", dir.path().join("back").display());
    let (code, _, err) = tokenctl_out(&["skd", "migrate", "--from", &url, "--to", &back]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(list(&back), list(&url));
}

#[test]
fn start_up_errors_passwords_and_an_unreachable_database() {
    pam_setup();
    let pg = PgCluster::start();
    pg.createdb("skd");
    pg.psql("postgres", "CREATE ROLE skd LOGIN PASSWORD 'sesame'");
    pg.psql(
        "skd",
        "ALTER DATABASE skd OWNER TO skd; ALTER SCHEMA public OWNER TO skd",
    );
    let url = pg.url_as("skd", "skd");
    let run = |args: &[&str]| {
        let o = Command::new(skd())
            .args(args)
            .args(["--listen", "127.0.0.1:1"])
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // Bad URLs: 64, with the reason.
    for (store, why) in [
        ("postgresql://skd:sesame@localhost/skd", "password"),
        ("postgresql://localhost/skd?passwd=x", "passwd"),
        ("mysql://localhost/skd", "postgresql://"),
        ("sqlite:", "directory"),
    ] {
        let (code, err) = run(&["--store", store]);
        assert_eq!(code, 64, "{store}: {err}");
        assert!(err.contains(why), "{store}: {err}");
        assert!(!err.contains("sesame"), "the password echoed: {err}");
    }
    let (code, err) = run(&["--store", &url, "-d", "/tmp"]);
    assert_eq!(code, 64, "{err}");
    // Reachable but refused (no password, a wrong one, no such database): 78 at once.
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "wrong\n").unwrap();
    for (args, why) in [
        (vec!["--store", url.as_str()], "password"),
        (
            vec![
                "--store",
                url.as_str(),
                "--store-password-file",
                path_str(&pw),
            ],
            "28P01",
        ),
    ] {
        let (code, err) = run(&args);
        assert_eq!(code, 78, "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    let (code, err) = run(&["--store", &pg.url("nosuchdb")]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("3D000"), "{err}");

    // The password from a file, then from the systemd credential: the schema is created by
    // the database's owner, and the store works.
    std::fs::write(&pw, "sesame\n").unwrap();
    let d = Daemon::direct(
        skd(),
        &[
            "--store",
            &url,
            "--store-password-file",
            path_str(&pw),
            "-pam-app",
            PAM_SERVICE,
        ],
    );
    let t = login(&d, "r", "alice", "wonderland");
    drop(d);
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("store-password"), "sesame\n").unwrap();
    let d = Daemon::on_free_port(|addr| {
        let mut c = Command::new(skd());
        c.args(["--listen", addr, "--store", &url, "-pam-app", PAM_SERVICE])
            .env("CREDENTIALS_DIRECTORY", &creds);
        c
    });
    assert_eq!(valid(&d, &t).first_line(), "YES");
    assert_eq!(
        pg.psql(
            "skd",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'skd_kv'"
        ),
        "skd\n"
    );
    assert_eq!(pg.psql("skd", "SELECT version FROM skd_schema"), "1\n");
    drop(d);
    // tokenctl: the same password sources, the same exit statuses.
    let (code, out, err) = tokenctl_out(&[
        "skd",
        "check",
        "--store",
        &url,
        "--store-password-file",
        path_str(&pw),
        "--realm",
        "r",
        &t,
    ]);
    assert_eq!((code, out.as_str()), (0, "YES\n"), "{err}");
    let (code, _, err) = tokenctl_out(&["skd", "check", "--store", &url, "--realm", "r", &t]);
    assert_eq!(code, 78, "{err}");

    // A newer schema than this skd knows: refused, nothing touched.
    pg.psql("skd", "UPDATE skd_schema SET version = 99");
    let (code, err) = run(&["--store", &url, "--store-password-file", path_str(&pw)]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("version 99"), "{err}");
    pg.psql("skd", "UPDATE skd_schema SET version = 1");

    // Unreachable (no server at that socket): skd starts, answers 503 to /valid and to
    // logins without asking PAM, and serves once the database is there.
    let gone = pg.url("skd").replace(
        &pg.socket_dir().display().to_string(),
        path_str(&dir.path().join("nothing")),
    );
    let d = skd_on(&gone);
    assert!(
        d.log_text().contains("store-unreachable"),
        "{}",
        d.log_text()
    );
    assert_eq!(valid(&d, &t).status, 503);
    let r = d.get("/auth_token?realm=r&user=pg-down-probe&pwd=x");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        pam_calls("pg-down-probe").is_empty(),
        "PAM asked while the store is down"
    );
    assert_eq!(d.get("/version").status, 200);
}
