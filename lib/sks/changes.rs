//! The store's change counter: eight bytes in `DIR/skd.changes`, mapped shared by skd and by
//! every `tokenctl skd` that writes the store. A writer adds one after each commit; skd reads
//! it on every `/valid`, which costs a memory read where asking SQLite (`PRAGMA
//! data_version`) cost a read transaction. A cached answer is used only while the counter
//! is unchanged, so a revocation by tokenctl is seen by the very next request.

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Changes {
    /// One page, mapped shared; the counter is its first eight bytes.
    map: *mut std::ffi::c_void,
    len: usize,
}

// SAFETY: the mapping is only read and written through `AtomicU64`, which is Sync.
unsafe impl Send for Changes {}
// SAFETY: as above.
unsafe impl Sync for Changes {}

impl Changes {
    /// Maps `path`, created (mode 0600, eight zero bytes) when `create` and it is missing.
    pub fn open(path: &Path, create: bool) -> std::io::Result<Changes> {
        use rustix::fs::{Mode, OFlags};
        let mut flags = OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        if create {
            flags |= OFlags::CREATE;
        }
        let fd = rustix::fs::open(path, flags, Mode::from_raw_mode(0o600))?;
        let st = rustix::fs::fstat(&fd)?;
        if st.st_size < 8 {
            rustix::fs::ftruncate(&fd, 8)?;
        }
        let len = 8;
        // SAFETY: a fresh shared mapping of a file at least 8 bytes long; nothing else in
        // this process maps it, and it is unmapped on drop.
        let map = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                fd.as_fd(),
                0,
            )?
        };
        Ok(Changes { map, len })
    }

    fn counter(&self) -> &AtomicU64 {
        // SAFETY: `map` is page-aligned, at least 8 bytes, mapped until drop; every process
        // touches these bytes only atomically.
        unsafe { &*(self.map as *const AtomicU64) }
    }

    pub fn get(&self) -> u64 {
        self.counter().load(Ordering::Acquire)
    }

    /// After a commit: every reader's next look sees a change.
    pub fn bump(&self) {
        self.counter().fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `open` mapped; no reference outlives `self`.
        unsafe {
            let _ = rustix::mm::munmap(self.map, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mappings_see_each_others_bumps() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("skd.changes");
        assert!(Changes::open(&p, false).is_err());
        let a = Changes::open(&p, true).unwrap();
        let b = Changes::open(&p, false).unwrap();
        let before = b.get();
        a.bump();
        assert_eq!(b.get(), before + 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    }
}
