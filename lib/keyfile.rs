//! Key files: PKCS#8 private keys (PBES2/PBKDF2-HMAC-SHA256/AES-256-CBC when a password is
//! given, as Python's `cryptography` "best available" encryption writes them), SubjectPublicKeyInfo
//! public keys, PKCS#1 RSA keys, and OpenSSH `ssh-rsa` public key lines. Private key files are
//! written 0600 through [`crate::privfile`].

use std::io;
use std::path::Path;

use openssl::bn::BigNum;
use openssl::pkey::{HasPublic, PKey, Private, Public};
use openssl::rsa::Rsa;
use openssl::symm::Cipher;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}: {1}")]
    Io(String, io::Error),
    #[error("{0}: not a usable key: {1}")]
    Parse(String, String),
    #[error("{0}: the key is encrypted and needs a password")]
    NeedPassword(String),
    #[error("encoding key: {0}")]
    Encode(#[from] openssl::error::ErrorStack),
}

fn disp(p: &Path) -> String {
    p.display().to_string()
}

/// The private key as PKCS#8 PEM; encrypted (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC) when a
/// non-empty password is given.
fn private_pem(key: &PKey<Private>, password: Option<&[u8]>) -> Result<Vec<u8>, KeyError> {
    Ok(match password {
        Some(p) if !p.is_empty() => {
            key.private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), p)?
        }
        _ => key.private_key_to_pem_pkcs8()?,
    })
}

/// Writes `key` to `path` as PKCS#8 PEM, mode 0600, atomically (see [`private_pem`]); an
/// existing `path` is replaced only with `force` ([`crate::privfile::write_key`]).
fn write_private_pem(
    path: &Path,
    key: &PKey<Private>,
    password: Option<&[u8]>,
    force: bool,
) -> Result<(), KeyError> {
    let pem = zeroize::Zeroizing::new(private_pem(key, password)?);
    crate::privfile::write_key(path, &pem, 0o600, force)
        .map_err(|e| KeyError::Io(disp(path), e))?;
    Ok(())
}

/// Writes the public half of `key` to `path` as SubjectPublicKeyInfo PEM (mode 0644).
fn write_public_pem<T: HasPublic>(path: &Path, key: &PKey<T>, force: bool) -> Result<(), KeyError> {
    let pem = key.public_key_to_pem()?;
    write_public_file(path, &pem, force)
}

/// Writes a public file (0644, set through the descriptor) atomically without following a
/// symlink; an existing one is replaced only with `force`.
fn write_public_file(path: &Path, data: &[u8], force: bool) -> Result<(), KeyError> {
    crate::privfile::write_key(path, data, 0o644, force)
        .map(|_| ())
        .map_err(|e| KeyError::Io(disp(path), e))
}

fn ssh_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn ssh_mpint(out: &mut Vec<u8>, n: &openssl::bn::BigNumRef) {
    let mut v = n.to_vec();
    if v.first().is_some_and(|b| b & 0x80 != 0) {
        v.insert(0, 0);
    }
    ssh_string(out, &v);
}

/// The OpenSSH one-line public key `ssh-rsa AAAA... comment`, without a newline.
pub fn ssh_rsa_line<T: HasPublic>(rsa: &Rsa<T>, comment: &str) -> String {
    let mut blob = Vec::new();
    ssh_string(&mut blob, b"ssh-rsa");
    ssh_mpint(&mut blob, rsa.e());
    ssh_mpint(&mut blob, rsa.n());
    let b64 = openssl::base64::encode_block(&blob);
    if comment.is_empty() {
        format!("ssh-rsa {b64}")
    } else {
        format!("ssh-rsa {b64} {comment}")
    }
}

/// Writes [`ssh_rsa_line`] plus a newline to `path` (mode 0644).
fn write_ssh_rsa<T: HasPublic>(
    path: &Path,
    rsa: &Rsa<T>,
    comment: &str,
    force: bool,
) -> Result<(), KeyError> {
    let line = format!("{}\n", ssh_rsa_line(rsa, comment));
    write_public_file(path, line.as_bytes(), force)
}

/// Parses an OpenSSH `ssh-rsa AAAA... [comment]` line.
pub fn parse_ssh_rsa(line: &str) -> Option<Rsa<Public>> {
    let mut it = line.split_ascii_whitespace();
    if it.next()? != "ssh-rsa" {
        return None;
    }
    let blob = openssl::base64::decode_block(it.next()?).ok()?;
    let mut rest = blob.as_slice();
    let mut take = || -> Option<Vec<u8>> {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let v = rest.get(4..4 + len)?.to_vec();
        rest = &rest[4 + len..];
        Some(v)
    };
    if take()? != b"ssh-rsa" {
        return None;
    }
    let e = BigNum::from_slice(&take()?).ok()?;
    let n = BigNum::from_slice(&take()?).ok()?;
    Rsa::from_public_components(n, e).ok()
}

/// Reads a private key: PKCS#8 (encrypted or not) or a traditional PKCS#1/SEC1 PEM.
pub fn read_private_pem(path: &Path, password: Option<&[u8]>) -> Result<PKey<Private>, KeyError> {
    let data =
        zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| KeyError::Io(disp(path), e))?);
    parse_private_pem(&data, password).map_err(|e| match e {
        KeyError::Parse(_, why) => KeyError::Parse(disp(path), why),
        KeyError::NeedPassword(_) => KeyError::NeedPassword(disp(path)),
        e => e,
    })
}

/// Whether PEM text holds an encrypted private key.
pub fn is_encrypted_pem(data: &[u8]) -> bool {
    let s = String::from_utf8_lossy(data);
    s.contains("BEGIN ENCRYPTED PRIVATE KEY") || s.contains("Proc-Type: 4,ENCRYPTED")
}

/// [`read_private_pem`] on bytes.
pub fn parse_private_pem(data: &[u8], password: Option<&[u8]>) -> Result<PKey<Private>, KeyError> {
    let encrypted = is_encrypted_pem(data);
    let r = match password {
        Some(p) if encrypted => PKey::private_key_from_pem_passphrase(data, p),
        _ if encrypted => return Err(KeyError::NeedPassword(String::new())),
        _ => PKey::private_key_from_pem(data),
    };
    r.map_err(|e| {
        let why = if encrypted {
            "wrong password or damaged file".to_string()
        } else {
            first_reason(&e)
        };
        KeyError::Parse(String::new(), why)
    })
}

fn first_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|x| x.reason().map(str::to_string))
        .unwrap_or_else(|| "not a PEM private key".into())
}

/// Parses a public key from SubjectPublicKeyInfo PEM, PKCS#1 RSA PEM, or an `ssh-rsa` line.
pub fn parse_public(data: &[u8]) -> Result<PKey<Public>, String> {
    if let Ok(k) = PKey::public_key_from_pem(data) {
        return Ok(k);
    }
    if let Ok(r) = Rsa::public_key_from_pem_pkcs1(data) {
        return PKey::from_rsa(r).map_err(|e| first_reason(&e));
    }
    if let Some(r) = std::str::from_utf8(data).ok().and_then(|s| {
        s.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .and_then(parse_ssh_rsa)
    }) {
        return PKey::from_rsa(r).map_err(|e| first_reason(&e));
    }
    Err("not a PEM public key (SubjectPublicKeyInfo or PKCS#1) nor an ssh-rsa line".into())
}

/// Reads a public key file (see [`parse_public`]).
pub fn read_public(path: &Path) -> Result<PKey<Public>, KeyError> {
    let data = std::fs::read(path).map_err(|e| KeyError::Io(disp(path), e))?;
    parse_public(&data).map_err(|why| KeyError::Parse(disp(path), why))
}

/// Key types `build-key-pair` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Ed448,
    Rsa(u32),
}

/// Generates a key pair and writes `FOLDER/PREFIX_key.pem` (0600), `FOLDER/PREFIX.pem`, and for
/// RSA `FOLDER/PREFIX.pub`. Returns the paths written. Without `force`, if any of them exists
/// nothing is written.
pub fn build_key_pair(
    kind: KeyType,
    prefix: &str,
    folder: &Path,
    password: Option<&[u8]>,
    force: bool,
) -> Result<Vec<std::path::PathBuf>, KeyError> {
    if !force {
        let mut names = vec![format!("{prefix}_key.pem"), format!("{prefix}.pem")];
        if matches!(kind, KeyType::Rsa(_)) {
            names.push(format!("{prefix}.pub"));
        }
        for n in names {
            let p = folder.join(n);
            crate::privfile::refuse_existing(&p).map_err(|e| KeyError::Io(disp(&p), e))?;
        }
    }
    let (key, rsa) = match kind {
        KeyType::Ed448 => (PKey::generate_ed448()?, None),
        KeyType::Rsa(bits) => {
            let r = Rsa::generate(bits)?;
            (PKey::from_rsa(r.clone())?, Some(r))
        }
    };
    let private = folder.join(format!("{prefix}_key.pem"));
    let public = folder.join(format!("{prefix}.pem"));
    write_private_pem(&private, &key, password, force)?;
    write_public_pem(&public, &key, force)?;
    let mut out = vec![private, public];
    if let Some(r) = rsa {
        let ssh = folder.join(format!("{prefix}.pub"));
        write_ssh_rsa(&ssh, &r, prefix, force)?;
        out.push(ssh);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    fn openssl(args: &[&str]) -> (bool, String) {
        match Command::new("openssl").args(args).output() {
            Ok(o) => (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr),
            ),
            Err(e) => panic!("openssl command: {e}"),
        }
    }

    #[test]
    fn ed448_encrypted_round_trip_and_openssl_loads_it() {
        let d = tempfile::tempdir().unwrap();
        let files = build_key_pair(KeyType::Ed448, "alice", d.path(), Some(b"foo"), false).unwrap();
        let (priv_p, pub_p) = (&files[0], &files[1]);
        let mode = std::fs::metadata(priv_p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(priv_p).unwrap();
        assert!(text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        assert_eq!(std::fs::read(pub_p).unwrap().len(), 146);
        // PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC, as the original writes.
        let (ok, out) = openssl(&["asn1parse", "-in", priv_p.to_str().unwrap()]);
        assert!(ok, "{out}");
        assert!(out.contains("PBES2") && out.contains("PBKDF2"), "{out}");
        assert!(
            out.contains("hmacWithSHA256") && out.contains("aes-256-cbc"),
            "{out}"
        );
        let (ok, out) = openssl(&[
            "pkey",
            "-in",
            priv_p.to_str().unwrap(),
            "-passin",
            "pass:foo",
            "-pubout",
        ]);
        assert!(ok, "{out}");
        assert_eq!(out, std::fs::read_to_string(pub_p).unwrap());
        let k = read_private_pem(priv_p, Some(b"foo")).unwrap();
        assert_eq!(k.id(), openssl::pkey::Id::ED448);
        assert!(matches!(
            read_private_pem(priv_p, None),
            Err(KeyError::NeedPassword(_))
        ));
        assert!(matches!(
            read_private_pem(priv_p, Some(b"bar")),
            Err(KeyError::Parse(..))
        ));
        let p = read_public(pub_p).unwrap();
        assert_eq!(p.raw_public_key().unwrap(), k.raw_public_key().unwrap());
    }

    #[test]
    fn an_existing_key_is_replaced_only_with_force() {
        let d = tempfile::tempdir().unwrap();
        let first = build_key_pair(KeyType::Ed448, "srv", d.path(), None, false).unwrap();
        let before = std::fs::read(&first[0]).unwrap();
        let e = build_key_pair(KeyType::Ed448, "srv", d.path(), None, false).unwrap_err();
        assert!(e.to_string().contains("srv_key.pem: exists"), "{e}");
        assert_eq!(std::fs::read(&first[0]).unwrap(), before);
        // Any one of the files is enough to refuse, and then none is written.
        std::fs::write(d.path().join("host.pub"), "keep").unwrap();
        let e = build_key_pair(KeyType::Rsa(1024), "host", d.path(), None, false).unwrap_err();
        assert!(e.to_string().contains("host.pub: exists"), "{e}");
        assert!(!d.path().join("host_key.pem").exists());
        let again = build_key_pair(KeyType::Ed448, "srv", d.path(), None, true).unwrap();
        assert_ne!(std::fs::read(&again[0]).unwrap(), before);
    }

    #[test]
    fn unencrypted_key_and_openssl_made_keys_load() {
        let d = tempfile::tempdir().unwrap();
        let files = build_key_pair(KeyType::Ed448, "srv", d.path(), None, false).unwrap();
        let text = std::fs::read_to_string(&files[0]).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
        let (ok, out) = openssl(&["pkey", "-in", files[0].to_str().unwrap(), "-noout"]);
        assert!(ok, "{out}");
        read_private_pem(&files[0], None).unwrap();
        // A key made by the OpenSSL commands of the spec.
        let bob = d.path().join("bob_key.pem");
        let bobp = d.path().join("bob.pem");
        let (ok, out) = openssl(&[
            "genpkey",
            "-algorithm",
            "ED448",
            "-aes-256-cbc",
            "-pass",
            "pass:foo",
            "-out",
            bob.to_str().unwrap(),
        ]);
        assert!(ok, "{out}");
        let (ok, out) = openssl(&[
            "pkey",
            "-in",
            bob.to_str().unwrap(),
            "-passin",
            "pass:foo",
            "-pubout",
            "-out",
            bobp.to_str().unwrap(),
        ]);
        assert!(ok, "{out}");
        let k = read_private_pem(&bob, Some(b"foo")).unwrap();
        assert_eq!(
            read_public(&bobp).unwrap().raw_public_key().unwrap(),
            k.raw_public_key().unwrap()
        );
    }

    #[test]
    fn rsa_pair_ssh_line_and_pkcs1() {
        let d = tempfile::tempdir().unwrap();
        let files =
            build_key_pair(KeyType::Rsa(1024), "host", d.path(), Some(b"pw"), false).unwrap();
        assert_eq!(files.len(), 3);
        let k = read_private_pem(&files[0], Some(b"pw")).unwrap();
        let rsa = k.rsa().unwrap();
        let line = std::fs::read_to_string(&files[2]).unwrap();
        assert!(
            line.starts_with("ssh-rsa AAAAB3NzaC1yc2E") && line.ends_with(" host\n"),
            "{line}"
        );
        let from_ssh = read_public(&files[2]).unwrap();
        assert!(from_ssh.public_eq(&k));
        assert!(read_public(&files[1]).unwrap().public_eq(&k));
        // ssh-keygen agrees on the line (openssh-client is a test dependency:
        // scripts/install-deps.sh installs it).
        let o = Command::new("ssh-keygen")
            .args(["-l", "-f", files[2].to_str().unwrap()])
            .output()
            .expect("ssh-keygen (Debian package openssh-client) is needed by this test");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // PKCS#1 public and (unencrypted) private PEM.
        let p1 = d.path().join("p1.pem");
        std::fs::write(&p1, rsa.public_key_to_pem_pkcs1().unwrap()).unwrap();
        assert!(read_public(&p1).unwrap().public_eq(&k));
        let s1 = d.path().join("s1.pem");
        std::fs::write(&s1, rsa.private_key_to_pem().unwrap()).unwrap();
        assert!(read_private_pem(&s1, None).unwrap().public_eq(&k));
        // Encrypted traditional PEM.
        let s2 = d.path().join("s2.pem");
        std::fs::write(
            &s2,
            rsa.private_key_to_pem_passphrase(Cipher::aes_128_cbc(), b"x")
                .unwrap(),
        )
        .unwrap();
        assert!(read_private_pem(&s2, Some(b"x")).unwrap().public_eq(&k));
        assert!(parse_public(b"garbage").is_err());
        assert!(parse_ssh_rsa("ssh-rsa AAAA").is_none());
    }
}
