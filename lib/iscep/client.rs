//! A blocking iscep client (the `iscep` tool, tests, benchmarks). It reads frames whole and
//! sends each in one write. Over TLS it trusts only the given certificate file and checks the
//! server's certificate against the host name it connects to (an IP address against the
//! certificate's IP addresses), unless the file is pinned ([`Tls::pinned`]): then the server
//! must present one of the file's very certificates, whatever names they hold, and no SNI is
//! sent, as the original client does with the `openssl req -x509` certificate of its README
//! (specs/iscep.md §2.9).

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use openssl::ssl::{HandshakeError, SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use serde_json::Value;
use zeroize::Zeroizing;

use super::wire::{self, Body, Packet, Read, Type};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("the server sent a frame that does not decode: {0}")]
    Bad(wire::DecodeError),
    #[error("the server sent a frame of {0} bytes, over the limit")]
    TooLarge(u32),
}

/// How the server's TLS certificate is checked.
#[derive(Clone, Copy, Debug)]
pub struct Tls<'a> {
    /// PEM certificates to trust: CAs, or the server's own certificate.
    pub ca: &'a Path,
    /// The server must present one of the certificates of `ca` itself; its names are not
    /// checked and no SNI is sent (the original client's pinning of a self-signed
    /// certificate that may not name the server).
    pub pinned: bool,
}

trait Conn: std::io::Read + Write + Send {}
impl<T: std::io::Read + Write + Send> Conn for T {}

/// The TLS handshake over `tcp` to `host`, checking the certificate as `t` says.
fn handshake(
    host: &str,
    tcp: TcpStream,
    t: Tls,
) -> Result<openssl::ssl::SslStream<TcpStream>, ClientError> {
    let ca = t.ca;
    let file_err = |e: &dyn std::fmt::Display| ClientError::Tls(format!("{}: {e}", ca.display()));
    let pem = std::fs::read(ca).map_err(|e| file_err(&e))?;
    let pins = X509::stack_from_pem(&pem).map_err(|e| file_err(&e))?;
    if pins.is_empty() {
        return Err(file_err(&"no PEM certificate in it"));
    }
    let tls = |e: &dyn std::fmt::Display| ClientError::Tls(e.to_string());
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| tls(&e))?;
    b.set_ca_file(ca).map_err(|e| file_err(&e))?;
    b.set_verify(SslVerifyMode::PEER);
    let cfg = b
        .build()
        .configure()
        .map_err(|e| tls(&e))?
        .verify_hostname(!t.pinned)
        .use_server_name_indication(!t.pinned);
    // An IP address is checked against the certificate's IP addresses, a name against its
    // DNS names (or its CN when it has none), as openssl does; an IP sends no SNI.
    let s = match cfg.connect(host, tcp) {
        Ok(s) => s,
        Err(HandshakeError::Failure(m)) => {
            let v = m.ssl().verify_result();
            // X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
            if v.as_raw() == 62 || v.as_raw() == 64 {
                return Err(ClientError::Tls(format!(
                    "the server's certificate is not for {host} ({}); if {} is the server's \
                     own certificate made without its name, pin it with --tls-pinned",
                    v.error_string(),
                    ca.display()
                )));
            }
            if v.as_raw() != 0 {
                return Err(ClientError::Tls(format!(
                    "the server's certificate is not trusted by {}: {}",
                    ca.display(),
                    v.error_string()
                )));
            }
            return Err(tls(&m.error()));
        }
        Err(e) => return Err(tls(&e)),
    };
    if t.pinned {
        let got = s
            .ssl()
            .peer_certificate()
            .and_then(|c| c.to_der().ok())
            .ok_or_else(|| ClientError::Tls("the server sent no certificate".into()))?;
        if !pins
            .iter()
            .any(|p| p.to_der().ok().as_deref() == Some(&got[..]))
        {
            return Err(ClientError::Tls(format!(
                "the server's certificate is not the one pinned in {} (--tls-pinned)",
                ca.display()
            )));
        }
    }
    Ok(s)
}

pub struct Client {
    s: Box<dyn Conn>,
    token: Option<Zeroizing<String>>,
    pub max_frame: usize,
}

impl Client {
    /// Connects (and completes the TLS handshake when `tls` is given).
    pub fn connect(
        host: &str,
        port: u16,
        tls: Option<Tls>,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let where_ = format!("{host}:{port}");
        let addrs: Vec<_> = (host, port)
            .to_socket_addrs()
            .map_err(|e| ClientError::Connect(where_.clone(), e))?
            .collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or(ClientError::Connect(where_, last))?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let _ = tcp.set_nodelay(true);
        let s: Box<dyn Conn> = match tls {
            None => Box::new(tcp),
            Some(t) => Box::new(handshake(host, tcp, t)?),
        };
        Ok(Client {
            s,
            token: None,
            max_frame: super::DEFAULT_MAX_FRAME,
        })
    }

    /// Every packet sent from now on carries `token`.
    pub fn set_token(&mut self, token: Option<Zeroizing<String>>) {
        self.token = token;
    }

    /// Sends one packet (with the token, if any) without waiting for an answer.
    pub fn send(&mut self, ty: Type, mut body: Body) -> Result<(), ClientError> {
        if body.auth_token.is_none() {
            body.auth_token = self.token.as_ref().map(|t| t.to_string());
        }
        let frame = Zeroizing::new(wire::encode(ty, &body));
        self.s.write_all(&frame)?;
        self.s.flush()?;
        Ok(())
    }

    /// Reads the next packet.
    pub fn recv(&mut self) -> Result<Packet, ClientError> {
        match wire::read_frame_blocking(&mut self.s, self.max_frame)? {
            Read::Packet(p) => Ok(p),
            Read::Closed => Err(ClientError::Closed),
            Read::Bad(e) => Err(ClientError::Bad(e)),
            Read::TooLarge(n) => Err(ClientError::TooLarge(n)),
        }
    }

    pub fn request(&mut self, ty: Type, body: Body) -> Result<Packet, ClientError> {
        self.send(ty, body)?;
        self.recv()
    }

    pub fn echo(&mut self, msg: &str) -> Result<Packet, ClientError> {
        self.request(
            Type::Echo,
            Body::response(serde_json::json!({ "echo": msg })),
        )
    }

    pub fn discover(&mut self) -> Result<Packet, ClientError> {
        self.request(Type::Discover, Body::default())
    }

    pub fn command(&mut self, name: &str, args: Option<Value>) -> Result<Packet, ClientError> {
        self.request(
            Type::SendCmd,
            Body {
                command: Some(name.into()),
                args,
                ..Default::default()
            },
        )
    }

    /// Sends CLOSE_CONNECTION and waits (up to the read timeout) for the server to close.
    /// An answer means it was refused (UNAUTHORIZED), which is returned.
    pub fn close(mut self) -> Result<Option<Packet>, ClientError> {
        self.send(Type::CloseConnection, Body::default())?;
        match self.recv() {
            Ok(p) => Ok(Some(p)),
            Err(ClientError::Closed) => Ok(None),
            Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// What [`bench`] sends on each round trip.
#[derive(Clone, Debug)]
pub enum BenchRequest {
    /// ECHO `{"echo": "bench"}`; the answer must be an ECHO. Against a plain TCP echo
    /// server (the reference) the frame itself comes back, which reads as that ECHO too.
    Echo,
    /// SEND_CMD; the answer must be a CMD_RESPONSE.
    Command(String, Option<Value>),
}

/// Round trips per second: `clients` connections, each sending one request after another
/// for `duration`, all counted together. Fails on the first wrong or missing answer.
#[allow(clippy::too_many_arguments)]
pub fn bench(
    host: &str,
    port: u16,
    tls: Option<Tls>,
    token: Option<Zeroizing<String>>,
    req: BenchRequest,
    clients: usize,
    duration: Duration,
) -> Result<f64, ClientError> {
    let mut conns = Vec::new();
    for _ in 0..clients.max(1) {
        let mut c = Client::connect(host, port, tls, Duration::from_secs(10))?;
        c.set_token(token.clone());
        conns.push(c);
    }
    let start = std::time::Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let req = req.clone();
            std::thread::spawn(move || -> Result<u64, ClientError> {
                let (ty, want, body) = match req {
                    BenchRequest::Echo => (
                        Type::Echo,
                        Type::Echo,
                        Body::response(serde_json::json!({"echo": "bench"})),
                    ),
                    BenchRequest::Command(name, args) => (
                        Type::SendCmd,
                        Type::CmdResponse,
                        Body {
                            command: Some(name),
                            args,
                            ..Default::default()
                        },
                    ),
                };
                let mut n = 0u64;
                while std::time::Instant::now() < deadline {
                    let p = c.request(ty, body.clone())?;
                    if p.ty != want {
                        return Err(ClientError::Io(std::io::Error::other(format!(
                            "answer {} instead of {}",
                            p.ty.name(),
                            want.name()
                        ))));
                    }
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w
            .join()
            .map_err(|_| ClientError::Io(std::io::Error::other("a bench thread panicked")))??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}
