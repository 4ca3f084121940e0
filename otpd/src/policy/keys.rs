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
                record.pending_totp = None;
                record.pending_at_login = false;
                if !record.pending_recovery.is_empty() {
                    record.recovery = std::mem::take(&mut record.pending_recovery);
                }
                Change::Changed(true)
            })
            .await
    }
}
