//! Replay protection for TOTP without an fsync per login (design.md): the steps spent at login
//! live in memory and are written to the store in batches (every few seconds and at a clean
//! stop). After a stop that did not write them (kill -9, crash, power loss), every step up to
//! the start of this run plus the skew counts as used for every key that existed before, so no
//! code accepted before the crash can be accepted again; the price is a pause of at most
//! (skew + 1) periods for those users right after such a restart.
//!
//! HOTP counters and recovery codes are rare and not time-bound: they stay durable before
//! Allow (`Accounts`).

use crate::store::{PreviousRun, TotpKey, UsedStep};
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

pub struct Replay {
    state: Mutex<Spent>,
    skew: u64,
    /// Unix seconds at start, when the previous run ended uncleanly.
    guard_from: Option<u64>,
}

#[derive(Default)]
struct Spent {
    /// The newest step spent per user (with its key's period), newer than the stored one.
    used: HashMap<String, Step>,
    /// Users whose key was set up during this run: the restart guard is not for them. Kept
    /// only while there is a guard.
    new_keys: HashSet<String>,
    /// Something changed since the last `unsaved`.
    dirty: bool,
    /// The final save has begun: nothing more may be spent.
    sealed: bool,
}

#[derive(Debug, Clone, Copy)]
struct Step {
    step: u64,
    period: u64,
}

impl Replay {
    /// Start from what the previous run left; `now` is the start of this run (Unix seconds).
    pub fn new(previous: PreviousRun, skew: u8, now: u64) -> Replay {
        let used = previous
            .used
            .into_iter()
            .map(|u| {
                let step = Step {
                    step: u.step,
                    period: u.period,
                };
                (u.user, step)
            })
            .collect();
        let guard_from = previous.unclean.then_some(now);
        if guard_from.is_some() {
            log::warn!(
                "the last stop was not clean: codes up to {} step(s) from now count as used for \
                 every existing key",
                skew
            );
        }
        Replay {
            state: Mutex::new(Spent {
                used,
                ..Spent::default()
            }),
            skew: skew as u64,
            guard_from,
        }
    }

    /// The last step this user's TOTP key spent: the stored one, or a newer one spent in
    /// memory. The restart guard is apart (`guarded`), so a code it refuses can be told from a
    /// replayed one.
    pub fn last_spent(&self, user: &str, key: &TotpKey) -> Option<u64> {
        Self::spent_in(&self.spent(), user, key)
    }

    /// If `step` is refused only by the restart guard, the Unix time its codes run out, after
    /// which the user's next code works.
    pub fn guarded(&self, user: &str, key: &TotpKey, step: u64) -> Option<u64> {
        let floor = self.guard_floor(&self.spent(), user, key)?;
        (step <= floor).then(|| (floor + 1) * key.period)
    }

    /// Spend `step` of this user's key: false when it, or a later step, was spent meanwhile
    /// (two logins racing with one code: exactly one wins), or the restart guard covers it.
    pub fn spend(&self, user: &str, key: &TotpKey, step: u64) -> bool {
        let mut spent = self.spent();
        let last = [
            Self::spent_in(&spent, user, key),
            self.guard_floor(&spent, user, key),
        ];
        if spent.sealed || last.into_iter().flatten().any(|l| step <= l) {
            return false;
        }
        let period = key.period;
        spent.used.insert(user.to_owned(), Step { step, period });
        spent.dirty = true;
        true
    }

    fn spent_in(spent: &Spent, user: &str, key: &TotpKey) -> Option<u64> {
        let in_memory = spent
            .used
            .get(user)
            .filter(|s| s.period == key.period)
            .map(|s| s.step);
        key.last_step.max(in_memory)
    }

    /// After an unclean stop: the last step of this run's start plus the skew, for keys that
    /// existed before it.
    fn guard_floor(&self, spent: &Spent, user: &str, key: &TotpKey) -> Option<u64> {
        match (self.guard_from, spent.new_keys.contains(user)) {
            (Some(start), false) if key.period > 0 => Some(start / key.period + self.skew),
            _ => None,
        }
    }

    /// The user's key was replaced or removed during this run; steps of the old key no longer
    /// matter, and a new key (whose own last step is stored) is not under the restart guard.
    pub fn key_replaced(&self, user: &str) {
        let mut spent = self.spent();
        spent.used.remove(user);
        if self.guard_from.is_some() {
            spent.new_keys.insert(user.to_owned());
        }
        spent.dirty = true;
    }

    /// The steps to save, if anything changed since the last call; steps too old to be
    /// accepted again anyway (before `now` − skew) are dropped, so memory and the file hold only
    /// the last few periods' logins. Call `save_failed` if saving them fails.
    pub fn unsaved(&self, now: u64) -> Option<Vec<UsedStep>> {
        let skew = self.skew;
        let mut spent = self.spent();
        if !spent.dirty {
            return None;
        }
        spent.dirty = false;
        spent
            .used
            .retain(|_, s| s.period > 0 && s.step + skew >= now / s.period);
        Some(
            spent
                .used
                .iter()
                .map(|(user, s)| UsedStep {
                    user: user.clone(),
                    step: s.step,
                    period: s.period,
                })
                .collect(),
        )
    }

    /// Refuse every further spend: the final save is about to be taken, and a step spent after
    /// it would be forgotten by the next run.
    pub fn seal(&self) {
        self.spent().sealed = true;
    }

    /// Saving what `unsaved` returned failed: try again next time.
    pub fn save_failed(&self) {
        self.spent().dirty = true;
    }

    fn spent(&self) -> MutexGuard<'_, Spent> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Algorithm;
    use crate::store::KeyKind;
    use otp_proto::Secret;

    const NOW: u64 = 1_800_000_000;

    fn key(last_step: Option<u64>) -> TotpKey {
        TotpKey {
            secret: Secret::new("JBSWY3DPEHPK3PXP"),
            algorithm: Algorithm::SHA1,
            digits: 6,
            period: 30,
            last_step,
            kind: KeyKind::Totp,
            window: None,
            created: 1,
        }
    }

    fn clean(used: Vec<UsedStep>) -> PreviousRun {
        PreviousRun {
            unclean: false,
            used,
        }
    }

    #[test]
    fn a_step_is_spent_once_and_earlier_steps_with_it() {
        let r = Replay::new(clean(vec![]), 1, NOW);
        let k = key(Some(10));
        assert_eq!(r.last_spent("alice", &k), Some(10));
        assert!(!r.spend("alice", &k, 10), "the stored step is used");
        assert!(r.spend("alice", &k, 12));
        assert!(!r.spend("alice", &k, 12));
        assert!(!r.spend("alice", &k, 11));
        assert_eq!(r.last_spent("alice", &k), Some(12));
        assert!(r.spend("bob", &k, 12), "users do not share steps");
    }

    #[test]
    fn steps_saved_at_a_clean_stop_count_after_the_restart() {
        let step = NOW / 30;
        let r = Replay::new(clean(vec![]), 1, NOW);
        assert!(r.spend("alice", &key(None), step));
        let saved = r.unsaved(NOW).unwrap();
        assert!(r.unsaved(NOW).is_none(), "nothing new to save");
        let again = Replay::new(clean(saved), 1, NOW + 5);
        assert_eq!(again.last_spent("alice", &key(None)), Some(step));
        assert_eq!(again.last_spent("bob", &key(None)), None);
    }

    #[test]
    fn after_a_crash_every_step_up_to_start_plus_skew_is_used_for_old_keys() {
        let r = Replay::new(
            PreviousRun {
                unclean: true,
                used: vec![],
            },
            1,
            NOW,
        );
        let floor = NOW / 30 + 1;
        assert_eq!(r.last_spent("alice", &key(Some(5))), Some(5));
        assert_eq!(
            r.guarded("alice", &key(Some(5)), floor),
            Some((floor + 1) * 30)
        );
        assert_eq!(r.guarded("alice", &key(Some(5)), floor + 1), None);
        assert!(!r.spend("alice", &key(None), floor));
        assert!(r.spend("alice", &key(None), floor + 1));
        // A key set up after the start is not under the guard.
        r.key_replaced("carol");
        assert_eq!(r.guarded("carol", &key(Some(7)), floor), None);
        assert!(r.spend("carol", &key(Some(7)), floor));
    }

    #[test]
    fn old_steps_are_dropped_when_saved() {
        let r = Replay::new(clean(vec![]), 1, NOW);
        let step = NOW / 30;
        assert!(r.spend("old", &key(None), step - 5));
        assert!(r.spend("recent", &key(None), step - 1));
        let saved = r.unsaved(NOW).unwrap();
        let users: Vec<_> = saved.iter().map(|u| u.user.as_str()).collect();
        assert_eq!(users, vec!["recent"]);
    }

    #[test]
    fn a_failed_save_is_tried_again() {
        let r = Replay::new(clean(vec![]), 1, NOW);
        assert!(r.spend("alice", &key(None), NOW / 30));
        assert!(r.unsaved(NOW).is_some());
        r.save_failed();
        assert_eq!(r.unsaved(NOW).unwrap().len(), 1);
    }

    #[test]
    fn a_replaced_key_forgets_the_old_keys_steps() {
        let r = Replay::new(clean(vec![]), 1, NOW);
        assert!(r.spend("alice", &key(None), NOW / 30));
        r.key_replaced("alice");
        assert_eq!(r.last_spent("alice", &key(Some(3))), Some(3));
    }
}
