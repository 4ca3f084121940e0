//! Where enrollments live. Policy talks to the `Store` trait only, so a shared backend for fleets
//! (PostgreSQL) can be added without touching it.

pub mod cache;
pub mod files;
pub mod key_file;
pub mod postgres;
pub mod rekey;
pub mod seal;

use crate::config::Algorithm;
use otp_proto::Secret;
use serde::{Deserialize, Serialize};

pub use cache::CachedStore;
pub use files::FileStore;

/// Everything the daemon keeps about one user.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    /// The confirmed authenticator app; the only TOTP that counts at login.
    #[serde(default)]
    pub totp: Option<TotpKey>,
    /// A new secret shown to the user but not yet confirmed with a code.
    #[serde(default)]
    pub pending_totp: Option<TotpKey>,
    /// A confirmed address for email codes (overrides `[users.NAME] email`).
    #[serde(default)]
    pub email: Option<String>,
    /// A confirmed mobile number, E.164 (overrides `[users.NAME] phone`).
    #[serde(default)]
    pub phone: Option<String>,
    /// Unused recovery codes, hashed.
    #[serde(default)]
    pub recovery: Vec<RecoveryHash>,
    /// The pending key was made by first-login enrollment (which may show it again), not by
    /// `otpctl enroll`.
    #[serde(default)]
    pub pending_at_login: bool,
    /// The set issued with a pending TOTP enrollment; replaces `recovery` when it is confirmed.
    #[serde(default)]
    pub pending_recovery: Vec<RecoveryHash>,
    /// The user's own choice among several methods (`otpctl default`).
    #[serde(default)]
    pub default_method: Option<otp_proto::MethodKind>,
}

/// One TOTP secret and the parameters the authenticator app was given with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotpKey {
    /// Base32, unpadded. Sealed (`seal`) wherever the record is stored.
    pub secret: Secret,
    pub algorithm: Algorithm,
    pub digits: u8,
    pub period: u64,
    /// The last time step (TOTP) or counter (HOTP) accepted; it and every earlier one are used
    /// up (RFC 6238 §5.2, RFC 4226 §7.2).
    #[serde(default)]
    pub last_step: Option<u64>,
    /// TOTP unless imported from an HOTP setup.
    #[serde(default)]
    pub kind: KeyKind,
    /// HOTP look-ahead: how many counters past the next one a code may match.
    #[serde(default)]
    pub window: Option<u32>,
    /// Unix seconds.
    pub created: u64,
}

impl TotpKey {
    /// The restart guard's floor (policy::replay, and the offline copies' in
    /// store::postgres::offline; the fleet's is the same rule in SQL, migrations/005): after an
    /// unclean stop seen at `from` (Unix seconds), every step of this key up to the returned one
    /// may have been spent unrecorded. `None` for a key made after `from`: none of its steps
    /// were.
    pub fn guard_floor(&self, from: u64, skew: u64) -> Option<u64> {
        (self.created <= from && self.period > 0).then(|| (from / self.period).saturating_add(skew))
    }
}

/// Time-based (RFC 6238) or counter-based (RFC 4226).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    #[default]
    Totp,
    Hotp,
}

impl UserRecord {
    /// Forget a pending enrollment and what goes with it (its recovery-code set, where it was
    /// made), so none of the three can outlive the key.
    pub fn clear_pending(&mut self) {
        self.pending_totp = None;
        self.pending_recovery.clear();
        self.pending_at_login = false;
    }

    pub fn is_empty(&self) -> bool {
        self.totp.is_none()
            && self.pending_totp.is_none()
            && self.email.is_none()
            && self.phone.is_none()
            && self.recovery.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: unreadable record: {message}")]
    Corrupt {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("user name {0:?} cannot be stored")]
    BadName(String),
    #[error("{}: another otpd is using this state directory", .0.display())]
    InUse(std::path::PathBuf),
    /// The blocking pool is gone or the task running the write died: otpd is stopping.
    #[error("the store could not be reached: otpd is stopping")]
    Stopping,
    /// A wrong key or a tampered record: never read as "not enrolled".
    #[error(
        "user {user:?}: the {field} secret cannot be decrypted with the configured key: {source}"
    )]
    Sealed {
        user: String,
        field: seal::Field,
        source: seal::SealError,
    },
    #[error("{0}")]
    Key(#[from] key_file::KeyFileError),
    /// The shared database could not be reached (down, network, TLS, timeout): logins deny
    /// (`[store] offline`).
    #[error("the database cannot be reached: {0}")]
    Unreachable(String),
    /// The database answered with an error (a wrong password, a missing grant).
    #[error("the database refused: {0}")]
    Database(String),
    /// The schema is not the one this otpd was built for.
    #[error("database schema version {found}, but this otpd knows version {known}: {advice}")]
    Schema {
        found: i32,
        known: i32,
        advice: &'static str,
    },
    /// `[store]` cannot be used as configured (its files, its url).
    #[error("[store] {0}")]
    Config(String),
}

/// A TOTP step spent at login and kept in memory, written to the store in batches rather than
/// once per login (docs/design.md, "Replay protection").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsedStep {
    pub user: String,
    pub step: u64,
    /// The key's period, so the step can be placed in time when deciding whether it still matters.
    pub period: u64,
}

/// What replay protection writes in each batch: the steps spent at login, and the restart guard
/// while it can still refuse a code. The guard is saved with the steps so that a clean stop
/// during a guarded run does not forget it (a step spent before the crash was never written).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedSteps {
    pub used: Vec<UsedStep>,
    /// Unix start of the run that began after an unclean stop: for keys created before it, every
    /// step up to this time plus the skew counts as used (policy::replay).
    #[serde(default)]
    pub guard_from: Option<u64>,
}

/// One unused recovery code, as stored: argon2id with its own salt (policy::recovery makes and
/// checks them; the store only keeps them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryHash {
    /// Hex.
    pub salt: String,
    /// Hex argon2id output.
    pub hash: String,
}

/// What the store knew of the previous run of otpd when this one began.
#[derive(Debug, Default)]
pub struct PreviousRun {
    /// The previous run ended without writing its last used steps (killed, crashed, power
    /// lost): steps it spent since its last flush are unknown.
    pub unclean: bool,
    /// The used steps (and guard) it wrote last.
    pub saved: SavedSteps,
}

/// A user's recent failed answers and lock, in Unix seconds, kept durably so that neither a
/// restart nor a crash lifts a lockout or forgets a failure an attacker was told about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutRecord {
    /// When each failure inside the window happened.
    pub failures: Vec<u64>,
    pub locked_until: Option<u64>,
}

/// A durable map from user name to record. Implementations must make `save` atomic and durable:
/// after it returns, a crash leaves the new record; during it, the old one.
pub trait Store: Send + Sync + 'static {
    fn load(&self, user: &str) -> Result<Option<UserRecord>, StoreError>;
    fn save(&self, user: &str, record: &UserRecord) -> Result<(), StoreError>;
    fn remove(&self, user: &str) -> Result<(), StoreError>;
    fn users(&self) -> Result<Vec<String>, StoreError>;

    /// Mark the store in use by this run and read what the previous run left.
    fn begin_run(&self) -> Result<PreviousRun, StoreError>;
    /// Mark a clean end of this run, after its used steps were saved.
    fn end_run(&self) -> Result<(), StoreError>;
    /// Replace the saved used steps and guard, atomically and durably.
    fn save_used_steps(&self, saved: &SavedSteps) -> Result<(), StoreError>;

    /// Every user's saved lockout state (read once, at start).
    fn lockouts(&self) -> Result<Vec<(String, LockoutRecord)>, StoreError>;
    /// Replace (or with `None`, forget) one user's lockout state, atomically and durably.
    fn save_lockout(&self, user: &str, record: Option<&LockoutRecord>) -> Result<(), StoreError>;

    /// A store shared by a fleet decides verdicts for every host (`Fleet`); `None` for a store
    /// of this host alone.
    fn fleet(&self) -> Option<&dyn Fleet> {
        None
    }
}

/// What a host asks the fleet about one answer it has checked locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetAnswer {
    /// A right TOTP code of this step of a key with this period (seconds): spend it. The only
    /// answer `commit = "fast"` commits fast, so the fleet's restart guard judges it too.
    Step { step: u64, period: u64 },
    /// A right HOTP code at this counter: spend it, always durably (nothing guards counters).
    Counter(u64),
    /// A right answer with nothing of the fleet's to spend (a sent code, a recovery code the
    /// fleet already spent, a confirmed pending key).
    Success,
    /// A wrong (or locally replayed) answer.
    Failure,
}

/// The fleet's verdict, the one the user sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetVerdict {
    Allowed,
    /// The step was already spent by some host.
    Replayed,
    Wrong,
    /// Refused unjudged; locked until this Unix time.
    Locked {
        until: u64,
    },
    /// Allowed by this host alone while the database is unreachable (`offline = "cached"`).
    AllowedOffline,
    /// A right TOTP code from before the database restarted or failed over, which a fast
    /// commit may have lost the spending of: refused, not spent, not counted. Codes work again
    /// from this Unix time.
    Guarded {
        until: u64,
    },
}

/// The lockout rules the fleet applies, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct FleetRules {
    pub now: u64,
    pub window: u64,
    pub max_failures: u32,
    pub lock_for: u64,
    /// `[totp] skew`: how many steps past the guard's start it also covers.
    pub skew: u8,
}

/// Fleet-wide replay and lockout (docs/design.md, "The fleet store"): each call is one atomic
/// decision in the shared database, so what one host spent or counted holds on every host.
pub trait Fleet: Send + Sync {
    /// Decide one answer under the user's lock.
    fn answer(
        &self,
        user: &str,
        answer: FleetAnswer,
        rules: &FleetRules,
    ) -> Result<FleetVerdict, StoreError>;
    /// Spend a recovery code fleet-wide; false when another host spent it first.
    fn spend_recovery(&self, user: &str, code: &RecoveryHash) -> Result<bool, StoreError>;
    /// Count a send against the fleet's cooldown and quotas, or say why not.
    fn count_send(&self, send: &FleetSend) -> Result<Option<FleetRefusal>, StoreError>;
    /// A send counted by `count_send` never left (its delivery failed): uncount it.
    fn uncount_send(&self, send: &FleetSend) -> Result<(), StoreError>;
    /// `grace_fleet`: whether a host granted `user` grace from `rhost` through `service` that
    /// still holds at `now` (Unix seconds).
    fn grace_admits(
        &self,
        user: &str,
        rhost: &str,
        service: &str,
        now: u64,
    ) -> Result<bool, StoreError>;
    /// Grant that grace until `until` (Unix seconds), for every host.
    fn grace_grant(
        &self,
        user: &str,
        rhost: &str,
        service: &str,
        until: u64,
    ) -> Result<(), StoreError>;
    /// End every grace of `user`, on every host.
    fn grace_forget(&self, user: &str) -> Result<(), StoreError>;
    /// Call `watcher` with the user's name whenever another host clears that user's failures
    /// and lock (an unlock, a reset, a right code after failures), so this host's own count
    /// goes too.
    fn on_unlock(&self, watcher: std::sync::Arc<dyn Fn(&str) + Send + Sync>);
}

/// One code to send, as the fleet counts it (policy::challenge).
#[derive(Debug, Clone)]
pub struct FleetSend {
    pub user: String,
    /// `destination_key`: one spelling per address or number.
    pub destination: String,
    /// A login code or disable token (else an enrollment code, with its own budgets).
    pub confirmed: bool,
    /// Unix seconds.
    pub at: u64,
    pub resend_after: u64,
    pub max_user: u32,
    pub max_destination: u32,
}

/// Why the fleet refuses a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetRefusal {
    /// Seconds to wait.
    Cooldown(u64),
    Quota,
}

/// The store `[store]` names, with its cache: the state directory, or the fleet's database
/// (which also starts listening for other hosts' changes).
pub fn open(cfg: &crate::config::Config) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    match cfg.store.backend {
        crate::config::store::Backend::Files => Ok(std::sync::Arc::new(CachedStore::new(
            FileStore::open_with_key_file(&cfg.state_dir, &cfg.key_file)?,
        ))),
        crate::config::store::Backend::Postgres => postgres::open_cached(cfg),
    }
}
