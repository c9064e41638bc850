//! Secrets in locked memory: a fixed-capacity buffer that is `mlock`ed (never written to
//! swap), excluded from core dumps (`MADV_DONTDUMP`) and zeroized when dropped. Also reads
//! one line into such a buffer, byte by byte from a file descriptor or from the terminal with
//! echo off, so that no copy of the secret is left behind in an I/O buffer.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::ptr::NonNull;

use zeroize::Zeroize;

/// A secret of at most `capacity` bytes in locked, zeroize-on-drop memory.
pub struct Locked {
    ptr: NonNull<u8>,
    layout: Layout,
    len: usize,
    cap: usize,
    locked: bool,
}

// SAFETY: `Locked` owns its allocation exclusively (like a `Box<[u8]>`); there is no shared
// interior mutability, so moving it to or sharing `&Locked` with another thread is sound.
unsafe impl Send for Locked {}
// SAFETY: as above; `&Locked` only gives read access.
unsafe impl Sync for Locked {}

#[derive(Debug, thiserror::Error)]
#[error("secret longer than {0} bytes")]
pub struct TooLong(pub usize);

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

impl Locked {
    /// An empty buffer that can hold `capacity` bytes. Locking can fail (RLIMIT_MEMLOCK);
    /// the buffer is still usable and zeroized on drop, and [`Locked::is_locked`] says so.
    pub fn with_capacity(capacity: usize) -> Locked {
        let page = page_size();
        let size = capacity.max(1).div_ceil(page) * page;
        let layout = match Layout::from_size_align(size, page) {
            Ok(l) => l,
            Err(_) => std::alloc::handle_alloc_error(Layout::new::<u8>()),
        };
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        // SAFETY: `ptr..ptr+size` is a page-aligned allocation owned by this value; madvise
        // and mlock only change how the kernel treats those pages.
        let locked = unsafe {
            libc::madvise(raw.cast(), size, libc::MADV_DONTDUMP);
            libc::mlock(raw.cast(), size) == 0
        };
        Locked {
            ptr,
            layout,
            len: 0,
            cap: capacity,
            locked,
        }
    }

    /// A copy of `data` (the caller zeroizes its own copy).
    pub fn from_slice(data: &[u8]) -> Locked {
        let mut l = Locked::with_capacity(data.len());
        l.buf_mut()[..data.len()].copy_from_slice(data);
        l.len = data.len();
        l
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True if the pages are locked in RAM.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: the allocation is `layout.size()` initialised bytes and `len <= size`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn buf_mut(&mut self) -> &mut [u8] {
        // SAFETY: the whole allocation is initialised (zeroed) and exclusively ours.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }

    pub fn push(&mut self, b: u8) -> Result<(), TooLong> {
        let (len, cap) = (self.len, self.capacity());
        if len >= cap {
            return Err(TooLong(cap));
        }
        self.buf_mut()[len] = b;
        self.len += 1;
        Ok(())
    }

    /// The unused part of the buffer, to read into; then call [`Locked::advance`].
    pub fn spare_mut(&mut self) -> &mut [u8] {
        let (len, cap) = (self.len, self.cap);
        &mut self.buf_mut()[len..cap]
    }

    /// Marks `n` more bytes of the spare part as filled.
    pub fn advance(&mut self, n: usize) {
        self.len = (self.len + n).min(self.capacity());
    }

    /// Shortens to `n` bytes, zeroizing what is cut off.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len {
            let len = self.len;
            self.buf_mut()[n..len].zeroize();
            self.len = n;
        }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        self.buf_mut().zeroize();
        // SAFETY: the pointer and layout are the ones allocated (and locked) in
        // `with_capacity`; nothing uses them after this.
        unsafe {
            if self.locked {
                libc::munlock(self.ptr.as_ptr().cast(), self.layout.size());
            }
            dealloc(self.ptr.as_ptr(), self.layout);
        }
    }
}

impl std::fmt::Debug for Locked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Locked({} bytes)", self.len)
    }
}

/// Reads up to the first `\n` (not kept) or end of input from `fd`, one byte at a time, so
/// nothing after the line is consumed and no buffer holds a copy. At most `max` bytes.
pub fn read_line(fd: impl AsFd, max: usize) -> io::Result<Locked> {
    let mut out = Locked::with_capacity(max);
    let mut b = [0u8; 1];
    loop {
        match rustix::io::read(&fd, &mut b) {
            Ok(0) => break,
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => out
                .push(b[0])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    b.zeroize();
    Ok(out)
}

/// Reads everything until end of input from `fd` (at most `max` bytes).
pub fn read_all(fd: impl AsFd, max: usize) -> io::Result<Locked> {
    let mut out = Locked::with_capacity(max);
    loop {
        if out.spare_mut().is_empty() {
            let mut probe = [0u8; 1];
            return match rustix::io::read(&fd, &mut probe) {
                Ok(0) => Ok(out),
                Ok(_) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    TooLong(max).to_string(),
                )),
                Err(e) => Err(e.into()),
            };
        }
        match rustix::io::read(&fd, out.spare_mut()) {
            Ok(0) => return Ok(out),
            Ok(n) => out.advance(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads a secret line: on the controlling terminal with echo off after showing `text` there,
/// or, when there is no terminal, from standard input without a prompt. The `\n` is not kept.
pub fn prompt_or_stdin(text: &str, max: usize) -> io::Result<Locked> {
    match prompt(text, max)? {
        Some(s) => Ok(s),
        None => read_line(std::io::stdin(), max),
    }
}

/// Prompts on the controlling terminal and reads one line with echo off. `Ok(None)` when
/// there is no controlling terminal.
fn prompt(text: &str, max: usize) -> io::Result<Option<Locked>> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let tty = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    {
        Ok(t) if rustix::termios::isatty(&t) => t,
        _ => return Ok(None),
    };
    let old = tcgetattr(&tty)?;
    let mut quiet = old.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    // Echo off before the prompt shows: what is typed once it is up is never echoed.
    tcsetattr(&tty, OptionalActions::Flush, &quiet)?;
    (&tty).write_all(text.as_bytes())?;
    let r = read_line(&tty, max);
    tcsetattr(&tty, OptionalActions::Flush, &old)?;
    r.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_reads_and_truncates() {
        let mut l = Locked::with_capacity(10);
        assert_eq!(l.capacity(), 10);
        for b in b"secret" {
            l.push(*b).unwrap();
        }
        assert_eq!(l.as_bytes(), b"secret");
        l.truncate(3);
        assert_eq!(l.as_bytes(), b"sec");
        assert_eq!(format!("{l:?}"), "Locked(3 bytes)");
        assert_eq!(Locked::from_slice(b"").as_bytes(), b"");
    }

    #[test]
    fn reads_a_line_and_everything() {
        use std::os::unix::net::UnixStream;
        let (r, mut w) = UnixStream::pair().unwrap();
        w.write_all(b"one\ntwo").unwrap();
        drop(w);
        assert_eq!(read_line(&r, 100).unwrap().as_bytes(), b"one");
        assert_eq!(read_all(&r, 100).unwrap().as_bytes(), b"two");
        let (r, mut w) = UnixStream::pair().unwrap();
        w.write_all(&[b'x'; 5000]).unwrap();
        drop(w);
        assert!(read_all(&r, 4096).is_err());
    }
}
