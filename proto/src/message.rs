//! Requests, replies and refusals. Each variant is a sentence a reader understands.
//!
//! A login is `Begin`, then any number of `Prompt`/`Info`/`Error` replies from the daemon, each
//! `Prompt` answered by an `Answer`, until one `Outcome`. An `otpctl` command is one `Command`
//! answered by one `Done` or `Refused`. The daemon decides everything; clients only relay.

use crate::Secret;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Start a second-factor login for a user whose first factor has passed.
    Begin(Login),
    /// The user's reply to the latest `Reply::Prompt`.
    Answer(Secret),
    /// A management command from `otpctl`; `None` users mean "the caller".
    Command(Command),
}

/// Who is logging in, as the PAM stack sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    pub user: String,
    /// PAM_SERVICE: sshd, login, sudo, su...
    pub service: String,
    /// PAM_RHOST, for the audit log.
    pub rhost: Option<String>,
    /// PAM_TTY, for the audit log.
    pub tty: Option<String>,
    /// The PAM line says `nullok`: a user with nothing enrolled is let through (PAM_IGNORE).
    pub nullok: bool,
    /// `forward_pass` on the PAM line: everything the user typed at the one prompt, password
    /// then code. otpd takes the code off the end (where it ends is policy), judges it, and
    /// hands the rest back in `Reply::Password` before an `Allow` (or `Ignore`); it keeps, logs
    /// and compares nothing of the rest.
    pub forward_pass: Option<Secret>,
}

/// A management command. Non-root callers may only name themselves.
///
/// `proof` fields: changing a factor of a user who has one needs a current code or a recovery
/// code (so a stolen session cannot quietly swap the factor); admins acting for another user
/// need none. Without it otpd answers `Refused(ProofRequired)` and otpctl asks for a code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create a new pending TOTP secret; it counts at login only after `Verify`.
    EnrollTotp {
        user: Option<String>,
        proof: Option<Secret>,
    },
    /// Register an email address: a code is mailed there, and the address counts at login only
    /// after that code is given to `Verify`.
    EnrollEmail {
        user: Option<String>,
        address: String,
        proof: Option<Secret>,
    },
    /// Register a mobile number (E.164): a code is texted there, and the number counts at login
    /// only after that code is given to `Verify`.
    EnrollSms {
        user: Option<String>,
        number: String,
        proof: Option<Secret>,
    },
    /// Send a login code now by the user's email or SMS method (`via`, or email first); it
    /// works at the next login within its validity.
    Send {
        user: Option<String>,
        via: Option<Via>,
    },
    /// Confirm a pending enrollment with a code, or check a code against the active one.
    Verify { user: Option<String>, code: Secret },
    /// What is enrolled, lockout state.
    Status { user: Option<String> },
    /// Turn one second factor (or all) off.
    Disable {
        user: Option<String>,
        /// One method, or every one.
        method: Option<MethodKind>,
        /// How the user proves it: a token mailed by an earlier `Disable`, or (with no address
        /// on file) a current code or a recovery code. Admins acting for others need none.
        proof: Option<DisableProof>,
    },
    /// Make a new set of recovery codes (the old set dies). A user proves a current factor with
    /// `proof` (a code or a recovery code); admins need none.
    RecoveryCodes {
        user: Option<String>,
        proof: Option<Secret>,
    },
    /// The method offered first at login when the user has several (`None` clears it).
    SetDefault {
        user: Option<String>,
        method: Option<MethodKind>,
    },
    /// Take over an existing authenticator setup (google-authenticator, pam_oath) so the user's
    /// app keeps working; it is active at once.
    Import {
        user: Option<String>,
        key: ImportedKey,
        proof: Option<Secret>,
    },
    /// Admin: lift a lockout.
    Unlock { user: String },
    /// Admin: forget everything about a user (enrollments, lockout, replay state).
    Reset { user: String },
    /// Admin: every user the store knows.
    Users,
    /// Create a new pending HOTP key (RFC 4226) for a hardware token or an app; it counts at
    /// login only after `Verify` with a code from it.
    EnrollHotp {
        user: Option<String>,
        /// The vendor's secret, hex or base32; `None`: otpd makes one (for an app).
        secret: Option<Secret>,
        /// The counter of the token's next code (default 0).
        counter: Option<u64>,
        /// 6 or 8 (default 6).
        digits: Option<u8>,
        proof: Option<Secret>,
    },
    /// Which `[[policy.rule]]` applies to the user (at a login through `service`, or to their
    /// commands) and why.
    Policy {
        user: Option<String>,
        service: Option<String>,
    },
    /// Admin: the configuration in force, every secret redacted, with each value's origin.
    Config,
    /// Audit events, newest first: a user's own; admins anyone's (`user: None` = all).
    Attempts(AttemptQuery),
    /// One audit event in full, by id.
    AttemptShow { id: String },
    /// Counts of audit events per kind, result and method for the last hour and day.
    Stats,
}

/// Which audit events `Command::Attempts` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptQuery {
    pub user: Option<String>,
    /// Only events of the last this many seconds.
    pub since_secs: Option<u64>,
    pub result: Option<AuditResult>,
    /// At most this many (the daemon caps it too).
    pub limit: Option<u32>,
}

/// What an audit event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditKind {
    Login,
    Enroll,
    Verify,
    Send,
    Disable,
    Unlock,
    Reset,
    Import,
    RecoveryCodes,
    SetDefault,
    Lockout,
    Policy,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditResult {
    /// A login let in, or a command done.
    Allowed,
    /// A login or a command refused.
    Denied,
    /// A login this module had no opinion on (nullok, unenrolled = allow, require = enrolled).
    Ignored,
    /// A login let in without a second factor by a `require = "never"` rule.
    Exempt,
}

/// One structured audit event. It holds no code, secret, token, full address or number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unique per event: time and a random part.
    pub id: String,
    /// Unix seconds.
    pub time: u64,
    pub host: String,
    pub kind: AuditKind,
    pub result: AuditResult,
    /// The PAM service of a login.
    pub service: Option<String>,
    /// Whose factor or login it was (the target of an admin's action).
    pub user: String,
    /// The peer's uid (SO_PEERCRED).
    pub caller_uid: u32,
    /// Who acted, when not the user themselves (an admin's or root's name or uid).
    pub actor: Option<String>,
    pub rhost: Option<String>,
    pub tty: Option<String>,
    pub method: Option<MethodKind>,
    /// The sent-code challenge, if one was involved.
    pub challenge: Option<String>,
    /// The policy rule that applied, counted from 1; `None`: the global policy.
    pub rule: Option<u32>,
    /// Why, in words (the note of the syslog line).
    pub reason: String,
}

/// Which rule applies to a user, as `otpctl policy` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyReport {
    pub user: String,
    pub service: Option<String>,
    /// Counted from 1 in file order; `None`: the global `[policy]`.
    pub rule: Option<u32>,
    /// "always", "never" or "enrolled".
    pub require: String,
    /// `None`: every method.
    pub methods: Option<Vec<MethodKind>>,
    /// "deny", "allow" or "enroll".
    pub unenrolled: String,
    pub why: String,
    /// A named `[sms.providers.NAME]` / `[email.relays.NAME]`; `None`: the default one.
    pub sms_provider: Option<String>,
    pub email_relay: Option<String>,
}

/// One configuration value as `otpctl config` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigEntry {
    /// Dotted: `lockout.max_failures`, `policy.rule[1].groups`.
    pub key: String,
    /// TOML text of the value, or `<redacted>`.
    pub value: String,
    /// `default`, or `FILE:LINE`.
    pub origin: String,
}

/// Counts of audit events, as `otpctl stats` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    pub last_hour: Vec<StatCount>,
    pub last_day: Vec<StatCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatCount {
    pub kind: AuditKind,
    pub result: AuditResult,
    pub method: Option<MethodKind>,
    pub count: u64,
}

/// A kind of second factor, as a user or an admin names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodKind {
    Totp,
    Email,
    Sms,
    /// Duo (push, phone call or Duo passcode), checked by Duo's Auth API; enrolled with Duo.
    Duo,
}

/// What a user shows to turn a second factor off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DisableProof {
    Token(Secret),
    Code(Secret),
}

/// How a code travels to its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Via {
    Email,
    Sms,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Via::Email => "email",
            Via::Sms => "SMS",
        })
    }
}

/// What the daemon sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Ask the user something; `echo` false for codes.
    Prompt { text: String, echo: bool },
    /// Tell the user something (PAM_TEXT_INFO).
    Info { text: String },
    /// Warn the user (PAM_ERROR_MSG).
    Error { text: String },
    /// The login is decided; the connection ends.
    Outcome(Outcome),
    /// A command succeeded.
    Done(CommandReply),
    /// A request was refused; the connection ends.
    Refused(Refusal),
    /// `forward_pass`: what the user typed before the code, for the next module's
    /// PAM_AUTHTOK. Sent only to a `Login` with `forward_pass`, just before an `Allow` or
    /// `Ignore` outcome.
    Password(Secret),
}

impl Reply {
    /// Zero the texts before their memory is freed: a first-login enrollment puts the key and
    /// the recovery codes in them. (Not `Drop`: the module moves the texts out.)
    pub fn wipe(&mut self) {
        use zeroize::Zeroize;
        if let Reply::Prompt { text, .. } | Reply::Info { text } | Reply::Error { text } = self {
            text.zeroize();
        }
    }
}

/// How a login ends. The module maps each to a PAM return code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Allow,
    /// Not enrolled and `nullok` (or policy) says this module has no opinion.
    Ignore,
    Deny(DenyReason),
}

/// Why a login was denied. For logs and the module's return code; the user-facing text has
/// already been sent as an `Error` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DenyReason {
    WrongCode,
    /// A code whose time step was already used.
    Replayed,
    Locked,
    NotEnrolled,
    /// An emailed or texted code past its validity.
    Expired,
    /// Too many wrong codes for one challenge.
    TooManyAttempts,
    /// The code could not be delivered (SMTP or SMS provider failure).
    SendFailed,
    /// The user gave up (empty answer, Ctrl-D).
    Cancelled,
    /// The caller may not authenticate this user (SO_PEERCRED).
    Forbidden,
    /// The daemon could not decide (store error); fail closed.
    Internal,
    /// Duo said no: the user refused the push or call, a wrong Duo passcode, or Duo denies
    /// this user.
    DuoDenied,
    /// The user reported the Duo request as fraud.
    DuoFraud,
    /// Nobody answered the Duo push or call in time.
    DuoTimeout,
    /// Duo could not be asked (unreachable with failmode secure, or it refused the request).
    DuoUnavailable,
}

/// The reply to a successful command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandReply {
    /// A new pending TOTP enrollment: show it to the user once.
    TotpEnrollment(TotpEnrollment),
    /// Disabling needs the token just mailed to `destination` (`otpctl disable --token`).
    TokenSent {
        destination: String,
    },
    /// A new set of recovery codes: show them once.
    RecoveryCodes(Vec<Secret>),
    /// A code is on its way; `challenge` names it in logs.
    CodeSent {
        challenge: String,
        destination: String,
    },
    /// `Verify` accepted the code; `activated` names the method it confirmed (a pending key,
    /// an address or a number), if it confirmed one.
    Verified {
        activated: Option<MethodKind>,
    },
    Status(UserStatus),
    Users(Vec<UserStatus>),
    /// Done, nothing to report.
    Ok,
    Policy(PolicyReport),
    Config(Vec<ConfigEntry>),
    Attempts(Vec<AuditEvent>),
    Attempt(Box<AuditEvent>),
    Stats(StatsReport),
}

/// Everything an authenticator app needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpEnrollment {
    pub user: String,
    /// Base32, unpadded.
    pub secret: Secret,
    /// `otpauth://totp/...`, carries the secret too.
    pub uri: Secret,
    pub issuer: String,
    pub account: String,
    pub algorithm: String,
    pub digits: u8,
    pub period: u64,
    /// Recovery codes that become valid with the enrollment: show them once.
    pub recovery_codes: Vec<Secret>,
    /// `Some(counter of the next code)` for an HOTP key (`uri` is then `otpauth://hotp/...`
    /// and `period` means nothing).
    pub hotp_counter: Option<u64>,
}

/// An OATH key from another tool, as otpctl read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedKey {
    /// Base32, unpadded.
    pub secret: Secret,
    /// "SHA1", "SHA256" or "SHA512".
    pub algorithm: String,
    pub digits: u8,
    /// Seconds per step (TOTP); also the unit HOTP counters are scaled by.
    pub period: u64,
    /// `Some(next counter)` for HOTP.
    pub hotp_counter: Option<u64>,
    /// HOTP look-ahead.
    pub window: Option<u32>,
    /// Scratch codes, which become recovery codes.
    pub recovery_codes: Vec<Secret>,
}

/// One user's state, as `otpctl status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStatus {
    pub user: String,
    pub totp: MethodState,
    pub email: MethodState,
    /// The address codes go to, masked: `j***@e***.com`.
    pub email_address: Option<String>,
    pub sms: MethodState,
    /// The number codes go to, masked: `+1******4567`.
    pub sms_number: Option<String>,
    /// Unused recovery codes.
    pub recovery_codes_left: u32,
    /// Seconds until a lockout ends; `None` when not locked.
    pub locked_for_secs: Option<u64>,
    /// Failures counted in the current lockout window.
    pub recent_failures: u32,
    /// What the app key (`totp` above) counts by: time (an authenticator app) or presses (an
    /// HOTP token or app).
    pub app_kind: AppKind,
}

/// How a one-time-password key moves on: RFC 6238 (time steps) or RFC 4226 (a counter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppKind {
    #[default]
    Totp,
    Hotp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MethodState {
    None,
    /// Enrolled but not yet confirmed with a code: does not count at login.
    Pending,
    Active,
}

/// Why a request was refused. `Display` is the sentence `otpctl` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("permission denied: you may only manage your own enrollment")]
    Forbidden,
    #[error("no such user: {0}")]
    UnknownUser(String),
    #[error("nothing is enrolled for {0}")]
    NotEnrolled(String),
    #[error("no enrollment is waiting for confirmation")]
    NoPendingEnrollment,
    #[error("wrong code")]
    WrongCode,
    #[error("that code was already used; wait for the next one")]
    CodeUsed,
    #[error("too many failed attempts; try again later")]
    Locked,
    #[error("that code has expired")]
    CodeExpired,
    #[error("could not send the code; see otpd's log")]
    CouldNotSend,
    #[error("a new code can be sent in {0} s")]
    Cooldown(u64),
    #[error("too many codes sent in the last hour; try again later")]
    SendQuota,
    #[error("{0} is not configured on this server")]
    ChannelUnavailable(String),
    #[error("no email address or phone number on file for {0}")]
    NoAddress(String),
    #[error("invalid address: {0}")]
    BadAddress(String),
    #[error("invalid phone number {0:?}: use E.164, e.g. +12025550123")]
    BadNumber(String),
    #[error("prove it is you: give a current code or a recovery code")]
    ProofRequired,
    #[error("that token is wrong or has expired; run `otpctl disable` again for a new one")]
    BadToken,
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("protocol version {got} is not supported (daemon speaks {supported})")]
    VersionMismatch { got: u16, supported: u16 },
    #[error("internal error in otpd; see its log")]
    Internal,
    /// Too many logins in progress (for this user, or in all): the daemon keeps its slots.
    #[error("otpd is busy: too many logins in progress; try again later")]
    Busy,
    /// The policy rule for this user does not count this method (`otpctl policy` says which).
    #[error("{method:?} is not allowed for this user by {rule}")]
    MethodNotAllowed { method: MethodKind, rule: String },
    /// `otpctl attempts show` named no event this caller may see.
    #[error("no such event: {0}")]
    UnknownEvent(String),
}

impl fmt::Display for MethodState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MethodState::None => "none",
            MethodState::Pending => "pending",
            MethodState::Active => "active",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wiping_a_reply_empties_its_text_and_leaves_the_rest() {
        let mut info = Reply::Info {
            text: "key JBSWY3DPEHPK3PXP".into(),
        };
        info.wipe();
        assert!(matches!(&info, Reply::Info { text } if text.is_empty()));
        let mut prompt = Reply::Prompt {
            text: "Code: ".into(),
            echo: true,
        };
        prompt.wipe();
        assert!(matches!(&prompt, Reply::Prompt { text, echo: true } if text.is_empty()));
        let mut outcome = Reply::Outcome(Outcome::Allow);
        outcome.wipe();
        assert!(matches!(outcome, Reply::Outcome(Outcome::Allow)));
    }
}
