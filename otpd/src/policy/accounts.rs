//! Per-user bookkeeping: one user's record is read, changed and written back under that user's
//! own lock, so two logins of the same user cannot both spend one code, while logins of
//! different users never wait for each other. Reads come from a cache or one small file; writes
//! run on the blocking pool. A TOTP login writes nothing: its step is spent in memory (`Replay`)
//! and saved in batches by `flush`.
//!
//! Checking a code is not done here but in `proof`, the one place every answer is judged; this
//! file offers it the primitives (`verify_totp`, `use_recovery_code`).

use super::blocking;
pub use super::clock::{hostname, unix_now};
use super::lockout::Lockouts;
use super::recovery::{self, Checker};
use super::replay::Replay;
use super::totp::{self, Check};
use crate::channel::mask;
use crate::config::Algorithm;
use crate::config::Config;
use crate::store::{KeyKind, Store, StoreError, TotpKey, UserRecord};
use otp_proto::{ImportedKey, MethodKind, MethodState, Secret, UserStatus, Via};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a user can log in with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Methods {
    /// The user's own pick among several (`otpctl default`).
    pub default: Option<MethodKind>,
    pub totp: bool,
    /// The address email codes go to.
    pub email: Option<String>,
    /// The number SMS codes go to.
    pub sms: Option<String>,
}

impl Methods {
    pub fn is_empty(&self) -> bool {
        !self.totp && self.email.is_none() && self.sms.is_none()
    }

    /// Where codes sent `via` go for this user.
    pub fn destination(&self, via: Via) -> Option<&str> {
        match via {
            Via::Email => self.email.as_deref(),
            Via::Sms => self.sms.as_deref(),
        }
    }
}

/// Which enrollment a code may match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Login: only a confirmed enrollment counts.
    Active,
    /// `otpctl verify`: confirms a pending enrollment, or checks the active one.
    PendingOrActive,
}

/// What the user's authenticator-app key says of one typed code (`proof` turns it, with the
/// other checks, into the verdict sessions see).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// The code confirmed a pending enrollment, which is now active.
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

/// What a recovery-code check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryCheck {
    /// The user has no recovery codes: nothing was checked.
    NoCodes,
    Wrong,
    /// It was one; now spent, with this many left.
    Used {
        left: u32,
    },
}

pub struct Accounts {
    store: Arc<dyn Store>,
    cfg: Config,
    /// Failures and locks, durable (policy::lockout); used by `proof`.
    pub(super) lockouts: Lockouts,
    replay: Replay,
    checker: Checker,
    user_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Accounts {
    /// Take over the store for this run (blocking I/O: call before serving).
    pub fn new(store: Arc<dyn Store>, cfg: Config) -> Result<Accounts, StoreError> {
        let previous = store.begin_run()?;
        Ok(Accounts {
            lockouts: Lockouts::load(cfg.lockout.clone(), store.clone())?,
            replay: Replay::new(previous, cfg.totp.skew, unix_now()),
            checker: Checker::new(),
            store,
            cfg,
            user_locks: Mutex::new(HashMap::new()),
        })
    }

    /// Save the TOTP steps spent since the last flush (one atomic file write for all of them),
    /// and the lockout states cleared since then.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let lockouts = self.lockouts.flush().await;
        let Some(steps) = self.replay.unsaved(unix_now()) else {
            return lockouts;
        };
        let store = self.store.clone();
        let saved = blocking(move || store.save_used_steps(&steps)).await;
        if saved.is_err() {
            self.replay.save_failed();
        }
        saved.and(lockouts)
    }

    /// A clean stop: save the spent steps, then mark the run ended, so the next start trusts
    /// them. If saving fails the mark stays, and the next start applies the restart guard.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.replay.seal();
        self.flush().await?;
        let store = self.store.clone();
        blocking(move || store.end_run()).await
    }

    /// The second factors that count at login for this user.
    pub fn methods(&self, user: &str) -> Result<Methods, StoreError> {
        let record = self.load(user)?.unwrap_or_default();
        Ok(self.methods_of(user, &record))
    }

    /// The user's own record first, then the static directory (`[users.NAME]`).
    fn methods_of(&self, user: &str, record: &UserRecord) -> Methods {
        let directory = self.cfg.users.get(user);
        Methods {
            default: record.default_method,
            totp: record.totp.is_some(),
            email: (record.email.clone()).or_else(|| directory.and_then(|d| d.email.clone())),
            sms: (record.phone.clone()).or_else(|| directory.and_then(|d| d.phone.clone())),
        }
    }

    /// Check a code against the user's key; a fresh match is spent before this returns (in
    /// memory for TOTP, durably for HOTP and for the code that confirms an enrollment). Only
    /// `proof` calls it, under a lockout reservation.
    pub(super) async fn verify_totp(
        &self,
        user: &str,
        code: &Secret,
        target: Target,
    ) -> Result<Verdict, StoreError> {
        let Some(record) = self.load(user)? else {
            return Ok(Verdict::NotEnrolled);
        };
        if target == Target::PendingOrActive && record.pending_totp.is_some() {
            if let Some(verdict) = self.confirm_totp(user, code).await? {
                return Ok(verdict);
            }
        }
        match record.totp {
            None if record.pending_totp.is_some() => Ok(Verdict::Wrong),
            None => Ok(Verdict::NotEnrolled),
            Some(key) if key.kind == KeyKind::Hotp => self.verify_hotp(user, code).await,
            Some(key) => Ok(self.spend_totp(user, key, code)),
        }
    }

    /// TOTP at login: check against the steps spent so far and spend the match in memory.
    fn spend_totp(&self, user: &str, mut key: TotpKey, code: &Secret) -> Verdict {
        key.last_step = self.replay.last_spent(user, &key);
        match totp::check(&key, code.expose(), unix_now(), self.cfg.totp.skew) {
            Check::Fresh(step) => match self.replay.guarded(user, &key, step) {
                Some(until) => Verdict::RestartGuard { until },
                None if self.replay.spend(user, &key, step) => Verdict::Accepted,
                None => Verdict::Replayed,
            },
            Check::Used => Verdict::Replayed,
            Check::Wrong => Verdict::Wrong,
        }
    }

    /// HOTP counters are not bound to time, so no restart guard can cover them: the counter is
    /// stored before the code is accepted.
    async fn verify_hotp(&self, user: &str, code: &Secret) -> Result<Verdict, StoreError> {
        self.update(user, |record| {
            let Some(key) = record.as_mut().and_then(|r| r.totp.as_mut()) else {
                return (Verdict::NotEnrolled, false);
            };
            match totp::check(key, code.expose(), unix_now(), 0) {
                Check::Fresh(counter) => {
                    key.last_step = Some(counter);
                    (Verdict::Accepted, true)
                }
                Check::Used => (Verdict::Replayed, false),
                Check::Wrong => (Verdict::Wrong, false),
            }
        })
        .await
    }

    /// A code for the pending key makes it the active one (with its recovery codes), stored
    /// before this returns; `None` when the code is not the pending key's.
    async fn confirm_totp(&self, user: &str, code: &Secret) -> Result<Option<Verdict>, StoreError> {
        let skew = self.cfg.totp.skew;
        let confirmed = self
            .update(user, |record| {
                let Some(record) = record.as_mut() else {
                    return (false, false);
                };
                let Some(pending) = &record.pending_totp else {
                    return (false, false);
                };
                let Check::Fresh(step) = totp::check(pending, code.expose(), unix_now(), skew)
                else {
                    return (false, false);
                };
                let mut key = pending.clone();
                key.last_step = Some(step);
                record.totp = Some(key);
                record.pending_totp = None;
                record.pending_at_login = false;
                if !record.pending_recovery.is_empty() {
                    record.recovery = std::mem::take(&mut record.pending_recovery);
                }
                (true, true)
            })
            .await?;
        Ok(confirmed.then_some(Verdict::Activated))
    }

    /// Time left on the user's lockout, if any.
    pub fn locked_for(&self, user: &str) -> Option<Duration> {
        self.lockouts.locked_for(user)
    }

    /// Does the user have a factor that works at login (an active key, an address, a number, or
    /// recovery codes)? Changing factors then needs one of them (`proof::Counts::Change`).
    pub fn has_factor(&self, user: &str) -> Result<bool, StoreError> {
        let record = self.load(user)?.unwrap_or_default();
        let methods = self.methods_of(user, &record);
        Ok(!methods.is_empty() || !record.recovery.is_empty())
    }

    /// Make a confirmed address or number the user's email or SMS method.
    pub async fn set_destination(
        &self,
        user: &str,
        via: Via,
        destination: &str,
    ) -> Result<(), StoreError> {
        let destination = destination.to_owned();
        self.update(user, move |record| {
            let record = record.get_or_insert_with(UserRecord::default);
            match via {
                Via::Email => record.email = Some(destination),
                Via::Sms => record.phone = Some(destination),
            }
            ((), true)
        })
        .await
    }

    /// Store a new pending TOTP key (replacing any earlier pending one) with a new set of
    /// recovery codes that takes effect with it; return both to show once. `at_login`: made by
    /// first-login enrollment, the only pending key a login may show again.
    pub async fn enroll_totp(
        &self,
        user: &str,
        at_login: bool,
    ) -> Result<(TotpKey, Vec<Secret>), EnrollError> {
        let key = totp::new_key(&self.cfg.totp, unix_now()).map_err(|_| EnrollError::Random)?;
        let (codes, hashes) = tokio::task::spawn_blocking(recovery::new_set)
            .await
            .map_err(|_| EnrollError::Random)?;
        let pending = key.clone();
        self.update(user, move |record| {
            let record = record.get_or_insert_with(UserRecord::default);
            record.pending_totp = Some(pending);
            record.pending_at_login = at_login;
            record.pending_recovery = hashes;
            ((), true)
        })
        .await?;
        Ok((key, codes))
    }

    /// Spend a recovery code: when `code` is one of the user's unused codes, it is gone
    /// (durably) before this returns. Checked on the bounded pool; dropping the future cancels.
    pub(super) async fn use_recovery_code(
        &self,
        user: &str,
        code: &Secret,
    ) -> Result<RecoveryCheck, StoreError> {
        let set = match self.load(user)? {
            Some(r) if !r.recovery.is_empty() => r.recovery,
            _ => return Ok(RecoveryCheck::NoCodes),
        };
        let Some(hash) = self.checker.find(code, set).await else {
            return Ok(RecoveryCheck::Wrong);
        };
        self.update(user, move |record| match record.as_mut() {
            Some(r) if r.recovery.contains(&hash) => {
                r.recovery.retain(|h| *h != hash);
                let left = r.recovery.len() as u32;
                (RecoveryCheck::Used { left }, true)
            }
            // Spent by a concurrent login between the check and the lock.
            _ => (RecoveryCheck::Wrong, false),
        })
        .await
    }

    /// Make an existing authenticator setup the user's active key (and its scratch codes their
    /// recovery codes), checked first so a bad file cannot lock the user out.
    pub async fn import(&self, user: &str, imported: ImportedKey) -> Result<(), ImportRefused> {
        let algorithm = match imported.algorithm.as_str() {
            "SHA1" => Algorithm::SHA1,
            "SHA256" => Algorithm::SHA256,
            "SHA512" => Algorithm::SHA512,
            other => return Err(ImportRefused::Invalid(format!("unknown algorithm {other}"))),
        };
        let key = TotpKey {
            secret: imported.secret,
            algorithm,
            digits: imported.digits,
            period: imported.period,
            last_step: imported.hotp_counter.and_then(|next| next.checked_sub(1)),
            kind: if imported.hotp_counter.is_some() {
                KeyKind::Hotp
            } else {
                KeyKind::Totp
            },
            window: imported.window,
            created: unix_now(),
        };
        if !totp::usable(&key) {
            return Err(ImportRefused::Invalid(
                "the secret is not base32, or digits/period are out of range".into(),
            ));
        }
        let codes = imported.recovery_codes;
        let hashes = tokio::task::spawn_blocking(move || recovery::hash_existing(&codes))
            .await
            .map_err(|_| ImportRefused::Store(StoreError::Stopping))?;
        let spent = self.replay.last_spent(user, &key);
        self.update(user, move |record| {
            let record = record.get_or_insert_with(UserRecord::default);
            let mut key = key;
            // The same secret again (a re-import) is the same key: its used steps and its age
            // (which the restart guard goes by) stay, or a used code would work again.
            if let Some(old) = record.totp.as_ref().filter(|old| old.secret == key.secret) {
                key.created = old.created;
                key.last_step = key.last_step.max(old.last_step).max(spent);
            }
            record.totp = Some(key);
            record.pending_totp = None;
            if !hashes.is_empty() {
                record.recovery = hashes;
            }
            ((), true)
        })
        .await
        .map_err(ImportRefused::Store)
    }

    /// The pending TOTP key that first-login enrollment made, if one is waiting for its first
    /// code. A pending key made with `otpctl enroll` is never shown at a login: whoever passes
    /// the first factor would see the user's new key.
    pub fn pending_from_login(&self, user: &str) -> Result<Option<TotpKey>, StoreError> {
        Ok(self
            .load(user)?
            .filter(|r| r.pending_at_login)
            .and_then(|r| r.pending_totp))
    }

    /// Set (or clear) the method offered first.
    pub async fn set_default(
        &self,
        user: &str,
        method: Option<MethodKind>,
    ) -> Result<(), StoreError> {
        self.update(user, move |record| {
            record
                .get_or_insert_with(UserRecord::default)
                .default_method = method;
            ((), true)
        })
        .await
    }

    /// Replace the user's recovery codes with a new set and return it to show once.
    pub async fn new_recovery_codes(&self, user: &str) -> Result<Vec<Secret>, EnrollError> {
        let (codes, hashes) = tokio::task::spawn_blocking(recovery::new_set)
            .await
            .map_err(|_| EnrollError::Random)?;
        self.update(user, move |record| {
            record.get_or_insert_with(UserRecord::default).recovery = hashes;
            ((), true)
        })
        .await?;
        Ok(codes)
    }

    /// Remove every enrollment; true if there was one.
    pub async fn disable(&self, user: &str) -> Result<bool, StoreError> {
        self.update(user, |record| {
            let had = record.as_ref().is_some_and(|r| !r.is_empty());
            *record = None;
            (had, had)
        })
        .await
    }

    /// Remove one method; true if it was there. (`None` is `disable`.)
    pub async fn disable_method(
        &self,
        user: &str,
        method: Option<MethodKind>,
    ) -> Result<bool, StoreError> {
        let Some(method) = method else {
            return self.disable(user).await;
        };
        self.update(user, move |record| {
            let Some(r) = record.as_mut() else {
                return (false, false);
            };
            let had = match method {
                MethodKind::Totp => {
                    let had = r.totp.is_some() || r.pending_totp.is_some();
                    (r.totp, r.pending_totp) = (None, None);
                    had
                }
                MethodKind::Email => r.email.take().is_some(),
                MethodKind::Sms => r.phone.take().is_some(),
            };
            (had, had)
        })
        .await
    }

    /// Forget the user entirely: enrollments, replay state, lockout.
    pub async fn reset(&self, user: &str) -> Result<(), StoreError> {
        self.disable(user).await?;
        self.unlock(user).await
    }

    /// Lift a lockout (stored at once).
    pub async fn unlock(&self, user: &str) -> Result<(), StoreError> {
        self.lockouts.unlock(user).await
    }

    pub fn status(&self, user: &str) -> Result<UserStatus, StoreError> {
        let record = self.load(user)?.unwrap_or_default();
        let methods = self.methods_of(user, &record);
        Ok(UserStatus {
            email: state_of(&methods.email),
            email_address: methods.email.as_deref().map(|a| mask(Via::Email, a)),
            sms: state_of(&methods.sms),
            sms_number: methods.sms.as_deref().map(|n| mask(Via::Sms, n)),
            user: user.to_owned(),
            totp: match (&record.totp, &record.pending_totp) {
                (Some(_), _) => MethodState::Active,
                (None, Some(_)) => MethodState::Pending,
                (None, None) => MethodState::None,
            },
            recovery_codes_left: record.recovery.len() as u32,
            locked_for_secs: self.locked_for(user).map(|d| d.as_secs().max(1)),
            recent_failures: self.lockouts.recent_failures(user),
        })
    }

    pub async fn users(&self) -> Result<Vec<String>, StoreError> {
        let store = self.store.clone();
        blocking(move || store.users()).await
    }

    pub fn issuer(&self) -> String {
        self.cfg.totp.issuer.clone().unwrap_or_else(hostname)
    }

    /// Read in place, not on the blocking pool: a record is one small file, cached after its
    /// first read (CachedStore) and in the page cache before that, and the hop to the pool
    /// costs more than the read (measured: 172 → 128 µs per login at concurrency 1). Writes,
    /// which fsync, do go to the pool.
    fn load(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        self.store.load(user)
    }

    /// Read-modify-write under the user's lock. `change` returns its result and whether the
    /// record changed; a changed `None` deletes the record. When the change replaced or removed
    /// the active TOTP key, the steps spent with the old one are forgotten here, whichever
    /// command did it.
    async fn update<T>(
        &self,
        user: &str,
        change: impl FnOnce(&mut Option<UserRecord>) -> (T, bool),
    ) -> Result<T, StoreError> {
        let lock = self.user_lock(user);
        let result = async {
            let _guard = lock.lock().await;
            let mut record = self.load(user)?;
            let before = active_key(&record);
            let (result, changed) = change(&mut record);
            if changed {
                let replaced = before != active_key(&record);
                let (store, name) = (self.store.clone(), user.to_owned());
                blocking(move || match record {
                    Some(r) => store.save(&name, &r),
                    None => store.remove(&name),
                })
                .await?;
                if replaced {
                    self.replay.key_replaced(user);
                }
            }
            Ok(result)
        }
        .await;
        self.release_user_lock(user, lock);
        result
    }

    fn user_lock(&self, user: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.user_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(user.to_owned()).or_default().clone()
    }

    fn release_user_lock(&self, user: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.user_locks.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map and this caller hold it: nobody else is waiting.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(user);
        }
    }
}

/// What tells one active key from another: its secret and when it was made (a secret is never
/// reused, `created` guards against a re-import of the same one).
fn active_key(record: &Option<UserRecord>) -> Option<(Secret, u64)> {
    let key = record.as_ref()?.totp.as_ref()?;
    Some((key.secret.clone(), key.created))
}

fn state_of(destination: &Option<String>) -> MethodState {
    match destination {
        Some(_) => MethodState::Active,
        None => MethodState::None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportRefused {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("the OS random number generator failed")]
    Random,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FileStore;

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
        let (key, _) = a.enroll_totp("alice", false).await.unwrap();
        let v = a
            .verify_totp("alice", &code(&key, -30), Target::PendingOrActive)
            .await;
        assert_eq!(v.unwrap(), Verdict::Activated);
        key
    }

    #[tokio::test]
    async fn a_pending_enrollment_does_not_count_at_login() {
        let dir = tempfile::tempdir().unwrap();
        let a = accounts(dir.path());
        let (key, _) = a.enroll_totp("alice", false).await.unwrap();
        assert!(!a.methods("alice").unwrap().totp);
        let v = a
            .verify_totp("alice", &code(&key, 0), Target::Active)
            .await
            .unwrap();
        assert_eq!(v, Verdict::Wrong);
        assert_eq!(a.status("alice").unwrap().totp, MethodState::Pending);
    }

    #[tokio::test]
    async fn a_code_is_spent_once_and_the_confirming_code_too() {
        let dir = tempfile::tempdir().unwrap();
        let a = accounts(dir.path());
        let key = enrolled(&a).await;
        let used = code(&key, -30);
        assert_eq!(
            a.verify_totp("alice", &used, Target::Active).await.unwrap(),
            Verdict::Replayed
        );
        let now = code(&key, 0);
        assert_eq!(
            a.verify_totp("alice", &now, Target::Active).await.unwrap(),
            Verdict::Accepted
        );
        assert_eq!(
            a.verify_totp("alice", &now, Target::Active).await.unwrap(),
            Verdict::Replayed
        );
    }

    #[tokio::test]
    async fn a_used_code_stays_used_after_a_clean_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = accounts(dir.path());
        let key = enrolled(&first).await;
        let c = code(&key, 0);
        let v = first.verify_totp("alice", &c, Target::Active).await;
        assert_eq!(v.unwrap(), Verdict::Accepted);
        first.close().await.unwrap();
        let second = accounts(dir.path());
        let v = second.verify_totp("alice", &c, Target::Active).await;
        assert_eq!(v.unwrap(), Verdict::Replayed);
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
                .verify_totp("alice", &code(&key, offset), Target::Active)
                .await;
            assert!(
                matches!(v.unwrap(), Verdict::RestartGuard { .. }),
                "offset {offset}"
            );
        }
        // Bob enrolls after the restart: his codes work at once.
        let (bob, _) = second.enroll_totp("bob", false).await.unwrap();
        let v = second
            .verify_totp("bob", &code(&bob, -30), Target::PendingOrActive)
            .await;
        assert_eq!(v.unwrap(), Verdict::Activated);
        let v = second
            .verify_totp("bob", &code(&bob, 0), Target::Active)
            .await;
        assert_eq!(v.unwrap(), Verdict::Accepted);
    }

    #[tokio::test]
    async fn nothing_is_spent_after_close() {
        let dir = tempfile::tempdir().unwrap();
        let a = accounts(dir.path());
        let key = enrolled(&a).await;
        a.close().await.unwrap();
        let v = a.verify_totp("alice", &code(&key, 0), Target::Active).await;
        assert_eq!(v.unwrap(), Verdict::Replayed);
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
                    async move { a.verify_totp("alice", &c, Target::Active).await.unwrap() },
                )
            })
            .collect();
        let mut accepted = 0;
        for t in tasks {
            if t.await.unwrap() == Verdict::Accepted {
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
        let m = a.methods("alice").unwrap();
        assert_eq!(m.email.as_deref(), Some("alice@corp.example"));
        assert!(!m.totp);
        a.set_destination("alice", Via::Email, "alice@home.example")
            .await
            .unwrap();
        let m = a.methods("alice").unwrap();
        assert_eq!(m.email.as_deref(), Some("alice@home.example"));
        assert!(a.methods("bob").unwrap().is_empty());
    }

    #[tokio::test]
    async fn disable_forgets_the_enrollment() {
        let dir = tempfile::tempdir().unwrap();
        let a = accounts(dir.path());
        enrolled(&a).await;
        assert!(a.disable("alice").await.unwrap());
        assert!(!a.disable("alice").await.unwrap());
        assert_eq!(a.status("alice").unwrap().totp, MethodState::None);
        assert!(a.users().await.unwrap().is_empty());
    }
}
