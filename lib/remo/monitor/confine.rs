//! Starting the network process under its own identity, and what it does to itself before it
//! reads the network: no core dumps, no file system (Landlock), no TCP binds or connects.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Where systemd's `DynamicUser=` takes its ids; our fallback for a missing network user.
const DYNAMIC_IDS: std::ops::RangeInclusive<u32> = 61184..=65519;

/// The network process's uid and gid from `--privsep-user`: a user name, or `UID[:GID]`.
/// Root is refused.
pub fn network_user(spec: &str) -> Result<(u32, u32), String> {
    let ids = if let Some((u, g)) = spec.split_once(':') {
        match (u.parse(), g.parse()) {
            (Ok(u), Ok(g)) => (u, g),
            _ => return Err(format!("--privsep-user {spec:?}: not UID:GID")),
        }
    } else if let Ok(u) = spec.parse::<u32>() {
        (u, u)
    } else {
        match nix::unistd::User::from_name(spec) {
            Ok(Some(pw)) => (pw.uid.as_raw(), pw.gid.as_raw()),
            _ => return Err(format!("user {spec:?} does not exist")),
        }
    };
    if ids.0 == 0 || ids.1 == 0 {
        return Err(format!(
            "--privsep-user {spec:?}: the network process never runs as root"
        ));
    }
    Ok(ids)
}

/// An id of the dynamic range that no user and no group has (as systemd's `DynamicUser=`
/// picks one), for when the packaged user is missing.
pub fn unused_dynamic_id() -> Option<u32> {
    use nix::unistd::{Gid, Group, Uid, User};
    DYNAMIC_IDS.rev().find(|&id| {
        matches!(User::from_uid(Uid::from_raw(id)), Ok(None))
            && matches!(Group::from_gid(Gid::from_raw(id)), Ok(None))
    })
}

/// Starts `remod --network-process` (this very executable): the channel at descriptor 3,
/// `listeners` at 4, 5, ...; nothing else open; as `ids` (when given) with no supplementary
/// group and so no capability; `no_new_privs`.
pub fn start_network_process(
    channel: OwnedFd,
    listeners: &[OwnedFd],
    ids: Option<(u32, u32)>,
) -> io::Result<std::process::Child> {
    // Copies above every target number, so no dup2 below overwrites a source.
    let floor = 16 + listeners.len() as i32;
    let dup_high = |fd: &OwnedFd| rustix::io::fcntl_dupfd_cloexec(fd.as_fd(), floor);
    let mut sources = vec![dup_high(&channel)?];
    for l in listeners {
        sources.push(dup_high(l)?);
    }
    let raw: Vec<i32> = sources.iter().map(|f| f.as_raw_fd()).collect();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("remod").arg("--network-process").env_clear();
    for k in [
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "JOURNAL_STREAM",
        "RUST_BACKTRACE",
    ] {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::null()).current_dir("/");
    // SAFETY: the closure runs in the forked child before execve and makes only
    // async-signal-safe system calls (dup2, close_range, setgroups, setresgid, setresuid,
    // prctl); it reads only what it captured.
    unsafe {
        cmd.pre_exec(move || {
            for (i, fd) in raw.iter().enumerate() {
                // dup2 clears close-on-exec on the new descriptor.
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Everything else closes at exec (std's exec-error pipe must stay open until then).
            let first = 3 + raw.len() as libc::c_uint;
            libc::syscall(
                libc::SYS_close_range,
                first,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            if let Some((uid, gid)) = ids {
                if libc::setgroups(0, std::ptr::null()) < 0
                    || libc::setresgid(gid, gid, gid) < 0
                    || libc::setresuid(uid, uid, uid) < 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(sources);
    drop(channel);
    child
}

/// The network process confines itself, once its descriptors and logging are set up and
/// before it reads the network: non-dumpable (an `execve` made it dumpable again), and, where
/// the kernel has Landlock, no file-system access at all and no TCP bind or connect (it only
/// accepts on the sockets it was given). Returns what could not be applied, for the log.
pub fn confine_network_process() -> Vec<&'static str> {
    crate::secret::no_dumps();
    // Its name in ps and top ("exe" after an execve of /proc/self/exe).
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"remod-net".as_ptr(), 0, 0, 0) };
    let mut missing = Vec::new();
    if let Err(what) = landlock_deny_all() {
        missing.push(what);
    }
    missing
}

const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// A Landlock domain that handles every access right this kernel knows and allows none.
fn landlock_deny_all() -> Result<(), &'static str> {
    // SAFETY: landlock_create_ruleset with a null attribute and the VERSION flag only
    // returns the ABI version.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if abi < 1 {
        return Err("landlock (kernel without it): the network process keeps file-system access");
    }
    // Access rights by ABI version (linux/landlock.h).
    let mut fs: u64 = (1 << 13) - 1; // EXECUTE .. MAKE_SYM
    if abi >= 2 {
        fs |= 1 << 13; // REFER
    }
    if abi >= 3 {
        fs |= 1 << 14; // TRUNCATE
    }
    if abi >= 5 {
        fs |= 1 << 15; // IOCTL_DEV
    }
    let attr = RulesetAttr {
        handled_access_fs: fs,
        handled_access_net: if abi >= 4 { 0b11 } else { 0 }, // BIND_TCP, CONNECT_TCP
        scoped: if abi >= 6 { 0b10 } else { 0 },             // SIGNAL
    };
    let size = match abi {
        1..=3 => 8,
        4..=5 => 16,
        _ => 24,
    };
    // SAFETY: `attr` outlives the call and `size` is at most its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            size as usize,
            0u32,
        )
    };
    if fd < 0 {
        return Err("landlock (ruleset refused): the network process keeps file-system access");
    }
    // SAFETY: restrict_self on the ruleset just made; no_new_privs was set before execve.
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd as libc::c_int, 0u32) };
    // SAFETY: the ruleset descriptor is ours and used no more.
    unsafe { libc::close(fd as libc::c_int) };
    if r < 0 {
        return Err(
            "landlock (restrict_self refused): the network process keeps file-system access",
        );
    }
    Ok(())
}
