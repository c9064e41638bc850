//! The original client's behaviour against autoidd (specs/auto-id.md §6.5): the original
//! crypto_client.py is not on a package registry, so tests/autoid/crypto_client.py is a client
//! written from the spec's description of it (same files, command line, randomness, encodings
//! and output), run with pycryptodome and requests from PyPI in a virtual environment cached
//! under target/autoid-venv.

use crate::autoid::util;
use std::path::{Path, PathBuf};
use std::process::Command;
use util::*;

const PIP: &[&str] = &["pycryptodome==4.4.0", "requests==2.34.2"];

fn venv() -> PathBuf {
    let dir = root().join("target/autoid-venv");
    let ok = dir.join(".keysock-ok");
    let want = PIP.join("\n") + "\n";
    if std::fs::read_to_string(&ok).ok().as_deref() == Some(want.as_str()) {
        return dir;
    }
    std::fs::create_dir_all(root().join("target")).unwrap();
    let lock = std::fs::File::create(root().join("target/autoid-venv.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    if std::fs::read_to_string(&ok).ok().as_deref() != Some(want.as_str()) {
        let _ = std::fs::remove_dir_all(&dir);
        let st = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status();
        assert!(
            st.map(|s| s.success()).unwrap_or(false),
            "python3 -m venv failed (Debian: python3-venv)"
        );
        let out = Command::new(dir.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PIP)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pip install {PIP:?} failed (PyPI reachable?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&ok, want).unwrap();
    }
    dir
}

/// A client directory as the original expects: ./info2048.bin and ./public.pem.
fn client_dir(entropy: &Path, public: &Path) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(entropy, d.path().join("info2048.bin")).unwrap();
    std::fs::copy(public, d.path().join("public.pem")).unwrap();
    d
}

fn crypto_client(dir: &Path, url: &str, source: &str) -> (String, i32) {
    let o = Command::new(venv().join("bin/python"))
        .arg(root().join("tests/autoid/crypto_client.py"))
        .args([url, source])
        .current_dir(dir)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        o.status.code().unwrap_or(-1),
    )
}

#[test]
fn original_client_gets_the_secret() {
    let s = Setup::new();
    let d = s.start(&["--failures", "0"]);
    for key in [s.public(), s.public_pem()] {
        let cd = client_dir(&s.entropy(), &key);
        for path in ["/Stage/verify", "/verify"] {
            let url = format!("http://{}{path}", d.addr);
            let (got, code) = crypto_client(cd.path(), &url, "secretsmanager,test-secret");
            assert_eq!(code, 0);
            assert_eq!(got, format!("{SECRET}\n"), "{}", d.log_text());
        }
    }
}

/// The stock client with Python's random seeded at 1123 draws
/// `1761,952,1977|79,1639,261|1112,1575,1977|1331,1055,1831`, whose first and third tuples
/// overlap (about 1 request in 700 does): served.
#[test]
fn original_client_with_overlapping_intervals_gets_the_secret() {
    let s = Setup::new();
    let d = s.start(&["--failures", "0"]);
    let cd = client_dir(&s.entropy(), &s.public());
    let url = format!("http://{}/Stage/verify", d.addr);
    let o = Command::new(venv().join("bin/python"))
        .arg("-c")
        .arg(
            "import random, runpy, sys; random.seed(1123); sys.argv = sys.argv[1:]; \
             runpy.run_path(sys.argv[0], run_name='__main__')",
        )
        .arg(root().join("tests/autoid/crypto_client.py"))
        .args([url.as_str(), "secretsmanager,test-secret"])
        .current_dir(cd.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("{SECRET}\n"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn original_client_negative_answers() {
    let s = Setup::new();
    let d = s.start(&["--failures", "0"]);
    let url = format!("http://{}/Stage/verify", d.addr);
    let good = client_dir(&s.entropy(), &s.public());
    let internal = "An error occurred: 502 {\"message\": \"Internal server error\"}\n";
    assert_eq!(
        crypto_client(good.path(), &url, "secretsmanager,unknown"),
        (internal.to_string(), 0)
    );
    assert_eq!(
        crypto_client(good.path(), &url, "nostore"),
        (internal.to_string(), 0)
    );
    let other = s.path("other.bin");
    s.gen_entropy(&other);
    let wrong = client_dir(&other, &s.public());
    assert_eq!(
        crypto_client(wrong.path(), &url, "secretsmanager,test-secret"),
        (
            "An error occurred: 404 {\"message\": \"not found\"}\n".to_string(),
            0
        )
    );
    s.new_key("stranger");
    let wrong_key = client_dir(&s.entropy(), &s.path("stranger.pub"));
    assert_eq!(
        crypto_client(wrong_key.path(), &url, "secretsmanager,test-secret"),
        (internal.to_string(), 0)
    );
}
