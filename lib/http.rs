//! HTTP/1.1 serving on hyper for every HTTP daemon: optional TLS, bounded headers, a header
//! timeout that also closes idle keep-alive connections, a body timeout for the whole body
//! ([`read_body`], [`body_deadline`]), a deadline per request, a 503 for connections over the
//! caps ([`crate::daemon::Options`]), answers to clients that half-close, and graceful finish
//! of in-flight requests on stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use openssl::ssl::SslAcceptor;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::daemon::log::quoted;
use crate::daemon::{Conn, Control, Peer};

pub type Body = Full<Bytes>;

#[derive(Clone, Debug)]
pub struct Limits {
    /// Request line plus headers, in bytes.
    pub max_head: usize,
    pub max_headers: usize,
    /// Time allowed to send a complete request head, and to stay idle between requests.
    pub header_timeout: Duration,
    /// Time allowed to send the whole request body, counted from the end of the head: a body
    /// trickled in slowly cannot stretch it ([`read_body`]).
    pub body_timeout: Duration,
    /// Time allowed for a request from the end of its head to the head of its answer (body
    /// included); after it the client gets 503 and the connection is closed.
    pub request_timeout: Duration,
    pub tls_handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 64 * 1024,
            max_headers: 100,
            header_timeout: Duration::from_secs(10),
            body_timeout: DEFAULT_BODY_TIMEOUT,
            request_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

tokio::task_local! {
    /// When the body of the request being handled must be in: set by [`serve_conn`] around
    /// each call of the handler.
    static BODY_DEADLINE: Instant;
}

/// When the body of the request this task handles must have arrived (the handler's own
/// task, not tasks it spawns: those get the default body timeout from now).
pub fn body_deadline() -> Instant {
    BODY_DEADLINE
        .try_with(|d| *d)
        .unwrap_or_else(|_| Instant::now() + DEFAULT_BODY_TIMEOUT)
}

/// What a handler knows about the connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: Peer,
    pub listener: Arc<str>,
    pub tls: bool,
    /// The connection's socket: valid while one of its requests is being handled.
    fd: std::os::fd::RawFd,
}

impl ConnInfo {
    /// A connection's description without a socket, for handlers called directly in unit
    /// tests ([`ConnInfo::peer_closed`] then says `None`).
    #[cfg(test)]
    pub(crate) fn for_test(peer: Peer) -> ConnInfo {
        ConnInfo {
            peer,
            listener: "test".into(),
            tls: false,
            fd: -1,
        }
    }

    /// A future that resolves when the client shuts its sending side or the socket fails
    /// (EPOLLRDHUP), for answers that are pointless once the client has gone (a command's
    /// streamed output). Hyper answers clients that half-close, so it does not tell us.
    /// Call it while handling a request of this connection; `None` if the socket cannot be
    /// watched.
    pub fn peer_closed(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        use tokio::io::{unix::AsyncFd, Interest};
        // SAFETY: hyper keeps the connection, so `fd`, open while its request is handled.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) };
        let fd = rustix::io::fcntl_dupfd_cloexec(borrowed, 3).ok()?;
        // A reused descriptor number would name another connection: check it is ours.
        if let Peer::Tcp(a) = &self.peer {
            let same = rustix::net::getpeername(&fd)
                .ok()
                .flatten()
                .and_then(|p| std::net::SocketAddr::try_from(p).ok())
                .is_some_and(|p| p == *a);
            if !same {
                return None;
            }
        }
        // SAFETY: `fd` is our own duplicate, owned by the AsyncFd until it is dropped.
        let afd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()?;
        Some(async move {
            loop {
                let Ok(mut g) = afd.readable().await else {
                    return;
                };
                if g.ready().is_read_closed() {
                    return;
                }
                g.clear_ready();
            }
        })
    }
}

/// A response with a body and a `Content-Type`.
pub fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

/// A status with an empty body and no `Content-Type`.
pub fn bare(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading request body: {0}")]
    Read(String),
    #[error("request body not complete within the body timeout")]
    TimedOut,
}

/// Reads a whole request body of at most `max` bytes, by the request's [`body_deadline`].
/// Any body: hyper's `Incoming` when serving, a [`Body`] built directly in a unit test.
pub async fn read_body<B>(body: B, max: usize) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let read = Limited::new(body, max).collect();
    match tokio::time::timeout_at(body_deadline(), read).await {
        Err(_) => Err(BodyError::TimedOut),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(max)),
        Ok(Err(e)) => Err(BodyError::Read(e.to_string())),
    }
}

/// How [`serve`] serves: the daemon's limits, TLS or not, and HTTP's own limits.
#[derive(Clone, Default)]
pub struct Options {
    pub daemon: crate::daemon::Options,
    pub tls: Option<Arc<SslAcceptor>>,
    pub limits: Arc<Limits>,
}

/// Serves HTTP/1.1 on every listener in `bound` until the daemon stops ([`daemon::serve`]),
/// each connection with [`serve_conn`]; returns the reason for stopping.
pub async fn serve<H, Fut, B>(
    bound: Vec<crate::daemon::Bound>,
    opts: Options,
    ctl: Control,
    status: &str,
    handler: H,
) -> String
where
    H: Fn(Request<Incoming>, Arc<ConnInfo>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + From<Body> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Options {
        daemon,
        tls,
        limits,
    } = opts;
    let c2 = ctl.clone();
    crate::daemon::serve(bound, daemon, ctl, status, move |conn| {
        serve_conn(
            conn,
            c2.clone(),
            tls.clone(),
            limits.clone(),
            handler.clone(),
        )
    })
    .await
}

/// Serves HTTP/1.1 on one accepted connection until the peer leaves, a limit is hit, or the
/// server stops (then the request in flight completes and the connection closes).
/// The response body is [`Body`] or any body that can be made from one (a streaming body).
pub async fn serve_conn<H, Fut, B>(
    conn: Conn,
    ctl: Control,
    tls: Option<Arc<SslAcceptor>>,
    limits: Arc<Limits>,
    handler: H,
) where
    H: Fn(Request<Incoming>, Arc<ConnInfo>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + From<Body> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let info = Arc::new(ConnInfo {
        fd: std::os::fd::AsRawFd::as_raw_fd(&conn.stream),
        peer: conn.peer,
        listener: conn.listener,
        tls: tls.is_some(),
    });
    let over = conn.over_capacity;
    match tls {
        None => run(TokioIo::new(conn.stream), over, info, ctl, &limits, handler).await,
        Some(acc) => {
            match crate::tls::accept(&acc, conn.stream, limits.tls_handshake_timeout).await {
                Ok(s) => run(TokioIo::new(s), over, info, ctl, &limits, handler).await,
                Err(e) => log::info!(
                    "tls-handshake-failed peer={} error={}",
                    info.peer,
                    quoted(&e)
                ),
            }
        }
    }
}

async fn run<I, H, Fut, B>(
    io: TokioIo<I>,
    over: bool,
    info: Arc<ConnInfo>,
    ctl: Control,
    limits: &Limits,
    handler: H,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, Arc<ConnInfo>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + From<Body> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut b = hyper::server::conn::http1::Builder::new();
    // Title-Case names, as the JDK server of the original sends them (a few clients compare
    // header names case-sensitively). half_close: a client that shuts its write side after
    // its request (`nc -N`, `shutdown(SHUT_WR)`) still gets its answer.
    b.timer(TokioTimer::new())
        .title_case_headers(true)
        .half_close(true)
        .header_read_timeout(limits.header_timeout)
        // max_buf_size alone lets a head through that arrives in one read of a grown buffer
        // (about 100 KiB against 64 KiB); max_header_size checks the parsed head itself.
        .max_buf_size(limits.max_head.max(8192))
        .max_header_size(limits.max_head)
        .max_headers(limits.max_headers)
        .keep_alive(!over);
    let peer = info.peer.clone();
    let (body_timeout, request_timeout) = (limits.body_timeout, limits.request_timeout);
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (h, info) = (handler.clone(), info.clone());
        async move {
            if over {
                log::warn!("busy peer={} answer=503", info.peer);
                return Ok::<_, std::convert::Infallible>(
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "ERR: too many connections\n",
                    )
                    .map(B::from),
                );
            }
            let peer = info.peer.clone();
            let start = Instant::now();
            let work = BODY_DEADLINE.scope(start + body_timeout, h(req, info));
            // Its own task: a request that has arrived is handled to the end (a failure
            // counted, a change committed) even if the client goes away meanwhile.
            let task = tokio::spawn(tokio::time::timeout_at(start + request_timeout, work));
            Ok(match task.await {
                Ok(Ok(resp)) => resp,
                Ok(Err(_)) => {
                    log::warn!(
                        "request-timeout peer={peer} after={}s answer=503",
                        request_timeout.as_secs()
                    );
                    let mut r = text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "ERR: request timed out\n",
                    );
                    r.headers_mut().insert(
                        hyper::header::CONNECTION,
                        hyper::header::HeaderValue::from_static("close"),
                    );
                    r.map(B::from)
                }
                Err(e) => {
                    log::error!("request-failed peer={peer} error={} answer=500", quoted(&e));
                    bare(StatusCode::INTERNAL_SERVER_ERROR).map(B::from)
                }
            })
        }
    });
    let conn = b.serve_connection(io, svc);
    tokio::pin!(conn);
    let res = tokio::select! {
        r = conn.as_mut() => r,
        _ = ctl.stopping() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        log::debug!("http-connection-closed peer={peer} error={}", quoted(&e));
    }
}

/// How [`connect`] failed: the TCP connection, or the HTTP/1.1 handshake on it.
#[derive(Debug)]
pub enum ConnectError {
    Tcp(std::io::Error),
    Handshake(hyper::Error),
}

/// A client's HTTP/1.1 connection to `host` (an IPv6 literal with or without its brackets)
/// on `port`, without Nagle's delay; the connection runs on a task of its own.
pub async fn connect<B>(
    host: &str,
    port: u16,
) -> Result<hyper::client::conn::http1::SendRequest<B>, ConnectError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(ConnectError::Tcp)?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
