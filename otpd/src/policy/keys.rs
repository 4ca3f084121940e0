//! Checking a code against the user's authenticator-app key, with replay protection: a TOTP
//! match is spent in memory (`Replay`, saved in batches by `save_spent`), an HOTP counter and the
//! code that confirms a pending key are stored before the check returns.
//!
//! Only `proof` asks these questions, under a lockout reservation; the result is internal
//! (`KeyCheck`), and `proof` turns it, with the other checks, into the `Proof` sessions see.

use super::blocking;
use super::clock::unix_now;
use super::hotp;
use super::records::{Change, Records};
use super::replay::Replay;
use super::totp::{self, Check};
use crate::store::{FleetAnswer, KeyKind, Store, StoreError, TotpKey};
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
    /// An HOTP code past the look-ahead window matched this counter: it logs nobody in, but
    /// the code of the counter right after it resynchronises the key (`resync`, policy::hotp).
    Resync {
        counter: u64,
    },
}

pub struct Keys {
    records: Arc<Records>,
    replay: Arc<Replay>,
    store: Arc<dyn Store>,
    skew: u8,
    /// `[hotp] window`, for HOTP keys that were not imported with a window of their own.
    hotp_window: u32,
}

impl Keys {
    pub fn new(
        records: Arc<Records>,
        replay: Arc<Replay>,
        store: Arc<dyn Store>,
        skew: u8,
        hotp_window: u32,
    ) -> Keys {
        Keys {
            records,
            replay,
            store,
            skew,
            hotp_window,
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

    /// How many digits the user's active key's codes have, if there is one (forward_pass).
    pub fn digits(&self, user: &str) -> Result<Option<u8>, StoreError> {
        Ok(self
            .records
            .load(user)?
            .and_then(|r| r.totp)
            .map(|k| k.digits))
    }

    /// What the fleet must spend for every host after the user's key accepted an app code
    /// (policy::fleet): the TOTP step or the HOTP counter accepted last, or nothing.
    pub fn fleet_spend(&self, user: &str) -> Result<FleetAnswer, StoreError> {
        let Some(key) = self.records.load(user)?.and_then(|r| r.totp) else {
            return Ok(FleetAnswer::Success);
        };
        let spent = match key.kind {
            KeyKind::Hotp => key.last_step.map(FleetAnswer::Counter),
            KeyKind::Totp => self
                .replay
                .last_spent(user, &key)
                .map(|step| FleetAnswer::Step {
                    step,
                    period: key.period,
                }),
        };
        Ok(spent.unwrap_or(FleetAnswer::Success))
    }

    /// `[totp] skew`, which the fleet's restart guard also covers.
    pub fn skew(&self) -> u8 {
        self.skew
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
    /// stored before the code is accepted. A code past the window is looked for up to
    /// `hotp::RESYNC_LIMIT` ahead, and only reported.
    async fn check_hotp(&self, user: &str, code: &Secret) -> Result<KeyCheck, StoreError> {
        let default_window = self.hotp_window;
        self.records
            .update(user, |record| {
                let Some(key) = record.as_mut().and_then(|r| r.totp.as_mut()) else {
                    return Change::Unchanged(KeyCheck::NotEnrolled);
                };
                let window = key.window.unwrap_or(default_window);
                let mut windowed = key.clone();
                windowed.window = Some(window);
                match totp::check(&windowed, code.expose(), unix_now(), 0) {
                    Check::Fresh(counter) => {
                        key.last_step = Some(counter);
                        Change::Changed(KeyCheck::Accepted)
                    }
                    Check::Used => Change::Unchanged(KeyCheck::Replayed),
                    Check::Wrong => Change::Unchanged(
                        match hotp::find_ahead(key, code.expose(), window.min(totp::MAX_WINDOW)) {
                            Some(counter) => KeyCheck::Resync { counter },
                            None => KeyCheck::Wrong,
                        },
                    ),
                }
            })
            .await
    }

    /// The second code of a resync: right only if it is the code of the counter right after
    /// `after` (the first code's) and that counter is still unused; it is then stored as the
    /// last one accepted before this returns.
    pub async fn resync(
        &self,
        user: &str,
        code: &Secret,
        after: u64,
    ) -> Result<KeyCheck, StoreError> {
        self.records
            .update(user, |record| {
                let Some(key) = record.as_mut().and_then(|r| r.totp.as_mut()) else {
                    return Change::Unchanged(KeyCheck::NotEnrolled);
                };
                let Some(next) = after.checked_add(1) else {
                    return Change::Unchanged(KeyCheck::Wrong);
                };
                if key.kind != KeyKind::Hotp {
                    return Change::Unchanged(KeyCheck::Wrong);
                }
                if key.last_step.is_some_and(|last| next <= last) {
                    return Change::Unchanged(KeyCheck::Replayed);
                }
                if !hotp::is_code_at(key, code.expose(), next) {
                    return Change::Unchanged(KeyCheck::Wrong);
                }
                key.last_step = Some(next);
                Change::Changed(KeyCheck::Accepted)
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

    /// RFC 4226 Appendix D's secret in hex; its counters 0..9 give these codes.
    const RFC_HEX: &str = "3132333435363738393031323334353637383930";
    const RFC_CODES: [&str; 10] = [
        "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871",
        "520489",
    ];

    fn hotp_code(key: &TotpKey, counter: u64) -> Secret {
        Secret::new(totp::code_at(key, counter * key.period).unwrap())
    }

    /// alice with a confirmed HOTP token (counter 0 confirmed it) and window `window`.
    async fn with_token(window: u32) -> (tempfile::TempDir, Accounts, TotpKey) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.hotp.window = window;
        let a = Accounts::new(Arc::new(FileStore::open(dir.path()).unwrap()), cfg).unwrap();
        let secret = Secret::new(RFC_HEX);
        let enrolled = a.enrollment.enroll_hotp("alice", Some(&secret), 0, 6).await;
        let (key, _) = enrolled.unwrap();
        let v = a
            .keys
            .check("alice", &Secret::new(RFC_CODES[0]), Target::PendingOrActive)
            .await;
        assert_eq!(v.unwrap(), KeyCheck::Activated);
        (dir, a, key)
    }

    #[tokio::test]
    async fn an_hotp_token_logs_in_within_the_configured_window_once_per_code() {
        let (_dir, a, _) = with_token(3).await;
        let check = |c: &'static str| {
            let (a, code) = (&a, Secret::new(c));
            async move { a.keys.check("alice", &code, Target::Active).await.unwrap() }
        };
        // A used counter is simply not among the next ones (totp::check_hotp): wrong.
        assert_eq!(check(RFC_CODES[0]).await, KeyCheck::Wrong);
        // Last accepted 0: 1..=4 are in the window; 4 skips 1..3, which are then used.
        assert_eq!(check(RFC_CODES[4]).await, KeyCheck::Accepted);
        assert_eq!(check(RFC_CODES[4]).await, KeyCheck::Wrong);
        assert_eq!(check(RFC_CODES[2]).await, KeyCheck::Wrong);
        assert_eq!(check(RFC_CODES[5]).await, KeyCheck::Accepted);
        assert_eq!(check("000000").await, KeyCheck::Wrong);
    }

    #[tokio::test]
    async fn a_code_past_the_window_moves_nothing_until_the_next_code_follows() {
        let (dir, a, key) = with_token(3).await;
        // Counter 9 is past the window (1..=4): reported, not accepted, nothing stored.
        let far = Secret::new(RFC_CODES[9]);
        let v = a.keys.check("alice", &far, Target::Active).await.unwrap();
        assert_eq!(v, KeyCheck::Resync { counter: 9 });
        assert_eq!(
            a.keys.check("alice", &far, Target::Active).await.unwrap(),
            v
        );
        // Not the very next code: wrong, and still nothing moved.
        let eleven = hotp_code(&key, 11);
        assert_eq!(
            a.keys.resync("alice", &eleven, 9).await.unwrap(),
            KeyCheck::Wrong
        );
        let ten = hotp_code(&key, 10);
        assert_eq!(
            a.keys.resync("alice", &ten, 9).await.unwrap(),
            KeyCheck::Accepted
        );
        let stored = FileStore::open(dir.path()).unwrap().load("alice").unwrap();
        assert_eq!(stored.unwrap().totp.unwrap().last_step, Some(10), "durable");
        // The pair is spent: neither works again, and the window now starts after 10.
        assert_eq!(
            a.keys.resync("alice", &ten, 9).await.unwrap(),
            KeyCheck::Replayed
        );
        let v = a.keys.check("alice", &eleven, Target::Active).await;
        assert_eq!(v.unwrap(), KeyCheck::Accepted);
    }

    #[tokio::test]
    async fn a_resync_searches_at_most_1000_counters_ahead() {
        let (_dir, a, key) = with_token(10).await;
        let beyond = hotp_code(&key, 1 + super::hotp::RESYNC_LIMIT + 1);
        let v = a
            .keys
            .check("alice", &beyond, Target::Active)
            .await
            .unwrap();
        // Six digits may recur below the limit; they must never match the far counter.
        assert_ne!(
            v,
            KeyCheck::Resync {
                counter: 1 + super::hotp::RESYNC_LIMIT + 1
            }
        );
        let edge = hotp_code(&key, super::hotp::RESYNC_LIMIT);
        let v = a.keys.check("alice", &edge, Target::Active).await.unwrap();
        assert!(matches!(v, KeyCheck::Resync { .. }), "{v:?}");
    }

    #[tokio::test]
    async fn two_logins_racing_with_one_hotp_code_cannot_both_win() {
        let (_dir, a, key) = with_token(10).await;
        let a = Arc::new(a);
        let c = hotp_code(&key, 3);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (a, c) = (a.clone(), c.clone());
                tokio::spawn(async move { a.keys.check("alice", &c, Target::Active).await })
            })
            .collect();
        let mut accepted = 0;
        for t in tasks {
            if t.await.unwrap().unwrap() == KeyCheck::Accepted {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 1);
    }
}
