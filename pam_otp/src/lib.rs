//! `pam_otp.so`: after the first factor, relay a second-factor conversation to `otpd`.
//!
//! The module holds no secret and makes no decision: it parses its arguments (`options`),
//! relays between the PAM conversation (`conv`) and the daemon (`relay`), maps the result to a
//! PAM code (`relay::pam_code`) and logs through `pam_syslog` (`log`). It starts no thread or
//! runtime in the host, bounds every socket operation by `timeout=`, and never unwinds into
//! libpam: every entry point runs under `catch_unwind`, and a panic is PAM_SERVICE_ERR.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod conv;
pub mod ffi;
pub mod forward_pass;
pub mod log;
pub mod options;
pub mod relay;

use conv::{Handle, PamConversation};
use log::Log;
use options::{FailMode, Options};
use otp_proto::{Login, Outcome, Secret};
use pamsm::{pam_module, Pam, PamError, PamFlags, PamServiceModule};
use relay::{ConvError, Conversation, Relayed};
use std::panic::{catch_unwind, AssertUnwindSafe};

struct PamOtp;

impl PamServiceModule for PamOtp {
    fn authenticate(pamh: Pam, _flags: PamFlags, args: Vec<String>) -> PamError {
        guarded(&pamh, |log| authenticate(&pamh, log, &args))
    }

    /// No credentials to set; succeed, as pam_google_authenticator does, so that a stack's
    /// setcred phase does not fail because of this line.
    fn setcred(pamh: Pam, _flags: PamFlags, _args: Vec<String>) -> PamError {
        guarded(&pamh, |_| PamError::SUCCESS)
    }

    fn acct_mgmt(pamh: Pam, _flags: PamFlags, _args: Vec<String>) -> PamError {
        guarded(&pamh, |log| auth_only(log, "account"))
    }

    fn open_session(pamh: Pam, _flags: PamFlags, _args: Vec<String>) -> PamError {
        guarded(&pamh, |log| auth_only(log, "session"))
    }

    fn close_session(pamh: Pam, _flags: PamFlags, _args: Vec<String>) -> PamError {
        guarded(&pamh, |log| auth_only(log, "session"))
    }

    fn chauthtok(pamh: Pam, _flags: PamFlags, _args: Vec<String>) -> PamError {
        guarded(&pamh, |log| auth_only(log, "password"))
    }
}

pam_module!(PamOtp);

/// Run an entry point's body; a panic must not unwind into the application: it becomes
/// PAM_SERVICE_ERR and a log line.
fn guarded(pamh: &Pam, body: impl FnOnce(&mut Log) -> PamError) -> PamError {
    // SAFETY: the handle libpam passed to this entry point; used only during the call.
    let handle = unsafe { Handle::from_pamsm(pamh) };
    let mut log = Log::new(handle);
    match catch_unwind(AssertUnwindSafe(|| body(&mut log))) {
        Ok(code) => code,
        Err(_) => {
            log.err("internal error (panic); failing closed");
            PamError::SERVICE_ERR
        }
    }
}

fn auth_only(log: &Log, facility: &str) -> PamError {
    log.err(&format!(
        "pam_otp provides only the auth facility, not {facility}; check the PAM configuration"
    ));
    PamError::SERVICE_ERR
}

fn authenticate(pamh: &Pam, log: &mut Log, args: &[String]) -> PamError {
    // SAFETY: the handle libpam passed to this entry point; used only during the call.
    let handle = unsafe { Handle::from_pamsm(pamh) };
    let options = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => {
            log.err(&format!("{e}; failing closed"));
            return PamError::SERVICE_ERR;
        }
    };
    log.set_debug(options.debug);
    let Some(user) = handle.user() else {
        log.err("no usable user name (PAM_USER unset, empty or not UTF-8); failing closed");
        return PamError::AUTH_ERR;
    };
    log.set_user(&user);
    let name = log::printable(&user);
    let mut conv = Traced {
        conv: PamConversation::new(handle),
        log,
    };
    let typed = match options.forward_pass {
        false => None,
        true => match forward_pass::typed(handle, &mut conv) {
            Some(typed) => Some(typed),
            None => return PamError::AUTH_ERR,
        },
    };
    let begin = Login {
        service: handle.service().unwrap_or_default(),
        rhost: handle.rhost(),
        tty: handle.tty(),
        nullok: options.nullok,
        user,
        forward_pass: typed.clone(),
    };
    log.debug(&format!(
        "asking otpd at {} (timeout {} s, failmode {:?}, nullok {})",
        options.socket.display(),
        options.timeout.as_secs(),
        options.failmode,
        options.nullok
    ));
    let result = relay::login(&options, begin, &mut conv);
    let mut code = relay::pam_code(&result, &options);
    if let Some(typed) = typed {
        code = forward_pass::pass_on(handle, log, &result, code, typed);
    }
    report(log, &name, &options, &result, code);
    code
}

/// One line about how the login ended. otpd writes the audit line for every decision, so a
/// decision is logged here only with `debug`; everything the daemon cannot know is logged.
fn report(log: &Log, user: &str, options: &Options, result: &Relayed, code: PamError) {
    match result {
        Relayed::Decided(outcome) | Relayed::DecidedWithPassword(outcome, _) => {
            log.debug(&format!(
                "otpd decided {}: {code:?}",
                match outcome {
                    Outcome::Allow => "allow".to_owned(),
                    Outcome::Ignore => "ignore".to_owned(),
                    Outcome::Deny(why) => format!("deny ({why:?})"),
                }
            ))
        }
        Relayed::Absent(e) => match options.failmode {
            FailMode::Safe => log.warning(&format!(
                "otpd is not running ({e}), letting {user} in without a second factor \
                 (failmode=safe)"
            )),
            FailMode::Secure => log.err(&format!(
                "otpd is not running ({e}); denying (failmode=secure)"
            )),
        },
        Relayed::Broken(e) => log.err(&format!(
            "exchange with otpd failed ({e}); denying whatever failmode says"
        )),
        Relayed::ConvFailed => {
            log.notice("the conversation failed (the user gave up or could not be asked); denying")
        }
    }
}

/// The PAM conversation with a debug line for each message: its kind, never its text.
struct Traced<'a> {
    conv: PamConversation,
    log: &'a Log,
}

impl Conversation for Traced<'_> {
    fn prompt(&mut self, text: &str, echo: bool) -> Result<Secret, ConvError> {
        self.log.debug(&format!(
            "prompt (echo {})",
            if echo { "on" } else { "off" }
        ));
        let answer = self.conv.prompt(text, echo);
        if answer.is_err() {
            self.log.debug("the prompt got no answer");
        }
        answer
    }

    fn info(&mut self, text: &str) {
        self.log.debug("info message");
        self.conv.info(text);
    }

    fn error(&mut self, text: &str) {
        self.log.debug("error message");
        self.conv.error(text);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::ffi::c_void;

    /// libpam's functions accept a null handle (pam_get_user fails, pam_syslog logs without a
    /// prefix), which lets the entry points run here without an application.
    fn null_handle() -> Pam {
        // SAFETY: `Pam` is `#[repr(transparent)]` over `*const c_void`.
        unsafe { std::mem::transmute::<*const c_void, Pam>(std::ptr::null()) }
    }

    #[test]
    fn a_panic_becomes_service_err() {
        let code = guarded(&null_handle(), |_| panic!("boom"));
        assert_eq!(code, PamError::SERVICE_ERR);
    }

    #[test]
    fn a_bad_argument_fails_closed_before_anything_else() {
        let args = vec!["nullok".to_owned(), "failmode=open".to_owned()];
        let code = PamOtp::authenticate(null_handle(), PamFlags::empty(), args);
        assert_eq!(code, PamError::SERVICE_ERR);
    }

    #[test]
    fn no_user_is_a_failure_even_in_safe_mode() {
        let args = vec!["failmode=safe".to_owned()];
        let code = PamOtp::authenticate(null_handle(), PamFlags::empty(), args);
        assert_eq!(code, PamError::AUTH_ERR);
    }

    #[test]
    fn setcred_succeeds_and_other_facilities_are_refused() {
        assert_eq!(
            PamOtp::setcred(null_handle(), PamFlags::empty(), vec![]),
            PamError::SUCCESS
        );
        assert_eq!(
            PamOtp::acct_mgmt(null_handle(), PamFlags::empty(), vec![]),
            PamError::SERVICE_ERR
        );
        assert_eq!(
            PamOtp::open_session(null_handle(), PamFlags::empty(), vec![]),
            PamError::SERVICE_ERR
        );
        assert_eq!(
            PamOtp::chauthtok(null_handle(), PamFlags::empty(), vec![]),
            PamError::SERVICE_ERR
        );
    }
}
