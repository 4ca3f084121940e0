//! Counts of audit events per minute for the last day, kept in memory (filled from the file at
//! start), so `otpctl stats` and the metrics file cost no file read.

use otp_proto::{AuditEvent, AuditKind, AuditResult, MethodKind, StatCount, StatsReport};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

pub const HOUR: u64 = 3600;
pub const DAY: u64 = 24 * HOUR;

/// The method as its place in `METHODS` (MethodKind has no order of its own).
type Key = (AuditKind, AuditResult, Option<usize>);

const METHODS: [MethodKind; 3] = [MethodKind::Totp, MethodKind::Email, MethodKind::Sms];

fn rank(m: Option<MethodKind>) -> Option<usize> {
    m.and_then(|m| METHODS.iter().position(|k| *k == m))
}

/// Minute buckets, oldest first; at most one day of them.
#[derive(Default)]
pub struct Counts {
    minutes: Mutex<VecDeque<(u64, BTreeMap<Key, u64>)>>,
}

impl Counts {
    pub fn add(&self, e: &AuditEvent) {
        let minute = e.time / 60;
        let mut minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        let key = (e.kind, e.result, rank(e.method));
        // Events come in time order, except the few of one run read at start: find the bucket
        // from the newest end.
        let at = minutes.iter().rposition(|(m, _)| *m <= minute);
        match at {
            Some(i) if minutes[i].0 == minute => {
                let n = minutes[i].1.entry(key).or_insert(0);
                *n = n.saturating_add(1);
            }
            _ => {
                let insert_at = at.map_or(0, |i| i + 1);
                minutes.insert(insert_at, (minute, BTreeMap::from([(key, 1)])));
            }
        }
        let oldest = (e.time.saturating_sub(DAY)) / 60;
        while minutes.front().is_some_and(|(m, _)| *m < oldest) {
            minutes.pop_front();
        }
    }

    pub fn report(&self, now: u64) -> StatsReport {
        let minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        let sum = |window: u64| {
            let from = now.saturating_sub(window) / 60;
            let mut total: BTreeMap<Key, u64> = BTreeMap::new();
            for (_, counts) in minutes.iter().filter(|(m, _)| *m >= from) {
                for (k, n) in counts {
                    let t = total.entry(*k).or_insert(0);
                    *t = t.saturating_add(*n);
                }
            }
            total
                .into_iter()
                .map(|((kind, result, method), count)| StatCount {
                    kind,
                    result,
                    method: method.and_then(|i| METHODS.get(i).copied()),
                    count,
                })
                .collect()
        };
        StatsReport {
            last_hour: sum(HOUR),
            last_day: sum(DAY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Audit;

    #[test]
    fn the_last_hour_and_day_are_counted_apart() {
        let audit = Audit::none("h");
        let counts = Counts::default();
        let now = 10 * DAY;
        for (age, result) in [
            (10, AuditResult::Allowed),
            (20, AuditResult::Allowed),
            (2 * HOUR, AuditResult::Denied),
            (2 * DAY, AuditResult::Denied),
        ] {
            let mut e = audit.event(AuditKind::Login, result, "alice", 0);
            e.time = now - age;
            e.method = Some(MethodKind::Totp);
            counts.add(&e);
        }
        let r = counts.report(now);
        assert_eq!(r.last_hour.len(), 1);
        assert_eq!(
            (r.last_hour[0].result, r.last_hour[0].count),
            (AuditResult::Allowed, 2)
        );
        let denied: u64 = r
            .last_day
            .iter()
            .filter(|c| c.result == AuditResult::Denied)
            .map(|c| c.count)
            .sum();
        assert_eq!(denied, 1, "two days ago is out of the day");
    }
}
