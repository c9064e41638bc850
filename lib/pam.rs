//! Password checks through PAM (`pam_authenticate` then `pam_acct_mgmt`), and the uid/gid of
//! the account from NSS. Blocking: call it from a blocking thread.

use std::ffi::{CStr, CString};

use zeroize::Zeroizing;

/// The Unix identity of an authenticated user, when NSS knows one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ids {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum PamFailure {
    #[error("PAM service name or user contains a NUL byte")]
    BadInput,
    #[error("pam_start failed: {0}")]
    Start(String),
    #[error("{0}")]
    Refused(String),
}

/// Answers the login prompt with the user name and every hidden prompt with the password;
/// informational messages get nothing (the original answered them with the password too).
struct Conv {
    user: String,
    password: Zeroizing<Vec<u8>>,
}

impl pam::Converse for Conv {
    fn prompt_echo(&mut self, _msg: &CStr) -> Result<CString, ()> {
        CString::new(self.user.clone()).map_err(|_| ())
    }
    fn prompt_blind(&mut self, _msg: &CStr) -> Result<CString, ()> {
        // libpam frees and overwrites its copy; ours is zeroized on drop.
        CString::new(self.password.to_vec()).map_err(|_| ())
    }
    fn info(&mut self, _msg: &CStr) {}
    fn error(&mut self, _msg: &CStr) {}
    fn username(&self) -> &str {
        &self.user
    }
}

/// Checks `user`'s `password` against the PAM service `service`.
pub fn authenticate(service: &str, user: &str, password: &[u8]) -> Result<Ids, PamFailure> {
    if service.contains('\0') || user.contains('\0') || password.contains(&0) {
        return Err(PamFailure::BadInput);
    }
    let conv = Conv {
        user: user.to_string(),
        password: Zeroizing::new(password.to_vec()),
    };
    let mut auth = pam::Authenticator::with_handler(service, conv)
        .map_err(|e| PamFailure::Start(e.to_string()))?;
    auth.authenticate()
        .map_err(|e| PamFailure::Refused(e.to_string()))?;
    drop(auth);
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
