//! The module's arguments, parsed once into a typed `Options`. An unknown or malformed argument
//! is an error naming it: the module then logs it and fails closed.

use std::path::PathBuf;
use std::time::Duration;

/// What to do when otpd cannot be reached or does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Deny (PAM_AUTHINFO_UNAVAIL). The default.
    Secure,
    /// Let the login through without a second factor, logged at warning.
    Safe,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub socket: PathBuf,
    /// Bounds the connect and every read and write to the daemon.
    pub timeout: Duration,
    pub failmode: FailMode,
    /// A user with nothing enrolled passes (PAM_IGNORE).
    pub nullok: bool,
    pub debug: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            socket: PathBuf::from(otp_proto::DEFAULT_SOCKET),
            timeout: Duration::from_secs(10),
            failmode: FailMode::Secure,
            nullok: false,
            debug: false,
        }
    }
}

impl Options {
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Options, String> {
        let mut o = Options::default();
        for arg in args {
            let arg = arg.as_ref();
            match arg.split_once('=') {
                None if arg == "nullok" => o.nullok = true,
                None if arg == "debug" => o.debug = true,
                Some(("socket", path)) if path.starts_with('/') => o.socket = path.into(),
                Some(("timeout", secs)) => match secs.parse::<u64>() {
                    Ok(n) if (1..=3600).contains(&n) => o.timeout = Duration::from_secs(n),
                    _ => return Err(format!("bad argument {arg:?}: want 1 to 3600 seconds")),
                },
                Some(("failmode", "secure")) => o.failmode = FailMode::Secure,
                Some(("failmode", "safe")) => o.failmode = FailMode::Safe,
                _ => return Err(format!("unknown or malformed argument {arg:?}")),
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
    }

    #[test]
    fn every_argument_is_read() {
        let o = Options::parse(&[
            "socket=/tmp/x.sock",
            "timeout=3",
            "failmode=safe",
            "nullok",
            "debug",
        ])
        .unwrap();
        assert_eq!(o.socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(o.timeout, Duration::from_secs(3));
        assert_eq!(o.failmode, FailMode::Safe);
        assert!(o.nullok && o.debug);
    }

    #[test]
    fn unknown_or_malformed_arguments_are_named() {
        for bad in [
            "nulok",
            "timeout=0",
            "timeout=ten",
            "failmode=open",
            "socket=relative",
            "debug=1",
        ] {
            let err = Options::parse(&[bad]).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }
}
