//! File transfers: `/get` (streamed out) and `/put` (through the put helper, as the mapped
//! user), both run by the monitor.

use super::*;

impl Server {
    pub(super) async fn get(&self, ctx: Ctx, name: String) -> Response<RBody> {
        let mut p = match self.link.spawn(&ctx.sid, Run::Get(name)).await {
            Ok(p) => p,
            Err(r) => return refusal(&ctx, r),
        };
        let _ = p.io.shutdown().await;
        let mut first = vec![0u8; CHUNK];
        let n = match tokio::time::timeout(self.cfg.cmd_timeout, fill(&mut p.io, &mut first)).await
        {
            Ok(Ok(n)) => n,
            _ => return framed(&ctx, StatusCode::INTERNAL_SERVER_ERROR, b"read failed"),
        };
        first.truncate(n);
        if n < CHUNK {
            // The whole file, or an error: answer with the real status.
            let mut err = Vec::new();
            if let Some(e) = p.err.as_mut() {
                let _ = tokio::time::timeout(Duration::from_secs(5), e.read_to_end(&mut err)).await;
            }
            let st = p.wait(self.cfg.cmd_timeout).await.unwrap_or(-1);
            if st != 0 {
                let msg = String::from_utf8_lossy(&err);
                let msg = msg.trim().trim_start_matches("cat: ").to_string();
                log::info!(
                    "get-failed user={} unix_user={} error={msg:?}",
                    ctx.user,
                    ctx.unix_user
                );
                let status = if msg.contains("No such file") {
                    StatusCode::NOT_FOUND
                } else if msg.contains("Permission denied") {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                return framed(&ctx, status, msg.as_bytes());
            }
            log::info!(
                "get user={} unix_user={} bytes={n}",
                ctx.user,
                ctx.unix_user
            );
            return framed(&ctx, StatusCode::OK, &first);
        }
        let (resp, mut enc, tx) = streamed(&ctx);
        let (user, limit) = (ctx.user.clone(), self.cfg.cmd_timeout);
        tokio::spawn(async move {
            let mut total = n;
            let ok = async {
                tx.send(enc.token(&first, false)).await.ok()?;
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let k = fill(&mut p.io, &mut buf).await.ok()?;
                    if k == 0 {
                        break;
                    }
                    total += k;
                    tx.send(enc.token(&buf[..k], false)).await.ok()?;
                }
                let st = p.wait(limit).await.ok()?;
                (st == 0).then_some(())?;
                tx.send(enc.token(b"", true)).await.ok()
            };
            match tokio::time::timeout(limit, ok).await {
                Ok(Some(_)) => log::info!("get user={user} bytes={total}"),
                _ => log::warn!("get-truncated user={user} bytes={total}"),
            }
        });
        resp
    }

    pub(super) async fn put(&self, ctx: Ctx, name: String, mut rd: TokenReader) -> Response<RBody> {
        let mut p = match self.link.spawn(&ctx.sid, Run::Put(name)).await {
            Ok(p) => p,
            Err(r) => return refusal(&ctx, r),
        };
        let limit = self.cfg.cmd_timeout;
        rd.unbounded();
        let copy = async {
            let mut total = 0usize;
            loop {
                let data = match rd.next().await {
                    Ok(Some(d)) => d,
                    Ok(None) => break,
                    Err(e) => return Err(format!("{e:?}")),
                };
                if data.is_empty() {
                    continue;
                }
                total += data.len();
                let mut frame = (data.len() as u32).to_be_bytes().to_vec();
                frame.extend_from_slice(&data);
                p.io.write_all(&frame)
                    .await
                    .map_err(|e| format!("helper: {e}"))?;
            }
            p.io.write_all(&[0, 0, 0, 0])
                .await
                .map_err(|e| format!("helper: {e}"))?;
            Ok(total)
        };
        let copied = match tokio::time::timeout(limit, copy).await {
            Ok(r) => r,
            Err(_) => Err("timed out".into()),
        };
        // End of input: without the commit frame the helper removes its temporary file.
        let _ = p.io.shutdown().await;
        let mut err = Vec::new();
        if let Some(e) = p.err.as_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(10), e.read_to_end(&mut err)).await;
        }
        let st = p.wait(Duration::from_secs(10)).await.unwrap_or(-1);
        match copied {
            Err(why) => {
                log::warn!("put-refused user={} reason={why:?}", ctx.user);
                framed(&ctx, StatusCode::BAD_REQUEST, b"invalid upload")
            }
            Ok(total) if st == 0 => {
                log::info!(
                    "put user={} unix_user={} bytes={total}",
                    ctx.user,
                    ctx.unix_user
                );
                framed(&ctx, StatusCode::OK, b"")
            }
            Ok(_) => {
                let msg = String::from_utf8_lossy(&err).trim().to_string();
                log::info!("put-failed user={} error={msg:?}", ctx.user);
                framed(&ctx, StatusCode::INTERNAL_SERVER_ERROR, msg.as_bytes())
            }
        }
    }
}

/// The start of a path, for log lines (path tokens are not logged whole).
pub(super) fn short(p: &str) -> &str {
    match p.char_indices().nth(5) {
        Some((i, _)) => &p[..i],
        None => p,
    }
}

/// `remod --put-helper PATH`: runs as the mapped user; reads frames (4-byte big-endian
/// length, data) from standard input into a temporary file beside PATH and renames it over
/// PATH at the zero-length commit frame. At end of input without a commit, the temporary
/// file is removed and nothing changes. Returns the exit code.
pub fn put_helper(path: &std::path::Path) -> i32 {
    use std::io::{Read, Write};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        eprintln!("{}: {what}: {e}", path.display());
        1
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(fname) = path.file_name() else {
        return fail("cannot write", &"not a file name");
    };
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    let tmp = dir.join(format!(
        ".{}.{}.part",
        fname.to_string_lossy(),
        crate::secret::hex_token(6)
    ));
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
    {
        Ok(f) => f,
        Err(e) => return fail("cannot write", &e),
    };
    let mut stdin = std::io::stdin().lock();
    let mut buf = Vec::new();
    let result = loop {
        let mut len = [0u8; 4];
        if let Err(e) = stdin.read_exact(&mut len) {
            break Err(format!("upload incomplete: {e}"));
        }
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 {
            break f
                .set_permissions(std::fs::Permissions::from_mode(mode))
                .and_then(|_| f.sync_all())
                .and_then(|_| std::fs::rename(&tmp, path))
                .map_err(|e| e.to_string());
        }
        buf.resize(n, 0);
        if let Err(e) = stdin.read_exact(&mut buf).and_then(|_| f.write_all(&buf)) {
            break Err(e.to_string());
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            fail("cannot write", &e)
        }
    }
}
