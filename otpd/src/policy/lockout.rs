//! Lockout: too many wrong codes in a window lock the user for a while. Runs on the daemon's
//! monotonic clock; nothing a client says about time is trusted.

use crate::config::LockoutConfig;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Failures {
    recent: VecDeque<Instant>,
    locked_until: Option<Instant>,
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

    /// Time left on the user's lock, if locked.
    pub fn locked_for(&mut self, user: &str, now: Instant) -> Option<Duration> {
        self.expire(user, now);
        let until = self.users.get(user)?.locked_until?;
        Some(until - now)
    }

    /// Failures still inside the window.
    pub fn recent_failures(&mut self, user: &str, now: Instant) -> u32 {
        self.expire(user, now);
        self.users.get(user).map_or(0, |f| f.recent.len() as u32)
    }

    /// Count a failure; returns true when this one locked the user.
    pub fn fail(&mut self, user: &str, now: Instant) -> bool {
        self.expire(user, now);
        let f = self.users.entry(user.to_owned()).or_default();
        if f.locked_until.is_some() {
            return false;
        }
        f.recent.push_back(now);
        if f.recent.len() as u32 >= self.cfg.max_failures {
            f.recent.clear();
            f.locked_until = Some(now + self.cfg.lock_for);
            return true;
        }
        false
    }

    /// A success wipes the slate, as pam_faillock does.
    pub fn succeed(&mut self, user: &str) {
        self.users.remove(user);
    }

    /// Admin override.
    pub fn unlock(&mut self, user: &str) {
        self.users.remove(user);
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
            .is_some_and(|t| now.duration_since(*t) >= self.cfg.window)
        {
            f.recent.pop_front();
        }
        if f.locked_until.is_none() && f.recent.is_empty() {
            self.users.remove(user);
        }
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

    #[test]
    fn the_third_failure_in_the_window_locks_for_lock_for() {
        let mut l = lockout();
        let t = Instant::now();
        assert!(!l.fail("alice", t));
        assert!(!l.fail("alice", t + Duration::from_secs(10)));
        assert!(l.fail("alice", t + Duration::from_secs(20)));
        let left = l.locked_for("alice", t + Duration::from_secs(20)).unwrap();
        assert_eq!(left, Duration::from_secs(300));
        assert!(l.locked_for("bob", t).is_none());
        assert!(l
            .locked_for("alice", t + Duration::from_secs(320))
            .is_none());
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let mut l = lockout();
        let t = Instant::now();
        l.fail("alice", t);
        l.fail("alice", t + Duration::from_secs(30));
        assert!(!l.fail("alice", t + Duration::from_secs(61)));
        assert_eq!(l.recent_failures("alice", t + Duration::from_secs(61)), 2);
    }

    #[test]
    fn a_success_or_an_unlock_clears_the_slate() {
        let mut l = lockout();
        let t = Instant::now();
        l.fail("alice", t);
        l.fail("alice", t);
        l.succeed("alice");
        assert_eq!(l.recent_failures("alice", t), 0);
        for _ in 0..3 {
            l.fail("alice", t);
        }
        assert!(l.locked_for("alice", t).is_some());
        l.unlock("alice");
        assert!(l.locked_for("alice", t).is_none());
    }

    #[test]
    fn failures_while_locked_do_not_extend_the_lock() {
        let mut l = lockout();
        let t = Instant::now();
        for _ in 0..3 {
            l.fail("alice", t);
        }
        l.fail("alice", t + Duration::from_secs(100));
        assert_eq!(
            l.locked_for("alice", t + Duration::from_secs(100)),
            Some(Duration::from_secs(200))
        );
    }
}
