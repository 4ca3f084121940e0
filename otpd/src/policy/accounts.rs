//! A user's account: the parts of the policy layer that share the user records, built once at
//! start and owned together, so the daemon has one handle to start, flush and stop. Each part
//! has one job:
//!
//! - `records` (policy::records): read-modify-write of a record under the user's lock;
//! - `keys` (policy::keys): a code against the authenticator-app key, with replay protection;
//! - `recovery` (policy::recovery): recovery codes checked on the bounded pool and spent;
//! - `enrollment` (policy::enrollment): new pending keys, imports, recovery-code sets, addresses;
//! - `registry` (policy::factors): what a user can log in with, their default, turning off;
//! - `lockouts` (policy::lockout): failures and locks, durable.
//!
//! Checking a code is not done here but in `proof`, the one place every answer is judged, from
//! `keys`, `recovery` and the lockouts.

use super::blocking;
use super::clock::{hostname, unix_now};
use super::enrollment::{EnrollError, Enrollment};
use super::factors::{Factors, Registry};
use super::keys::Keys;
use super::lockout::Lockouts;
use super::records::Records;
use super::recovery::RecoveryCodes;
use super::replay::Replay;
use crate::config::Config;
use crate::store::{Store, StoreError, TotpKey};
use otp_proto::Secret;
use std::sync::Arc;
use std::time::Duration;

pub struct Accounts {
    /// What each user can log in with; their default; turning factors off.
    pub registry: Registry,
    /// Adding factors.
    pub enrollment: Enrollment,
    /// Failures and locks, durable; reserved and settled by `proof`.
    pub lockouts: Lockouts,
    pub(super) keys: Arc<Keys>,
    pub(super) recovery: RecoveryCodes,
    records: Arc<Records>,
    store: Arc<dyn Store>,
    /// `[totp] issuer`, for `issuer` below only.
    issuer: Option<String>,
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
        ));
        Ok(Accounts {
            registry: Registry::new(records.clone(), cfg.users),
            enrollment: Enrollment::new(records.clone(), keys.clone(), cfg.totp.clone()),
            recovery: RecoveryCodes::new(records.clone()),
            lockouts,
            keys,
            records,
            store,
            issuer: cfg.totp.issuer,
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

    /// Every user with a record.
    pub async fn users(&self) -> Result<Vec<String>, StoreError> {
        self.records.users().await
    }

    /// Forget the user entirely: factors, replay state, lockout.
    pub async fn reset(&self, user: &str) -> Result<(), StoreError> {
        self.registry.disable(user).await?;
        self.lockouts.unlock(user).await
    }
}

/// The old name of `Factors`, for session/login.rs until it moves to the new one.
pub type Methods = Factors;

/// Old entry points session/login.rs still calls; each is one line over the part that now does
/// the job. Remove with the last caller.
impl Accounts {
    pub fn methods(&self, user: &str) -> Result<Factors, StoreError> {
        self.registry.factors(user)
    }

    pub fn locked_for(&self, user: &str) -> Option<Duration> {
        self.lockouts.locked_for(user)
    }

    pub fn pending_from_login(&self, user: &str) -> Result<Option<TotpKey>, StoreError> {
        self.enrollment.pending_from_login(user)
    }

    pub async fn enroll_totp(
        &self,
        user: &str,
        at_login: bool,
    ) -> Result<(TotpKey, Vec<Secret>), EnrollError> {
        self.enrollment.enroll_totp(user, at_login).await
    }

    pub async fn new_recovery_codes(&self, user: &str) -> Result<Vec<Secret>, EnrollError> {
        self.enrollment.new_recovery_codes(user).await
    }

    /// `State::issuer` is the one source now.
    pub fn issuer(&self) -> String {
        self.issuer.clone().unwrap_or_else(hostname)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::keys::{KeyCheck, Target};
    use crate::policy::totp;
    use crate::store::FileStore;
    use otp_proto::{MethodState, Via};

    fn accounts(dir: &std::path::Path) -> Accounts {
        let mut cfg = Config::default();
        cfg.lockout.max_failures = 3;
        Accounts::new(Arc::new(FileStore::open(dir).unwrap()), cfg).unwrap()
    }

    fn code(key: &TotpKey, offset: i64) -> Secret {
        let t = (unix_now() as i64 + offset) as u64;
        Secret::new(totp::code_at(key, t).unwrap())
    }

    async fn enrolled(a: &Accounts) -> TotpKey {
        let (key, _) = a.enrollment.enroll_totp("alice", false).await.unwrap();
        let v = a
            .keys
            .check("alice", &code(&key, -30), Target::PendingOrActive)
            .await;
        assert_eq!(v.unwrap(), KeyCheck::Activated);
        key
    }

    #[tokio::test]
    async fn a_pending_enrollment_does_not_count_at_login() {
        let dir = tempfile::tempdir().unwrap();
        let a = accounts(dir.path());
        let (key, _) = a.enrollment.enroll_totp("alice", false).await.unwrap();
        assert!(!a.registry.factors("alice").unwrap().totp);
        let v = a
            .keys
            .check("alice", &code(&key, 0), Target::Active)
            .await
            .unwrap();
        assert_eq!(v, KeyCheck::Wrong);
        assert_eq!(
            a.registry.enrolled("alice").unwrap().app,
            MethodState::Pending
        );
    }

    #[tokio::test]
    async fn a_code_is_spent_once_and_the_confirming_code_too() {
        let dir = tempfile::tempdir().unwrap();
        let a = accounts(dir.path());
        let key = enrolled(&a).await;
        let used = code(&key, -30);
        assert_eq!(
            a.keys.check("alice", &used, Target::Active).await.unwrap(),
            KeyCheck::Replayed
        );
        let now = code(&key, 0);
        assert_eq!(
            a.keys.check("alice", &now, Target::Active).await.unwrap(),
            KeyCheck::Accepted
        );
        assert_eq!(
            a.keys.check("alice", &now, Target::Active).await.unwrap(),
            KeyCheck::Replayed
        );
    }

    #[tokio::test]
    async fn a_used_code_stays_used_after_a_clean_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = accounts(dir.path());
        let key = enrolled(&first).await;
        let c = code(&key, 0);
        let v = first.keys.check("alice", &c, Target::Active).await;
        assert_eq!(v.unwrap(), KeyCheck::Accepted);
        first.close().await.unwrap();
        let second = accounts(dir.path());
        let v = second.keys.check("alice", &c, Target::Active).await;
        assert_eq!(v.unwrap(), KeyCheck::Replayed);
    }

    #[tokio::test]
    async fn after_a_crash_recent_codes_count_as_used_except_for_new_keys() {
        let dir = tempfile::tempdir().unwrap();
        let first = accounts(dir.path());
        let key = enrolled(&first).await;
        // Neither a login nor a flush: everything spent in memory is lost with the process.
        drop(first);
        let second = accounts(dir.path());
        for offset in [0, 30] {
            let v = second
                .keys
                .check("alice", &code(&key, offset), Target::Active)
                .await;
            assert!(
                matches!(v.unwrap(), KeyCheck::RestartGuard { .. }),
                "offset {offset}"
            );
        }
        // Bob enrolls after the restart: his codes work at once.
        let (bob, _) = second.enrollment.enroll_totp("bob", false).await.unwrap();
        let v = second
            .keys
            .check("bob", &code(&bob, -30), Target::PendingOrActive)
            .await;
        assert_eq!(v.unwrap(), KeyCheck::Activated);
        let v = second
            .keys
            .check("bob", &code(&bob, 0), Target::Active)
            .await;
        assert_eq!(v.unwrap(), KeyCheck::Accepted);
    }

    #[tokio::test]
    async fn nothing_is_spent_after_close() {
        let dir = tempfile::tempdir().unwrap();
        let a = accounts(dir.path());
        let key = enrolled(&a).await;
        a.close().await.unwrap();
        let v = a.keys.check("alice", &code(&key, 0), Target::Active).await;
        assert_eq!(v.unwrap(), KeyCheck::Replayed);
    }

    #[tokio::test]
    async fn two_concurrent_logins_cannot_spend_one_code() {
        let dir = tempfile::tempdir().unwrap();
        let a = Arc::new(accounts(dir.path()));
        let key = enrolled(&a).await;
        let c = code(&key, 0);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (a, c) = (a.clone(), c.clone());
                tokio::spawn(
                    async move { a.keys.check("alice", &c, Target::Active).await.unwrap() },
                )
            })
            .collect();
        let mut accepted = 0;
        for t in tasks {
            if t.await.unwrap() == KeyCheck::Accepted {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 1);
    }

    #[tokio::test]
    async fn a_directory_address_is_a_method_and_a_confirmed_one_overrides_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.users.insert(
            "alice".into(),
            crate::config::UserEntry {
                email: Some("alice@corp.example".into()),
                phone: None,
            },
        );
        let a = Accounts::new(Arc::new(FileStore::open(dir.path()).unwrap()), cfg).unwrap();
        let m = a.registry.factors("alice").unwrap();
        assert_eq!(m.email.as_deref(), Some("alice@corp.example"));
        assert!(!m.totp);
        a.enrollment
            .set_destination("alice", Via::Email, "alice@home.example")
            .await
            .unwrap();
        let m = a.registry.factors("alice").unwrap();
        assert_eq!(m.email.as_deref(), Some("alice@home.example"));
        assert!(a.registry.factors("bob").unwrap().is_empty());
    }

    #[tokio::test]
    async fn disable_forgets_the_enrollment() {
        let dir = tempfile::tempdir().unwrap();
        let a = accounts(dir.path());
        enrolled(&a).await;
        assert!(a.registry.disable("alice").await.unwrap());
        assert!(!a.registry.disable("alice").await.unwrap());
        assert_eq!(a.registry.enrolled("alice").unwrap().app, MethodState::None);
        assert!(a.users().await.unwrap().is_empty());
    }
}
