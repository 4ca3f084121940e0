//! Caps on connections, so that nobody holding connections open (each may wait minutes for an
//! answer) can use up the daemon's slots and lock everyone else out of logging in:
//!
//! - per uid: a non-root uid holds at most [`PER_UID`] connections;
//! - per target user: root (sshd, login, su, sudo, polkit all run PAM as root) is not capped
//!   per uid, since all of a host's logins come from it, but runs at most [`PER_TARGET`]
//!   logins at once for one user, so a flood of logins for a few names leaves the rest alone;
//! - before the first request: connections that have not said anything yet share a budget of
//!   [`IDLE_SLOTS`], and when it is full the oldest one is dropped ([`Waiting`]).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Open connections one non-root uid may hold.
pub const PER_UID: usize = 16;
/// Logins root may run at once for one target user. A person logs in once or twice at a time;
/// a few more cover sshd's retries and a screen locker.
pub const PER_TARGET: usize = 8;
/// Connections that have not sent their first request yet. pam_otp and otpctl send it right
/// after connecting, so these are either about to speak or idle on purpose.
pub const IDLE_SLOTS: usize = 256;

/// Counts held per key, each count released when its [`Slot`] drops.
pub struct Counter<K: Hash + Eq + Clone> {
    open: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Hash + Eq + Clone> Clone for Counter<K> {
    fn clone(&self) -> Self {
        Counter {
            open: self.open.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone> Default for Counter<K> {
    fn default() -> Self {
        Counter {
            open: Arc::default(),
        }
    }
}

/// Holds one count for a key until dropped.
pub struct Slot<K: Hash + Eq + Clone> {
    counter: Counter<K>,
    key: K,
}

impl<K: Hash + Eq + Clone> Counter<K> {
    /// A slot for `key`, or `None` when it already holds `cap` (`None`: no cap).
    fn acquire(&self, key: K, cap: Option<usize>) -> Option<Slot<K>> {
        let mut open = lock(&self.open);
        let count = open.entry(key.clone()).or_default();
        if cap.is_some_and(|cap| *count >= cap) {
            return None;
        }
        *count = count.saturating_add(1);
        Some(Slot {
            counter: self.clone(),
            key,
        })
    }

    /// How many slots `key` holds now.
    pub fn held(&self, key: &K) -> usize {
        lock(&self.open).get(key).copied().unwrap_or(0)
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut open = lock(&self.counter.open);
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Connections per peer uid; root is not capped.
#[derive(Clone, Default)]
pub struct PeerLimit(Counter<u32>);

impl PeerLimit {
    /// A slot for `uid`, or `None` when it already holds `PER_UID` connections.
    pub fn acquire(&self, uid: u32) -> Option<Slot<u32>> {
        self.0.acquire(uid, (uid != 0).then_some(PER_UID))
    }
}

/// Root's logins per target user (the `user` of `Begin`).
#[derive(Clone, Default)]
pub struct TargetLimit(Counter<String>);

impl TargetLimit {
    /// A slot for a login of `user`, or `None` when `PER_TARGET` are already running.
    pub fn acquire(&self, user: &str) -> Option<Slot<String>> {
        self.0.acquire(user.to_owned(), Some(PER_TARGET))
    }
}

/// The connections that have not sent their first request, oldest first. Each holds a
/// [`Waiting`] ticket; when `IDLE_SLOTS` are taken, a new one evicts the oldest.
#[derive(Clone)]
pub struct IdleLimit {
    waiting: Arc<Mutex<BTreeMap<u64, oneshot::Sender<()>>>>,
    next: Arc<AtomicU64>,
    capacity: usize,
}

impl Default for IdleLimit {
    fn default() -> Self {
        IdleLimit::new(IDLE_SLOTS)
    }
}

/// A place among the waiting connections; `evicted` resolves when a newer one took it.
pub struct Waiting {
    limit: IdleLimit,
    id: u64,
    pub evicted: oneshot::Receiver<()>,
}

impl IdleLimit {
    pub fn new(capacity: usize) -> IdleLimit {
        IdleLimit {
            waiting: Arc::default(),
            next: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    /// Join the waiting connections. Returns the ticket and whether an older one was evicted
    /// to make room (its `evicted` resolves).
    pub fn join(&self) -> (Waiting, bool) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut waiting = lock(&self.waiting);
        let mut evicted = false;
        while waiting.len() >= self.capacity {
            match waiting.pop_first() {
                Some((_, oldest)) => {
                    let _ = oldest.send(());
                    evicted = true;
                }
                None => break,
            }
        }
        waiting.insert(id, tx);
        drop(waiting);
        let ticket = Waiting {
            limit: self.clone(),
            id,
            evicted: rx,
        };
        (ticket, evicted)
    }

    pub fn len(&self) -> usize {
        lock(&self.waiting).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        lock(&self.limit.waiting).remove(&self.id);
    }
}

/// One log line per `every` for a repeated event, with how many happened since the last one,
/// so a flood of refusals costs a line every few seconds, not a line per attempt.
pub struct Throttle {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub const fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Count one event; `Some(n)` when a line is due now, `n` events since the last line.
    pub fn hit(&self) -> Option<u64> {
        self.hit_at(Instant::now())
    }

    fn hit_at(&self, now: Instant) -> Option<u64> {
        let mut state = lock(&self.state);
        let (last, count) = &mut *state;
        *count = count.saturating_add(1);
        if last.is_some_and(|at| now.saturating_duration_since(at) < self.every) {
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(count))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_sixteen_slots_and_gets_them_back() {
        let limit = PeerLimit::default();
        let held: Vec<_> = (0..PER_UID).map(|_| limit.acquire(1000).unwrap()).collect();
        assert!(limit.acquire(1000).is_none());
        assert!(
            limit.acquire(1001).is_some(),
            "other users are not affected"
        );
        drop(held);
        assert!(limit.acquire(1000).is_some());
    }

    #[test]
    fn root_is_not_capped_per_uid() {
        let limit = PeerLimit::default();
        let held: Vec<_> = (0..PER_UID * 4)
            .map(|_| limit.acquire(0).unwrap())
            .collect();
        assert_eq!(held.len(), PER_UID * 4);
    }

    #[test]
    fn root_runs_eight_logins_per_target_user_and_others_are_not_affected() {
        let limit = TargetLimit::default();
        let held: Vec<_> = (0..PER_TARGET)
            .map(|_| limit.acquire("alice").unwrap())
            .collect();
        assert!(limit.acquire("alice").is_none(), "the ninth is refused");
        let bob = limit.acquire("bob");
        assert!(bob.is_some(), "another user still logs in");
        assert_eq!(limit.0.held(&"alice".to_owned()), PER_TARGET);
        drop(held);
        assert_eq!(limit.0.held(&"alice".to_owned()), 0, "released");
        assert!(limit.acquire("alice").is_some());
    }

    #[test]
    fn a_full_idle_budget_evicts_the_oldest_first() {
        let limit = IdleLimit::new(3);
        let (mut first, e1) = limit.join();
        let (mut second, _) = limit.join();
        let (mut third, _) = limit.join();
        assert!(!e1);
        assert_eq!(limit.len(), 3);
        let (mut fourth, evicted) = limit.join();
        assert!(evicted);
        assert_eq!(limit.len(), 3);
        assert!(first.evicted.try_recv().is_ok(), "the oldest goes");
        assert!(second.evicted.try_recv().is_err(), "the others stay");
        assert!(third.evicted.try_recv().is_err());
        // One that spoke leaves the budget; the next newcomer then evicts nobody.
        drop(third);
        let (_fifth, evicted) = limit.join();
        assert!(!evicted);
        assert!(second.evicted.try_recv().is_err());
        assert!(fourth.evicted.try_recv().is_err());
    }

    #[test]
    fn a_throttle_logs_once_per_period_with_a_count() {
        let t = Throttle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(t.hit_at(start), Some(1));
        for s in 1..=5 {
            assert_eq!(t.hit_at(start + Duration::from_secs(s)), None);
        }
        assert_eq!(t.hit_at(start + Duration::from_secs(11)), Some(6));
    }
}
