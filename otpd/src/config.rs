//! The configuration schema, `/etc/otpd/otpd.toml`, documented where it is defined.
//!
//! Every key has a default, so an empty file (or no file at all) is a working configuration.
//! Values are checked while parsing, so each error carries the file, line and key it came from;
//! what depends on several keys (a provider and its section) is checked right after, and located
//! the same way. Everything the daemon would refuse is refused here, so `otpd check-config`
//! saying ok means the daemon starts.
//!
//! Bounds (the largest values accepted): `answer_timeout` 1 hour; `lockout.window` and
//! `lockout.lock_for` 30 days; `code.ttl` and `policy.disable_token_ttl` 1 day;
//! `code.resend_after` 1 hour; `email.timeout` and `sms.timeout` 5 minutes; counts as in each
//! key's deserializer below; templates 16 KiB.

pub mod directory;
pub mod duo;
pub mod hotp;
pub mod store;

use serde::{de, Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod rules;

/// Where `otpd` and `otpctl` look without `--config`.
pub const DEFAULT_PATH: &str = "/etc/otpd/otpd.toml";
/// `key_file` unless configured.
pub const DEFAULT_KEY_FILE: &str = "/etc/otpd/key";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The Unix socket `pam_otp` and `otpctl` connect to (an absolute path).
    #[serde(deserialize_with = "absolute_path")]
    pub socket: PathBuf,
    /// Enrollments and replay state; created 0700 (an absolute path).
    #[serde(deserialize_with = "absolute_path")]
    pub state_dir: PathBuf,
    /// The key TOTP/HOTP secrets are sealed with in `state_dir`: 64 hex digits, root 0600, made
    /// by `otpd keygen`. systemd's credential `otpd.key` (`LoadCredential=`) is used instead
    /// when present. Without the key the enrollments cannot be read: back it up.
    pub key_file: PathBuf,
    /// Members of this group may run admin commands (root always may).
    #[serde(deserialize_with = "optional_name")]
    pub admin_group: Option<String>,
    /// How long a login waits for the person to type a code (at most 1 hour).
    #[serde(deserialize_with = "up_to_an_hour")]
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
    /// Addresses and numbers from an LDAP directory (`[directory]`, config/directory.rs).
    pub directory: Option<directory::DirectoryConfig>,
    /// `[hotp]`: the look-ahead of counter-based keys.
    pub hotp: hotp::HotpConfig,
    /// Duo (Auth API v2) as a method; absent means Duo is off.
    pub duo: Option<duo::DuoConfig>,
    /// `[audit]` and `[metrics]` (config/rules.rs).
    pub audit: rules::AuditConfig,
    pub metrics: rules::MetricsConfig,
    /// `[store]`: the state directory (default) or a PostgreSQL database shared by a fleet.
    pub store: store::StoreConfig,
}

/// `[policy]`: what happens to users without a second factor, and which method comes first.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub unenrolled: Unenrolled,
    /// Offered without asking when a user has it among several methods (a user's own
    /// `otpctl default` wins).
    pub default_method: Option<otp_proto::MethodKind>,
    /// How long the token `otpctl disable` mails to the user stays valid (at most 1 day).
    #[serde(deserialize_with = "up_to_a_day")]
    pub disable_token_ttl: Duration,
    /// After a second factor from a remote host, logins of that user from that host through
    /// that service skip the code for this long (at most 30 days; off when unset).
    #[serde(deserialize_with = "optional_up_to_30_days")]
    pub grace: Option<Duration>,
    /// Grace also for logins without a remote host (console, sudo, su).
    pub grace_local: bool,
    /// Grace given on one host holds on every host of the fleet (`[store] backend =
    /// "postgres"` only); otherwise it is this host's alone.
    pub grace_fleet: bool,
    /// `[[policy.rule]]`, first match wins (config/rules.rs).
    #[serde(deserialize_with = "rules::rules")]
    pub rule: Vec<rules::Rule>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            unenrolled: Unenrolled::Deny,
            default_method: None,
            disable_token_ttl: Duration::from_secs(15 * 60),
            grace: None,
            grace_local: false,
            grace_fleet: false,
            rule: Vec::new(),
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
    /// At most 1 day.
    #[serde(deserialize_with = "up_to_a_day")]
    pub ttl: Duration,
    /// Wrong answers one challenge survives.
    #[serde(deserialize_with = "max_attempts")]
    pub max_attempts: u32,
    /// Cooldown between two sends to one user (at most 1 hour).
    #[serde(deserialize_with = "up_to_an_hour")]
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
    #[serde(deserialize_with = "host")]
    pub host: String,
    /// Default: 25 with `tls = "none"`, 587 with starttls, 465 with tls.
    #[serde(default, deserialize_with = "port")]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: TlsMode,
    /// SMTP AUTH user; no username, no AUTH.
    pub username: Option<String>,
    /// A file holding the SMTP password (secrets never sit in this file): a regular file owned
    /// by root, mode 0600 or 0400 (`channel::secret_file`).
    pub password_file: Option<PathBuf>,
    /// `From:`, e.g. `"Login codes <otp@example.com>"`.
    #[serde(deserialize_with = "mailbox")]
    pub from: String,
    /// Templates: `{{code}}`, `{{user}}`, `{{host}}`, `{{validity}}`, `{{id}}` and no other;
    /// `{{code}}` must appear in one of them.
    #[serde(default = "default_subject", deserialize_with = "message_template")]
    pub subject: String,
    #[serde(default = "default_body", deserialize_with = "message_template")]
    pub body: String,
    /// Extra CA certificates (PEM) trusted for this server, beside the built-in roots; owned by
    /// root and not writable by group or others.
    pub ca_file: Option<PathBuf>,
    /// Bounds the whole delivery (default 8s, at most 5 minutes; keep it below pam_otp's
    /// `timeout=`).
    #[serde(default = "default_smtp_timeout", deserialize_with = "up_to_5_minutes")]
    pub timeout: Duration,
    /// `[email.relays.NAME]`: more SMTP servers a policy rule can pick (config/rules.rs).
    #[serde(default)]
    pub relays: BTreeMap<String, EmailConfig>,
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
    /// Template: `{{code}}` (required), `{{user}}`, `{{host}}`, `{{validity}}`, `{{id}}`.
    #[serde(default = "default_sms_body", deserialize_with = "sms_template")]
    pub body: String,
    /// Extra CA certificates (PEM) trusted for the provider, beside the system roots.
    pub ca_file: Option<PathBuf>,
    /// Bounds the whole request (default 8s, at most 5 minutes; keep it below pam_otp's
    /// `timeout=`).
    #[serde(default = "default_smtp_timeout", deserialize_with = "up_to_5_minutes")]
    pub timeout: Duration,
    /// Sends through the provider per hour, all users together: a ceiling on the bill
    /// (1 to 100000).
    #[serde(default = "default_sms_total", deserialize_with = "max_total")]
    pub max_total_per_hour: u32,
    pub twilio: Option<TwilioConfig>,
    pub vonage: Option<VonageConfig>,
    pub custom: Option<CustomSmsConfig>,
    /// `[sms.providers.NAME]`: more providers a policy rule can pick (config/rules.rs).
    #[serde(default)]
    pub providers: BTreeMap<String, SmsConfig>,
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
    #[serde(deserialize_with = "name")]
    pub account_sid: String,
    /// Owned by root, mode 0600 or 0400, as `[email] password_file`.
    pub auth_token_file: PathBuf,
    /// A Twilio number (E.164) or messaging service sender.
    #[serde(deserialize_with = "name")]
    pub from: String,
    #[serde(default = "default_twilio_url", deserialize_with = "http_url")]
    pub base_url: String,
}

/// `[sms.vonage]`: the SMS API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VonageConfig {
    #[serde(deserialize_with = "name")]
    pub api_key: String,
    /// Owned by root, mode 0600 or 0400, as `[email] password_file`.
    pub api_secret_file: PathBuf,
    #[serde(deserialize_with = "name")]
    pub from: String,
    #[serde(default = "default_vonage_url", deserialize_with = "http_url")]
    pub base_url: String,
}

/// `[sms.custom]`: any HTTP gateway, described by a request template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomSmsConfig {
    /// `http://` or `https://`.
    #[serde(deserialize_with = "http_url")]
    pub url: String,
    #[serde(default)]
    pub method: HttpMethod,
    #[serde(default)]
    pub content_type: BodyFormat,
    /// The request body, with `{{mobile}}` and `{{body}}` (JSON-escaped for json, encoded for
    /// form), e.g. `{"to": "{{mobile}}", "text": "{{body}}"}` or `to={{mobile}}&text={{body}}`;
    /// both placeholders are required and no other is known.
    #[serde(deserialize_with = "gateway_template")]
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
    #[serde(default, deserialize_with = "email_address")]
    pub email: Option<String>,
    /// E.164: `+` and 8 to 15 digits, e.g. `+12025550123`.
    #[serde(default, deserialize_with = "phone_number")]
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
    #[serde(deserialize_with = "optional_name")]
    pub issuer: Option<String>,
}

/// `[lockout]`: `max_failures` failed codes within `window` lock the user for `lock_for`
/// (NIST SP 800-63B §5.2.2 asks for a limit of at most 100; we default far lower).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    #[serde(deserialize_with = "max_failures")]
    pub max_failures: u32,
    /// At most 30 days.
    #[serde(deserialize_with = "up_to_30_days")]
    pub window: Duration,
    /// At most 30 days.
    #[serde(deserialize_with = "up_to_30_days")]
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
            directory: None,
            hotp: hotp::HotpConfig::default(),
            duo: None,
            audit: Default::default(),
            metrics: Default::default(),
            store: store::StoreConfig::default(),
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

    /// Parse and check `text`; `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            let (line, column) = line_and_column(text, offset);
            let key = key_path_at(text, offset)
                .or_else(|| key_at(text, offset))
                .map(|k| format!("{k}: "))
                .unwrap_or_default();
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                key,
                message: e.message().to_owned(),
            }
        })?;
        cfg.check_together().map_err(|(key, message)| {
            let offset = offset_of(text, &key).unwrap_or(0);
            let (line, column) = line_and_column(text, offset);
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                key: format!("{}: ", key.join(".")),
                message,
            }
        })?;
        Ok(cfg)
    }

    /// What no single key's deserializer can see: a provider without its section, a username
    /// without a password, a template set without a code. The key to blame, and why.
    fn check_together(&self) -> Result<(), (Vec<&'static str>, String)> {
        rules::check(self)?;
        if self.policy.grace_fleet && !self.store.is_postgres() {
            return Err((
                vec!["policy", "grace_fleet"],
                "needs the fleet store ([store] backend = \"postgres\")".into(),
            ));
        }
        if let Some(email) = &self.email {
            if email.username.is_some() && email.password_file.is_none() {
                return Err((
                    vec!["email", "username"],
                    "needs password_file (the SMTP password is never written here)".into(),
                ));
            }
            let code = "{{code}}";
            if !email.subject.contains(code) && !email.body.contains(code) {
                return Err((
                    vec!["email", "body"],
                    "neither subject nor body contains {{code}}".into(),
                ));
            }
        }
        if let Some(directory) = &self.directory {
            directory.check()?;
        }
        if let Some(sms) = &self.sms {
            let (section, present) = match sms.provider {
                SmsProvider::Twilio => ("twilio", sms.twilio.is_some()),
                SmsProvider::Vonage => ("vonage", sms.vonage.is_some()),
                SmsProvider::Custom => ("custom", sms.custom.is_some()),
            };
            if !present {
                return Err((
                    vec!["sms", "provider"],
                    format!("{section:?} needs an [sms.{section}] section"),
                ));
            }
            if let Some(custom) = &sms.custom {
                let blame = |e| (vec!["sms", "custom", "headers"], e);
                for (name, value) in custom.headers.pairs().map_err(blame)? {
                    // What reqwest would refuse at every send, refused once here.
                    reqwest::header::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| blame(format!("{name:?} is not a header name")))?;
                    reqwest::header::HeaderValue::from_str(&value)
                        .map_err(|_| blame(format!("the value of {name} is not a header value")))?;
                }
            }
        }
        Ok(())
    }
}

/// Where the value of dotted `key` starts in `text`, found by walking the parsed document
/// (so inline tables and dotted keys are found too); its innermost known part otherwise.
fn offset_of(text: &str, key: &[&str]) -> Option<usize> {
    let root = toml::de::DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut found = None;
    for part in key {
        let (name, value) = table.iter().find(|(k, _)| k.get_ref() == part)?;
        found = Some(name.span().start);
        match value.get_ref() {
            toml::de::DeValue::Table(inner) => table = inner,
            _ => return found,
        }
    }
    found
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

/// The dotted key whose key or value holds `offset`, the innermost one, found in the parsed
/// document (inline tables included); `None` when the text does not parse as TOML.
fn key_path_at(text: &str, offset: usize) -> Option<String> {
    fn find(table: &toml::de::DeTable, offset: usize, path: &mut Vec<String>) -> bool {
        for (key, value) in table.iter() {
            path.push(key.get_ref().to_string());
            if let toml::de::DeValue::Table(inner) = value.get_ref() {
                if find(inner, offset, path) {
                    return true;
                }
            }
            if key.span().contains(&offset) || value.span().contains(&offset) {
                return true;
            }
            path.pop();
        }
        false
    }
    let root = toml::de::DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    find(root.get_ref(), offset, &mut path).then(|| path.join("."))
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

/// "90s", "5m", "1h 30m": humantime's syntax; longer than zero and at most `max`, which
/// keeps every `Instant + duration` in the daemon far from overflowing.
fn duration<'de, D: Deserializer<'de>>(d: D, max: Duration) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    if s.len() > 64 {
        return Err(de::Error::custom(
            "is not a duration like \"30s\" or \"5m\"",
        ));
    }
    let value = humantime::parse_duration(&s).map_err(|e| {
        de::Error::custom(format!(
            "{s:?} is not a duration like \"30s\" or \"5m\": {e}"
        ))
    })?;
    if value.is_zero() {
        return Err(de::Error::custom("must be longer than zero"));
    }
    if value > max {
        return Err(de::Error::custom(format!(
            "{s:?} is longer than the {} allowed",
            humantime::format_duration(max)
        )));
    }
    Ok(value)
}

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

fn up_to_5_minutes<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration(d, Duration::from_secs(5 * MINUTE))
}

fn up_to_an_hour<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration(d, Duration::from_secs(HOUR))
}

fn up_to_a_day<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration(d, Duration::from_secs(DAY))
}

fn up_to_30_days<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration(d, Duration::from_secs(30 * DAY))
}

pub(crate) fn optional_up_to_30_days<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    up_to_30_days(d).map(Some)
}

/// Longest string value besides templates: names, hosts, urls, addresses.
const MAX_VALUE: usize = 1024;

/// A string no longer than [`MAX_VALUE`], without control characters (they would end up in
/// log lines, SMTP commands or HTTP headers).
fn plain<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.len() > MAX_VALUE {
        return Err(de::Error::custom(format!(
            "is longer than {MAX_VALUE} bytes"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(de::Error::custom("contains a control character"));
    }
    Ok(s)
}

fn name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = plain(d)?;
    if s.trim().is_empty() {
        return Err(de::Error::custom("must not be empty"));
    }
    Ok(s)
}

fn optional_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    name(d).map(Some)
}

fn host<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = name(d)?;
    if s.contains(char::is_whitespace) || s.contains('/') {
        return Err(de::Error::custom(format!("{s:?} is not a host name")));
    }
    Ok(s)
}

fn port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    in_range(d, 1, u16::MAX, "port").map(Some)
}

fn absolute_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let s = plain(d)?;
    if !s.starts_with('/') {
        return Err(de::Error::custom(format!("{s:?} is not an absolute path")));
    }
    Ok(PathBuf::from(s))
}

/// `http://` or `https://` and a host: where otpd sends a provider its credentials.
fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = name(d)?;
    let url = reqwest::Url::parse(&s)
        .map_err(|e| de::Error::custom(format!("{s:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(de::Error::custom(format!(
            "{s:?} is not an http:// or https:// URL"
        )));
    }
    Ok(s)
}

fn template<'de, D: Deserializer<'de>>(
    d: D,
    known: &[&str],
    required: &[&'static str],
) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    crate::formats::check(&s, known, required).map_err(de::Error::custom)?;
    Ok(s)
}

fn message_template<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    template(d, crate::formats::MESSAGE_PLACEHOLDERS, &[])
}

fn sms_template<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    template(d, crate::formats::MESSAGE_PLACEHOLDERS, &["code"])
}

fn gateway_template<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use crate::formats::GATEWAY_PLACEHOLDERS;
    template(d, GATEWAY_PLACEHOLDERS, &["mobile", "body"])
}

fn email_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = plain(d)?;
    if !crate::formats::valid_address(&s) {
        return Err(de::Error::custom(format!("{s:?} is not an email address")));
    }
    Ok(Some(s))
}

fn mailbox<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = plain(d)?;
    s.parse::<lettre::message::Mailbox>()
        .map_err(|e| de::Error::custom(format!("{s:?} is not an address: {e}")))?;
    Ok(s)
}

fn phone_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = plain(d)?;
    if !crate::formats::valid_number(&s) {
        return Err(de::Error::custom(format!(
            "{s:?} is not an E.164 number like \"+12025550123\""
        )));
    }
    Ok(Some(s))
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
    in_range(d, 15, crate::formats::MAX_PERIOD, "period")
}

fn skew<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    in_range(d, 0, crate::formats::MAX_SKEW, "skew")
}

fn code_length<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    in_range(d, 4, 12, "length")
}

fn max_attempts<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, 1, 10, "max_attempts")
}

fn max_sends<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, 1, 1000, "sends per hour")
}

fn max_total<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, 1, 100_000, "sends per hour")
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
            "[sms]\nprovider = \"custom\"\n[sms.custom]\nurl = \"https://gw\"\n\
             template = \"{{mobile}} {{body}}\"\n\
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

    /// The configurations found by attacking otpd that check-config used to call ok: each is refused with
    /// the file, the line and the key to fix.
    #[test]
    fn every_nonsense_value_is_refused_naming_its_line_and_key() {
        let custom = "[sms]\nprovider = \"custom\"\n[sms.custom]\n";
        let cases: &[(&str, &str, &str)] = &[
            (
                "socket = \"\"\n",
                "otpd.toml:1:",
                "socket: \"\" is not an absolute path",
            ),
            ("state_dir = \"var\"\n", "otpd.toml:1:", "state_dir: "),
            (
                "[users.x]\nphone = \"123\"\n",
                "otpd.toml:2:",
                "users.x.phone: \"123\" is not an E.164",
            ),
            (
                "[users.x]\nemail = \"x\"\n",
                "otpd.toml:2:",
                "users.x.email: ",
            ),
            (
                &format!("{custom}url = \"ftp://x\"\ntemplate = \"{{{{mobile}}}}{{{{body}}}}\"\n"),
                "otpd.toml:4:",
                "sms.custom.url: \"ftp://x\" is not an http:// or https:// URL",
            ),
            (
                &format!("{custom}url = \"https://x\"\ntemplate = \"{{{{nope}}}}\"\n"),
                "otpd.toml:5:",
                "sms.custom.template: unknown placeholder {{nope}}",
            ),
            (
                &format!("{custom}url = \"https://x\"\ntemplate = \"{{{{mobile}}}}\"\n"),
                "otpd.toml:5:",
                "must contain {{body}}",
            ),
            (
                "answer_timeout = \"18446744073709551615s\"\n",
                "otpd.toml:1:",
                "answer_timeout: ",
            ),
            (
                "answer_timeout = \"2h\"\n",
                "otpd.toml:1:",
                "longer than the 1h allowed",
            ),
            (
                "[lockout]\nlock_for = \"100years\"\n",
                "otpd.toml:2:",
                "lockout.lock_for: \"100years\" is longer than the 30days allowed",
            ),
            (
                "[lockout]\nwindow = \"31d\"\n",
                "otpd.toml:2:",
                "lockout.window: ",
            ),
            ("[code]\nttl = \"2d\"\n", "otpd.toml:2:", "code.ttl: "),
            (
                "[code]\nresend_after = \"2h\"\n",
                "otpd.toml:2:",
                "code.resend_after: ",
            ),
            (
                "[policy]\ndisable_token_ttl = \"2d\"\n",
                "otpd.toml:2:",
                "policy.disable_token_ttl: ",
            ),
            (
                "[sms]\nprovider = \"twilio\"\n",
                "otpd.toml:2:",
                "sms.provider: \"twilio\" needs an [sms.twilio] section",
            ),
            (
                "[sms]\nprovider = \"vonage\"\ntimeout = \"10m\"\n",
                "otpd.toml:3:",
                "sms.timeout: ",
            ),
            (
                "[sms]\nprovider = \"vonage\"\nbody = \"no code here\"\n",
                "otpd.toml:3:",
                "sms.body: must contain {{code}}",
            ),
            (
                "[email]\nhost = \"h\"\nfrom = \"a@b\"\nusername = \"u\"\n",
                "otpd.toml:4:",
                "email.username: needs password_file",
            ),
            (
                "[email]\nhost = \"h\"\nfrom = \"not an address\"\n",
                "otpd.toml:3:",
                "email.from: ",
            ),
            (
                "[email]\nhost = \"h\"\nfrom = \"a@b\"\nsubject = \"{{cod}}\"\n",
                "otpd.toml:4:",
                "email.subject: unknown placeholder {{cod}}",
            ),
            (
                "[email]\nhost = \"h\"\nfrom = \"a@b\"\nsubject = \"s\"\nbody = \"b\"\n",
                "otpd.toml:5:",
                "email.body: neither subject nor body contains {{code}}",
            ),
            (
                "[email]\nhost = \"\"\nfrom = \"a@b\"\n",
                "otpd.toml:2:",
                "email.host: ",
            ),
            (
                "[email]\nhost = \"h\"\nport = 0\nfrom = \"a@b\"\n",
                "otpd.toml:3:",
                "email.port: ",
            ),
            (
                "admin_group = \"\"\n",
                "otpd.toml:1:",
                "admin_group: must not be empty",
            ),
            (
                "[totp]\nissuer = \"a\\nb\"\n",
                "otpd.toml:2:",
                "totp.issuer: contains a control",
            ),
            ("[totp]\nskew = 11\n", "otpd.toml:2:", "totp.skew: "),
            (
                &format!("{custom}url = \"https://x\"\ntemplate = \"{{{{mobile}}}}{{{{body}}}}\"\nheaders = \"Bad Name: x\"\n"),
                "otpd.toml:6:",
                "sms.custom.headers: \"Bad Name\" is not a header name",
            ),
        ];
        for (text, at, says) in cases {
            let err = match parse(text) {
                Ok(_) => panic!("accepted: {text}"),
                Err(e) => e.to_string(),
            };
            assert!(err.starts_with(at), "{text}: {err}");
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn a_key_inside_an_inline_table_is_located_too() {
        let err =
            parse("\n[users]\nbob = { email = \"b@example.com\" }\n[sms]\nprovider = \"custom\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.starts_with("otpd.toml:5:"), "{err}");
        assert!(err.contains("sms.provider: "), "{err}");
        let err = parse("users = { x = { phone = \"1\" } }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("phone"), "{err}");
    }

    #[test]
    fn the_largest_accepted_values_are_accepted() {
        let c = parse(
            "answer_timeout = \"1h\"\n[lockout]\nlock_for = \"30days\"\nwindow = \"30d\"\n\
             [code]\nttl = \"1day\"\n[sms]\nprovider = \"custom\"\ntimeout = \"5m\"\n\
             max_total_per_hour = 100000\n[sms.custom]\nurl = \"http://127.0.0.1:8080/x\"\n\
             template = \"{{mobile}}:{{body}}\"\n[users.a]\nphone = \"+12025550123\"\n",
        )
        .unwrap();
        assert_eq!(c.lockout.lock_for, Duration::from_secs(30 * 24 * 3600));
        let defaults = Config::default();
        assert_eq!(defaults.code.ttl, parse("").unwrap().code.ttl);
    }
}
