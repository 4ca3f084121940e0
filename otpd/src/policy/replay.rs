//! Replay protection for TOTP without an fsync per login (docs/design.md, "Replay protection"):
//! the steps spent at login live in memory and are written to the store in batches (every few
//! seconds and at a clean stop). After a stop that did not write them (kill -9, crash, power
//! loss), every step up to the start of this run plus the skew counts as used for every key
//! created before that start (the restart guard), so no code accepted before the crash can be
//! accepted again; the price is a pause of at most (skew + 1) periods for those users right
//! after such a restart.
//!
//! The guard is saved with the steps in every batch until it can no longer refuse anything, so
//! a clean stop soon after a crash does not forget it: the step spent just before the crash was
//! never written, and only the guard keeps it refused.
//!
//! HOTP counters and recovery codes are rare and not time-bound: they stay durable before
//! Allow (`keys`, `recovery`).

use crate::store::{PreviousRun, SavedSteps, TotpKey, UsedStep};
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

/// The longest period a key may have (config and import bounds): the guard is kept until no
/// key's step inside it can be accepted any more.
use crate::formats::MAX_PERIOD;

pub struct Replay {
    state: Mutex<Spent>,
    skew: u64,
}

#[derive(Default)]
struct Spent {
    /// The newest step spent per user (with its key's period), newer than the stored one.
    used: HashMap<String, Step>,
    /// Users whose key was set up during this run (its confirming step stored with it): the
    /// restart guard is not for them. Kept only while there is a guard.
    new_keys: HashSet<String>,
    /// The start (Unix seconds) of the run that followed the last unclean stop, while it
    /// matters.
    guard_from: Option<u64>,
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
    /// After an unclean stop the guard starts now; after a clean one, the previous run's guard
    /// (if it still matters) goes on.
    pub fn new(previous: PreviousRun, skew: u8, now: u64) -> Replay {
        let skew = skew as u64;
        let used = previous
            .saved
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
        let guard_from = if previous.unclean {
            log::warn!(
                "the last stop was not clean: codes up to {skew} step(s) from now count as used \
                 for every existing key"
            );
            Some(now)
        } else {
            previous
                .saved
                .guard_from
                .filter(|&from| matters(from, skew, now))
        };
        Replay {
            state: Mutex::new(Spent {
                used,
                dirty: guard_from.is_some(),
                guard_from,
                ..Spent::default()
            }),
            skew,
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
        let start = spent.guard_from?;
        if spent.new_keys.contains(user) {
            return None;
        }
        key.guard_floor(start, self.skew)
    }

    /// The user's key was replaced or removed during this run; steps of the old key no longer
    /// matter, and a new key (whose own last step is stored) is not under the restart guard.
    pub fn key_replaced(&self, user: &str) {
        let mut spent = self.spent();
        spent.used.remove(user);
        if spent.guard_from.is_some() {
            spent.new_keys.insert(user.to_owned());
        }
        spent.dirty = true;
    }

    /// What to save, if anything changed since the last call; steps too old to be accepted
    /// again anyway (before `now` − skew) are dropped, so memory and the file hold only the last
    /// few periods' logins. The guard goes with them while it matters. Call `save_failed` if
    /// saving fails.
    pub fn unsaved(&self, now: u64) -> Option<SavedSteps> {
        let skew = self.skew;
        let mut spent = self.spent();
        if spent
            .guard_from
            .is_some_and(|from| !matters(from, skew, now))
        {
            spent.guard_from = None;
            spent.new_keys.clear();
            spent.dirty = true;
        }
        if !spent.dirty {
            return None;
        }
        spent.dirty = false;
        spent
            .used
            .retain(|_, s| s.period > 0 && s.step.saturating_add(skew) >= now / s.period);
        let used = spent
            .used
            .iter()
            .map(|(user, s)| UsedStep {
                user: user.clone(),
                step: s.step,
                period: s.period,
            })
            .collect();
        Some(SavedSteps {
            used,
            guard_from: spent.guard_from,
        })
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

/// Can a guard that began at `from` still refuse a code at `now`? Its last guarded step is
/// `from / period + skew`; at `now` the oldest step accepted is `now / period - skew`. Once that
/// is past the guard for the longest period, the guard refuses nothing any more.
fn matters(from: u64, skew: u64, now: u64) -> bool {
    now <= from.saturating_add((2 * skew + 2).saturating_mul(MAX_PERIOD))
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
            saved: SavedSteps {
                used,
                guard_from: None,
            },
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
        let again = Replay::new(clean(saved.used), 1, NOW + 5);
        assert_eq!(again.last_spent("alice", &key(None)), Some(step));
        assert_eq!(again.last_spent("bob", &key(None)), None);
    }

    #[test]
    fn after_a_crash_every_step_up_to_start_plus_skew_is_used_for_old_keys() {
        let r = Replay::new(
            PreviousRun {
                unclean: true,
                saved: SavedSteps::default(),
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
        let users: Vec<_> = saved.used.iter().map(|u| u.user.as_str()).collect();
        assert_eq!(users, vec!["recent"]);
    }

    #[test]
    fn a_failed_save_is_tried_again() {
        let r = Replay::new(clean(vec![]), 1, NOW);
        assert!(r.spend("alice", &key(None), NOW / 30));
        assert!(r.unsaved(NOW).is_some());
        r.save_failed();
        assert_eq!(r.unsaved(NOW).unwrap().used.len(), 1);
    }

    #[test]
    fn a_replaced_key_forgets_the_old_keys_steps() {
        let r = Replay::new(clean(vec![]), 1, NOW);
        assert!(r.spend("alice", &key(None), NOW / 30));
        r.key_replaced("alice");
        assert_eq!(r.last_spent("alice", &key(Some(3))), Some(3));
    }

    #[test]
    fn a_clean_stop_during_the_guard_keeps_it() {
        // Step N is spent, then otpd is killed before the batch that would have saved it.
        let crash = PreviousRun {
            unclean: true,
            saved: SavedSteps::default(),
        };
        let guarded = Replay::new(crash, 1, NOW + 2);
        let step = NOW / 30;
        assert!(!guarded.spend("alice", &key(None), step), "guarded");
        // A clean stop soon after (an admin's restart, an upgrade).
        guarded.seal();
        let saved = guarded.unsaved(NOW + 10).unwrap();
        assert_eq!(saved.guard_from, Some(NOW + 2));
        let next = Replay::new(
            PreviousRun {
                unclean: false,
                saved,
            },
            1,
            NOW + 12,
        );
        assert!(!next.spend("alice", &key(None), step), "still refused");
        assert!(next.guarded("alice", &key(None), step).is_some());
        // Keys made after the guard began are not under it.
        let mut new_key = key(None);
        new_key.created = NOW + 3;
        assert!(next.spend("bob", &new_key, step));
        // Long after, the guard is dropped from the file.
        let late = NOW + 2 + 4 * MAX_PERIOD + 1;
        assert_eq!(next.unsaved(late).unwrap().guard_from, None);
        assert!(next.unsaved(late).is_none());
    }

    /// One event in the life of otpd, for the property below.
    #[derive(Debug, Clone)]
    enum Event {
        /// A user types the code of the step `offset` away from now (within the skew).
        Login { user: u8, offset: i8 },
        /// Time passes.
        Wait(u16),
        /// The periodic batch.
        Flush,
        /// kill -9 (nothing more is written) and a restart.
        Crash,
        /// SIGTERM: the final save, and a restart.
        CleanRestart,
        /// Killed during the final save: the file is not replaced, the marker stays.
        CrashDuringFinalSave,
    }

    fn event() -> impl proptest::strategy::Strategy<Value = Event> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u8..3, -1i8..=1).prop_map(|(user, offset)| Event::Login { user, offset }),
            3 => (0u16..200).prop_map(Event::Wait),
            2 => Just(Event::Flush),
            1 => Just(Event::Crash),
            1 => Just(Event::CleanRestart),
            1 => Just(Event::CrashDuringFinalSave),
        ]
    }

    /// What the store holds between runs.
    struct Disk {
        saved: SavedSteps,
        running: bool,
    }

    impl Disk {
        fn start(&mut self, now: u64) -> Replay {
            let previous = PreviousRun {
                unclean: self.running,
                saved: self.saved.clone(),
            };
            self.running = true;
            Replay::new(previous, 1, now)
        }
    }

    proptest::proptest! {
        /// Every (user, step) is accepted at most once, and never after a later step of the
        /// same user, across any sequence of logins, batches, crashes and clean restarts.
        #[test]
        fn no_step_is_ever_accepted_twice(events in proptest::collection::vec(event(), 1..120)) {
            let mut now = NOW;
            let mut disk = Disk { saved: SavedSteps::default(), running: false };
            let mut replay = disk.start(now);
            let mut accepted: HashMap<u8, u64> = HashMap::new();
            for e in events {
                match e {
                    Event::Login { user, offset } => {
                        let step = (now / 30).wrapping_add_signed(offset as i64);
                        let name = format!("u{user}");
                        let k = key(None);
                        let fresh = replay.last_spent(&name, &k).is_none_or(|l| step > l);
                        if fresh && replay.guarded(&name, &k, step).is_none()
                            && replay.spend(&name, &k, step)
                        {
                            if let Some(&before) = accepted.get(&user) {
                                proptest::prop_assert!(step > before, "{name}: step {step} after {before}");
                            }
                            accepted.insert(user, step);
                        }
                    }
                    Event::Wait(secs) => now += secs as u64,
                    Event::Flush => {
                        if let Some(saved) = replay.unsaved(now) {
                            disk.saved = saved;
                        }
                    }
                    Event::Crash => replay = disk.start(now),
                    Event::CleanRestart => {
                        replay.seal();
                        if let Some(saved) = replay.unsaved(now) {
                            disk.saved = saved;
                        }
                        disk.running = false;
                        replay = disk.start(now);
                    }
                    Event::CrashDuringFinalSave => {
                        replay.seal();
                        let _lost = replay.unsaved(now);
                        replay = disk.start(now);
                    }
                }
            }
        }
    }
}
