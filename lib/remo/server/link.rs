//! The network process's side of the monitor's channel: numbered requests, their replies, and
//! the processes the monitor starts for it.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::oneshot;

use crate::remo::monitor::proto::{self, Channel, Reply, Request};

type Waiting = Mutex<HashMap<u64, oneshot::Sender<(Reply, Vec<OwnedFd>)>>>;

pub struct Link {
    ch: Channel,
    next: AtomicU64,
    waiting: Waiting,
}

/// The monitor is gone (or answered nonsense): nothing privileged can be done any more.
#[derive(Debug)]
pub struct Gone;

/// Why no process was started: the HTTP status for the client and the reason it reads.
#[derive(Debug, thiserror::Error)]
#[error("{why}")]
pub struct Refused {
    pub status: u16,
    pub why: String,
}

impl Refused {
    fn monitor_gone() -> Refused {
        Refused {
            status: 500,
            why: "monitor unavailable".into(),
        }
    }
}

impl Link {
    pub fn new(ch: Channel) -> Arc<Link> {
        Arc::new(Link {
            ch,
            next: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
        })
    }

    /// Reads the monitor's messages until it is gone: replies go to their callers,
    /// `Ended` notices to `ended`.
    pub async fn read(self: Arc<Self>, ended: impl Fn(String)) {
        loop {
            let Ok(Some((data, fds))) = self.ch.recv().await else {
                break;
            };
            let Some(env) = proto::decode_reply(&data) else {
                log::error!("monitor-bad-reply bytes={}", data.len());
                break;
            };
            if let Reply::Ended { sid } = env.body {
                ended(sid);
                continue;
            }
            let tx = self
                .waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&env.n);
            if let Some(tx) = tx {
                let _ = tx.send((env.body, fds));
            }
        }
        // Callers waiting now get `Gone`.
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Sends `req` and waits for its reply.
    pub async fn call(&self, req: &Request) -> Result<(Reply, Vec<OwnedFd>), Gone> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(n, tx);
        if self.ch.send(&proto::encode(n, req), &[]).await.is_err() {
            self.waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&n);
            return Err(Gone);
        }
        rx.await.map_err(|_| Gone)
    }

    /// Sends `req` without waiting for a reply (Touch).
    pub async fn tell(&self, req: &Request) {
        let _ = self.ch.send(&proto::encode(0, req), &[]).await;
    }

    /// Has the monitor kill process `id` (from a runtime task: callers may not be async).
    fn kill_later(self: &Arc<Self>, id: u64) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let link = self.clone();
            rt.spawn(async move { link.tell(&Request::Kill { id }).await });
        }
    }

    /// Asks the monitor to start `what` for session `sid`.
    pub async fn spawn(self: &Arc<Self>, sid: &str, what: proto::Run) -> Result<Proc, Refused> {
        let req = Request::Spawn {
            sid: sid.to_string(),
            what,
        };
        let gone = Refused::monitor_gone;
        let (reply, fds) = self.call(&req).await.map_err(|_| gone())?;
        let id = match reply {
            Reply::Spawned { id } => id,
            Reply::Refused { status, why } => return Err(Refused { status, why }),
            _ => return Err(gone()),
        };
        // Without its descriptors the process is of no use: the monitor kills it.
        let kill = || {
            self.kill_later(id);
            gone()
        };
        let mut fds = fds.into_iter().map(crate::child::async_stream);
        let Some(Ok(io)) = fds.next() else {
            return Err(kill());
        };
        let err = match fds.next() {
            Some(Ok(e)) => Some(e),
            Some(Err(_)) => return Err(kill()),
            None => None,
        };
        Ok(Proc {
            io,
            err,
            id,
            link: self.clone(),
            exited: AtomicBool::new(false),
        })
    }
}

/// A process the monitor started for us: its standard input and output (`io`), standard
/// error (`err`, unless merged). Dropping it before it exited has the monitor kill it.
pub struct Proc {
    pub io: UnixStream,
    pub err: Option<UnixStream>,
    id: u64,
    link: Arc<Link>,
    exited: AtomicBool,
}

impl Proc {
    /// Has the monitor kill the process group now.
    pub fn kill(&self) {
        self.link.kill_later(self.id);
    }

    /// Waits (at most `limit`) for the process to exit; returns the exit code, or minus the
    /// signal number. Past `limit` it is killed.
    pub async fn wait(&mut self, limit: Duration) -> std::io::Result<i32> {
        self.io_and_exit(limit).1.await
    }

    /// Its standard input and output, and [`Proc::wait`] as a future beside them: the
    /// monitor is asked at once, so its answer comes as the process exits, not one round
    /// trip after its output ends.
    pub fn io_and_exit(
        &mut self,
        limit: Duration,
    ) -> (
        &mut UnixStream,
        impl std::future::Future<Output = std::io::Result<i32>> + Send + '_,
    ) {
        let (link, id, exited) = (&self.link, self.id, &self.exited);
        let exit = async move {
            let req = Request::Wait { id };
            match tokio::time::timeout(limit, link.call(&req)).await {
                Ok(Ok((Reply::Exited { status }, _))) => {
                    exited.store(true, Ordering::Relaxed);
                    Ok(status)
                }
                Ok(_) => Err(std::io::ErrorKind::NotFound.into()),
                Err(_) => {
                    link.kill_later(id);
                    Err(std::io::ErrorKind::TimedOut.into())
                }
            }
        };
        (&mut self.io, exit)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.exited.load(Ordering::Relaxed) {
            self.kill();
        }
    }
}
