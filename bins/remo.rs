//! remo: client of remod (and of the original remo_serv). Interactive commands as the
//! original client has them, read from a terminal or a pipe, or one command from the command
//! line for scripts, whose exit status is the remote command's.
#![forbid(unsafe_code)]

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use keysock::cli::{self, exit, Fail, FailContext};
use keysock::keyfile;
use keysock::remo::client::{Client, ClientError, Target};
use keysock::remo::wire;

const PROGRAM: &str = "remo";
/// sysexits(3) codes lib/cli.rs does not list.
const EX_PROTOCOL: i32 = 76;
const EX_NOPERM: i32 = 77;

#[derive(clap::Parser, Debug)]
#[command(
    name = "remo",
    version,
    about = "Run commands and move files on a remod (or remo_serv) server",
    after_help = "Without COMMAND, commands are read from standard input: exec CMDLINE, get REMOTE [LOCAL],\nput REMOTE [LOCAL], iexec CMDLINE, idata TEXT, iend, set_encoding ENC, info, help, quit.\nWith COMMAND (exec CMD..., get REMOTE [LOCAL], put REMOTE [LOCAL], info) that one command runs\nand remo exits with the remote command's status. See remo(1)."
)]
struct Args {
    /// Server host name or address
    #[arg(value_name = "HOST")]
    host: String,
    /// Server port (default 80)
    #[arg(value_name = "PORT")]
    port: Option<String>,
    /// One command to run instead of reading commands from standard input
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<String>,
    /// Server public key, SubjectPublicKeyInfo PEM
    #[arg(
        short = 's',
        long = "server",
        value_name = "PEM",
        default_value = "remo_serv.pem"
    )]
    server: PathBuf,
    /// User name (default: the login name)
    #[arg(short = 'u', long = "user", value_name = "USER")]
    user: Option<String>,
    /// Private key (default: USER_key.pem); encrypted keys ask for their password
    #[arg(short = 'k', long = "key", value_name = "PEM")]
    key: Option<PathBuf>,
    /// PKCS#11 key label of the original client; not supported
    #[arg(short = 'l', long = "label", value_name = "LABEL")]
    label: Option<String>,
    /// Encoding of command output in the original client; remo writes output as bytes
    #[arg(short = 'e', long = "encoding", value_name = "ENC")]
    encoding: Option<String>,
    /// Read the key's password from the first line of FILE instead of asking
    #[arg(long = "password-file", value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Accept answers without the final token, as the original remo_serv sends them
    #[arg(long = "legacy-server")]
    legacy_server: bool,
}

fn login_name() -> String {
    std::env::var("USER")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "root".into())
}

fn load_key(
    path: &Path,
    pwfile: Option<&Path>,
) -> Result<openssl::pkey::PKey<openssl::pkey::Private>, Fail> {
    let data = std::fs::read(path).map_err_context(exit::NOINPUT, || path.display().to_string())?;
    let data = zeroize::Zeroizing::new(data);
    let pw = if keyfile::is_encrypted_pem(&data) {
        Some(match pwfile {
            Some(f) => cli::read_password_file(f)
                .map_err_context(exit::NOINPUT, || f.display().to_string())?,
            None => cli::read_password(&format!("Password for {}: ", path.display()))
                .map_err_context(exit::NOINPUT, || "cannot read password".into())?,
        })
    } else {
        None
    };
    let pw = match &pw {
        Some(p) => Some(cli::password_str(p)?.trim().as_bytes()),
        None => None,
    };
    keyfile::parse_private_pem(&data, pw).map_err(|e| {
        Fail::new(
            exit::DATAERR,
            format!(
                "{}: {}",
                path.display(),
                e.to_string().trim_start_matches(": ")
            ),
        )
    })
}

/// Quotes words so the server's shlex split gives them back.
fn join(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty()
                && w.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\"'\"'"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn fail_of(e: ClientError) -> Fail {
    let code = match &e {
        ClientError::Connect(..) | ClientError::Http(_) => exit::UNAVAILABLE,
        ClientError::LoginRefused(_) => EX_NOPERM,
        ClientError::BadServerSignature | ClientError::Protocol(_) | ClientError::NoFinalToken => {
            EX_PROTOCOL
        }
        ClientError::Io(_) => exit::IOERR,
        _ => exit::SOFTWARE,
    };
    Fail::new(code, e.to_string())
}

/// Downloads into LOCAL through a temporary file, renamed only when complete.
async fn get(c: &mut Client, remote: &str, local: &str) -> Result<(), Fail> {
    let local = Path::new(local);
    let dir = match local.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile_in(dir)?;
    let r = c.get(remote, &mut tmp.1).await;
    match r.and_then(|_| tmp.1.flush().map_err(ClientError::Io)) {
        Ok(()) => std::fs::rename(&tmp.0, local)
            .map_err_context(exit::CANTCREAT, || local.display().to_string()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp.0);
            Err(fail_of(e))
        }
    }
}

fn tempfile_in(dir: &Path) -> Result<(PathBuf, std::io::BufWriter<std::fs::File>), Fail> {
    let p = dir.join(format!(".remo-get.{}.part", keysock::secret::hex_token(6)));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .map_err_context(exit::CANTCREAT, || p.display().to_string())?;
    Ok((p, std::io::BufWriter::with_capacity(1 << 16, f)))
}

async fn put(c: &mut Client, remote: &str, local: &str) -> Result<(), Fail> {
    let f = std::fs::File::open(local).map_err_context(exit::NOINPUT, || local.to_string())?;
    c.put(remote, f).await.map_err(fail_of)
}

fn print_out(out: &[u8]) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(out);
    if !out.is_empty() && !out.ends_with(b"\n") {
        let _ = o.write_all(b"\n");
    }
    let _ = o.flush();
}

const HELP: &str = "commands: exec CMDLINE | get REMOTE [LOCAL] | put REMOTE [LOCAL] | iexec CMDLINE | idata TEXT | iend | set_encoding ENC | info | help | quit";

/// One line of the interactive loop; Ok(false) ends the loop.
async fn line(c: &mut Client, l: &str) -> Result<bool, Fail> {
    let l = l.trim_end_matches(['\r', '\n']);
    let (cmd, arg) = match l.trim_start().split_once(char::is_whitespace) {
        Some((c, a)) => (c, a.trim_start()),
        None => (l.trim(), ""),
    };
    let files = |arg: &str| -> Result<(String, String), Fail> {
        let v = wire::shlex_split(arg).map_err_code(exit::USAGE)?;
        match v.as_slice() {
            [r] => Ok((r.clone(), r.clone())),
            [r, l] => Ok((r.clone(), l.clone())),
            _ => Err(Fail::new(exit::USAGE, "usage: get|put REMOTE [LOCAL]")),
        }
    };
    let mut out = Vec::new();
    match cmd {
        "" => {}
        "quit" | "EOF" => return Ok(false),
        "help" | "?" => println!("{HELP}"),
        "set_encoding" => {}
        "exec" => {
            c.exec(arg, b"", &mut out).await.map_err(fail_of)?;
            print_out(&out);
        }
        "get" => {
            let (r, l) = files(arg)?;
            get(c, &r, &l).await?;
        }
        "put" => {
            let (r, l) = files(arg)?;
            put(c, &r, &l).await?;
        }
        "iexec" => {
            c.iexec(arg, &mut out).await.map_err(fail_of)?;
            print_out(&out);
        }
        "idata" => {
            c.idata(format!("{arg}\n").as_bytes(), &mut out)
                .await
                .map_err(fail_of)?;
            print_out(&out);
        }
        "iend" => {
            c.iend(&mut out).await.map_err(fail_of)?;
            print_out(&out);
        }
        "info" => {
            c.info(&mut out).await.map_err(fail_of)?;
            print_out(&out);
        }
        other => println!("*** Unknown syntax: {other}"),
    }
    Ok(true)
}

fn run(a: Args) -> Result<i32, Fail> {
    if a.label.is_some() {
        return Err(Fail::new(
            exit::USAGE,
            "--label (PKCS#11) is not supported; use --key",
        ));
    }
    let (port, cmd) = match &a.port {
        None => (80, a.command.clone()),
        Some(p) => match p.parse::<u16>() {
            Ok(n) => (n, a.command.clone()),
            Err(_) => {
                let mut c = vec![p.clone()];
                c.extend(a.command.iter().cloned());
                (80, c)
            }
        },
    };
    let user = a.user.clone().unwrap_or_else(login_name);
    let key_path = a
        .key
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{user}_key.pem")));
    let server = keyfile::read_public(&a.server).map_err_code(exit::NOINPUT)?;
    let key = load_key(&key_path, a.password_file.as_deref())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err_context(exit::OSERR, || "cannot start runtime".into())?;
    let mut c = Client::new(Target {
        host: a.host.clone(),
        port,
        user,
        key,
        server,
        legacy: a.legacy_server,
    });
    rt.block_on(async move {
        c.login().await.map_err(fail_of)?;
        let signal = |k| {
            tokio::signal::unix::signal(k)
                .map_err_context(exit::OSERR, || "cannot catch signals".into())
        };
        let mut int = signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut term = signal(tokio::signal::unix::SignalKind::terminate())?;
        let r = tokio::select! {
            r = session(&mut c, &cmd) => r,
            _ = int.recv() => Ok(130),
            _ = term.recv() => Ok(143),
        };
        // Log out however the session ended, so the server drops it (and what it runs) now
        // rather than at its timeout.
        c.logout().await;
        r
    })
}

/// The command line's verb, or commands read from standard input.
async fn session(c: &mut Client, cmd: &[String]) -> Result<i32, Fail> {
    if let Some((verb, args)) = cmd.split_first() {
        return match (verb.as_str(), args) {
            ("exec", [_, ..]) => {
                let mut o = std::io::stdout().lock();
                let r = c.exec(&join(args), b"", &mut o).await.map_err(fail_of)?;
                let _ = o.flush();
                Ok(match r.exit {
                    Some(s) if s < 0 => 128 - s,
                    Some(s) => s & 0xff,
                    None => 0,
                })
            }
            ("get", [r]) => get(c, r, r).await.map(|_| 0),
            ("get", [r, l]) => get(c, r, l).await.map(|_| 0),
            ("put", [r]) => put(c, r, r).await.map(|_| 0),
            ("put", [r, l]) => put(c, r, l).await.map(|_| 0),
            ("info", []) => {
                let mut out = Vec::new();
                c.info(&mut out).await.map_err(fail_of)?;
                print_out(&out);
                Ok(0)
            }
            _ => Err(Fail::new(
                exit::USAGE,
                "commands: exec CMD [ARG...] | get REMOTE [LOCAL] | put REMOTE [LOCAL] | info",
            )),
        };
    }
    let tty = std::io::stdin().is_terminal();
    let prompt = format!("{}> ", c.base_url());
    let mut lines = read_ahead()?;
    loop {
        if tty {
            print!("{prompt}");
            let _ = std::io::stdout().flush();
        }
        let Some(read) = lines.recv().await else {
            break;
        };
        let buf = read.map_err_context(exit::IOERR, || "reading commands".into())?;
        match line(c, &buf).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(f) => eprintln!("{PROGRAM}: {}", f.msg),
        }
    }
    Ok(0)
}

/// Standard input's lines, read ahead on a thread of their own: a line already read costs the
/// session loop no wait on another thread (the loop runs one command per line), and a signal
/// still reaches the select in `run` while the thread waits for input.
fn read_ahead() -> Result<tokio::sync::mpsc::Receiver<std::io::Result<String>>, Fail> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            loop {
                let mut buf = String::new();
                let r = match stdin.read_line(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => Ok(buf),
                    Err(e) => Err(e),
                };
                let failed = r.is_err();
                if tx.blocking_send(r).is_err() || failed {
                    break;
                }
            }
        })
        .map_err_context(exit::OSERR, || "reading commands".into())?;
    Ok(rx)
}

fn main() {
    let args: Args = cli::parse(std::env::args_os());
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(f) => cli::exit_with(PROGRAM, f),
    }
}
