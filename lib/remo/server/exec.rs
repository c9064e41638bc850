//! Commands: `/cmd` (one command, streamed output) and the interactive `/icm`, `/idt`, `/edt`.

use super::*;

/// The read side of a stream: waits `first` for data, then takes what keeps coming within
/// 20 ms, up to `cap` bytes. Returns the data and whether the stream ended.
pub(super) async fn read_available(
    io: &mut UnixStream,
    first: Duration,
    cap: usize,
) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut wait = first;
    while out.len() < cap {
        match tokio::time::timeout(wait, io.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
        wait = Duration::from_millis(20);
    }
    (out, false)
}

/// Fills `buf` from `io` until full or EOF; returns the bytes read.
pub(super) async fn fill(io: &mut UnixStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match io.read(&mut buf[n..]).await {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A refusal (of the monitor, or of a command line) as the client's framed answer.
pub(super) fn refusal(ctx: &Ctx, r: Refused) -> Response<RBody> {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    framed(ctx, status, r.why.as_bytes())
}

impl Server {
    /// Splits a command line as the original's `shlex.split`.
    pub(super) fn command(line: &str) -> Result<Vec<String>, Refused> {
        let bad = |why: String| Refused { status: 400, why };
        match wire::shlex_split(line) {
            Ok(v) if !v.is_empty() => Ok(v),
            Ok(_) => Err(bad("empty command".into())),
            Err(e) => Err(bad(e.to_string())),
        }
    }

    pub(super) async fn cmd(&self, ctx: Ctx, line: String, mut rd: TokenReader) -> Response<RBody> {
        let argv = match Self::command(&line) {
            Ok(a) => a,
            Err(r) => return refusal(&ctx, r),
        };
        let prog = argv[0].clone();
        let p = match self.link.spawn(&ctx.sid, Run::Command(argv)).await {
            Ok(p) => p,
            Err(r) => return refusal(&ctx, r),
        };
        log::info!(
            "cmd user={} unix_user={} program={prog:?}",
            ctx.user,
            ctx.unix_user
        );
        let (resp, mut enc, tx) = streamed(&ctx);
        let (limit, want, user) = (self.cfg.cmd_timeout, ctx.want_status, ctx.user.clone());
        let mut ended = ctx.ended.clone();
        let gone = ctx.conn.peer_closed();
        rd.unbounded();
        tokio::spawn(async move {
            let mut p = p;
            let (io, exit) = p.io_and_exit(limit);
            let (mut r, mut w) = io.split();
            let feed = async {
                while let Ok(Some(data)) = rd.next().await {
                    if w.write_all(&data).await.is_err() {
                        break;
                    }
                }
                let _ = w.shutdown().await;
            };
            let out = async {
                let mut buf = vec![0u8; CHUNK];
                let mut sent_first = false;
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            sent_first = true;
                            if tx.send(enc.token(&buf[..k], false)).await.is_err() {
                                return None;
                            }
                        }
                    }
                }
                Some(sent_first)
            };
            // Its exit status is asked for now, beside its output.
            let run = async {
                let (_, out, st) = tokio::join!(feed, out, exit);
                out.map(|_| st.ok())
            };
            // The command ends with its client (the answer's receiver is dropped) and with
            // its session (logout, expiry, a new login), not only at the time limit.
            let (st, why) = tokio::select! {
                r = tokio::time::timeout(limit, run) => match r {
                    Ok(Some(st)) => (st, "timeout"),
                    Ok(None) => (None, "client-gone"),
                    Err(_) => (None, "timeout"),
                },
                _ = tx.closed() => (None, "client-gone"),
                _ = async {
                    match gone {
                        Some(g) => g.await,
                        None => std::future::pending().await,
                    }
                } => (None, "client-gone"),
                _ = ended.changed() => (None, "session-ended"),
            };
            drop(rd);
            match st {
                Some(st) => {
                    let tail = if want {
                        format!("exit={st}")
                    } else {
                        String::new()
                    };
                    let _ = tx.send(enc.token(tail.as_bytes(), true)).await;
                    log::info!("cmd-done user={user} status={st}");
                }
                None => {
                    p.kill();
                    log::warn!("cmd-killed user={user} reason={why}");
                }
            }
        });
        head_start(resp).await
    }

    pub(super) async fn icm(&self, ctx: Ctx, line: String, rd: TokenReader) -> Response<RBody> {
        let argv = match Self::command(&line) {
            Ok(a) => a,
            Err(r) => return refusal(&ctx, r),
        };
        let mut slot = ctx.iproc.lock().await;
        // The session's previous process ends here (the original leaked it); the monitor
        // also ends it when it starts the new one.
        *slot = None;
        let prog = argv[0].clone();
        let p = match self.link.spawn(&ctx.sid, Run::Interactive(argv)).await {
            Ok(p) => p,
            Err(r) => return refusal(&ctx, r),
        };
        log::info!(
            "icm user={} unix_user={} program={prog:?}",
            ctx.user,
            ctx.unix_user
        );
        *slot = Some(p);
        drop(slot);
        self.exchange(ctx, rd).await
    }

    pub(super) async fn idt(&self, ctx: Ctx, rd: TokenReader) -> Response<RBody> {
        if ctx.iproc.lock().await.is_none() {
            return framed(&ctx, StatusCode::BAD_REQUEST, b"no interactive process");
        }
        self.exchange(ctx, rd).await
    }

    /// Feeds the body to the session's process and answers with what it prints.
    pub(super) async fn exchange(&self, ctx: Ctx, mut rd: TokenReader) -> Response<RBody> {
        let mut slot = ctx.iproc.lock().await;
        let Some(ip) = slot.as_mut() else {
            return framed(&ctx, StatusCode::BAD_REQUEST, b"no interactive process");
        };
        loop {
            let data = match rd.next().await {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(_) => return framed(&ctx, StatusCode::BAD_REQUEST, b"invalid body"),
            };
            if !data.is_empty() {
                let w = tokio::time::timeout(Duration::from_secs(10), ip.io.write_all(&data)).await;
                if !matches!(w, Ok(Ok(()))) {
                    break;
                }
            }
        }
        let (out, eof) = read_available(&mut ip.io, Duration::from_millis(100), 1 << 20).await;
        if eof {
            // The process has finished: forget it (its group is killed and reaped).
            *slot = None;
        }
        framed(&ctx, StatusCode::OK, &out)
    }

    pub(super) async fn edt(&self, ctx: Ctx) -> Response<RBody> {
        let taken = ctx.iproc.lock().await.take();
        let Some(mut ip) = taken else {
            return framed(&ctx, StatusCode::BAD_REQUEST, b"no interactive process");
        };
        let _ = ip.io.shutdown().await;
        let (resp, mut enc, tx) = streamed(&ctx);
        let (limit, want, user) = (self.cfg.cmd_timeout, ctx.want_status, ctx.user.clone());
        tokio::spawn(async move {
            let run = async {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    match ip.io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => tx.send(enc.token(&buf[..k], false)).await.ok()?,
                    }
                }
                Some(())
            };
            if let Ok(Some(())) = tokio::time::timeout(limit, run).await {
                let st = ip.wait(limit).await.unwrap_or(-1);
                let tail = if want {
                    format!("exit={st}")
                } else {
                    String::new()
                };
                let _ = tx.send(enc.token(tail.as_bytes(), true)).await;
                log::info!("edt-done user={user} status={st}");
            } else {
                log::warn!("edt-killed user={user}");
            }
            drop(ip);
        });
        head_start(resp).await
    }
}
