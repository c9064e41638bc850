//! Password checks through PAM (`pam_authenticate` then `pam_acct_mgmt`), and the uid/gid of
//! the account from NSS. Blocking: call it from a blocking thread.
//!
//! On libpam through `pam-sys` rather than the `pam` crate: that crate starts PAM with no
//! user and cannot set `PAM_RHOST` (so pam_faillock and pam_access see nothing), and its
//! conversation copies the password into buffers it frees without wiping.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;
use std::ptr;

use pam_sys::{raw, PamConversation, PamHandle, PamMessage, PamResponse, PamReturnCode};
use zeroize::Zeroizing;

/// The Unix identity of an authenticated user, when NSS knows one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ids {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum PamFailure {
    #[error("PAM service name, user or remote host contains a NUL byte")]
    BadInput,
    #[error("PAM service {0:?} is not installed (no /etc/pam.d/{0})")]
    NoService(String),
    #[error("pam_start failed: {0}")]
    Start(String),
    /// `pam_authenticate` or `pam_acct_mgmt` said no; the text is libpam's.
    #[error("{0}")]
    Refused(String),
}

/// Where libpam looks for a service's stack: `/etc/pam.d`, then the vendor directory.
const PAM_DIRS: &[&str] = &["/etc/pam.d", "/usr/lib/pam.d"];

/// True when `service` is a plain name (no `/`, not `.` or `..`) whose file exists. libpam
/// falls back to the `other` stack for a missing service; we never want that.
pub fn service_exists(service: &str) -> bool {
    valid_service_name(service)
        && PAM_DIRS
            .iter()
            .any(|d| Path::new(d).join(service).is_file())
}

/// A PAM service name skd may use: non-empty, no `/`, NUL or control character, not `.`/`..`.
pub fn valid_service_name(service: &str) -> bool {
    !service.is_empty()
        && service != "."
        && service != ".."
        && !service.chars().any(|c| c == '/' || c.is_control())
}

/// What the conversation answers: the user name to a visible prompt, the password to every
/// hidden one; informational and error messages get no answer.
struct Conv<'a> {
    user: &'a CStr,
    password: &'a [u8],
}

/// A copy of `bytes` plus a NUL in memory from `malloc`, which libpam frees.
fn c_copy(bytes: &[u8]) -> *mut c_char {
    // SAFETY: malloc of len+1 bytes; on success we write exactly len bytes and a NUL.
    unsafe {
        let p = libc::malloc(bytes.len() + 1) as *mut u8;
        if !p.is_null() {
            ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
            *p.add(bytes.len()) = 0;
        }
        p as *mut c_char
    }
}

/// Wipes and frees the first `n` answers of `resp` and the array itself.
///
/// # Safety
/// `resp` holds at least `n` entries from `calloc`, each `resp` field null or from `malloc`.
unsafe fn free_answers(resp: *mut PamResponse, n: usize) {
    for i in 0..n {
        let r = &mut *resp.add(i);
        if !r.resp.is_null() {
            let len = libc::strlen(r.resp);
            ptr::write_bytes(r.resp, 0, len);
            libc::free(r.resp as *mut c_void);
        }
    }
    libc::free(resp as *mut c_void);
}

extern "C" fn converse(
    num_msg: c_int,
    msg: *mut *mut PamMessage,
    out: *mut *mut PamResponse,
    data: *mut c_void,
) -> c_int {
    const ECHO_OFF: c_int = 1;
    const ECHO_ON: c_int = 2;
    const ERROR_MSG: c_int = 3;
    const TEXT_INFO: c_int = 4;
    let conv_err = PamReturnCode::CONV_ERR as c_int;
    if num_msg <= 0 || msg.is_null() || out.is_null() || data.is_null() {
        return conv_err;
    }
    let n = num_msg as usize;
    // SAFETY: `data` is the `Conv` that `authenticate` put in the conversation and that
    // outlives the PAM handle. Linux-PAM passes `msg` as an array of `n` message pointers.
    // `resp` is a fresh calloc'd array of `n` answers, handed to libpam (which frees it) only
    // on success, else wiped and freed here.
    unsafe {
        let conv = &*(data as *const Conv);
        let resp = libc::calloc(n, std::mem::size_of::<PamResponse>()) as *mut PamResponse;
        if resp.is_null() {
            return PamReturnCode::BUF_ERR as c_int;
        }
        for i in 0..n {
            let m = *msg.add(i);
            if m.is_null() {
                free_answers(resp, n);
                return conv_err;
            }
            let answer = match (*m).msg_style {
                ECHO_ON => c_copy(conv.user.to_bytes()),
                ECHO_OFF => c_copy(conv.password),
                ERROR_MSG | TEXT_INFO => continue,
                _ => ptr::null_mut(),
            };
            if answer.is_null() {
                free_answers(resp, n);
                return conv_err;
            }
            (*resp.add(i)).resp = answer;
        }
        *out = resp;
    }
    PamReturnCode::SUCCESS as c_int
}

/// Checks `user`'s `password` against the PAM service `service`, with `PAM_USER` set to
/// `user` and `PAM_RHOST` to `rhost` when given. Refuses a service with no file of its own.
pub fn authenticate(
    service: &str,
    user: &str,
    password: &[u8],
    rhost: Option<&str>,
) -> Result<Ids, PamFailure> {
    let (Ok(c_service), Ok(c_user), Ok(c_rhost)) = (
        CString::new(service),
        CString::new(user),
        rhost.map(CString::new).transpose(),
    ) else {
        return Err(PamFailure::BadInput);
    };
    if password.contains(&0) {
        return Err(PamFailure::BadInput);
    }
    if !service_exists(service) {
        return Err(PamFailure::NoService(service.to_string()));
    }
    let password = Zeroizing::new(password.to_vec());
    let conv = Conv {
        user: &c_user,
        password: &password,
    };
    let pc = PamConversation {
        conv: Some(converse),
        data_ptr: &conv as *const Conv as *mut c_void,
    };
    let mut handle: *const PamHandle = ptr::null();
    // SAFETY: the strings and `pc` (with `conv` behind it) live until `pam_end` below; the
    // handle is used only between a successful `pam_start` and `pam_end`.
    unsafe {
        let rc = raw::pam_start(c_service.as_ptr(), c_user.as_ptr(), &pc, &mut handle);
        if rc != PamReturnCode::SUCCESS as c_int || handle.is_null() {
            return Err(PamFailure::Start(format!("code {rc}")));
        }
        let h = handle as *mut PamHandle;
        let mut rc = match &c_rhost {
            Some(host) => raw::pam_set_item(
                h,
                pam_sys::PamItemType::RHOST as c_int,
                host.as_ptr() as *const c_void,
            ),
            None => PamReturnCode::SUCCESS as c_int,
        };
        if rc == PamReturnCode::SUCCESS as c_int {
            rc = raw::pam_authenticate(h, 0);
        }
        if rc == PamReturnCode::SUCCESS as c_int {
            rc = raw::pam_acct_mgmt(h, 0);
        }
        let why = if rc == PamReturnCode::SUCCESS as c_int {
            None
        } else {
            let s = raw::pam_strerror(h, rc);
            Some(if s.is_null() {
                format!("PAM error {rc}")
            } else {
                CStr::from_ptr(s).to_string_lossy().into_owned()
            })
        };
        raw::pam_end(h, rc);
        if let Some(why) = why {
            return Err(PamFailure::Refused(why));
        }
    }
    Ok(lookup_ids(user))
}

/// uid and gid of `user` from the passwd database, if it has an entry.
pub fn lookup_ids(user: &str) -> Ids {
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => Ids {
            uid: Some(u.uid.as_raw()),
            gid: Some(u.gid.as_raw()),
        },
        _ => Ids::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        assert!(valid_service_name("skd"));
        assert!(valid_service_name("my-realm.x"));
        for bad in ["", ".", "..", "../etc/x", "a/b", "a\nb"] {
            assert!(!valid_service_name(bad), "{bad:?}");
        }
        assert!(!service_exists("no-such-service-keysock"));
    }
}
