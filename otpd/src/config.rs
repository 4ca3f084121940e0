//! The configuration schema, `/etc/otpd/otpd.toml`, documented where it is defined.
//!
//! Every key has a default, so an empty file (or no file at all) is a working configuration.
//! Values are checked while parsing, so each error carries the file, line and key it came from.

use serde::{de, Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where `otpd` and `otpctl` look without `--config`.
pub const DEFAULT_PATH: &str = "/etc/otpd/otpd.toml";
/// `key_file` unless configured.
pub const DEFAULT_KEY_FILE: &str = "/etc/otpd/key";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The Unix socket `pam_otp` and `otpctl` connect to.
    pub socket: PathBuf,
    /// Enrollments and replay state; created 0700.
    pub state_dir: PathBuf,
    /// The key TOTP/HOTP secrets are sealed with in `state_dir`: 64 hex digits, root 0600, made
    /// by `otpd keygen`. systemd's credential `otpd.key` (`LoadCredential=`) is used instead
    /// when present. Without the key the enrollments cannot be read: back it up.
    pub key_file: PathBuf,
    /// Members of this group may run admin commands (root always may).
    pub admin_group: Option<String>,
    /// How long a login waits for the person to type a code.
    #[serde(deserialize_with = "duration")]
    pub answer_timeout: Duration,
    pub totp: TotpConfig,
    pub lockout: LockoutConfig,
    pub code: CodeConfig,
    pub policy: PolicyConfig,
    /// The email channel; absent means email codes are off.
    pub email: Option<EmailConfig>,
    /// The SMS channel; absent means SMS codes are off.
    pub sms: Option<SmsConfig>,
    /// A static directory of contact details, `[users.NAME]`. Users can also register their own
    /// address with `otpctl enroll email`, which takes precedence once confirmed.
    pub users: BTreeMap<String, UserEntry>,
}

/// `[policy]`: what happens to users without a second factor, and which method comes first.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub unenrolled: Unenrolled,
    /// Offered without asking when a user has it among several methods (a user's own
    /// `otpctl default` wins).
    pub default_method: Option<otp_proto::MethodKind>,
    /// How long the token `otpctl disable` mails to the user stays valid.
    #[serde(deserialize_with = "duration")]
    pub disable_token_ttl: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            unenrolled: Unenrolled::Deny,
            default_method: None,
            disable_token_ttl: Duration::from_secs(15 * 60),
        }
    }
}

/// A user with nothing enrolled, at login (`nullok` on the PAM line always means allow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unenrolled {
    /// Denied (fail closed).
    #[default]
    Deny,
    /// Let in without a second factor (PAM_IGNORE), logged.
    Allow,
    /// Shown a QR code in the login itself, enrolled once a code confirms it.
    Enroll,
}

/// `[code]`: codes the daemon sends (email, SMS), as opposed to codes an app computes.
/// NIST SP 800-63B §5.1.3.2 bounds their life; `ttl` defaults to 5 minutes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodeConfig {
    #[serde(deserialize_with = "code_length")]
    pub length: u8,
    pub charset: Charset,
    #[serde(deserialize_with = "duration")]
    pub ttl: Duration,
    /// Wrong answers one challenge survives.
    #[serde(deserialize_with = "max_attempts")]
    pub max_attempts: u32,
    /// Cooldown between two sends to one user.
    #[serde(deserialize_with = "duration")]
    pub resend_after: Duration,
    /// Sends to one user per hour, whatever the channel.
    #[serde(deserialize_with = "max_sends")]
    pub max_sends_per_hour: u32,
    /// Sends to one address or number per hour, whoever asks: an attacker holding several
    /// passwords still cannot pump SMS to one premium number.
    #[serde(deserialize_with = "max_sends")]
    pub max_sends_per_destination_per_hour: u32,
    /// Enrollment codes (to an address or number not yet confirmed) per hour, per requesting
    /// user and per destination. They never use up the login quotas above: nobody can lock a
    /// user out of login codes by enrolling that user's address.
    #[serde(deserialize_with = "max_sends")]
    pub max_unconfirmed_sends_per_hour: u32,
    /// Accept every open challenge's code (each once), not only the newest.
    pub concurrent_challenges: bool,
}

/// What sent codes are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Charset {
    Numeric,
    /// Upper-case letters and digits without look-alikes (no 0/O, 1/I/L).
    Alphanumeric,
}

/// `[email]`: the SMTP server codes are mailed through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub host: String,
    /// Default: 25 with `tls = "none"`, 587 with starttls, 465 with tls.
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: TlsMode,
    /// SMTP AUTH user; no username, no AUTH.
    pub username: Option<String>,
    /// A file holding the SMTP password (secrets never sit in this file).
    pub password_file: Option<PathBuf>,
    /// `From:`, e.g. `"Login codes <otp@example.com>"`.
    pub from: String,
    /// Templates: `{{code}}`, `{{user}}`, `{{host}}`, `{{validity}}`, `{{id}}`.
    #[serde(default = "default_subject")]
    pub subject: String,
    #[serde(default = "default_body")]
    pub body: String,
    /// Extra CA certificates (PEM) trusted for this server, beside the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Bounds the whole delivery (default 8s; keep it below pam_otp's `timeout=`).
    #[serde(default = "default_smtp_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    None,
    #[default]
    Starttls,
    Tls,
}

/// `[sms]`: how SMS codes are sent. `provider` picks one of the sub-sections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    pub provider: SmsProvider,
    /// Template: `{{code}}`, `{{user}}`, `{{host}}`, `{{validity}}`, `{{id}}`.
    #[serde(default = "default_sms_body")]
    pub body: String,
    /// Extra CA certificates (PEM) trusted for the provider, beside the system roots.
    pub ca_file: Option<PathBuf>,
    /// Bounds the whole request (default 8s; keep it below pam_otp's `timeout=`).
    #[serde(default = "default_smtp_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Sends through the provider per hour, all users together: a ceiling on the bill.
    #[serde(default = "default_sms_total", deserialize_with = "max_sends")]
    pub max_total_per_hour: u32,
    pub twilio: Option<TwilioConfig>,
    pub vonage: Option<VonageConfig>,
    pub custom: Option<CustomSmsConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmsProvider {
    Twilio,
    Vonage,
    Custom,
}

/// `[sms.twilio]`: Programmable Messaging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    pub account_sid: String,
    pub auth_token_file: PathBuf,
    /// A Twilio number (E.164) or messaging service sender.
    pub from: String,
    #[serde(default = "default_twilio_url")]
    pub base_url: String,
}

/// `[sms.vonage]`: the SMS API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VonageConfig {
    pub api_key: String,
    pub api_secret_file: PathBuf,
    pub from: String,
    #[serde(default = "default_vonage_url")]
    pub base_url: String,
}

/// `[sms.custom]`: any HTTP gateway, described by a request template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomSmsConfig {
    pub url: String,
    #[serde(default)]
    pub method: HttpMethod,
    #[serde(default)]
    pub content_type: BodyFormat,
    /// The request body, with `{{mobile}}` and `{{body}}` (JSON-escaped for json, encoded for
    /// form), e.g. `{"to": "{{mobile}}", "text": "{{body}}"}` or `to={{mobile}}&text={{body}}`.
    pub template: String,
    /// Extra headers: `"Name: value, Name2: value2"` (as WSO2 writes them) or a table.
    #[serde(default)]
    pub headers: Headers,
    /// Extra CA certificates for this gateway (as `[sms] ca_file`).
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum HttpMethod {
    #[default]
    POST,
    PUT,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    #[default]
    Json,
    Form,
}

/// Header lines for a custom gateway, in either spelling.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum Headers {
    #[default]
    None,
    Line(String),
    Table(BTreeMap<String, String>),
}

impl Headers {
    /// (name, value) pairs; a WSO2 line splits on commas, then on the first colon.
    pub fn pairs(&self) -> Result<Vec<(String, String)>, String> {
        match self {
            Headers::None => Ok(Vec::new()),
            Headers::Table(t) => Ok(t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            Headers::Line(line) => line
                .split(',')
                .filter(|h| !h.trim().is_empty())
                .map(|h| match h.split_once(':') {
                    Some((k, v)) if !k.trim().is_empty() => {
                        Ok((k.trim().to_owned(), v.trim().to_owned()))
                    }
                    _ => Err(format!("{h:?} is not \"Name: value\"")),
                })
                .collect(),
        }
    }
}

fn default_sms_body() -> String {
    "Your login code for {{host}} is {{code}}. It is valid for {{validity}}.".into()
}

fn default_sms_total() -> u32 {
    100
}

fn default_twilio_url() -> String {
    "https://api.twilio.com".into()
}

fn default_vonage_url() -> String {
    "https://rest.nexmo.com".into()
}

/// `[users.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub email: Option<String>,
    pub phone: Option<String>,
}

fn default_subject() -> String {
    "Your login code for {{host}}".into()
}

fn default_body() -> String {
    "Hello {{user}},\n\nyour login code for {{host}} is\n\n    {{code}}\n\n\
     It is valid for {{validity}}. If you did not try to log in, tell your administrator.\n\n\
     (request {{id}})\n"
        .into()
}

/// Below pam_otp's default `timeout=10`, so a dead server is reported to the user before the
/// module gives up on the daemon.
fn default_smtp_timeout() -> Duration {
    Duration::from_secs(8)
}

impl Default for CodeConfig {
    fn default() -> Self {
        CodeConfig {
            length: 6,
            charset: Charset::Numeric,
            ttl: Duration::from_secs(300),
            max_attempts: 3,
            resend_after: Duration::from_secs(30),
            max_sends_per_hour: 5,
            max_sends_per_destination_per_hour: 5,
            max_unconfirmed_sends_per_hour: 3,
            concurrent_challenges: false,
        }
    }
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
            key_file: PathBuf::from(DEFAULT_KEY_FILE),
            admin_group: None,
            answer_timeout: Duration::from_secs(300),
            totp: TotpConfig::default(),
            lockout: LockoutConfig::default(),
            code: CodeConfig::default(),
            policy: PolicyConfig::default(),
            email: None,
            sms: None,
            users: BTreeMap::new(),
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

fn code_length<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    in_range(d, 4, 12, "length")
}

fn max_attempts<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, 1, 10, "max_attempts")
}

fn max_sends<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, 1, 1000, "max_sends_per_hour")
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
    fn code_and_email_sections_are_read() {
        let c = parse(
            r#"
[code]
length = 8
charset = "alphanumeric"
ttl = "2m"
max_attempts = 5
resend_after = "10s"
max_sends_per_hour = 9
concurrent_challenges = true
[email]
host = "smtp.example.com"
tls = "tls"
username = "otp"
password_file = "/etc/otpd/smtp.pass"
from = "otp@example.com"
ca_file = "/etc/otpd/ca.pem"
timeout = "3s"
[users.alice]
email = "alice@example.com"
"#,
        )
        .unwrap();
        assert_eq!(c.code.length, 8);
        assert_eq!(c.code.charset, Charset::Alphanumeric);
        assert!(c.code.concurrent_challenges);
        let email = c.email.unwrap();
        assert_eq!(email.tls, TlsMode::Tls);
        assert_eq!(email.timeout, Duration::from_secs(3));
        assert!(email.subject.contains("{{host}}"));
        assert_eq!(c.users["alice"].email.as_deref(), Some("alice@example.com"));
    }

    #[test]
    fn sms_sections_are_read_with_either_header_spelling() {
        let c = parse(
            r#"
[sms]
provider = "custom"
timeout = "3s"
[sms.custom]
url = "https://gw.example/send"
method = "PUT"
content_type = "form"
template = "to={{mobile}}&text={{body}}"
headers = "X-Api-Key: abc, X-Tenant: t1"
"#,
        )
        .unwrap();
        let sms = c.sms.unwrap();
        assert_eq!(sms.provider, SmsProvider::Custom);
        let custom = sms.custom.unwrap();
        assert_eq!(custom.method, HttpMethod::PUT);
        assert_eq!(custom.content_type, BodyFormat::Form);
        assert_eq!(
            custom.headers.pairs().unwrap(),
            vec![
                ("X-Api-Key".into(), "abc".into()),
                ("X-Tenant".into(), "t1".into())
            ]
        );
        let table = parse(
            "[sms]\nprovider = \"custom\"\n[sms.custom]\nurl = \"u\"\ntemplate = \"t\"\n\
             [sms.custom.headers]\nAuthorization = \"Bearer x\"\n",
        )
        .unwrap();
        let pairs = table.sms.unwrap().custom.unwrap().headers.pairs().unwrap();
        assert_eq!(pairs, vec![("Authorization".into(), "Bearer x".into())]);
        let twilio = parse(
            "[sms]\nprovider = \"twilio\"\n[sms.twilio]\naccount_sid = \"AC1\"\n\
             auth_token_file = \"/t\"\nfrom = \"+15550000000\"\n",
        )
        .unwrap();
        assert_eq!(
            twilio.sms.unwrap().twilio.unwrap().base_url,
            "https://api.twilio.com"
        );
    }

    #[test]
    fn an_email_section_without_from_is_an_error() {
        let text = parse("[email]\nhost = \"h\"\n").unwrap_err().to_string();
        assert!(text.contains("from"), "{text}");
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
