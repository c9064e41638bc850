//! Private files: written 0600, atomically (a temporary file in the same directory, created
//! with O_EXCL|O_NOFOLLOW, then renamed over the target, so a symlink planted at the target
//! is replaced, never followed), and removed again only if they are still the file we wrote.
//! Keys and other files nobody can make again ([`write_key`]) never replace an existing file
//! unless told to (`--force` of the tools that write them). [`Stamp`] tells a daemon that a
//! file it loaded has changed since.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};

/// Identity (device, inode) of a file we wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

/// What a daemon compares to notice that a file it loaded was changed or replaced: device,
/// inode, size and modification time to the nanosecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    /// The stamp of the file at `path` now (following symlinks, as loading it does).
    pub fn of(path: &Path) -> io::Result<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        })
    }
}

fn split(path: &Path) -> io::Result<(OwnedFd, std::ffi::OsString)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?
        .to_os_string();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok((fd, name))
}

/// Writes `data` to `path` with mode 0600, atomically, without following a symlink at `path`.
pub fn write_private(path: &Path, data: &[u8]) -> io::Result<FileId> {
    write(path, data, 0o600, true)
}

/// Writes `data` to `path` as [`write_private`] does, with `mode` instead of 0600 (set on the
/// temporary file through its descriptor, before it takes the name: never by path), for a
/// key (or anything else that cannot be made again): unless
/// `force`, an existing `path` (even a dangling symlink) is left alone and the error is
/// [`exists`]'s. The check and the rename are one step (`RENAME_NOREPLACE`), so no race
/// replaces a key.
pub fn write_key(path: &Path, data: &[u8], mode: u32, force: bool) -> io::Result<FileId> {
    if !force {
        refuse_existing(path)?;
    }
    write(path, data, mode, force)
}

/// The error for a file that exists and is not to be replaced without `--force`.
pub fn exists() -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        "exists; not replaced (give --force to replace it)",
    )
}

/// Fails with [`exists`] if `path` exists (as anything, a dangling symlink included): for
/// tools that write several files, to check them all before writing any.
pub fn refuse_existing(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Err(exists()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn write(path: &Path, data: &[u8], mode: u32, replace: bool) -> io::Result<FileId> {
    let (dir, name) = split(path)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(&name);
    tmp_name.push(format!(".{}.tmp", crate::secret::hex_token(6)));
    let fd = rustix::fs::openat(
        &dir,
        tmp_name.as_os_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let written = (|| -> io::Result<FileId> {
        // The umask may have taken bits off at creation: set the mode itself.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
        let mut f = std::fs::File::from(fd);
        io::Write::write_all(&mut f, data)?;
        f.sync_all()?;
        let st = rustix::fs::fstat(&f)?;
        let flags = if replace {
            RenameFlags::empty()
        } else {
            RenameFlags::NOREPLACE
        };
        rustix::fs::renameat_with(&dir, tmp_name.as_os_str(), &dir, name.as_os_str(), flags)
            .map_err(|e| match e {
                rustix::io::Errno::EXIST => exists(),
                e => e.into(),
            })?;
        Ok(FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    })();
    match written {
        Ok(id) => {
            let _ = rustix::fs::fsync(&dir);
            Ok(id)
        }
        Err(e) => {
            let _ = rustix::fs::unlinkat(&dir, tmp_name.as_os_str(), AtFlags::empty());
            Err(e)
        }
    }
}

/// Removes `path` if it is still the file `id` (not replaced by someone else since).
/// Returns whether it was removed.
pub fn remove_if_same(path: &Path, id: FileId) -> io::Result<bool> {
    let (dir, name) = split(path)?;
    let st = match rustix::fs::statat(&dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if st.st_dev != id.dev || st.st_ino != id.ino {
        return Ok(false);
    }
    rustix::fs::unlinkat(&dir, name.as_os_str(), AtFlags::empty())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_0600_replaces_symlinks_and_removes_only_its_own() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let p = d.path().join("f.json");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        let id = write_private(&p, b"data").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"data");
        let other = write_private(&p, b"other").unwrap();
        assert!(!remove_if_same(&p, id).unwrap());
        assert!(remove_if_same(&p, other).unwrap());
        assert!(!p.exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        write(&p, b"public", 0o644, true).unwrap();
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o644);
    }

    #[test]
    fn keys_are_not_replaced_without_force() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("key.pem");
        write_key(&p, b"first", 0o600, false).unwrap();
        let e = write_key(&p, b"second", 0o600, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(e.to_string().contains("--force"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        // A dangling symlink counts as existing: nothing is written through or over it.
        let l = d.path().join("link.pem");
        std::os::unix::fs::symlink(d.path().join("nowhere"), &l).unwrap();
        assert!(write_key(&l, b"x", 0o600, false).is_err());
        assert!(!d.path().join("nowhere").exists());
        write_key(&p, b"second", 0o600, true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        // No temporary file is left behind by the refusals.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
    }
}
