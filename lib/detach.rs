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

/// Forks. In the child: `setsid`, stdin from /dev/null, stdout to /dev/null unless
/// `keep_stdout`, stderr to `stderr` when given (else unchanged). Refused (an error, no fork)
/// unless the process has a single thread, which is what makes forking sound: call it before
/// any runtime or other thread starts, or after all have been joined.
pub fn fork(keep_stdout: bool, stderr: Option<File>) -> io::Result<Side> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(io::Error::other(format!(
            "{threads} threads: only a single-threaded process can fork"
        )));
    }
    // SAFETY: one thread, the caller (counted just now: only it could have started another).
    unsafe { fork_single_threaded(keep_stdout, stderr) }
}

/// [`fork`] without the check.
///
/// # Safety
///
/// The process must have one thread. Only the calling thread lives on in the child: a lock
/// another thread held (the allocator's, stdio's) would stay locked there for ever.
unsafe fn fork_single_threaded(keep_stdout: bool, stderr: Option<File>) -> io::Result<Side> {
    // SAFETY: our caller promises a single-threaded process (this function's contract), so
    // the child is a complete copy with no lock held by a vanished thread.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_fork_a_threaded_process() {
        // The test harness runs each test on a thread of its own: two threads at least.
        match fork(true, None) {
            Err(e) => assert!(e.to_string().contains("threads"), "{e}"),
            Ok(Side::Child) => std::process::exit(0),
            Ok(Side::Parent(_)) => panic!("forked a threaded process"),
        }
    }
}
