//! The module's arguments from the PAM line, parsed once into a typed [`Options`]. An unknown or
//! malformed argument is an [`OptionError`] naming it; the module then logs it and fails closed.

use std::path::PathBuf;
use std::time::Duration;

/// Largest `timeout=`: an hour is already absurd for a local daemon, and a bound keeps
/// `now + timeout` arithmetic far from overflow.
pub const MAX_TIMEOUT_SECS: u64 = 3600;

/// What to do when otpd is not running (its socket is missing or refuses connections). Any
/// other failure denies in both modes (`relay::pam_code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Deny with PAM_AUTHINFO_UNAVAIL. The default.
    Secure,
    /// Let the login through without a second factor, logged at warning.
    Safe,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// otpd's socket (`socket=`, absolute).
    pub socket: PathBuf,
    /// Bounds the connect and every read and write to the daemon (`timeout=`, whole seconds).
    pub timeout: Duration,
    /// `failmode=secure|safe`.
    pub failmode: FailMode,
    /// `nullok`: a user with nothing enrolled passes (PAM_IGNORE).
    pub nullok: bool,
    /// `debug`: log each step and the outcome (never a message text or an answer).
    pub debug: bool,
    /// `forward_pass`: password and code come as one string (PAM_AUTHTOK, or one prompt);
    /// otpd says where the code ends, and the rest becomes PAM_AUTHTOK for the next module.
    pub forward_pass: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            socket: PathBuf::from(otp_proto::DEFAULT_SOCKET),
            timeout: Duration::from_secs(10),
            failmode: FailMode::Secure,
            nullok: false,
            debug: false,
            forward_pass: false,
        }
    }
}

/// An argument the module does not understand; `Display` names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("bad argument {0:?}: want a whole number of seconds from 1 to {MAX_TIMEOUT_SECS}")]
    Timeout(String),
    #[error("bad argument {0:?}: want failmode=secure or failmode=safe")]
    FailMode(String),
    #[error("bad argument {0:?}: want an absolute path")]
    Socket(String),
}

impl Options {
    /// Parse the PAM arguments; the last of a repeated argument wins.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Options, OptionError> {
        let mut o = Options::default();
        for arg in args {
            let arg = arg.as_ref();
            match arg.split_once('=') {
                None if arg == "nullok" => o.nullok = true,
                None if arg == "debug" => o.debug = true,
                None if arg == "forward_pass" => o.forward_pass = true,
                Some(("socket", path)) => {
                    if !path.starts_with('/') {
                        return Err(OptionError::Socket(arg.into()));
                    }
                    o.socket = path.into();
                }
                Some(("timeout", secs)) => {
                    // Digits only: `parse` would also take "+5".
                    let n = Some(secs)
                        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|s| s.parse::<u64>().ok())
                        .filter(|n| (1..=MAX_TIMEOUT_SECS).contains(n))
                        .ok_or_else(|| OptionError::Timeout(arg.into()))?;
                    o.timeout = Duration::from_secs(n);
                }
                Some(("failmode", "secure")) => o.failmode = FailMode::Secure,
                Some(("failmode", "safe")) => o.failmode = FailMode::Safe,
                Some(("failmode", _)) => return Err(OptionError::FailMode(arg.into())),
                _ => return Err(OptionError::Unknown(arg.into())),
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn no_arguments_means_the_defaults() {
        let o = Options::parse::<&str>(&[]).unwrap();
        assert_eq!(o, Options::default());
        assert_eq!(o.socket, PathBuf::from("/run/otpd/otpd.sock"));
        assert_eq!(o.timeout, Duration::from_secs(10));
        assert_eq!(o.failmode, FailMode::Secure);
        assert!(!o.nullok && !o.debug && !o.forward_pass);
    }

    #[test]
    fn every_argument_is_read() {
        let o = Options::parse(&[
            "socket=/tmp/x.sock",
            "timeout=3",
            "failmode=safe",
            "nullok",
            "debug",
            "forward_pass",
        ])
        .unwrap();
        assert_eq!(
            o,
            Options {
                socket: PathBuf::from("/tmp/x.sock"),
                timeout: Duration::from_secs(3),
                failmode: FailMode::Safe,
                nullok: true,
                debug: true,
                forward_pass: true,
            }
        );
        let o = Options::parse(&["failmode=safe", "failmode=secure", "timeout=3600"]).unwrap();
        assert_eq!(o.failmode, FailMode::Secure, "the last one wins");
        assert_eq!(o.timeout, Duration::from_secs(3600));
    }

    #[test]
    fn an_unknown_argument_is_named() {
        for bad in [
            "nulok",
            "debug=1",
            "nullok=yes",
            "use_first_pass",
            "forward_pass=1",
            "",
            "=",
            "Socket=/x",
        ] {
            let err = Options::parse(&[bad]).unwrap_err();
            assert_eq!(err, OptionError::Unknown(bad.into()));
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn a_bad_timeout_is_named() {
        for bad in [
            "timeout=0",
            "timeout=",
            "timeout=ten",
            "timeout=-1",
            "timeout=+5",
            "timeout=1.5",
            "timeout= 5",
            "timeout=3601",
            "timeout=99999999999999999999999",
        ] {
            let err = Options::parse(&["nullok", bad]).unwrap_err();
            assert_eq!(err, OptionError::Timeout(bad.into()));
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn a_bad_failmode_or_socket_is_named() {
        for bad in ["failmode=open", "failmode=", "failmode=SAFE"] {
            assert_eq!(
                Options::parse(&[bad]).unwrap_err(),
                OptionError::FailMode(bad.into())
            );
        }
        for bad in ["socket=", "socket=relative.sock", "socket=./x"] {
            assert_eq!(
                Options::parse(&[bad]).unwrap_err(),
                OptionError::Socket(bad.into())
            );
        }
    }
}
