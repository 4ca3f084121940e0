//! The policy layer's parts that share the user records, built once at start and owned
//! together, so the daemon has one handle to start, flush and stop. Each part has one job:
//!
//! - `records` (policy::records): read-modify-write of a record under the user's lock;
//! - `keys` (policy::keys): a code against the authenticator-app key, with replay protection;
//! - `recovery` (policy::recovery): recovery codes checked on the bounded pool and spent;
//! - `enrollment` (policy::enrollment): new pending keys, imports, recovery-code sets, addresses;
//! - `registry` (policy::factors): what a user can log in with, their default, turning off;
//! - `lockouts` (policy::lockout): failures and locks, durable;
//! - `grace` (policy::grace): who may skip the code, from where, for a while (in memory).
//!
//! Checking a code is not done here but in `proof`, the one place every answer is judged, from
//! `keys`, `recovery` and the lockouts.

use super::blocking;
use super::clock::unix_now;
use super::enrollment::Enrollment;
use super::factors::Registry;
use super::grace::Grace;
use super::keys::Keys;
use super::lockout::Lockouts;
use super::records::Records;
use super::recovery::RecoveryCodes;
use super::replay::Replay;
use crate::config::Config;
use crate::store::{Store, StoreError};
use std::sync::Arc;

pub struct Accounts {
    /// What each user can log in with; their default; turning factors off.
    pub registry: Registry,
    /// Adding factors.
    pub enrollment: Enrollment,
    /// Failures and locks, durable; reserved and settled by `proof`.
    pub lockouts: Lockouts,
    /// Logins that may skip the code for a while; forgotten at any failure.
    pub grace: Grace,
    pub(super) keys: Arc<Keys>,
    pub(super) recovery: RecoveryCodes,
    records: Arc<Records>,
    store: Arc<dyn Store>,
    /// The rules a fleet's store applies to every host's answers (policy::fleet).
    pub(super) lockout_rules: crate::config::LockoutConfig,
}

impl Accounts {
    /// Take over the store for this run (blocking I/O: call before serving).
    pub fn new(store: Arc<dyn Store>, cfg: Config) -> Result<Accounts, StoreError> {
        let previous = store.begin_run()?;
        let lockouts = Lockouts::load(cfg.lockout.clone(), store.clone())?;
        let replay = Arc::new(Replay::new(previous, cfg.totp.skew, unix_now()));
        let records = Arc::new(Records::new(store.clone(), replay.clone()));
        let keys = Arc::new(Keys::new(
            records.clone(),
            replay,
            store.clone(),
            cfg.totp.skew,
            cfg.hotp.window,
        ));
        Ok(Accounts {
            registry: Registry::new(records.clone(), cfg.users),
            enrollment: Enrollment::new(records.clone(), keys.clone(), cfg.totp.clone()),
            recovery: RecoveryCodes::new(records.clone()).with_store(store.clone()),
            grace: Grace::new(cfg.policy.grace_fleet.then(|| store.clone())),
            lockouts,
            keys,
            records,
            store,
            lockout_rules: cfg.lockout,
        })
    }

    /// Save the TOTP steps spent since the last flush (one atomic file write for all of them),
    /// and the lockout states cleared since then.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let lockouts = self.lockouts.flush().await;
        self.keys.save_spent().await.and(lockouts)
    }

    /// A clean stop: save the spent steps, then mark the run ended, so the next start trusts
    /// them. If saving fails the mark stays, and the next start applies the restart guard.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.keys.seal();
        self.flush().await?;
        let store = self.store.clone();
        blocking(move || store.end_run()).await
    }

    /// The fleet's shared store, when there is one (policy::fleet).
    pub(super) fn fleet_store(&self) -> Option<&Arc<dyn Store>> {
        self.store.fleet().map(|_| &self.store)
    }

    /// The store when a fleet shares it (for `Challenges::with_fleet`).
    pub fn shared_store(&self) -> Option<Arc<dyn Store>> {
        self.fleet_store().cloned()
    }

    /// Whether a record is stored under exactly `user` (names::Names::resolve_recorded). Read
    /// in place, like every record read (policy::records); an error is "no".
    pub fn has_record(&self, user: &str) -> bool {
        matches!(self.records.load(user), Ok(Some(_)))
    }

    /// Every user with a record.
    pub async fn users(&self) -> Result<Vec<String>, StoreError> {
        self.records.users().await
    }

    /// Forget the user entirely: factors, replay state, lockout.
    pub async fn reset(&self, user: &str) -> Result<(), StoreError> {
        self.grace.forget(user);
        self.registry.disable(user).await?;
        self.lockouts.unlock(user).await
    }
}
