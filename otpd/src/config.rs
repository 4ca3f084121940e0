//! The configuration schema, `/etc/otpd/otpd.toml`, documented where it is defined.
//!
//! Every key has a default, so an empty file (or no file at all) is a working configuration.
//! Values are checked while parsing, so each error carries the file, line and key it came from.

use serde::{de, Deserialize, Deserializer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where `otpd` and `otpctl` look without `--config`.
pub const DEFAULT_PATH: &str = "/etc/otpd/otpd.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The Unix socket `pam_otp` and `otpctl` connect to.
    pub socket: PathBuf,
    /// Enrollments and replay state; created 0700.
    pub state_dir: PathBuf,
    /// Members of this group may run admin commands (root always may).
    pub admin_group: Option<String>,
    /// How long a login waits for the person to type a code.
    #[serde(deserialize_with = "duration")]
    pub answer_timeout: Duration,
    pub totp: TotpConfig,
    pub lockout: LockoutConfig,
}

/// `[totp]`: what new enrollments get, and how much clock drift verification tolerates.
/// Algorithm, digits and period are stored with each enrollment, so changing them here never
/// breaks an authenticator app that is already set up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TotpConfig {
    pub algorithm: Algorithm,
    #[serde(deserialize_with = "digits")]
    pub digits: u8,
    /// Seconds per time step (RFC 6238's X).
    #[serde(deserialize_with = "period")]
    pub period: u64,
    /// Steps accepted either side of now (RFC 6238 §5.2 recommends 1).
    #[serde(deserialize_with = "skew")]
    pub skew: u8,
    /// Shown in the authenticator app; the host name when unset.
    pub issuer: Option<String>,
}

/// `[lockout]`: `max_failures` failed codes within `window` lock the user for `lock_for`
/// (NIST SP 800-63B §5.2.2 asks for a limit of at most 100; we default far lower).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    #[serde(deserialize_with = "max_failures")]
    pub max_failures: u32,
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    #[serde(deserialize_with = "duration")]
    pub lock_for: Duration,
}

/// The HMAC of RFC 6238.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Algorithm {
    SHA1,
    SHA256,
    SHA512,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: PathBuf::from(otp_proto::DEFAULT_SOCKET),
            state_dir: PathBuf::from("/var/lib/otpd"),
            admin_group: None,
            answer_timeout: Duration::from_secs(300),
            totp: TotpConfig::default(),
            lockout: LockoutConfig::default(),
        }
    }
}

impl Default for TotpConfig {
    fn default() -> Self {
        TotpConfig {
            algorithm: Algorithm::SHA1,
            digits: 6,
            period: 30,
            skew: 1,
            issuer: None,
        }
    }
}

impl Default for LockoutConfig {
    fn default() -> Self {
        LockoutConfig {
            max_failures: 5,
            window: Duration::from_secs(15 * 60),
            lock_for: Duration::from_secs(15 * 60),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::SHA1 => "SHA1",
            Algorithm::SHA256 => "SHA256",
            Algorithm::SHA512 => "SHA512",
        })
    }
}

/// A configuration that could not be used, said the way an admin fixes it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {key}{message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        /// `section.key: `, or empty when the error is not about one key.
        key: String,
        message: String,
    },
}

impl Config {
    /// Read and check a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// The file at `path` if it exists; the built-in defaults when the default path is absent.
    pub fn load_or_default(path: &Path) -> Result<Config, ConfigError> {
        match Config::load(path) {
            Err(ConfigError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound
                    && path == Path::new(DEFAULT_PATH) =>
            {
                Ok(Config::default())
            }
            other => other,
        }
    }

    /// Parse `text`; `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            let (line, column) = line_and_column(text, offset);
            let key = key_at(text, offset)
                .map(|k| format!("{k}: "))
                .unwrap_or_default();
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                key,
                message: e.message().to_owned(),
            }
        })
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

/// The dotted key whose line holds `offset`, e.g. `lockout.window`, found from the line's
/// `key =` and the nearest `[section]` above it.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))?;
    let section = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.strip_prefix('[')
            .and_then(|l| l.strip_suffix(']'))
            .map(|s| s.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
    });
    Some(match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_owned(),
    })
}

/// "90s", "5m", "1h 30m": humantime's syntax.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    let value = humantime::parse_duration(&s).map_err(|e| {
        de::Error::custom(format!(
            "{s:?} is not a duration like \"30s\" or \"5m\": {e}"
        ))
    })?;
    if value.is_zero() {
        return Err(de::Error::custom("must be longer than zero"));
    }
    Ok(value)
}

fn in_range<'de, D, T>(d: D, lo: T, hi: T, what: &str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + PartialOrd + fmt::Display + Copy,
{
    let v = T::deserialize(d)?;
    if v < lo || v > hi {
        return Err(de::Error::custom(format!(
            "{what} must be between {lo} and {hi}, not {v}"
        )));
    }
    Ok(v)
}

fn digits<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    in_range(d, 6, 8, "digits")
}

fn period<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, 15, 300, "period")
}

fn skew<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    in_range(d, 0, 10, "skew")
}

fn max_failures<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, 1, 100, "max_failures")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("otpd.toml"), text)
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.socket, PathBuf::from("/run/otpd/otpd.sock"));
        assert_eq!(c.totp.digits, 6);
        assert_eq!(c.totp.algorithm, Algorithm::SHA1);
        assert_eq!(c.lockout.window, Duration::from_secs(900));
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(
            r#"
socket = "/tmp/s.sock"
state_dir = "/tmp/state"
admin_group = "wheel"
answer_timeout = "2m"
[totp]
algorithm = "SHA512"
digits = 8
period = 60
skew = 2
issuer = "Example"
[lockout]
max_failures = 3
window = "10m"
lock_for = "1h"
"#,
        )
        .unwrap();
        assert_eq!(c.admin_group.as_deref(), Some("wheel"));
        assert_eq!(c.answer_timeout, Duration::from_secs(120));
        assert_eq!(c.totp.algorithm, Algorithm::SHA512);
        assert_eq!((c.totp.digits, c.totp.period, c.totp.skew), (8, 60, 2));
        assert_eq!(c.lockout.lock_for, Duration::from_secs(3600));
    }

    #[test]
    fn a_bad_value_names_file_line_and_key() {
        let err = parse("socket = \"/s\"\n\n[totp]\ndigits = 9\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("otpd.toml:4:"), "{text}");
        assert!(text.contains("totp.digits: "), "{text}");
        assert!(text.contains("between 6 and 8"), "{text}");
    }

    #[test]
    fn an_unknown_key_is_an_error_not_ignored() {
        let text = parse("[lockout]\nmax_failure = 3\n")
            .unwrap_err()
            .to_string();
        assert!(text.contains("otpd.toml:2:"), "{text}");
        assert!(text.contains("lockout.max_failure"), "{text}");
        assert!(text.contains("unknown field"), "{text}");
    }

    #[test]
    fn a_bad_duration_says_what_a_duration_looks_like() {
        let text = parse("[lockout]\nwindow = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(text.contains("lockout.window"), "{text}");
        assert!(text.contains("\"5m\""), "{text}");
    }

    #[test]
    fn an_unknown_algorithm_is_refused() {
        let text = parse("[totp]\nalgorithm = \"MD5\"\n")
            .unwrap_err()
            .to_string();
        assert!(text.contains("totp.algorithm"), "{text}");
    }

    #[test]
    fn a_missing_default_file_means_defaults_but_a_named_one_is_an_error() {
        let named = Config::load_or_default(Path::new("/nonexistent/otpd.toml"));
        assert!(matches!(named, Err(ConfigError::Read { .. })));
    }
}
