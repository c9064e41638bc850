//! Framing of remod's bodies: numbered Fernet tokens in, streamed or whole answers out.

use super::*;

/// Payload bytes per response token for streamed output.
pub(super) const CHUNK: usize = 64 * 1024;
/// A response body: a whole one (with Content-Length) or a stream of chunks (chunked).
pub enum RBody {
    Full(Full<Bytes>),
    Once(Option<Bytes>),
    /// Tokens as they come; the first may have been taken already ([`head_start`]).
    Stream(Option<Bytes>, mpsc::Receiver<Bytes>),
}

impl From<crate::http::Body> for RBody {
    fn from(b: crate::http::Body) -> Self {
        RBody::Full(b)
    }
}

impl HttpBody for RBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            RBody::Full(f) => Pin::new(f).poll_frame(cx),
            RBody::Once(o) => Poll::Ready(o.take().map(|b| Ok(Frame::data(b)))),
            RBody::Stream(first, rx) => match first.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RBody::Full(f) => f.is_end_stream(),
            RBody::Once(o) => o.is_none(),
            RBody::Stream(..) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RBody::Full(f) => f.size_hint(),
            // Unknown length: hyper sends it chunked, never with Content-Length (§4.2).
            _ => SizeHint::default(),
        }
    }
}

pub(super) fn bare(status: StatusCode) -> Response<RBody> {
    crate::http::bare(status).map(RBody::Full)
}

/// A plain-text body: chunked for 200 (as the original's WSGI answers are); errors carry
/// Content-Length, which tells clients the body is not encrypted.
pub(super) fn plain(status: StatusCode, text: &'static str) -> Response<RBody> {
    let b = Bytes::from_static(text.as_bytes());
    let body = if status == StatusCode::OK {
        RBody::Once(Some(b))
    } else {
        RBody::Full(Full::new(b))
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Response tokens of one request.
pub(super) struct Enc {
    pub(super) f: Fernet,
    pub(super) req: i16,
    pub(super) tok: i16,
    pub(super) status: u16,
}

impl Enc {
    pub(super) fn token(&mut self, payload: &[u8], last: bool) -> Bytes {
        let h = Head {
            first: self.tok == 0,
            last,
            req: self.req,
            tok: self.tok,
        };
        self.tok = self.tok.wrapping_add(1);
        let mut t = self
            .f
            .encrypt(&wire::response_plain(h, self.status, payload))
            .into_bytes();
        t.extend_from_slice(b"\r\n");
        Bytes::from(t)
    }
}

/// A framed, encrypted answer with the whole payload: `BE` when empty, else `B.` + `.E`.
pub(super) fn framed(ctx: &Ctx, status: StatusCode, payload: &[u8]) -> Response<RBody> {
    let mut e = Enc {
        f: ctx.fernet.clone(),
        req: ctx.req,
        tok: 0,
        status: status.as_u16(),
    };
    let mut body = Vec::new();
    if payload.is_empty() {
        body.extend_from_slice(&e.token(b"", true));
    } else {
        body.extend_from_slice(&e.token(payload, false));
        body.extend_from_slice(&e.token(b"", true));
    }
    let mut r = Response::new(RBody::Once(Some(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    with_cookie(r, &ctx.sid)
}

/// A streamed 200 answer; the returned encoder and sender produce its tokens.
pub(super) fn streamed(ctx: &Ctx) -> (Response<RBody>, Enc, mpsc::Sender<Bytes>) {
    let (tx, rx) = mpsc::channel(4);
    let mut r = Response::new(RBody::Stream(None, rx));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    let enc = Enc {
        f: ctx.fernet.clone(),
        req: ctx.req,
        tok: 0,
        status: 200,
    };
    (with_cookie(r, &ctx.sid), enc, tx)
}

/// How long a streamed answer's head waits for its first token.
const HEAD_START: Duration = Duration::from_millis(20);

/// Holds a streamed answer until its first token is there (at most [`HEAD_START`]): the head
/// and a short answer, such as a quick command's final token, then leave in one write and the
/// client wakes once for them; a command silent for longer still gets its head at once.
pub(super) async fn head_start(mut r: Response<RBody>) -> Response<RBody> {
    if let RBody::Stream(first @ None, rx) = r.body_mut() {
        if let Ok(Some(b)) = tokio::time::timeout(HEAD_START, rx.recv()).await {
            *first = Some(b);
        }
    }
    r
}

/// A request body's tokens: the first (path hash), then the rest with their numbering and end
/// mark checked; [`TokenReader::next`] yields every payload, the first token's included.
pub(super) struct TokenReader {
    pub(super) body: Incoming,
    /// The request's body deadline ([`crate::http::body_deadline`]); none for uploads and
    /// command input, which the caller bounds with `--cmd-timeout`.
    pub(super) deadline: Option<tokio::time::Instant>,
    pub(super) split: wire::LineSplitter,
    pub(super) lines: std::collections::VecDeque<Vec<u8>>,
    pub(super) eof: bool,
    pub(super) fernet: Fernet,
    pub(super) req: i16,
    pub(super) next_tok: i16,
    pub(super) done: bool,
    /// The first token's payload, not yet taken by [`TokenReader::next`].
    pub(super) pending: Option<Vec<u8>>,
}

#[derive(Debug)]
pub(super) enum TokErr {
    Missing,
    Invalid(&'static str),
}

impl TokenReader {
    pub(super) fn new(body: Incoming, fernet: Fernet) -> Self {
        TokenReader {
            body,
            deadline: Some(crate::http::body_deadline()),
            split: wire::LineSplitter::default(),
            lines: Default::default(),
            eof: false,
            fernet,
            req: 0,
            next_tok: 0,
            done: false,
            pending: None,
        }
    }

    pub(super) async fn line(&mut self) -> Result<Option<Vec<u8>>, TokErr> {
        loop {
            if let Some(l) = self.lines.pop_front() {
                return Ok(Some(l));
            }
            if self.eof {
                return Ok(None);
            }
            let frame = match self.deadline {
                Some(d) => tokio::time::timeout_at(d, self.body.frame())
                    .await
                    .map_err(|_| TokErr::Invalid("body timed out"))?,
                None => self.body.frame().await,
            };
            match frame {
                None => {
                    self.eof = true;
                    if let Some(l) = self.split.finish() {
                        self.lines.push_back(l);
                    }
                }
                Some(Err(_)) => return Err(TokErr::Invalid("body read failed")),
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        let got = self
                            .split
                            .push(&d)
                            .ok_or(TokErr::Invalid("token too long"))?;
                        self.lines.extend(got);
                    }
                }
            }
        }
    }

    /// The first token: begin mark, token 0, the path's hash. Returns its request number;
    /// its payload is the first that [`TokenReader::next`] yields.
    pub(super) async fn first(&mut self, path: &str) -> Result<i16, TokErr> {
        let line = self.line().await?.ok_or(TokErr::Missing)?;
        let plain = self
            .fernet
            .decrypt(&line, Some(wire::TTL))
            .ok_or(TokErr::Invalid("undecryptable or expired token"))?;
        let (h, rest) = Head::parse(&plain).ok_or(TokErr::Invalid("short token"))?;
        if !h.first || h.tok != 0 || rest.len() < wire::HASH_LEN {
            return Err(TokErr::Invalid("bad first token header"));
        }
        if !crate::secret::ct_eq(&rest[..wire::HASH_LEN], &wire::sha384(path.as_bytes())) {
            return Err(TokErr::Invalid("path hash mismatch"));
        }
        self.req = h.req;
        self.next_tok = 1;
        self.done = h.last;
        self.pending = Some(rest[wire::HASH_LEN..].to_vec());
        Ok(h.req)
    }

    /// Lifts the body deadline: the caller bounds the rest of the body itself.
    pub(super) fn unbounded(&mut self) {
        self.deadline = None;
    }

    /// The next payload, None after the end mark (which must close the body).
    pub(super) async fn next(&mut self) -> Result<Option<Vec<u8>>, TokErr> {
        if let Some(p) = self.pending.take() {
            return Ok(Some(p));
        }
        if self.done {
            return match self.line().await? {
                None => Ok(None),
                Some(_) => Err(TokErr::Invalid("data after the last token")),
            };
        }
        let line = self
            .line()
            .await?
            .ok_or(TokErr::Invalid("body ends before the last token"))?;
        let plain = self
            .fernet
            .decrypt(&line, Some(wire::TTL))
            .ok_or(TokErr::Invalid("undecryptable or expired token"))?;
        let (h, rest) = Head::parse(&plain).ok_or(TokErr::Invalid("short token"))?;
        if h.first || h.tok != self.next_tok || h.req != self.req {
            return Err(TokErr::Invalid("token out of sequence"));
        }
        self.next_tok = self.next_tok.wrapping_add(1);
        self.done = h.last;
        Ok(Some(rest.to_vec()))
    }
}

pub(super) fn fernet_str(f: &Fernet, tok: &str) -> Option<String> {
    String::from_utf8(f.decrypt(tok.as_bytes(), None)?).ok()
}
