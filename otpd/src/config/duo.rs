//! `[duo]`: Duo's Auth API v2 as an upstream second factor (push, phone call, passcode). Users
//! enroll with Duo, not with otpd; otpd holds only the integration's keys.

use serde::{de, Deserialize, Deserializer};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuoConfig {
    /// The integration's API host, `api-XXXXXXXX.duosecurity.com` (a `:port` may follow, for
    /// tests and proxies). It is also what requests are signed for.
    #[serde(deserialize_with = "super::host")]
    pub api_host: String,
    /// The integration key (`DI...`): the user name of every request; it may be logged.
    #[serde(deserialize_with = "integration_key")]
    pub integration_key: String,
    /// The secret key, in a file of its own (root, mode 0600); never logged.
    #[serde(deserialize_with = "super::absolute_path")]
    pub secret_key_file: PathBuf,
    /// How long a push or a phone call may wait for the user's answer, and the bound of every
    /// request to Duo (default 60s, at most 5 minutes; raise pam_otp's `timeout=` above it).
    #[serde(
        default = "default_timeout",
        deserialize_with = "super::up_to_5_minutes"
    )]
    pub timeout: Duration,
    /// Duo unreachable (no connection, a timeout, a 5xx) before a login could start with it:
    /// `secure` denies, `safe` lets the login go on without Duo.
    #[serde(default)]
    pub failmode: DuoFailmode,
    /// Extra CA certificates (PEM) trusted for `api_host`, beside the system roots.
    #[serde(default, deserialize_with = "optional_path")]
    pub ca_file: Option<PathBuf>,
}

/// What a login does when Duo cannot be reached (`[duo] failmode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DuoFailmode {
    /// Deny (fail closed).
    #[default]
    Secure,
    /// Duo is not required: the user's other methods, or, with none, allow (logged), as Duo
    /// Unix's `failmode=safe` does.
    Safe,
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    super::absolute_path(d).map(Some)
}

/// Duo's integration keys are 20 letters and digits (`DI` and 18 more); any 1 to 64 ASCII
/// letters and digits are accepted, nothing that could break the Basic credentials.
fn integration_key<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(de::Error::custom(
            "is not an integration key (letters and digits, like \"DIXXXXXXXXXXXXXXXXXX\")",
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    const KEYS: &str = "[duo]\napi_host = \"api-abc.duosecurity.com\"\n\
                        integration_key = \"DIXXXXXXXXXXXXXXXXXX\"\n\
                        secret_key_file = \"/etc/otpd/duo.skey\"\n";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(Path::new("t.toml"), &format!("{KEYS}{extra}")).map_err(|e| e.to_string())
    }

    #[test]
    fn duo_defaults_to_a_minute_and_failmode_secure() {
        let duo = parse("").unwrap().duo.unwrap();
        assert_eq!(duo.timeout, std::time::Duration::from_secs(60));
        assert_eq!(duo.failmode, super::DuoFailmode::Secure);
        assert!(duo.ca_file.is_none());
        let safe = parse("failmode = \"safe\"\ntimeout = \"90s\"\n").unwrap();
        assert_eq!(safe.duo.unwrap().failmode, super::DuoFailmode::Safe);
    }

    #[test]
    fn bad_duo_keys_are_named() {
        for (extra, key) in [
            ("timeout = \"10m\"\n", "timeout"),
            ("failmode = \"open\"\n", "failmode"),
            ("secret_key = \"inline\"\n", "secret_key"),
            ("ca_file = \"relative.pem\"\n", "ca_file"),
        ] {
            let e = parse(extra).unwrap_err();
            assert!(e.contains(key), "{extra}: {e}");
        }
        let bad_ikey = KEYS.replace("DIXXXXXXXXXXXXXXXXXX", "DI:X");
        let e = Config::parse(Path::new("t.toml"), &bad_ikey).unwrap_err();
        assert!(e.to_string().contains("integration_key"), "{e}");
    }
}
