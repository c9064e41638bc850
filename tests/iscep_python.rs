//! A Python peer that reads like the original client (one recv per frame, pinned certificate,
//! no SNI; tests/iscep/spec_client.py) against iscepd: the scenario of specs/iscep.md §6.3 in
//! plain, auth and TLS modes, with the certificate made as the original's README says.
//! (The original itself is not on a package registry, so this is the stand-in.)

use crate::common::*;
use serde_json::{json, Value};
use std::process::Command;

fn scenario(port: u16, token: Option<&str>, cert: Option<&str>) -> Vec<Value> {
    let o = Command::new("python3")
        .arg(root().join("tests/iscep/spec_client.py"))
        .arg(port.to_string())
        .arg(token.unwrap_or("-"))
        .arg(cert.unwrap_or("-"))
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "spec_client.py: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn check(answers: &[Value], auth: bool, token: Option<&str>) {
    assert!(answers.len() == 7 || answers.len() == 8, "{answers:?}");
    let mut echo = json!({"response": {"echo": "echo"}});
    if let Some(t) = token {
        echo["auth_token"] = json!(t);
    }
    assert_eq!(answers[0], json!([0, echo]));
    assert_eq!(
        answers[1],
        json!([1, {"response": {"test_task": {"message": "str", "numb": "int"}}}])
    );
    assert_eq!(
        answers[2],
        json!([3, {"response": {"message": "echo hello", "numb": 1}}])
    );
    assert_eq!(answers[3], json!([6, {"error": "command not found"}]));
    if auth {
        assert_eq!(answers[4], json!([5, {}]));
    } else {
        assert_eq!(answers[4][0], json!(3));
    }
    let len = |v: &Value| v[1]["response"]["echo"].as_str().map(str::len);
    assert_eq!(len(&answers[5]), Some(15000));
    let last = answers.len() - 1;
    if last == 7 {
        assert_eq!(len(&answers[6]), Some(40000));
    }
    assert_eq!(
        answers[last],
        Value::Null,
        "CLOSE_CONNECTION: EOF, no answer"
    );
}

#[test]
fn original_style_client_plain_auth_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("iscepd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[commands.test_task]\nexec = [\"/usr/bin/python3\", \"{}\"]\nargs = {{ message = \"str\", numb = \"int\" }}\n",
            root().join("tests/iscep/test_task.py").display()
        ),
    )
    .unwrap();
    let tokens = dir.path().join("tokens.json");
    let out = Command::new(tokenctl())
        .args(["iscep", "add", "user", "--tokens", path_str(&tokens)])
        .output()
        .unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-out",
            path_str(&cert),
            "-keyout",
            path_str(&key),
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let bin = env!("CARGO_BIN_EXE_iscepd");
    let port = |d: &Daemon| d.addr.rsplit(':').next().unwrap().parse::<u16>().unwrap();

    let d = Daemon::direct(bin, &["--config", path_str(&cfg), "--no-auth"]);
    check(&scenario(port(&d), None, None), false, None);
    drop(d);

    let d = Daemon::direct(
        bin,
        &["--config", path_str(&cfg), "--tokens", path_str(&tokens)],
    );
    check(&scenario(port(&d), Some(&token), None), true, Some(&token));
    drop(d);

    let d = Daemon::direct(
        bin,
        &[
            "--config",
            path_str(&cfg),
            "--tokens",
            path_str(&tokens),
            "--tls-cert",
            path_str(&cert),
            "--tls-key",
            path_str(&key),
        ],
    );
    check(
        &scenario(port(&d), Some(&token), Some(path_str(&cert))),
        true,
        Some(&token),
    );
}
