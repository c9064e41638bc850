//! Wire compatibility both ways with the original s5 0.0.3 (installed from PyPI into a
//! virtual environment under target/): the original s5client against s5d, our s5client against the
//! original s5server, and each reading the other's client file (specs/s5.md §6.5).

use crate::s5::util;
use std::time::Duration;
use util::*;

/// The spec's edge cases (§6.4), minus the 1-character secret that breaks the original server.
fn secrets() -> Vec<Vec<u8>> {
    vec![
        b"hunter22".to_vec(),
        Vec::new(),
        "é".repeat(23).into_bytes(),
        vec![b'x'; 47],
        b"with spaces and \"quotes\" {json}".to_vec(),
    ]
}

#[test]
fn original_client_gets_the_secret_from_s5d() {
    let client = original_s5client();
    for secret in secrets() {
        let mut srv = start_s5d(&secret, &[]);
        let o = fetch_with(&client, &srv, &[]);
        assert_got(&o, &secret);
        let st = srv
            .wait(Duration::from_secs(10))
            .expect("s5d exits after --success-max 1");
        assert!(st.success());
        assert!(!srv.client_file.exists(), "client file removed on exit");
    }
    // The original client without a file, with --no-client-file and the three flags.
    let mut srv = start_s5d(b"flags only", &["--keep-client-file"]);
    let token = srv.token();
    let o = std::process::Command::new(&client)
        .args(["--no-client-file", "--host", "127.0.0.1"])
        .args(["--port", &srv.port.to_string(), "--token", &token])
        .output()
        .unwrap();
    assert_got(&o, b"flags only");
    assert!(srv.wait(Duration::from_secs(10)).unwrap().success());
    assert!(srv.client_file.exists(), "--keep-client-file keeps it");
}

#[test]
fn original_client_fails_cleanly_on_wrong_token_and_long_secret() {
    let client = original_s5client();
    let mut srv = start_s5d(b"right", &["--success-max", "1", "--failure-max", "3"]);
    let wrong = keysock::s5::wire::b64encode(&[7u8; 96]);
    assert_failed(&fetch_with(&client, &srv, &["--token", &wrong]));
    // 60 bytes: more than the v1 answer carries. The original client gets FAILED (a 406),
    // s5 gets it through v2.
    drop(srv);
    let long = vec![b'L'; 60];
    srv = start_s5d(&long, &["--success-max", "1"]);
    assert!(
        srv.stderr().contains("only keysock's s5client (v2)"),
        "{}",
        srv.stderr()
    );
    assert_failed(&fetch_with(&client, &srv, &[]));
    assert_got(&fetch_s5(&srv), &long);
    assert!(srv.wait(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn s5_gets_the_secret_from_the_original_server() {
    for secret in secrets() {
        let mut srv = start_original(&secret, &[]);
        let o = fetch_s5(&srv);
        assert_got(&o, &secret);
        let st = srv
            .wait(Duration::from_secs(10))
            .expect("s5server exits after one success");
        assert!(st.success());
    }
    // Wrong token: FAILED, exit 1, and why on stderr. --require-v2 refuses the v1 answer.
    let srv = start_original(b"right", &["--success-max", "0"]);
    let wrong = keysock::s5::wire::b64encode(&[7u8; 96]);
    let o = fetch_with(std::path::Path::new(s5client()), &srv, &["--token", &wrong]);
    assert_failed(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong token (404)"));
    let o = fetch_with(std::path::Path::new(s5client()), &srv, &["--require-v2"]);
    assert_failed(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("v1"));
    assert_got(&fetch_s5(&srv), b"right");
}

/// The original server's client file (0644, no newline) is read by s5, ours by s5client
/// (above); ours has the same bytes apart from the token and port, mode 0600, and a last key
/// `"protocol": 2` that the original client ignores.
#[test]
fn client_files_are_interchangeable() {
    use std::os::unix::fs::PermissionsExt;
    let orig = start_original(b"abc", &["--success-max", "0"]);
    let ours = start_s5d(b"abc", &["--success-max", "0"]);
    let a = std::fs::read_to_string(&orig.client_file).unwrap();
    let b = std::fs::read_to_string(&ours.client_file).unwrap();
    assert!(!a.contains("protocol"), "{a}");
    let b = b
        .strip_suffix(", \"protocol\": 2}")
        .map(|b| format!("{b}}}"))
        .unwrap_or_else(|| panic!("no protocol key last: {b}"));
    let shape =
        |s: &str, port: u16, token: &str| s.replace(&port.to_string(), "P").replace(token, "T");
    assert_eq!(
        shape(&a, orig.port, &orig.token()),
        shape(&b, ours.port, &ours.token())
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&ours.client_file), 0o600);
    assert_ne!(
        mode(&orig.client_file),
        0o600,
        "the original's is world-readable"
    );
    // Each client against the other server, twice (unlimited successes).
    for _ in 0..2 {
        assert_got(&fetch_with(&original_s5client(), &ours, &[]), b"abc");
        assert_got(&fetch_s5(&orig), b"abc");
    }
    // The access log line has the original's format.
    let log = ours.access_log();
    let line = log.lines().next().unwrap();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.ends_with("] \"POST / HTTP/1.1\" 200 64"), "{line}");
}
