//! Private files: written 0600, atomically (a temporary file in the same directory, created
//! with O_EXCL|O_NOFOLLOW, then renamed over the target, so a symlink planted at the target
//! is replaced, never followed), and removed again only if they are still the file we wrote.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags};

/// Identity (device, inode) of a file we wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
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
    write_with_mode(path, data, 0o600)
}

/// Writes `data` to `path` as [`write_private`] does, with `mode` instead of 0600 (set on the
/// temporary file through its descriptor, before it takes the name: never by path).
pub fn write_with_mode(path: &Path, data: &[u8], mode: u32) -> io::Result<FileId> {
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
        rustix::fs::renameat(&dir, tmp_name.as_os_str(), &dir, name.as_os_str())?;
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
        write_with_mode(&p, b"public", 0o644).unwrap();
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o644);
    }
}
