//! `forward_pass`: for clients that ask once (OpenVPN, RADIUS front ends), the password and the
//! code come as one string. The module only moves it: it takes PAM_AUTHTOK (or asks once,
//! "Password & verification code:"), sends all of it to otpd, which decides where the code ends
//! and judges it, and sets PAM_AUTHTOK to what otpd hands back, for `pam_unix.so
//! use_first_pass` after it. Whatever else happens, PAM_AUTHTOK is removed, so the code is
//! never left in it; the one exception is `failmode=safe` with otpd absent, where what was
//! typed is passed on as it is (nobody can say where the code ends: type the password alone).

use crate::conv::Handle;
use crate::log::Log;
use crate::relay::{Conversation, Relayed};
use otp_proto::{Outcome, Secret};
use pamsm::PamError;

/// The one prompt, when the application has set no PAM_AUTHTOK.
pub const PROMPT: &str = "Password & verification code: ";

/// What the user typed: PAM_AUTHTOK if set, else the answer to `PROMPT` (`None`: no answer).
pub fn typed(handle: Handle, conv: &mut dyn Conversation) -> Option<Secret> {
    handle.authtok().or_else(|| conv.prompt(PROMPT, false).ok())
}

/// Set PAM_AUTHTOK after the login: the password otpd handed back on Allow or Ignore, else
/// nothing. Returns the PAM code, which fails closed when the password cannot be passed on.
pub fn pass_on(
    handle: Handle,
    log: &Log,
    result: &Relayed,
    code: PamError,
    typed: Secret,
) -> PamError {
    match result {
        Relayed::DecidedWithPassword(Outcome::Allow | Outcome::Ignore, password) => {
            if handle.set_authtok(Some(password)) {
                return code;
            }
            log.err("cannot set PAM_AUTHTOK to the password otpd handed back; denying");
        }
        Relayed::Decided(Outcome::Allow | Outcome::Ignore) => {
            log.err("otpd handed back no password (forward_pass); denying");
        }
        Relayed::Absent(_) if code == PamError::SUCCESS => {
            // failmode=safe let the login through: what was typed goes on unchanged.
            if handle.set_authtok(Some(&typed)) {
                return code;
            }
            log.err("cannot set PAM_AUTHTOK; denying");
        }
        _ => {
            clear(handle, log);
            return code;
        }
    }
    clear(handle, log);
    PamError::AUTH_ERR
}

fn clear(handle: Handle, log: &Log) {
    if !handle.set_authtok(None) {
        log.err("cannot remove PAM_AUTHTOK");
    }
}
