//! `pam_otp.so`: after the first factor, relay a second-factor conversation to `otpd`.
//!
//! The module holds no secret and makes no decision: it parses its arguments (`options`),
//! relays between the PAM conversation (`conv`) and the daemon (`relay`), and maps the result
//! to a PAM code. It starts no thread or runtime in the host, bounds every socket operation by
//! `timeout=`, and never unwinds into libpam.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod conv;
pub mod ffi;
pub mod options;
pub mod relay;

use conv::Handle;
use options::{FailMode, Options};
use otp_proto::Login;
use pamsm::{pam_module, Pam, PamError, PamFlags, PamServiceModule};
use relay::{PamCode, Relayed};
use std::panic::{catch_unwind, AssertUnwindSafe};

const LOG_ERR: i32 = libc::LOG_ERR;
const LOG_WARNING: i32 = libc::LOG_WARNING;
const LOG_INFO: i32 = libc::LOG_INFO;
const LOG_DEBUG: i32 = libc::LOG_DEBUG;

struct PamOtp;

impl PamServiceModule for PamOtp {
    fn authenticate(pamh: Pam, _flags: PamFlags, args: Vec<String>) -> PamError {
        guarded(&pamh, || authenticate(&pamh, &args))
    }

    /// No credentials to set; succeed like pam_google_authenticator.
    fn setcred(_pamh: Pam, _flags: PamFlags, _args: Vec<String>) -> PamError {
        PamError::SUCCESS
    }
}

pam_module!(PamOtp);

/// A panic must not unwind into sshd: turn it into PAM_SERVICE_ERR.
fn guarded(pamh: &Pam, f: impl FnOnce() -> PamError) -> PamError {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        // SAFETY: the handle libpam passed to this entry point.
        let handle = unsafe { Handle::from_pamsm(pamh) };
        handle.log(LOG_ERR, "internal error (panic); failing closed");
        PamError::SERVICE_ERR
    })
}

fn authenticate(pamh: &Pam, args: &[String]) -> PamError {
    // SAFETY: the handle libpam passed to this entry point.
    let mut handle = unsafe { Handle::from_pamsm(pamh) };
    let options = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => {
            handle.log(LOG_ERR, &format!("{e}; failing closed"));
            return PamError::SERVICE_ERR;
        }
    };
    let Some(user) = handle.user() else {
        handle.log(LOG_ERR, "no user name; failing closed");
        return PamError::USER_UNKNOWN;
    };
    let begin = Login {
        service: handle.service().unwrap_or_default(),
        rhost: handle.rhost(),
        tty: handle.tty(),
        nullok: options.nullok,
        user,
    };
    let user = begin.user.clone();
    let result = relay::login(&options, begin, &mut handle);
    log_result(&handle, &options, &user, &result);
    match relay::pam_code(&result, options.failmode) {
        PamCode::Success => PamError::SUCCESS,
        PamCode::Ignore => PamError::IGNORE,
        PamCode::AuthErr => PamError::AUTH_ERR,
        PamCode::AuthInfoUnavail => PamError::AUTHINFO_UNAVAIL,
        PamCode::ConvErr => PamError::CONV_ERR,
    }
}

fn log_result(handle: &Handle, options: &Options, user: &str, result: &Relayed) {
    match result {
        Relayed::Unreachable(e) if options.failmode == FailMode::Safe => handle.log(
            LOG_WARNING,
            &format!("user={user}: otpd unreachable ({e}); letting in without a second factor (failmode=safe)"),
        ),
        Relayed::Unreachable(e) => {
            handle.log(LOG_ERR, &format!("user={user}: otpd unreachable: {e}"))
        }
        Relayed::Broken(e) => handle.log(LOG_ERR, &format!("user={user}: otpd exchange failed: {e}")),
        Relayed::ConvFailed => handle.log(LOG_INFO, &format!("user={user}: conversation ended")),
        Relayed::Decided(outcome) if options.debug => {
            handle.log(LOG_DEBUG, &format!("user={user}: {outcome:?}"))
        }
        Relayed::Decided(_) => {}
    }
}
