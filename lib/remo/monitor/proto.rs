//! What the network process and the monitor say to each other: one JSON message per
//! datagram of an AF_UNIX `SOCK_SEQPACKET` socketpair, descriptors beside it (`SCM_RIGHTS`).
//! The set of requests is closed (an enum): anything else is refused by the decoder.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The largest message either side sends or accepts (a command line is far below it).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The network process's requests (see remod(8), PRIVILEGE SEPARATION).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub enum Request {
    /// A parsed `/auth` body to verify; `replaces` is the session the client's cookie named
    /// (ended by a successful login).
    Login {
        user: String,
        key: Vec<u8>,
        sign: Vec<u8>,
        replaces: Option<String>,
    },
    /// The client logged out.
    Logout { sid: String },
    /// A verified request used the session (it does not expire while used).
    Touch { sid: String },
    /// Start a program for a session.
    Spawn { sid: String, what: Run },
    /// Answered when the process exits: its status.
    Wait { id: u64 },
    /// Kill the process group (its client is gone, or its time is up).
    Kill { id: u64 },
}

/// What a [`Request::Spawn`] starts; the monitor builds the argv of transfers itself.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub enum Run {
    /// `/cmd`: an argv, standard error merged into the output.
    Command(Vec<String>),
    /// `/icm`: an argv, the session's one interactive process (replacing the previous one).
    Interactive(Vec<String>),
    /// `/get`: the file's bytes on the output, errors on standard error.
    Get(String),
    /// `/put`: the put helper writing this path.
    Put(String),
}

/// The monitor's answers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub enum Reply {
    LoggedIn {
        sid: String,
        /// The session's Fernet key (signing 16 bytes, encryption 16 bytes).
        fernet: Vec<u8>,
        /// The `/auth` answer body, signed with the server key.
        answer: String,
        unix_user: String,
    },
    /// Refused; `status` is the HTTP status for the client, `why` is for the log.
    Refused {
        status: u16,
        why: String,
    },
    /// Started: standard input and output (and standard error unless merged) come beside.
    Spawned {
        id: u64,
    },
    Exited {
        status: i32,
    },
    Done,
    /// Not an answer: the monitor ended this session (expired, evicted, replaced).
    Ended {
        sid: String,
    },
}

/// A numbered message: replies carry the number of their request; `n` 0 is unsolicited.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Envelope<T> {
    pub n: u64,
    pub body: T,
}

/// The monitor's side of the decoding: what a (possibly compromised) network process sends.
pub fn decode_request(data: &[u8]) -> Option<Envelope<Request>> {
    serde_json::from_slice(data).ok()
}

pub fn decode_reply(data: &[u8]) -> Option<Envelope<Reply>> {
    serde_json::from_slice(data).ok()
}

pub fn encode<T: Serialize>(n: u64, body: &T) -> Vec<u8> {
    serde_json::to_vec(&Envelope { n, body }).unwrap_or_default()
}

/// What the network process is told at start (not secret).
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    pub session_timeout: Duration,
    pub cmd_timeout: Duration,
    pub login_failures: u32,
    pub login_window: Duration,
    pub max_connections: usize,
    pub max_per_source: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub request_timeout: Duration,
    pub idle_exit: Option<Duration>,
    pub syslog: bool,
    pub debug: bool,
    pub status: String,
    /// Listening sockets passed at descriptors 4, 5, ... (the channel is 3).
    pub listeners: Vec<String>,
}

/// One end of the socketpair.
pub struct Channel {
    fd: AsyncFd<OwnedFd>,
}

/// A connected `SOCK_SEQPACKET` pair, close-on-exec.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    Ok(socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?)
}

impl Channel {
    /// Needs a tokio runtime.
    pub fn new(fd: OwnedFd) -> io::Result<Channel> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        // SAFETY: an OwnedFd stays open and keeps its number for as long as the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(Channel { fd })
    }

    /// Sends one message with `fds` beside it (a datagram is sent whole or not at all, so
    /// tasks may send at once).
    pub async fn send(&self, msg: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if msg.len() > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "message too long",
            ));
        }
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        loop {
            let r = self.fd.async_io(Interest::WRITABLE, |fd| {
                let mut control = SendAncillaryBuffer::new(&mut space);
                if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
                    return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many fds"));
                }
                Ok(rustix::net::sendmsg(
                    fd,
                    &[IoSlice::new(msg)],
                    &mut control,
                    SendFlags::NOSIGNAL,
                )?)
            });
            match r.await {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
                Ok(_) => return Ok(()),
            }
        }
    }

    /// The next message and the descriptors that came with it; `None` when the other side
    /// is gone. A message that was cut (too long, too many descriptors) is an error.
    pub async fn recv(&self) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        let mut buf = vec![0u8; MAX_MESSAGE + 1];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let (n, fds) = self
            .fd
            .async_io(Interest::READABLE, |fd| {
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let r = rustix::net::recvmsg(
                    fd,
                    &mut [IoSliceMut::new(&mut buf)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )?;
                let mut fds = Vec::new();
                for m in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(r) = m {
                        fds.extend(r);
                    }
                }
                if r.flags.intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC) {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "message cut"));
                }
                Ok((r.bytes, fds))
            })
            .await?;
        if n == 0 && fds.is_empty() {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((buf, fds)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn requests_round_trip_and_strangers_are_refused() {
        let r = Request::Spawn {
            sid: "abc".into(),
            what: Run::Command(vec!["/bin/true".into()]),
        };
        let e = decode_request(&encode(7, &r)).unwrap();
        assert_eq!((e.n, e.body), (7, r));
        for bad in [
            &br#"{"n":1,"body":{"Exec":{"argv":["sh"]}}}"#[..],
            br#"{"n":1,"body":{"Kill":{"id":1,"uid":0}}}"#,
            br#"{"n":-1,"body":{"Kill":{"id":1}}}"#,
            b"",
            b"\xff",
        ] {
            assert!(decode_request(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn messages_carry_descriptors() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, b) = pair().unwrap();
            let (a, b) = (Channel::new(a).unwrap(), Channel::new(b).unwrap());
            let (x, _y) = std::os::unix::net::UnixStream::pair().unwrap();
            a.send(b"hello", &[x.as_fd()]).await.unwrap();
            let (m, fds) = b.recv().await.unwrap().unwrap();
            assert_eq!((m.as_slice(), fds.len()), (&b"hello"[..], 1));
            assert!(a.send(&vec![0; MAX_MESSAGE + 1], &[]).await.is_err());
            drop(a);
            assert!(b.recv().await.unwrap().is_none());
        });
    }
}
