//! TLS server set-up on the system OpenSSL: PEM certificate and key, or a PKCS#12 keystore.
//! Handshakes run per connection under a time limit, so a silent client stalls nobody else.

use std::path::Path;
use std::time::Duration;

use openssl::pkcs12::Pkcs12;
use openssl::pkey::PKey;
use openssl::ssl::{SslAcceptor, SslMethod};
use openssl::x509::X509;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_openssl::SslStream;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0} is a Java KeyStore (JKS); convert it to PKCS#12 with: keytool -importkeystore -srckeystore {0} -destkeystore keystore.p12 -deststoretype PKCS12")]
    Jks(String),
    #[error("{0}: {1}")]
    Bad(String, String),
}

fn bad(what: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Bad(what.display().to_string(), e.to_string())
}

fn base() -> Result<openssl::ssl::SslAcceptorBuilder, TlsError> {
    SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|e| TlsError::Bad("TLS".into(), e.to_string()))
}

/// A server context from a PEM certificate chain and a PEM private key.
pub fn from_pem(cert: &Path, key: &Path) -> Result<SslAcceptor, TlsError> {
    for f in [cert, key] {
        std::fs::metadata(f).map_err(|e| TlsError::Read(f.display().to_string(), e))?;
    }
    let mut b = base()?;
    b.set_certificate_chain_file(cert)
        .map_err(|e| bad(cert, e))?;
    // Never let OpenSSL prompt for a passphrase (a daemon has no terminal): an encrypted key
    // is an error.
    let pem = std::fs::read(key).map_err(|e| TlsError::Read(key.display().to_string(), e))?;
    let pkey = PKey::private_key_from_pem_callback(&pem, |_| Ok(0))
        .map_err(|_| bad(key, "not an unencrypted PEM private key"))?;
    b.set_private_key(&pkey).map_err(|e| bad(key, e))?;
    b.check_private_key().map_err(|e| bad(key, e))?;
    Ok(b.build())
}

/// A server context from a PKCS#12 keystore; a JKS file gets an error that says how to convert it.
pub fn from_pkcs12(file: &Path, password: &str) -> Result<SslAcceptor, TlsError> {
    let der = std::fs::read(file).map_err(|e| TlsError::Read(file.display().to_string(), e))?;
    if der.starts_with(&[0xFE, 0xED, 0xFE, 0xED]) {
        return Err(TlsError::Jks(file.display().to_string()));
    }
    let parsed = Pkcs12::from_der(&der)
        .and_then(|p| p.parse2(password))
        .map_err(|_| bad(file, "not a PKCS#12 keystore, or wrong password"))?;
    let (Some(cert), Some(key)) = (parsed.cert, parsed.pkey) else {
        return Err(bad(
            file,
            "keystore holds no certificate with its private key",
        ));
    };
    let mut b = base()?;
    b.set_certificate(&cert).map_err(|e| bad(file, e))?;
    b.set_private_key(&key).map_err(|e| bad(file, e))?;
    if let Some(chain) = parsed.ca {
        for c in chain {
            b.add_extra_chain_cert(c).map_err(|e| bad(file, e))?;
        }
    }
    b.check_private_key().map_err(|e| bad(file, e))?;
    Ok(b.build())
}

/// Completes a server handshake on `io` within `limit`.
pub async fn accept<S>(acc: &SslAcceptor, io: S, limit: Duration) -> std::io::Result<SslStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ssl = openssl::ssl::Ssl::new(acc.context()).map_err(std::io::Error::other)?;
    let mut s = SslStream::new(ssl, io).map_err(std::io::Error::other)?;
    match tokio::time::timeout(limit, std::pin::Pin::new(&mut s).accept()).await {
        Ok(Ok(())) => Ok(s),
        Ok(Err(e)) => Err(std::io::Error::other(e.to_string())),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// Self-signed certificate and key (PEM) for tests and demos, for the name `cn` (also as a
/// subjectAltName).
pub fn self_signed(cn: &str) -> Result<(Vec<u8>, Vec<u8>), openssl::error::ErrorStack> {
    self_signed_for(&[cn])
}

/// Self-signed certificate and key (PEM) naming each of `names` in its subjectAltName (an IP
/// address as such, anything else as a DNS name); the first is also the CN.
pub fn self_signed_for(names: &[&str]) -> Result<(Vec<u8>, Vec<u8>), openssl::error::ErrorStack> {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::X509NameBuilder;
    let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", names.first().copied().unwrap_or("localhost"))?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&key)?;
    b.set_not_before(&*Asn1Time::days_from_now(0)?)?;
    b.set_not_after(&*Asn1Time::days_from_now(30)?)?;
    if !names.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for n in names {
            if n.parse::<std::net::IpAddr>().is_ok() {
                san.ip(n);
            } else {
                san.dns(n);
            }
        }
        let ext = san.build(&b.x509v3_context(None, None))?;
        b.append_extension(ext)?;
    }
    b.sign(&key, MessageDigest::sha256())?;
    Ok((b.build().to_pem()?, key.private_key_to_pem_pkcs8()?))
}
