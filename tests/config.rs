//! One way to configure (lib/config.rs): each of the five daemons reads a real TOML file whose
//! keys are its long options, the command line wins, and `--check` exits 0 on a good
//! configuration and non-zero, with one clear line, on a bad file or a bad key.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{get, path_str, Daemon};

const DAEMONS: [&str; 5] = ["skd", "s5d", "remod", "iscepd", "autoidd"];

fn bin(name: &str) -> &'static str {
    match name {
        "skd" => env!("CARGO_BIN_EXE_skd"),
        "s5d" => env!("CARGO_BIN_EXE_s5d"),
        "remod" => env!("CARGO_BIN_EXE_remod"),
        "iscepd" => env!("CARGO_BIN_EXE_iscepd"),
        "autoidd" => env!("CARGO_BIN_EXE_autoidd"),
        "build-key-pair" => env!("CARGO_BIN_EXE_build-key-pair"),
        _ => unreachable!(),
    }
}

/// Runs NAME ARGS with HOME and XDG_CONFIG_HOME in `dir` (s5d's default file is there):
/// (exit code, stdout, stderr).
fn run(name: &str, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(bin(name))
        .args(args)
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .current_dir(dir)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// What each daemon needs besides its options to pass --check: remod its key, autoidd its
/// key, entropy and secrets directory, s5d a secret source that needs no terminal. The
/// returned lines go into the daemon's file.
fn prerequisites(name: &str, dir: &Path) -> String {
    let p = |f: &str| path_str(&dir.join(f)).to_string();
    match name {
        "remod" => {
            let (code, _, err) = run("build-key-pair", dir, &["remo_serv", path_str(dir)]);
            assert_eq!(code, 0, "{err}");
            format!(
                "key-file = \"{}\"\nuser-service = \"SqliteUserService:{}\"\n",
                p("remo_serv_key.pem"),
                p("users.sqlite")
            )
        }
        "autoidd" => {
            let (code, _, err) = run(
                "build-key-pair",
                dir,
                &["--type", "rsa", "autoid", path_str(dir)],
            );
            assert_eq!(code, 0, "{err}");
            let (code, _, err) = run("autoidd", dir, &["gen-entropy", &p("entropy")]);
            assert_eq!(code, 0, "{err}");
            std::fs::create_dir(dir.join("secrets")).unwrap();
            format!(
                "key = \"{}\"\nentropy = \"{}\"\nsecrets = \"{}\"\n",
                p("autoid_key.pem"),
                p("entropy"),
                p("secrets")
            )
        }
        "iscepd" => "no-auth = true\n".into(),
        "s5d" => "secret-from = \"put\"\n".into(),
        _ => String::new(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_passes_on_a_good_file_and_names_it() {
    for name in DAEMONS {
        let d = tempfile::tempdir().unwrap();
        let text = format!(
            "{}idle-exit = 300\nverbose = true\nsyslog = false\n",
            prerequisites(name, d.path())
        );
        // s5d has no idle exit (its secret lives in the process).
        let text = if name == "s5d" {
            text.replace("idle-exit = 300\n", "listen = \"127.0.0.1:0\"\n")
        } else {
            text + "listen = [\"127.0.0.1:0\"]\n"
        };
        let f = write(d.path(), "c.toml", &text);
        let (code, out, err) = run(name, d.path(), &["--config", path_str(&f), "--check"]);
        assert_eq!(code, 0, "{name} --check: {out}{err}");
        assert!(
            out.contains("configuration ok") || out.contains("serving iscep"),
            "{name}: {out}"
        );
        if name != "iscepd" {
            assert!(
                out.contains(path_str(&f)),
                "{name} does not name its file: {out}"
            );
        }
    }
}

#[test]
fn check_fails_on_a_bad_file_with_one_line() {
    for name in DAEMONS {
        let d = tempfile::tempdir().unwrap();
        let pre = prerequisites(name, d.path());
        for (text, code_want, what) in [
            ("no-such-option = 1\n", 78, "unknown key \"no-such-option\""),
            ("max-connections = \"many\"\n", 78, "invalid value 'many'"),
            ("verbose = \"yes\"\n", 78, "expected true or false"),
            ("max-connections = \n", 78, "c.toml"),
        ] {
            let f = write(d.path(), "c.toml", &format!("{pre}{text}"));
            let (code, out, err) = run(name, d.path(), &["-c", path_str(&f), "--check"]);
            assert_eq!(code, code_want, "{name} with {text:?}: {out}{err}");
            assert!(
                err.starts_with(&format!("{name}: {}: ", path_str(&f))) && err.contains(what),
                "{name} with {text:?}: {err}"
            );
            assert_eq!(err.lines().count(), 1, "{name}: {err}");
        }
        // A file named on the command line must exist; the default one need not.
        let (code, _, err) = run(
            name,
            d.path(),
            &["--config", "/nonexistent/k.toml", "--check"],
        );
        assert_eq!(code, 66, "{name}: {err}");
        assert!(err.contains("/nonexistent/k.toml"), "{name}: {err}");
    }
}

#[test]
fn check_fails_on_bad_keys_and_files() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let garbage = write(dir, "garbage.pem", "not a key\n");
    let g = path_str(&garbage);
    // Each daemon with a file naming something broken: a key, a TLS file, a command.
    let cases = [
        (
            "skd",
            format!("tls-cert = \"{g}\"\ntls-key = \"{g}\"\n"),
            "TLS",
        ),
        (
            "iscepd",
            "no-auth = true\n[commands.x]\nexec = [\"rel\"]\n".into(),
            "absolute path",
        ),
        ("remod", format!("key-file = \"{g}\"\n"), "garbage.pem"),
        (
            "autoidd",
            format!(
                "key = \"{g}\"\nentropy = \"{g}\"\nsecrets = \"{}\"\n",
                path_str(dir)
            ),
            "garbage.pem",
        ),
        ("s5d", "secret-from = \"credential\"\n".into(), "s5-secret"),
    ];
    for (name, text, what) in cases {
        let f = write(dir, &format!("{name}.toml"), &text);
        let (code, out, err) = run(name, dir, &["--config", path_str(&f), "--check"]);
        assert!(
            code != 0 && out.is_empty(),
            "{name} --check passed: {out}{err}"
        );
        assert!(
            err.starts_with(&format!("{name}: ")) && err.contains(what),
            "{name}: {err}"
        );
    }
}

#[test]
fn s5d_reads_the_users_file() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("xdg/keysock")).unwrap();
    write(
        &d.path().join("xdg/keysock"),
        "s5d.toml",
        "failure-max = \"x\"\n",
    );
    let (code, _, err) = run("s5d", d.path(), &["--check"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("xdg/keysock/s5d.toml"), "{err}");
}

#[test]
fn skd_serves_on_the_files_listener_and_the_command_line_wins() {
    let d = tempfile::tempdir().unwrap();
    let port = crate::common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let f = write(
        d.path(),
        "skd.toml",
        &format!(
            "listen = [\"{addr}\"]\ndir = \"{}\"\nverbose = true\n",
            path_str(d.path())
        ),
    );
    // Only the file says where to listen.
    let mut cmd = Command::new(bin("skd"));
    cmd.args(["--config", path_str(&f)]);
    let dm = Daemon::spawn(cmd, addr.clone());
    let r = dm.get("/valid?realm=r&token=0000000000000000000000000000000000000000");
    assert_eq!(r.status, 200, "{}", dm.log_text());
    assert!(
        d.path().join("skd.sqlite").exists(),
        "the file's dir was not used"
    );
    // A malformed request is logged at debug level only.
    crate::common::raw(&addr, b"NOT HTTP\r\n\r\n");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        dm.log_text().contains("debug: "),
        "the file's verbose was not used: {}",
        dm.log_text()
    );
    assert!(
        dm.log_text().contains(path_str(&f)),
        "the start-up line names no file"
    );
    drop(dm);
    // --listen on the command line replaces the file's list.
    let dm = Daemon::direct(bin("skd"), &["--config", path_str(&f)]);
    assert_ne!(dm.addr, addr);
    assert_eq!(get(&dm.addr, "/valid?realm=r&token=x").status, 200);
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "still on the file's address"
    );
}
