//! Going to the background after start-up, for daemons run by hand: fork once the set-up
//! that can fail is done (so its errors still reach the caller), the parent reports and
//! exits, the child starts a new session with standard input from /dev/null.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

pub enum Side {
    /// The original process; the child's pid.
    Parent(u32),
    Child,
}

/// Forks. Must be called while the process has a single thread (before any runtime starts).
/// In the child: `setsid`, stdin from /dev/null, stdout to /dev/null unless `keep_stdout`,
/// stderr to `stderr` when given (else unchanged).
pub fn fork(keep_stdout: bool, stderr: Option<File>) -> io::Result<Side> {
    // SAFETY: the caller guarantees a single-threaded process, so the child is a complete
    // copy with no lock held by a vanished thread.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        return Ok(Side::Parent(pid as u32));
    }
    let _ = rustix::process::setsid();
    let null = File::options().read(true).write(true).open("/dev/null")?;
    for (from, to) in [
        (null.as_raw_fd(), 0),
        (if keep_stdout { 1 } else { null.as_raw_fd() }, 1),
        (stderr.as_ref().map(|f| f.as_raw_fd()).unwrap_or(2), 2),
    ] {
        if from != to {
            // SAFETY: both descriptors are open; dup2 replaces a standard stream atomically.
            if unsafe { libc::dup2(from, to) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(Side::Child)
}
