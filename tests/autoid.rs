//! autoidd and autoid end to end, socket-activated on loopback: v1 and v2, the spec's bypass
//! requests refused, a wrong entropy file refused, rotation of the entropy file and of the key,
//! malformed input answered clearly, replays refused, v1 switched off, rate limiting.

pub mod util;
use std::process::Command;
use util::*;

#[test]
fn v1_and_v2_serve_the_secret() {
    let s = Setup::new();
    let d = s.start(&[]);
    for key in [s.public(), s.public_pem()] {
        for path in ["/verify", "/Stage/verify"] {
            let o = fetch(&d, path, &s.entropy(), &key, &["--v1"], "test-secret");
            assert!(o.status.success(), "{}", stderr(&o));
            assert_eq!(stdout(&o), format!("{SECRET}\n"));
        }
        let o = fetch(&d, "", &s.entropy(), &key, &[], "test-secret");
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stdout(&o), format!("{SECRET}\n"));
    }
    // The original's credential_source form, and a non-ASCII secret (the original crashed).
    s.put_secret("utf", "pässwörd ✓");
    let o = fetch(
        &d,
        "/verify",
        &s.entropy(),
        &s.public(),
        &["--v1"],
        "secretsmanager,utf",
    );
    assert_eq!(stdout(&o), "pässwörd ✓\n", "{}", stderr(&o));
    let o = fetch(&d, "", &s.entropy(), &s.public(), &[], "utf");
    assert_eq!(stdout(&o), "pässwörd ✓\n", "{}", stderr(&o));
    // Unknown secret: refused, exit 1, a clear message; 502 for v1 as the original.
    let o = fetch(&d, "", &s.entropy(), &s.public(), &[], "nope");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("404") && stderr(&o).contains("no secret"),
        "{}",
        stderr(&o)
    );
    let o = fetch(&d, "/verify", &s.entropy(), &s.public(), &["--v1"], "nope");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("autoid: refused: the server answered 502"),
        "{}",
        stderr(&o)
    );
    let log = d.log_text();
    assert!(log.contains("served version=1 secret=test-secret"), "{log}");
    assert!(log.contains("served version=2 secret=test-secret"), "{log}");
    assert!(
        !log.contains(SECRET) && !log.contains("pässwörd"),
        "secret in the log: {log}"
    );
}

#[test]
fn bypass_requests_of_the_spec_are_refused() {
    let s = Setup::new();
    let d = s.start(&["--failures", "0"]);
    let empty = keysock::secret::sha256_hex(b"");
    let lf = keysock::secret::sha256_hex(b"\n\n\n\n");
    let cases = [
        ("0,0,0", empty.as_str()),
        ("9999999,9999999,0", empty.as_str()),
        (
            "2048,2049,0|2048,2049,0|2048,2049,0|2048,2049,0",
            lf.as_str(),
        ),
        // Four tuples that each pass the range rule but are empty or tiny.
        ("1,2,0|1,2,0|1,2,0|1,2,0", "00"),
        ("1,2,0|3,4,0|5,6,0|7,8,0", "00"),
        ("-1,5,0|1,2,1|1,2,2|1,2,3", empty.as_str()),
    ];
    for (intervals, hash) in cases {
        for path in ["/verify", "/Stage/verify"] {
            let (body, _) = v1_body(&s.public(), intervals, hash, "secretsmanager,test-secret");
            let r = post_json(&d.addr, path, body.as_bytes());
            assert_eq!(r.status, 404, "{intervals}: {r:?}");
            assert_eq!(r.text(), "{\"message\": \"not found\"}");
        }
    }
    assert!(
        d.log_text().contains("intervals refused"),
        "{}",
        d.log_text()
    );
    // The same requests with the right hash over a stock-shaped interval set are served: the
    // refusal is the policy's, not the encoding's.
    let file = std::fs::read(s.entropy()).unwrap();
    let t = "1310,1438,1583|1507,17,1587|708,897,387|280,1522,624";
    let tuples = keysock::autoid::wire::parse_intervals(t).unwrap();
    let h = keysock::autoid::wire::hash_v1(&file, &tuples);
    let (body, key) = v1_body(&s.public(), t, &h, "secretsmanager,test-secret");
    let r = post_json(&d.addr, "/verify", body.as_bytes());
    assert_eq!(r.status, 201, "{r:?}");
    let got = keysock::autoid::wire::v1_open_answer(&key, &r.body).unwrap();
    assert_eq!(&got[..], SECRET.as_bytes());
}

/// The original client's random tuples sometimes overlap (about 1 request in 700): overlap
/// is served, as long as the snippets together cover --v1-min-bytes distinct bytes; empty
/// tuples, tuples outside the file and small unions are refused.
#[test]
fn overlapping_v1_intervals_are_served_small_unions_refused() {
    let s = Setup::new();
    // An entropy file shorter than the stock client's reach (70,000 bytes), to have tuples
    // outside it.
    let short = s.path("short.bin");
    let full = std::fs::read(s.entropy()).unwrap();
    std::fs::write(&short, &full[..70_000]).unwrap();
    let mut args = s.args();
    args[3] = path_str(&short).into();
    args.extend(["--failures".into(), "0".into()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::activated(autoidd(), &a, &[]);
    let file = std::fs::read(&short).unwrap();
    let ask = |t: &str| {
        let tuples = keysock::autoid::wire::parse_intervals(t).unwrap();
        let h = keysock::autoid::wire::hash_v1(&file, &tuples);
        let (body, key) = v1_body(&s.public(), t, &h, "secretsmanager,test-secret");
        let r = post_json(&d.addr, "/verify", body.as_bytes());
        (r, key)
    };
    for t in [
        // Nested (the stock client's draw for Python's seed 1123, moved onto the short file).
        "1761,952,20|79,1639,3|1112,1575,20|1331,1055,9",
        // Crossing, and the same tuple twice.
        "100,900,7|500,1500,7|3,1800,20|1999,12,30",
        "5,40,1|5,40,1|30,90,1|2,3,4",
    ] {
        let (r, key) = ask(t);
        assert_eq!(r.status, 201, "{t}: {r:?} {}", d.log_text());
        let got = keysock::autoid::wire::v1_open_answer(&key, &r.body).unwrap();
        assert_eq!(&got[..], SECRET.as_bytes());
    }
    for (t, why) in [
        // Four times the same 20 bytes; nested spans; the four known line ends.
        (
            "100,120,0|100,120,0|100,120,0|100,120,0",
            "cover 20 distinct",
        ),
        (
            "100,130,0|105,110,0|120,101,0|129,100,0",
            "cover 30 distinct",
        ),
        ("0,1,1|1,2,2|2,3,3|3,4,4", "cover 4 distinct"),
        // An empty tuple; a tuple past the end of the file (line 40 starts at 81,920).
        ("5,5,0|100,900,7|3,1800,20|1999,12,30", "tuple 1: a, b"),
        (
            "100,900,7|3,1800,20|1999,12,30|0,100,40",
            "tuple 4 falls outside",
        ),
    ] {
        let (r, _) = ask(t);
        assert_eq!(r.status, 404, "{t}: {r:?}");
        assert!(d.log_text().contains(why), "{t}: {}", d.log_text());
    }
}

#[test]
fn wrong_entropy_file_is_refused() {
    let s = Setup::new();
    let d = s.start(&["--failures", "0"]);
    let other = s.path("other.bin");
    s.gen_entropy(&other);
    let o = fetch(&d, "/verify", &other, &s.public(), &["--v1"], "test-secret");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("404: not found"), "{}", stderr(&o));
    let o = fetch(&d, "", &other, &s.public(), &[], "test-secret");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("403: proof refused"), "{}", stderr(&o));
    assert!(d.log_text().contains("hash mismatch"));
    assert!(d.log_text().contains("proof mismatch"));
}

#[test]
fn rotation_of_entropy_and_key() {
    let s = Setup::new();
    let d = s.start(&["--failures", "0"]);
    let old_entropy = s.path("old.bin");
    std::fs::copy(s.entropy(), &old_entropy).unwrap();
    let ok = |entropy: &std::path::Path, key: &std::path::Path| {
        for v in [&["--v1"][..], &[][..]] {
            let o = fetch(&d, "", entropy, key, v, "test-secret");
            assert_eq!(stdout(&o), format!("{SECRET}\n"), "{v:?}: {}", stderr(&o));
        }
    };
    let refused = |entropy: &std::path::Path, key: &std::path::Path, v1: &str, v2: &str| {
        let o = fetch(&d, "", entropy, key, &["--v1"], "test-secret");
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(v1), "{}", stderr(&o));
        let o = fetch(&d, "", entropy, key, &[], "test-secret");
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(v2), "{}", stderr(&o));
    };
    ok(&s.entropy(), &s.public());
    // Entropy rotation: `autoidd gen-entropy --force` over the live file (atomic rename).
    let o = s.gen_entropy_with(&s.entropy(), &["--force"]);
    assert!(o.status.success(), "gen-entropy --force: {o:?}");
    refused(&old_entropy, &s.public(), "404", "403");
    ok(&s.entropy(), &s.public());
    // Key rotation: a new pair renamed over the live key; the old public key gets 502 (v1, as
    // the original) or a clear unwrap refusal (v2).
    let old_pub = s.path("old.pub");
    std::fs::copy(s.public(), &old_pub).unwrap();
    s.new_key("next");
    std::fs::rename(s.path("next_key.pem"), s.key()).unwrap();
    refused(&s.entropy(), &old_pub, "502", "wrong server key");
    ok(&s.entropy(), &s.path("next.pub"));
    assert!(
        d.log_text().matches("keys-loaded").count() >= 2,
        "{}",
        d.log_text()
    );
}

#[test]
fn malformed_input_gets_clear_errors_and_no_crash() {
    let s = Setup::new();
    let mut d = s.start(&["--failures", "0", "--max-body", "4096"]);
    let (good, _) = v1_body(&s.public(), "1,2,0", "00", "s,test-secret");
    let v: serde_json::Value = serde_json::from_str(&good).unwrap();
    let data = v["data"].as_str().unwrap().to_string();
    // A valid OAEP wrap, but a payload that is not under its key: bad padding or bad JSON.
    let k = keysock::autoid::wire::v1_key(b"another passphrase");
    let junk = keysock::autoid::wire::cbc_seal(&k, &[3; 16], b"{\"x\": 1}").unwrap();
    let junk = keysock::autoid::wire::hexb64_encode(&junk);
    let cases: Vec<(String, u16)> = vec![
        ("not json".into(), 400),
        ("{}".into(), 400),
        ("{\"data\": \"zz\", \"payload\": \"00\"}".into(), 400),
        ("{\"data\": \"2a2a2a\", \"payload\": \"00\"}".into(), 400),
        (
            format!(
                "{{\"data\": \"{}\", \"payload\": \"00\"}}",
                keysock::autoid::wire::hexb64_encode(&[1u8; 256])
            ),
            502,
        ),
        (
            format!("{{\"data\": \"{data}\", \"payload\": \"{junk}\"}}"),
            400,
        ),
        (format!("{{\"data\": \"{data}\", \"payload\": \"\"}}"), 400),
        (
            format!(
                "{{\"data\": \"{data}\", \"payload\": \"{}\"}}",
                "41".repeat(20)
            ),
            400,
        ),
    ];
    for (body, want) in &cases {
        let r = post_json(&d.addr, "/verify", body.as_bytes());
        assert_eq!(r.status, *want, "{body:.80}: {r:?}");
        assert!(r.text().starts_with("{\"message\": \""), "{r:?}");
    }
    // Oversized bodies: 413 for v1 and v2.
    let big = vec![b'a'; 10_000];
    assert_eq!(post_json(&d.addr, "/verify", &big).status, 413);
    assert_eq!(post_json(&d.addr, "/v2/verify", &big).status, 413);
    // v2 garbage.
    for body in [
        "",
        "{}",
        "{\"nonce\": \"00\", \"key\": \"\", \"client_share\": \"\", \"box\": \"\"}",
    ] {
        let r = post_json(&d.addr, "/v2/verify", body.as_bytes());
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert!(r.text().starts_with("{\"error\":"), "{r:?}");
    }
    // Random corruption of a valid request: a clear answer, never a crash. (A few mutations
    // are equivalent encodings, such as hex case, JSON whitespace or base64's unused low bits,
    // and are served: 201.)
    let file = std::fs::read(s.entropy()).unwrap();
    let t = "1310,1438,1583|1507,17,1587|708,897,387|280,1522,624";
    let h =
        keysock::autoid::wire::hash_v1(&file, &keysock::autoid::wire::parse_intervals(t).unwrap());
    let (valid, _) = v1_body(&s.public(), t, &h, "secretsmanager,test-secret");
    for i in 0..150 {
        let mut b = valid.clone().into_bytes();
        let r = keysock::secret::random_bytes(8);
        let at = u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize % b.len();
        b[at] = if i % 2 == 0 {
            r[4]
        } else {
            b"0123456789abcdef"[r[4] as usize % 16]
        };
        if b == valid.as_bytes() {
            continue;
        }
        let resp = post_json(&d.addr, "/verify", &b);
        // 201 only for an equivalent encoding (JSON whitespace, hex case, unused base64 bits).
        assert!(
            [201, 400, 404, 502].contains(&resp.status),
            "byte {at}: {resp:?}"
        );
    }
    // Wrong method and path.
    assert_eq!(d.get("/verify").status, 405);
    assert_eq!(d.get("/other").status, 404);
    // Still serving.
    let o = fetch(&d, "", &s.entropy(), &s.public(), &[], "test-secret");
    assert_eq!(stdout(&o), format!("{SECRET}\n"), "{}", stderr(&o));
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "autoidd died: {}",
        d.log_text()
    );
    assert!(d.signal_and_wait("TERM").success());
}

/// A v2 exchange done by hand, to replay its second request.
#[test]
fn v2_replays_and_reused_nonces_are_refused() {
    use keysock::autoid::wire;
    let s = Setup::new();
    let d = s.start(&["--failures", "0", "--challenge-ttl", "2"]);
    let pk = read_public(&s.public());
    let file = std::fs::read(s.entropy()).unwrap();
    let answer = |ch: &wire::Challenge| {
        let nonce = wire::unhex(&ch.nonce).unwrap();
        let ss = wire::unhex(&ch.server_share).unwrap();
        let ranges = wire::parse_ranges(&ch.ranges).unwrap();
        assert_eq!(ranges.len(), 8);
        for w in ranges.windows(2) {
            assert!(w[0].1 <= w[1].0, "ranges disjoint and ordered: {ranges:?}");
        }
        let proof = wire::v2_proof(&file, &nonce, "test-secret", &ranges).unwrap();
        let k = [9u8; 32];
        let eph = wire::x25519_generate().unwrap();
        let cs = wire::x25519_public(&eph).unwrap();
        let keys = wire::v2_keys(&nonce, &k, &wire::x25519_shared(&eph, &ss).unwrap()).unwrap();
        let inner = serde_json::to_vec(&wire::Proof {
            secret_id: "test-secret".into(),
            proof: keysock::secret::hex(&proof),
        })
        .unwrap();
        let sealed =
            wire::gcm_seal(&keys.request, &wire::request_aad(&nonce, &ss, &cs), &inner).unwrap();
        let a = wire::Answer {
            nonce: ch.nonce.clone(),
            key: wire::b64(&wire::oaep_wrap(&pk, &k, true).unwrap()),
            client_share: keysock::secret::hex(&cs),
            sealed: wire::b64(&sealed),
        };
        (
            serde_json::to_vec(&a).unwrap(),
            keys.response.clone(),
            nonce,
        )
    };
    let challenge = || {
        let r = post_json(&d.addr, "/v2/challenge", b"{}");
        assert_eq!(r.status, 200, "{r:?}");
        serde_json::from_slice::<wire::Challenge>(&r.body).unwrap()
    };
    let ch = challenge();
    assert_eq!(ch.version, 2);
    let (body, rk, nonce) = answer(&ch);
    let r = post_json(&d.addr, "/v2/verify", &body);
    assert_eq!(r.status, 200, "{r:?}");
    let sealed: wire::Sealed = serde_json::from_slice(&r.body).unwrap();
    let got = wire::gcm_open(
        &rk,
        &wire::response_aad(&nonce),
        &wire::unb64(&sealed.sealed, "box").unwrap(),
    )
    .unwrap();
    assert_eq!(&got[..], SECRET.as_bytes());
    // The same request again: refused.
    let r = post_json(&d.addr, "/v2/verify", &body);
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.text().contains("already used"));
    // A fresh answer to the used challenge: refused too.
    let (body2, _, _) = answer(&ch);
    assert_eq!(post_json(&d.addr, "/v2/verify", &body2).status, 409);
    // A tampered box: refused, and the challenge is spent.
    let ch = challenge();
    let (body, _, _) = answer(&ch);
    let mut a: wire::Answer = serde_json::from_slice(&body).unwrap();
    let mut b = wire::unb64(&a.sealed, "box").unwrap().to_vec();
    b[20] ^= 1;
    a.sealed = wire::b64(&b);
    let r = post_json(&d.addr, "/v2/verify", &serde_json::to_vec(&a).unwrap());
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.text().contains("authentication failed"), "{r:?}");
    assert_eq!(post_json(&d.addr, "/v2/verify", &body).status, 409);
    // An expired challenge.
    let ch = challenge();
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let (body, _, _) = answer(&ch);
    let r = post_json(&d.addr, "/v2/verify", &body);
    assert_eq!(r.status, 409);
    assert!(r.text().contains("expired"), "{r:?}");
}

#[test]
fn v1_off_and_rate_limiting() {
    let s = Setup::new();
    let d = s.start(&["--v1", "off", "--failures", "3", "--failure-window", "60"]);
    let o = fetch(
        &d,
        "/verify",
        &s.entropy(),
        &s.public(),
        &["--v1"],
        "test-secret",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("410: v1 is disabled"), "{}", stderr(&o));
    let o = fetch(&d, "", &s.entropy(), &s.public(), &[], "test-secret");
    assert_eq!(stdout(&o), format!("{SECRET}\n"), "{}", stderr(&o));
    // Three failures from 127.0.0.1, then even the right entropy file is refused (429).
    let other = s.path("other.bin");
    s.gen_entropy(&other);
    for _ in 0..3 {
        let o = fetch(&d, "", &other, &s.public(), &[], "test-secret");
        assert!(stderr(&o).contains("403"), "{}", stderr(&o));
    }
    let o = fetch(&d, "", &s.entropy(), &s.public(), &[], "test-secret");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("429: too many failed attempts"),
        "{}",
        stderr(&o)
    );
    assert!(d.log_text().contains("throttled peer=127.0.0.1"));
}

#[test]
fn cli_errors_are_one_line_with_sysexits() {
    let s = Setup::new();
    let run = |args: &[&str]| Command::new(autoid()).args(args).output().unwrap();
    let e = path_str(&s.entropy()).to_string();
    let k = path_str(&s.public()).to_string();
    let o = run(&["--url", "ftp://x", "--entropy", &e, "--server-key", &k, "a"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).starts_with("autoid: bad URL"), "{}", stderr(&o));
    let o = run(&[
        "--url",
        "http://127.0.0.1:1",
        "--entropy",
        "/nonexistent",
        "--server-key",
        &k,
        "a",
    ]);
    assert_eq!(o.status.code(), Some(66));
    assert!(
        stderr(&o).starts_with("autoid: /nonexistent: cannot read the entropy file"),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "--url",
        "http://127.0.0.1:1",
        "--entropy",
        &e,
        "--server-key",
        &e,
        "a",
    ]);
    assert_eq!(o.status.code(), Some(66));
    let (_held, port) = closed_port();
    let o = run(&[
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "--entropy",
        &e,
        "--server-key",
        &k,
        "a",
    ]);
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("autoid: cannot connect to 127.0.0.1:"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).lines().count(), 1);
    // autoidd: a missing key or entropy file stops it at start-up.
    let o = Command::new(autoidd())
        .args(["--key", "/nonexistent", "--entropy", &e, "--secrets"])
        .arg(s.secrets())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(66));
    assert!(
        stderr(&o).starts_with("autoidd: /nonexistent:"),
        "{}",
        stderr(&o)
    );
    // gen-entropy writes the original's format, 0600.
    let f = s.path("new.bin");
    s.gen_entropy(&f);
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!(m.len(), 4_196_352);
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777,
        0o600
    );
    // ...and never replaces an existing file without --force (exit 73, CANTCREAT).
    let before = std::fs::read(&f).unwrap();
    let o = s.gen_entropy_with(&f, &[]);
    assert_eq!(o.status.code(), Some(73), "{o:?}");
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!("autoidd: {}: exists", f.display()))
            && err.contains("--force")
            && err.lines().count() == 1,
        "{err}"
    );
    assert!(
        std::fs::read(&f).unwrap() == before,
        "replaced without --force"
    );
    let o = s.gen_entropy_with(&f, &["--force"]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        std::fs::read(&f).unwrap() != before,
        "not replaced with --force"
    );
}

/// $CREDENTIALS_DIRECTORY (systemd's LoadCredential=) holds the secrets, and the key and
/// entropy file as the credentials autoidd.key and autoidd.entropy, which are never served;
/// a key in the original's 2018 format (PKCS#1 from ssh-keygen -m PEM) loads.
#[test]
fn credentials_directory_and_ssh_keygen_keys() {
    let s = Setup::new();
    let creds = s.path("creds");
    std::fs::create_dir(&creds).unwrap();
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f"])
        .arg(creds.join("autoidd.key"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    std::fs::copy(s.entropy(), creds.join("autoidd.entropy")).unwrap();
    keysock::privfile::write_private(&creds.join("from-creds"), b"cred value\n").unwrap();
    let d = Daemon::activated(
        autoidd(),
        &["--failures", "0"],
        &[("CREDENTIALS_DIRECTORY", path_str(&creds))],
    );
    let public = creds.join("autoidd.key.pub");
    for v in [&["--v1"][..], &[][..]] {
        let o = fetch(&d, "", &s.entropy(), &public, v, "from-creds");
        assert_eq!(stdout(&o), "cred value\n", "{}", stderr(&o));
        for own in ["autoidd.key", "autoidd.entropy", "autoidd.key.pub"] {
            let o = fetch(&d, "", &s.entropy(), &public, v, own);
            assert_eq!(o.status.code(), Some(1), "{own} served: {}", stdout(&o));
        }
    }
    // And with --key/--entropy pointing into the secrets directory under other names.
    std::fs::copy(s.key(), s.secrets().join("k")).unwrap();
    let d = Daemon::activated(
        autoidd(),
        &[
            "--key",
            path_str(&s.secrets().join("k")),
            "--entropy",
            path_str(&s.entropy()),
            "--secrets",
            path_str(&s.secrets()),
        ],
        &[],
    );
    let o = fetch(&d, "", &s.entropy(), &s.public(), &[], "k");
    assert_eq!(o.status.code(), Some(1), "key served: {}", stdout(&o));
    assert!(stderr(&o).contains("no secret"), "{}", stderr(&o));
}

/// A POST from source address `from` (a loopback address other than 127.0.0.1): the status.
fn post_from(from: std::net::IpAddr, to: &str, path: &str, body: &[u8]) -> u16 {
    use rustix::net::{AddressFamily, SocketType};
    use std::io::{Read, Write};
    let dst: std::net::SocketAddr = to.parse().unwrap();
    let fam = if from.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket(fam, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&fd, &std::net::SocketAddr::new(from, 0)).unwrap();
    rustix::net::connect(&fd, &dst).unwrap();
    let mut c = std::net::TcpStream::from(fd);
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    c.write_all(&req).unwrap();
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).unwrap();
    parse(&buf).status
}

/// Challenges cannot be hoarded: 128 loopback addresses (one source group, as any IPv6 /64
/// would be) ask for 40 challenges each, which used to fill a global table of pending
/// challenges so that every v2 client got 503; autoid from another source (::1) still gets
/// its secret, during the flood and after it, while the flooding group is throttled.
#[test]
fn challenge_flood_from_many_addresses_denies_no_one_else() {
    assert!(
        std::net::TcpListener::bind("[::1]:0").is_ok(),
        "this test needs the IPv6 loopback address ::1 (the other client's source)"
    );
    let s = Setup::new();
    let args = s.args();
    let d = Daemon::on_free_port(|addr| {
        let port = addr.rsplit(':').next().unwrap();
        let mut c = Command::new(autoidd());
        c.args(&args)
            .args(["--listen", addr, "--listen"])
            .arg(format!("[::1]:{port}"));
        c
    });
    let port = d.addr.rsplit(':').next().unwrap().to_string();
    let fetch6 = || {
        Command::new(autoid())
            .arg("--url")
            .arg(format!("http://[::1]:{port}"))
            .arg("--entropy")
            .arg(s.entropy())
            .arg("--server-key")
            .arg(s.public())
            .arg("test-secret")
            .output()
            .unwrap()
    };
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    std::thread::scope(|sc| {
        for t in 0..8u8 {
            let (addr, statuses) = (&d.addr, &statuses);
            sc.spawn(move || {
                for k in 0..16u8 {
                    let from = std::net::Ipv4Addr::new(127, 0, 0, 2 + t * 16 + k);
                    for _ in 0..40 {
                        let st = post_from(from.into(), addr, "/v2/challenge", b"{}");
                        *statuses.lock().unwrap().entry(st).or_default() += 1;
                    }
                }
            });
        }
        for _ in 0..3 {
            let o = fetch6();
            assert_eq!(stdout(&o), format!("{SECRET}\n"), "{}", stderr(&o));
        }
    });
    for _ in 0..3 {
        let o = fetch6();
        assert_eq!(stdout(&o), format!("{SECRET}\n"), "{}", stderr(&o));
    }
    let st = statuses.into_inner().unwrap();
    eprintln!("challenge statuses from 127.0.0.2-129: {st:?}");
    assert_eq!(st.values().sum::<usize>(), 128 * 40);
    assert!(
        st.keys().all(|k| [200, 429].contains(k))
            && st.get(&429).copied().unwrap_or(0) > 128 * 40 / 2,
        "{st:?}"
    );
    assert!(d
        .log_text()
        .contains("challenges-throttled source=127.0.0.0/8"));
}

/// One source's burst of challenges, then 429 for every address of its group (127/8), until
/// the bucket refills.
#[test]
fn challenges_are_throttled_per_source_group() {
    let s = Setup::new();
    let d = s.start(&["--challenge-burst", "2", "--challenge-rate", "0.5"]);
    for _ in 0..2 {
        assert_eq!(post_json(&d.addr, "/v2/challenge", b"{}").status, 200);
    }
    let r = post_json(&d.addr, "/v2/challenge", b"{}");
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.text().contains("too many challenges"), "{r:?}");
    let from = std::net::Ipv4Addr::new(127, 0, 0, 77).into();
    assert_eq!(post_from(from, &d.addr, "/v2/challenge", b"{}"), 429);
    // autoid from the same group is refused too until the bucket refills (2 s a token).
    let o = fetch(&d, "", &s.entropy(), &s.public(), &[], "test-secret");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("429"), "{}", stderr(&o));
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let o = fetch(&d, "", &s.entropy(), &s.public(), &[], "test-secret");
    assert_eq!(stdout(&o), format!("{SECRET}\n"), "{}", stderr(&o));
}

#[test]
fn slow_bodies_block_nobody_and_are_cut_after_the_body_timeout() {
    let s = Setup::new();
    let sock = s.path("autoidd.sock");
    let mut args = s.args();
    args.extend(
        ["--listen", path_str(&sock), "--body-timeout", "5"]
            .iter()
            .map(|a| a.to_string()),
    );
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::direct(autoidd(), &a);
    let stall = b"POST /v2/verify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n{\"a\":";
    let real = b"POST /v2/challenge HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    assert_slow_bodies_block_nobody(
        &d.addr,
        &sock,
        stall,
        real,
        200,
        300,
        std::time::Duration::from_secs(5),
    );
}

#[test]
fn half_closed_requests_are_answered() {
    let s = Setup::new();
    let d = s.start(&["--failures", "1000"]);
    // v2/verify checks its body on the blocking pool before answering: a client that
    // half-closes meanwhile still gets its 400.
    assert_half_closed_answered(
        &d.addr,
        b"POST /v2/verify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        400,
    );
}

/// tests/autoid/v2_client.py: v2 written from autoidd(8), "The v2 wire format", with
/// Python's cryptography (Debian: python3-cryptography), independently of keysock's code.
fn v2_client(args: &[&str]) -> std::process::Output {
    let o = Command::new("python3")
        .arg(root().join("tests/autoid/v2_client.py"))
        .args(args)
        .output()
        .expect("python3");
    assert!(
        !stderr(&o).contains("No module named 'cryptography'"),
        "the v2 known answers need Python's cryptography (Debian: python3-cryptography)"
    );
    o
}

/// Known answers for v2 from an independent implementation of autoidd(8): Python's client
/// gets secrets from autoidd (so the server follows the man page), and its values for fixed
/// inputs are byte for byte those of the functions autoid builds its requests with.
#[test]
fn v2_known_answers_from_an_independent_implementation() {
    use keysock::autoid::wire;
    let s = Setup::new();
    s.put_secret("utf", "pässwörd ✓");
    let big: String = (0..60_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    s.put_secret("big", &big);
    let d = s.start(&["--v1", "off"]);
    for (id, want) in [
        ("test-secret", SECRET),
        ("utf", "pässwörd ✓"),
        ("big", &big),
    ] {
        let o = v2_client(&[
            "fetch",
            &d.addr,
            path_str(&s.entropy()),
            path_str(&s.public_pem()),
            id,
        ]);
        assert!(o.status.success(), "{id}: {} {}", stdout(&o), stderr(&o));
        assert_eq!(stdout(&o), want, "{id}");
    }
    let o = v2_client(&[
        "fetch",
        &d.addr,
        path_str(&s.entropy()),
        path_str(&s.public_pem()),
        "nope",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).starts_with("verify: 404"), "{}", stdout(&o));

    // The fixed inputs of v2_client.py's vectors().
    let o = v2_client(&["vectors"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let hex = |k: &str| wire::unhex(v[k].as_str().unwrap()).unwrap().to_vec();
    let file: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 256) as u8).collect();
    let nonce: Vec<u8> = (0..32u8).collect();
    let ranges = wire::parse_ranges("0-10|100-2000|4000-4096").unwrap();
    let proof = wire::v2_proof(&file, &nonce, "aws-deploy", &ranges).unwrap();
    assert_eq!(proof.to_vec(), hex("proof"), "proof");
    let keys = wire::v2_keys(&nonce, &[0x11; 32], &[0x22; 32]).unwrap();
    assert_eq!(keys.request.to_vec(), hex("k_req"), "request key");
    assert_eq!(keys.response.to_vec(), hex("k_resp"), "answer key");
    let inner = wire::gcm_open(
        &keys.request,
        &wire::request_aad(&nonce, &[0x55; 32], &[0x66; 32]),
        &hex("request_box"),
    )
    .expect("Python's request box opens");
    let p: serde_json::Value = serde_json::from_slice(&inner).unwrap();
    assert_eq!(p["secret_id"], "aws-deploy");
    assert_eq!(p["proof"], keysock::secret::hex(&proof));
    let answer = hex("answer_box");
    assert_eq!(
        &wire::gcm_open(&keys.response, &wire::response_aad(&nonce), &answer).unwrap()[..],
        "s3crét".as_bytes()
    );
    // The associated data counts: under another nonce the answer does not open.
    assert!(wire::gcm_open(&keys.response, &wire::response_aad(&[0; 32]), &answer).is_err());
}

/// SIGTERM (keysock(7)): autoidd stops accepting, answers the request in progress, exits 0.
#[test]
fn sigterm_lets_the_request_in_progress_finish() {
    let s = Setup::new();
    let mut d = s.start(&[]);
    let r = sigterm_midway(
        &d.addr,
        d.child.id(),
        b"POST /v2/challenge HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{",
        b"}",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.text().contains("\"nonce\""), "{r:?}");
    let st = d
        .wait(std::time::Duration::from_secs(15))
        .expect("no exit after SIGTERM");
    assert_eq!(st.code(), Some(0), "{}", d.log_text());
    assert!(
        d.log_text().contains("stopped reason=SIGTERM"),
        "{}",
        d.log_text()
    );
}

/// autoidd(8): --max-connections (503 beyond it), --header-timeout (an idle connection is
/// closed), --idle-exit (exit 0 once nothing is open), and secrets of at most 64 KiB.
#[test]
fn connection_cap_header_timeout_idle_exit_and_the_secret_size_limit() {
    use std::io::Read;
    let s = Setup::new();
    let max: String = (0..65536)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    s.put_secret("max", &max);
    s.put_secret("over", &(max.clone() + "x"));
    let mut d = s.start(&[
        "--max-connections",
        "2",
        "--max-connections-per-source",
        "2",
        "--header-timeout",
        "1",
        "--idle-exit",
        "2",
    ]);
    // The start-up probe's connection closes first (see tests/skd.rs, the cap test).
    wait_connections_closed(&d.addr);
    let t = std::time::Instant::now();
    let mut idle: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(&d.addr).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let r = post_json(&d.addr, "/v2/challenge", b"{}");
    assert_eq!(r.status, 503, "{r:?}");
    // The idle connections are closed after the header timeout (1 s), not before.
    for c in &mut idle {
        c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 16];
        assert!(matches!(c.read(&mut b), Ok(0) | Err(_)), "still open");
    }
    let closed = t.elapsed();
    assert!(
        closed >= std::time::Duration::from_millis(900)
            && closed < std::time::Duration::from_secs(4),
        "idle connections closed after {closed:?}"
    );
    assert_eq!(post_json(&d.addr, "/v2/challenge", b"{}").status, 200);
    // 64 KiB is served, one byte more is refused, and said so in the log.
    let o = fetch(&d, "", &s.entropy(), &s.public(), &[], "max");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim_end_matches('\n'), max);
    let o = fetch(&d, "", &s.entropy(), &s.public(), &[], "over");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
    // --idle-exit 2: nothing open now, so autoidd exits on its own, 0.
    let idle_from = std::time::Instant::now();
    let st = d
        .wait(std::time::Duration::from_secs(10))
        .expect("no idle exit");
    assert_eq!(st.code(), Some(0), "{}", d.log_text());
    assert!(
        idle_from.elapsed() > std::time::Duration::from_millis(1000),
        "exited after {:?}",
        idle_from.elapsed()
    );
    let log = d.log_text();
    assert!(log.contains("stopped reason=idle"), "{log}");
    assert!(
        log.contains(r#"status=500 reason="secret \"over\": secret longer than 65536 bytes""#),
        "{log}"
    );
}
