//! Lockout: too many wrong answers in a window lock the user for a while (pam_faillock's rule).
//!
//! Two promises, both in docs/design.md ("Judging an answer"):
//! - **Reserved before checked.** An answer takes a reservation before anything is checked; a
//!   reservation counts as a failure until it is settled. So however many answers arrive at
//!   once, at most `max_failures` are ever checked: the rest are refused as locked unchecked.
//! - **Durable.** A failure is written to the store before the "wrong code" reply leaves otpd,
//!   so neither a restart nor a crash forgets a failure an attacker was told about. A success
//!   clears the slate in memory at once and on disk lazily (`flush`), which costs at worst a
//!   few stale failures after a crash.
//!
//! The clock is the daemon's monotonic one; nothing a client says about time is trusted. Only
//! the stored copy is in Unix seconds, converted on the way in and out.

use crate::config::LockoutConfig;
use crate::store::{LockoutRecord, Store, StoreError};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Failures {
    recent: VecDeque<Instant>,
    locked_until: Option<Instant>,
    /// Answers reserved and not yet settled; each counts as a failure meanwhile.
    in_flight: u32,
}

/// How a reserved answer turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// A right answer: the slate is wiped.
    Success,
    /// A wrong (or replayed) answer: one more failure.
    Failure,
    /// Not the user's doing (a restart guard, nothing enrolled): as if never asked.
    Uncounted,
}

/// Failure history for every user who failed recently. Users with a clean slate take no memory.
pub struct Lockout {
    cfg: LockoutConfig,
    users: HashMap<String, Failures>,
}

impl Lockout {
    pub fn new(cfg: LockoutConfig) -> Lockout {
        Lockout {
            cfg,
            users: HashMap::new(),
        }
    }

    /// Take a reservation for one answer, or say how long the user stays locked. When the
    /// answers already in flight would reach the limit, the user counts as locked for
    /// `lock_for` (the most those answers can cost) without anything being checked.
    pub fn reserve(&mut self, user: &str, now: Instant) -> Result<(), Duration> {
        self.expire(user, now);
        let max = self.cfg.max_failures;
        let f = self.users.entry(user.to_owned()).or_default();
        if let Some(until) = f.locked_until {
            return Err(until.saturating_duration_since(now));
        }
        if f.recent.len() as u32 + f.in_flight >= max {
            return Err(self.cfg.lock_for);
        }
        f.in_flight += 1;
        Ok(())
    }

    /// Settle a reservation; true when this failure locked the user.
    pub fn settle(&mut self, user: &str, now: Instant, how: Settle) -> bool {
        let f = self.users.entry(user.to_owned()).or_default();
        f.in_flight = f.in_flight.saturating_sub(1);
        let locked = match how {
            Settle::Success => {
                f.recent.clear();
                f.locked_until = None;
                false
            }
            Settle::Uncounted => false,
            Settle::Failure if f.locked_until.is_some() => false,
            Settle::Failure => {
                f.recent.push_back(now);
                if f.recent.len() as u32 >= self.cfg.max_failures {
                    f.recent.clear();
                    f.locked_until = Some(later(now, self.cfg.lock_for));
                    true
                } else {
                    false
                }
            }
        };
        self.expire(user, now);
        locked
    }

    /// Does the user have failures or a lock to remember (answers in flight aside)?
    fn has_history(&self, user: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|f| !f.recent.is_empty() || f.locked_until.is_some())
    }

    /// Time left on the user's lock, if locked.
    pub fn locked_for(&mut self, user: &str, now: Instant) -> Option<Duration> {
        self.expire(user, now);
        let until = self.users.get(user)?.locked_until?;
        Some(until.saturating_duration_since(now))
    }

    /// Failures still inside the window.
    pub fn recent_failures(&mut self, user: &str, now: Instant) -> u32 {
        self.expire(user, now);
        self.users.get(user).map_or(0, |f| f.recent.len() as u32)
    }

    /// Admin override: failures and lock are gone (answers in flight still settle).
    pub fn unlock(&mut self, user: &str) {
        if let Some(f) = self.users.get_mut(user) {
            f.recent.clear();
            f.locked_until = None;
        }
        self.expire(user, Instant::now());
    }

    /// The user's state as stored, `None` for a clean slate. `unix` is the wall clock at `now`.
    pub fn record(&self, user: &str, now: Instant, unix: u64) -> Option<LockoutRecord> {
        let f = self.users.get(user)?;
        let to_unix =
            |at: Instant| unix.saturating_sub(now.saturating_duration_since(at).as_secs());
        let record = LockoutRecord {
            failures: f.recent.iter().map(|t| to_unix(*t)).collect(),
            locked_until: f
                .locked_until
                .map(|u| unix.saturating_add(u.saturating_duration_since(now).as_secs())),
        };
        (!record.failures.is_empty() || record.locked_until.is_some()).then_some(record)
    }

    /// Take back a stored state. A lock never runs longer than `lock_for` from now, whatever
    /// the stored wall-clock time says (a clock set back must not lock anyone for years).
    pub fn restore(&mut self, user: &str, record: &LockoutRecord, now: Instant, unix: u64) {
        let at = |t: u64| now.checked_sub(Duration::from_secs(unix.saturating_sub(t)));
        let f = self.users.entry(user.to_owned()).or_default();
        f.recent = record.failures.iter().filter_map(|t| at(*t)).collect();
        f.recent.make_contiguous().sort();
        f.locked_until = record.locked_until.filter(|u| *u > unix).map(|u| {
            let left = Duration::from_secs(u - unix).min(self.cfg.lock_for);
            later(now, left)
        });
        self.expire(user, now);
    }

    fn expire(&mut self, user: &str, now: Instant) {
        let Some(f) = self.users.get_mut(user) else {
            return;
        };
        if f.locked_until.is_some_and(|until| until <= now) {
            f.locked_until = None;
        }
        while f
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.cfg.window)
        {
            f.recent.pop_front();
        }
        if f.locked_until.is_none() && f.recent.is_empty() && f.in_flight == 0 {
            self.users.remove(user);
        }
    }
}

/// `now + d`, saturating far in the future instead of panicking.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(u32::MAX as u64)))
        .unwrap_or(now)
}

/// The lockout state of every user, kept durably in the store (see the module comment).
pub struct Lockouts {
    /// Shared with the fleet's unlock watcher (`Fleet::on_unlock`).
    state: Arc<Mutex<Lockout>>,
    store: Arc<dyn Store>,
    /// Held while a state is read from memory and written, so writes land in the order of the
    /// states they carry: a slower write of an older state cannot overwrite a newer one.
    writing: Arc<tokio::sync::Mutex<()>>,
    /// Users whose stored state is stale (a success, an expiry) and is removed by `flush`.
    to_clear: Mutex<HashSet<String>>,
}

impl Lockouts {
    /// Read every stored state (blocking: call before serving).
    pub fn load(cfg: LockoutConfig, store: Arc<dyn Store>) -> Result<Lockouts, StoreError> {
        let mut lockout = Lockout::new(cfg);
        let (now, unix) = (Instant::now(), super::clock::unix_now());
        let mut to_clear = HashSet::new();
        for (user, record) in store.lockouts()? {
            lockout.restore(&user, &record, now, unix);
            if lockout.record(&user, now, unix).is_none() {
                to_clear.insert(user);
            }
        }
        let state = Arc::new(Mutex::new(lockout));
        if let Some(fleet) = store.fleet() {
            // An unlock on another host lifts what this host counted itself, too.
            let weak = Arc::downgrade(&state);
            fleet.on_unlock(Arc::new(move |user| {
                if let Some(state) = weak.upgrade() {
                    state.lock().unwrap_or_else(|e| e.into_inner()).unlock(user);
                }
            }));
        }
        Ok(Lockouts {
            state,
            writing: Arc::new(tokio::sync::Mutex::new(())),
            store,
            to_clear: Mutex::new(to_clear),
        })
    }

    pub fn reserve(&self, user: &str) -> Result<(), Duration> {
        self.state().reserve(user, Instant::now())
    }

    /// Settle a reservation; a failure is stored before this returns (on the blocking pool).
    pub async fn settle(&self, user: &str, how: Settle) -> Result<(), StoreError> {
        let (had_history, locked) = {
            let mut state = self.state();
            let had = state.has_history(user);
            (had, state.settle(user, Instant::now(), how))
        };
        if locked {
            let user = crate::logging::field(user);
            log::warn!("user={user}: locked out after too many failed codes");
        }
        match how {
            Settle::Failure => {
                let written = self.write(user).await;
                if written.is_err() {
                    // Counted in memory; the next batch tries to store it again.
                    self.clear_later(user);
                }
                written
            }
            // Only a slate that had something on it has a stored state to clear: the common
            // login (no failures) leaves nothing for `flush` to do.
            Settle::Success if had_history => {
                self.clear_later(user);
                Ok(())
            }
            Settle::Success | Settle::Uncounted => Ok(()),
        }
    }

    /// Settle without waiting (a login whose connection went away mid-check): a failure is
    /// counted in memory now and stored by the next `flush`.
    pub fn settle_later(&self, user: &str, how: Settle) {
        self.state().settle(user, Instant::now(), how);
        if how == Settle::Failure {
            self.clear_later(user);
        }
    }

    pub fn locked_for(&self, user: &str) -> Option<Duration> {
        self.state().locked_for(user, Instant::now())
    }

    pub fn recent_failures(&self, user: &str) -> u32 {
        self.state().recent_failures(user, Instant::now())
    }

    /// Admin override, stored at once.
    pub async fn unlock(&self, user: &str) -> Result<(), StoreError> {
        self.state().unlock(user);
        self.write(user).await
    }

    /// Bring the stored states of users marked by `clear_later` in line with memory.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let users: Vec<String> = self.pending().drain().collect();
        for user in users {
            if let Err(e) = self.write(&user).await {
                self.clear_later(&user);
                return Err(e);
            }
        }
        Ok(())
    }

    fn clear_later(&self, user: &str) {
        self.pending().insert(user.to_owned());
    }

    /// Store the user's current state (a clean slate removes the file).
    async fn write(&self, user: &str) -> Result<(), StoreError> {
        // Owned and moved into the write, so a dropped caller cannot let a later, newer state
        // be written before this older one lands.
        let in_order = self.writing.clone().lock_owned().await;
        let record = self
            .state()
            .record(user, Instant::now(), super::clock::unix_now());
        let (store, name) = (self.store.clone(), user.to_owned());
        super::blocking(move || {
            let _held = in_order;
            store.save_lockout(&name, record.as_ref())
        })
        .await
    }

    fn state(&self) -> MutexGuard<'_, Lockout> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pending(&self) -> MutexGuard<'_, HashSet<String>> {
        self.to_clear.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lockout() -> Lockout {
        Lockout::new(LockoutConfig {
            max_failures: 3,
            window: Duration::from_secs(60),
            lock_for: Duration::from_secs(300),
        })
    }

    fn fail(l: &mut Lockout, user: &str, at: Instant) -> bool {
        assert!(l.reserve(user, at).is_ok(), "not locked yet");
        l.settle(user, at, Settle::Failure)
    }

    #[test]
    fn the_third_failure_in_the_window_locks_for_lock_for() {
        let mut l = lockout();
        let t = Instant::now();
        assert!(!fail(&mut l, "alice", t));
        assert!(!fail(&mut l, "alice", t + Duration::from_secs(10)));
        assert!(fail(&mut l, "alice", t + Duration::from_secs(20)));
        let left = l.locked_for("alice", t + Duration::from_secs(20)).unwrap();
        assert_eq!(left, Duration::from_secs(300));
        assert!(l.reserve("alice", t + Duration::from_secs(21)).is_err());
        assert!(l.locked_for("bob", t).is_none());
        assert!(l
            .locked_for("alice", t + Duration::from_secs(320))
            .is_none());
    }

    #[test]
    fn answers_in_flight_count_before_they_are_checked() {
        let mut l = lockout();
        let t = Instant::now();
        for _ in 0..3 {
            assert!(l.reserve("alice", t).is_ok());
        }
        assert_eq!(l.reserve("alice", t), Err(Duration::from_secs(300)));
        // One of them was right: the slate is clean, the other two still count.
        assert!(!l.settle("alice", t, Settle::Success));
        assert!(l.reserve("alice", t).is_ok());
        assert!(l.reserve("alice", t).is_err());
        for _ in 0..3 {
            l.settle("alice", t, Settle::Uncounted);
        }
        assert!(l.users.is_empty(), "settled and clean: nothing kept");
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let mut l = lockout();
        let t = Instant::now();
        fail(&mut l, "alice", t);
        fail(&mut l, "alice", t + Duration::from_secs(30));
        assert!(!fail(&mut l, "alice", t + Duration::from_secs(61)));
        assert_eq!(l.recent_failures("alice", t + Duration::from_secs(61)), 2);
    }

    #[test]
    fn a_success_or_an_unlock_clears_the_slate() {
        let mut l = lockout();
        let t = Instant::now();
        fail(&mut l, "alice", t);
        fail(&mut l, "alice", t);
        l.reserve("alice", t).unwrap();
        l.settle("alice", t, Settle::Success);
        assert_eq!(l.recent_failures("alice", t), 0);
        for _ in 0..3 {
            fail(&mut l, "alice", t);
        }
        assert!(l.locked_for("alice", t).is_some());
        l.unlock("alice");
        assert!(l.locked_for("alice", Instant::now()).is_none());
    }

    #[test]
    fn the_stored_state_comes_back_in_another_run() {
        let mut l = lockout();
        let t = Instant::now();
        fail(&mut l, "alice", t);
        fail(&mut l, "bob", t);
        fail(&mut l, "bob", t);
        fail(&mut l, "bob", t);
        let unix = 1_800_000_000;
        let alice = l.record("alice", t, unix).unwrap();
        assert_eq!(alice.failures, vec![unix]);
        let bob = l.record("bob", t, unix).unwrap();
        assert_eq!(bob.locked_until, Some(unix + 300));
        // A new run, 100 s later by both clocks.
        let (t2, unix2) = (t + Duration::from_secs(100), unix + 100);
        let mut again = lockout();
        again.restore("alice", &alice, t2, unix2);
        again.restore("bob", &bob, t2, unix2);
        assert_eq!(again.recent_failures("alice", t2), 0, "outside the window");
        assert_eq!(again.locked_for("bob", t2), Some(Duration::from_secs(200)));
    }

    #[test]
    fn a_stored_lock_never_outlasts_lock_for_and_absurd_times_do_not_panic() {
        let mut l = lockout();
        let t = Instant::now();
        let record = LockoutRecord {
            failures: vec![u64::MAX, 0],
            locked_until: Some(u64::MAX),
        };
        l.restore("alice", &record, t, 1_800_000_000);
        assert_eq!(l.locked_for("alice", t), Some(Duration::from_secs(300)));
        let mut huge = Lockout::new(LockoutConfig {
            max_failures: 1,
            window: Duration::MAX,
            lock_for: Duration::MAX,
        });
        assert!(fail(&mut huge, "alice", t));
        assert!(huge.locked_for("alice", t).is_some());
    }

    #[test]
    fn failures_while_locked_do_not_extend_the_lock() {
        let mut l = lockout();
        let t = Instant::now();
        for _ in 0..3 {
            fail(&mut l, "alice", t);
        }
        l.settle("alice", t + Duration::from_secs(100), Settle::Failure);
        assert_eq!(
            l.locked_for("alice", t + Duration::from_secs(100)),
            Some(Duration::from_secs(200))
        );
    }

    fn lockouts(dir: &std::path::Path) -> Lockouts {
        let store = Arc::new(crate::store::FileStore::open(dir).unwrap());
        Lockouts::load(lockout().cfg, store).unwrap()
    }

    #[tokio::test]
    async fn a_clean_login_leaves_nothing_to_store_and_a_cleared_failure_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let l = lockouts(dir.path());
        l.reserve("alice").unwrap();
        l.settle("alice", Settle::Success).await.unwrap();
        assert!(l.pending().is_empty(), "no history, nothing for flush");
        l.reserve("bob").unwrap();
        l.settle("bob", Settle::Failure).await.unwrap();
        let file = dir.path().join("lockout/bob.json");
        assert!(file.exists(), "a failure is stored at once");
        l.reserve("bob").unwrap();
        l.settle("bob", Settle::Success).await.unwrap();
        assert!(l.pending().contains("bob"));
        l.flush().await.unwrap();
        assert!(!file.exists(), "the cleared slate is removed by the batch");
    }
}
