//! Listening sockets: handed over by systemd (`LISTEN_FDS`/`LISTEN_FDNAMES`) or bound from
//! `--listen ADDR` (`host:port`, `[v6]:port`, or an absolute path for an AF_UNIX socket).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// One listening socket and the name it goes by (`FileDescriptorName=` under systemd).
pub struct Bound {
    pub name: String,
    pub listener: Listener,
    /// Socket file this process created itself, removed again on exit.
    pub own_path: Option<PathBuf>,
}

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Where a listener is, for log lines and `STATUS=`.
pub fn describe(l: &Listener) -> String {
    match l {
        Listener::Tcp(t) => match t.local_addr() {
            Ok(a) => format!("tcp:{a}"),
            Err(_) => "tcp:?".into(),
        },
        Listener::Unix(u) => match u
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(PathBuf::from))
        {
            Some(p) => format!("unix:{}", p.display()),
            None => "unix:?".into(),
        },
    }
}

/// The other end of an accepted connection.
#[derive(Clone, Debug)]
pub enum Peer {
    Tcp(SocketAddr),
    /// Credentials from `SO_PEERCRED`, taken at accept time.
    Unix {
        uid: u32,
        gid: u32,
        pid: i32,
    },
}

impl Peer {
    pub fn is_unix(&self) -> bool {
        matches!(self, Peer::Unix { .. })
    }

    /// The peer's IP address; `None` on an AF_UNIX socket.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Peer::Tcp(a) => Some(a.ip()),
            Peer::Unix { .. } => None,
        }
    }

    /// The group this peer's limits count against (see [`Source`]).
    pub fn source(&self) -> Source {
        match self {
            Peer::Tcp(a) => Source::of_ip(a.ip()),
            Peer::Unix { uid, .. } => Source::Uid(*uid),
        }
    }
}

/// Where a client comes from, grouped so that one party cannot dodge a per-source limit by
/// changing address: one IPv4 address, but all of 127/8 as one (any local process can bind
/// any of it); one IPv6 /64 (one subscriber's prefix); Unix-socket peers by uid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    V4(std::net::Ipv4Addr),
    V6Prefix(u64),
    Uid(u32),
}

impl Source {
    pub fn of_ip(ip: std::net::IpAddr) -> Source {
        use std::net::{IpAddr, Ipv4Addr};
        match ip {
            IpAddr::V4(a) if a.is_loopback() => Source::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(a) => Source::V4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Source::of_ip(IpAddr::V4(v4)),
                None => Source::V6Prefix((u128::from(a) >> 64) as u64),
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::V4(a) if a.is_loopback() => write!(f, "127.0.0.0/8"),
            Source::V4(a) => write!(f, "{a}"),
            Source::V6Prefix(p) => {
                write!(f, "{}/64", std::net::Ipv6Addr::from(u128::from(*p) << 64))
            }
            Source::Uid(u) => write!(f, "uid={u}"),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix { uid, pid, .. } => write!(f, "unix(uid={uid},pid={pid})"),
        }
    }
}

/// An accepted connection, TCP or AF_UNIX.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    /// A second descriptor for the same listening socket (`dup(2)`), for another worker.
    pub fn duplicate(&self) -> io::Result<OwnedFd> {
        use std::os::fd::AsFd;
        let fd = match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        };
        Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
    }

    pub async fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(l) => {
                let (s, a) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), Peer::Tcp(a)))
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept().await?;
                let c = s.peer_cred()?;
                let peer = Peer::Unix {
                    uid: c.uid(),
                    gid: c.gid(),
                    pid: c.pid().unwrap_or(0),
                };
                Ok((Stream::Unix(s), peer))
            }
        }
    }
}

macro_rules! both {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
        }
    };
}

impl std::os::fd::AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        both!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        both!(self, s => Pin::new(s).poll_write(cx, buf))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        both!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        both!(self, s => Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        both!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// Whether systemd passed this process its sockets (`LISTEN_PID` is ours), without taking
/// them: for what must be decided before a runtime exists (s5d forks unless activated).
pub fn activated() -> bool {
    std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id())
}

impl Bound {
    /// A TCP listener bound before the runtime existed (before a fork); needs a runtime.
    pub fn tcp(name: &str, l: std::net::TcpListener) -> io::Result<Bound> {
        l.set_nonblocking(true)?;
        Ok(Bound {
            name: name.to_string(),
            listener: Listener::Tcp(TcpListener::from_std(l)?),
            own_path: None,
        })
    }

    /// An AF_UNIX listener bound by [`bind_unix`] at `path`, removed again on exit; needs a
    /// runtime.
    pub fn unix(name: &str, l: std::os::unix::net::UnixListener, path: &Path) -> io::Result<Bound> {
        l.set_nonblocking(true)?;
        Ok(Bound {
            name: name.to_string(),
            listener: Listener::Unix(UnixListener::from_std(l)?),
            own_path: Some(path.into()),
        })
    }
}

/// Binds the TCP address `addr` (`host:port` or `[v6]:port`, the first it resolves to),
/// without a runtime.
pub fn bind_tcp(addr: &str) -> io::Result<std::net::TcpListener> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let first = addrs
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "address resolves to nothing"))?;
    std::net::TcpListener::bind(first)
}

/// Sockets passed by systemd, if this process was socket-activated. Clears the `LISTEN_*`
/// variables so that children do not inherit them. Must run inside a tokio runtime.
pub fn from_systemd() -> io::Result<Option<Vec<Bound>>> {
    let fds: Vec<(RawFd, String)> = sd_notify::listen_fds_with_names(true)?.collect();
    if fds.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(fds.len());
    for (fd, name) in fds {
        // SAFETY: systemd hands these descriptors to this process, which owns them from here on;
        // sd_notify checked LISTEN_PID and each index is taken exactly once.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let listener = adopt(owned)?;
        // "unknown" is what sd_listen_fds_with_names reports for a socket with no name
        // (systemd-socket-activate, or a unit without FileDescriptorName=): say what it is.
        let name = if name.is_empty() || name == "unknown" {
            describe(&listener)
        } else {
            name
        };
        out.push(Bound {
            name,
            listener,
            own_path: None,
        });
    }
    Ok(Some(out))
}

/// Wraps a listening socket descriptor (TCP or AF_UNIX); needs a tokio runtime.
pub fn adopt(fd: OwnedFd) -> io::Result<Listener> {
    use rustix::net::{sockopt, AddressFamily, SocketType};
    let not_stream = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "passed socket is not a listening stream socket",
        )
    };
    if sockopt::socket_type(&fd)? != SocketType::STREAM {
        return Err(not_stream());
    }
    let family = rustix::net::getsockname(&fd)?.address_family();
    if family == AddressFamily::UNIX {
        let l = std::os::unix::net::UnixListener::from(fd);
        l.set_nonblocking(true)?;
        Ok(Listener::Unix(UnixListener::from_std(l)?))
    } else if family == AddressFamily::INET || family == AddressFamily::INET6 {
        let l = std::net::TcpListener::from(fd);
        l.set_nonblocking(true)?;
        Ok(Listener::Tcp(TcpListener::from_std(l)?))
    } else {
        Err(not_stream())
    }
}

/// Binds an AF_UNIX listening socket at `path`, created with `mode` from the start (by a
/// thread with a umask of its own, so no other thread's files are affected and there is no
/// moment with a wider mode: no chmod afterwards). A socket file already there is replaced
/// only when connecting to it is refused (left by a process that is gone); one that answers,
/// or that cannot be probed, or any other kind of file, is an error.
pub fn bind_unix(path: &Path, mode: u32) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            ))
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process is listening on it",
                ))
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("a socket is there and probing it failed: {e}"),
                ))
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mask = rustix::fs::Mode::from_raw_mode(!mode & 0o777);
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare(CLONE_FS) gives this thread its own copy of the umask, working
            // directory and root; it changes nothing in memory, and the thread ends right after.
            if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
                return Err(io::Error::last_os_error());
            }
            rustix::process::umask(mask);
            std::os::unix::net::UnixListener::bind(path)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("binding thread panicked")))
    })
}

/// Binds `addr`: an absolute path makes an AF_UNIX socket (mode 0660: the daemon's user and
/// group only; see [`bind_unix`]), anything else is `host:port` or `[v6]:port`. Must run
/// inside a tokio runtime.
pub fn bind(addr: &str) -> io::Result<Bound> {
    if addr.starts_with('/') {
        let path = Path::new(addr);
        return Bound::unix(addr, bind_unix(path, 0o660)?, path);
    }
    Bound::tcp(addr, bind_tcp(addr)?)
}

/// `host:port` for [`bind`] from a host and a port given apart (`-l`/`-p` style): `*` is
/// every interface (`[::]`, which takes IPv4 too), an IPv6 literal gets its brackets.
pub fn host_port(host: &str, port: u16) -> String {
    match host {
        "*" => format!("[::]:{port}"),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]:{port}"),
        h => format!("{h}:{port}"),
    }
}

/// Why [`open`] has no listeners.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot take sockets from systemd: {0}")]
    Systemd(io::Error),
    #[error("cannot listen on {0}: {1}")]
    Bind(String, io::Error),
}

/// The listeners to serve: systemd's if socket-activated, else `listen`, else `fallback`.
pub fn open(listen: &[String], fallback: &[String]) -> Result<Vec<Bound>, OpenError> {
    if let Some(v) = from_systemd().map_err(OpenError::Systemd)? {
        return Ok(v);
    }
    let addrs = if listen.is_empty() { fallback } else { listen };
    addrs
        .iter()
        .map(|a| bind(a).map_err(|e| OpenError::Bind(a.clone(), e)))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_port_forms() {
        use super::host_port;
        assert_eq!(host_port("*", 1), "[::]:1");
        assert_eq!(host_port("::1", 2), "[::1]:2");
        assert_eq!(host_port("[::1]", 3), "[::1]:3");
        assert_eq!(host_port("127.0.0.1", 4), "127.0.0.1:4");
        assert_eq!(host_port("localhost", 5), "localhost:5");
    }

    fn src(s: &str) -> super::Source {
        super::Source::of_ip(s.parse::<std::net::IpAddr>().unwrap())
    }

    #[test]
    fn groups_loopback_v6_prefixes_and_mapped_v4() {
        assert_eq!(src("127.0.0.1"), src("127.200.3.4"));
        assert_eq!(src("127.0.0.1"), src("::ffff:127.9.9.9"));
        assert_ne!(src("10.0.0.1"), src("10.0.0.2"));
        assert_eq!(src("2001:db8:1:2::1"), src("2001:db8:1:2:ffff::9"));
        assert_ne!(src("2001:db8:1:2::1"), src("2001:db8:1:3::1"));
        assert_eq!(src("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(src("127.3.3.3").to_string(), "127.0.0.0/8");
    }
}
