//! Syslog lines through `pam_syslog` (LOG_AUTHPRIV), which prefixes `pam_otp(SERVICE:auth): `;
//! each line then names the user. Debug lines only with the `debug` argument. Nothing typed by a
//! user and no text from the daemon is ever logged: prompts may carry a key being enrolled.

use crate::conv::Handle;
use crate::ffi::pam_syslog;
use std::ffi::{c_int, CString};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Err,
    Warning,
    Notice,
    Debug,
}

impl Level {
    fn priority(self) -> c_int {
        match self {
            Level::Err => libc::LOG_ERR,
            Level::Warning => libc::LOG_WARNING,
            Level::Notice => libc::LOG_NOTICE,
            Level::Debug => libc::LOG_DEBUG,
        }
    }
}

/// The module's logger for one entry-point call.
pub struct Log {
    pamh: Handle,
    debug: bool,
    /// `user=NAME ` once the user is known, so that every later line names them.
    user: String,
}

impl Log {
    pub fn new(pamh: Handle) -> Log {
        Log {
            pamh,
            debug: false,
            user: String::new(),
        }
    }

    pub fn set_debug(&mut self, debug: bool) {
        self.debug = debug;
    }

    pub fn set_user(&mut self, user: &str) {
        self.user = format!("user={} ", printable(user));
    }

    pub fn err(&self, message: &str) {
        self.line(Level::Err, message);
    }

    pub fn warning(&self, message: &str) {
        self.line(Level::Warning, message);
    }

    pub fn notice(&self, message: &str) {
        self.line(Level::Notice, message);
    }

    pub fn debug(&self, message: &str) {
        if self.debug {
            self.line(Level::Debug, message);
        }
    }

    pub fn line(&self, level: Level, message: &str) {
        let text = format!("{}{}", self.user, printable(message));
        if let Ok(text) = CString::new(text) {
            // SAFETY: valid handle; a constant "%s" format with one C string argument.
            unsafe {
                pam_syslog(
                    self.pamh.raw(),
                    level.priority(),
                    c"%s".as_ptr(),
                    text.as_ptr(),
                )
            };
        }
    }
}

/// One line, whatever a user name or an error carries: control characters (NUL, newline) become
/// `?`, so a crafted name cannot forge or split log lines.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_split_a_line() {
        assert_eq!(
            printable("alice\nJan 1 sshd: Accepted\0"),
            "alice?Jan 1 sshd: Accepted?"
        );
        assert_eq!(printable("jörg"), "jörg");
    }
}
