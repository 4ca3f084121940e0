//! Checking a code against the user's authenticator-app key, with replay protection: a TOTP
//! match is spent in memory (`Replay`, saved in batches by `save_spent`), an HOTP counter and the
//! code that confirms a pending key are stored before the check returns.
//!
//! Only `proof` asks these questions, under a lockout reservation; the result is internal
//! (`KeyCheck`), and `proof` turns it, with the other checks, into the `Proof` sessions see.

use super::blocking;
use super::clock::unix_now;
use super::records::{Change, Records};
use super::replay::Replay;
use super::totp::{self, Check};
use crate::store::{KeyKind, Store, StoreError, TotpKey};
use otp_proto::Secret;
use std::sync::Arc;

/// Which key a code may match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Login: only a confirmed key counts.
    Active,
    /// `otpctl verify`: confirms a pending key, or checks the active one.
    PendingOrActive,
}

/// What the user's key says of one typed code (internal to the policy layer: see `Proof`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    Accepted,
    /// The code confirmed a pending key, which is now active.
    Activated,
    Wrong,
    Replayed,
    /// A right code refused only because otpd restarted after a crash and cannot know whether
    /// it was used (policy::replay); not the user's fault, so not a failure toward lockout.
    /// Codes work again from this Unix time.
    RestartGuard {
        until: u64,
    },
    NotEnrolled,
}

pub struct Keys {
    records: Arc<Records>,
    replay: Arc<Replay>,
    store: Arc<dyn Store>,
    skew: u8,
}

impl Keys {
    pub fn new(
        records: Arc<Records>,
        replay: Arc<Replay>,
        store: Arc<dyn Store>,
        skew: u8,
    ) -> Keys {
        Keys {
            records,
            replay,
            store,
            skew,
        }
    }

    /// Check a code against the user's key; a fresh match is spent before this returns (in
    /// memory for TOTP, durably for HOTP and for the code that confirms a pending key).
    pub async fn check(
        &self,
        user: &str,
        code: &Secret,
        target: Target,
    ) -> Result<KeyCheck, StoreError> {
        let Some(record) = self.records.load(user)? else {
            return Ok(KeyCheck::NotEnrolled);
        };
        if target == Target::PendingOrActive
            && record.pending_totp.is_some()
            && self.confirm_pending(user, code).await?
        {
            return Ok(KeyCheck::Activated);
        }
        match record.totp {
            None if record.pending_totp.is_some() => Ok(KeyCheck::Wrong),
            None => Ok(KeyCheck::NotEnrolled),
            Some(key) if key.kind == KeyKind::Hotp => self.check_hotp(user, code).await,
            Some(key) => Ok(self.spend_totp(user, key, code)),
        }
    }

    /// The step (TOTP) or counter (HOTP) the user's key accepted last, which a fleet spends
    /// for every host (policy::fleet).
    pub fn accepted_step(&self, user: &str) -> Result<Option<u64>, StoreError> {
        let Some(key) = self.records.load(user)?.and_then(|r| r.totp) else {
            return Ok(None);
        };
        Ok(match key.kind {
            KeyKind::Hotp => key.last_step,
            KeyKind::Totp => self.replay.last_spent(user, &key),
        })
    }

    /// The newest step spent with `key` so far (in memory or stored).
    pub fn last_spent(&self, user: &str, key: &TotpKey) -> Option<u64> {
        self.replay.last_spent(user, key)
    }

    /// Save the TOTP steps spent since the last save (one atomic file write for all of them).
    pub async fn save_spent(&self) -> Result<(), StoreError> {
        let Some(steps) = self.replay.unsaved(unix_now()) else {
            return Ok(());
        };
        let store = self.store.clone();
        let saved = blocking(move || store.save_used_steps(&steps)).await;
        if saved.is_err() {
            self.replay.save_failed();
        }
        saved
    }

    /// The final save has begun: nothing more may be spent.
    pub fn seal(&self) {
        self.replay.seal();
    }

    /// TOTP at login: check against the steps spent so far and spend the match in memory.
    fn spend_totp(&self, user: &str, mut key: TotpKey, code: &Secret) -> KeyCheck {
        key.last_step = self.replay.last_spent(user, &key);
        match totp::check(&key, code.expose(), unix_now(), self.skew) {
            Check::Fresh(step) => match self.replay.guarded(user, &key, step) {
                Some(until) => KeyCheck::RestartGuard { until },
                None if self.replay.spend(user, &key, step) => KeyCheck::Accepted,
                None => KeyCheck::Replayed,
            },
            Check::Used => KeyCheck::Replayed,
            Check::Wrong => KeyCheck::Wrong,
        }
    }

    /// HOTP counters are not bound to time, so no restart guard can cover them: the counter is
    /// stored before the code is accepted.
    async fn check_hotp(&self, user: &str, code: &Secret) -> Result<KeyCheck, StoreError> {
        self.records
            .update(user, |record| {
                let Some(key) = record.as_mut().and_then(|r| r.totp.as_mut()) else {
                    return Change::Unchanged(KeyCheck::NotEnrolled);
                };
                match totp::check(key, code.expose(), unix_now(), 0) {
                    Check::Fresh(counter) => {
                        key.last_step = Some(counter);
                        Change::Changed(KeyCheck::Accepted)
                    }
                    Check::Used => Change::Unchanged(KeyCheck::Replayed),
                    Check::Wrong => Change::Unchanged(KeyCheck::Wrong),
                }
            })
            .await
    }

    /// A code for the pending key makes it the active one (with its recovery codes), stored
    /// before this returns; false when the code is not the pending key's.
    async fn confirm_pending(&self, user: &str, code: &Secret) -> Result<bool, StoreError> {
        let skew = self.skew;
        self.records
            .update(user, |record| {
                let Some(record) = record.as_mut() else {
                    return Change::Unchanged(false);
                };
                let Some(pending) = &record.pending_totp else {
                    return Change::Unchanged(false);
                };
                let Check::Fresh(step) = totp::check(pending, code.expose(), unix_now(), skew)
                else {
                    return Change::Unchanged(false);
                };
                let mut key = pending.clone();
                key.last_step = Some(step);
                record.totp = Some(key);
                if !record.pending_recovery.is_empty() {
                    record.recovery = std::mem::take(&mut record.pending_recovery);
                }
                record.clear_pending();
                Change::Changed(true)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::policy::accounts::Accounts;
    use crate::store::FileStore;
    use otp_proto::MethodState;

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
}
