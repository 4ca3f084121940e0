//! The values last read from the directory, per user, with when they were read: used while
//! the directory cannot be reached, for at most `cache_ttl` after they were read. Bounded, on
//! the monotonic clock.

use super::Contacts;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Users whose values are kept; past it the oldest reading goes.
const MAX_USERS: usize = 65_536;

pub struct Cache {
    ttl: Duration,
    read: Mutex<HashMap<String, (Instant, Contacts)>>,
}

/// What the cache knows of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// Read within `cache_ttl`.
    Fresh(Contacts),
    /// Read longer ago: no longer used, but says what the directory held then.
    Expired(Contacts),
    /// Never read (since the start), or evicted.
    Unknown,
}

impl Cache {
    pub fn new(ttl: Duration) -> Cache {
        Cache {
            ttl,
            read: Mutex::default(),
        }
    }

    pub fn put(&self, user: &str, contacts: Contacts, now: Instant) {
        let mut read = self.table();
        if read.len() >= MAX_USERS && !read.contains_key(user) {
            let oldest = read
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(u, _)| u.clone());
            if let Some(oldest) = oldest {
                read.remove(&oldest);
            }
        }
        read.insert(user.to_owned(), (now, contacts));
    }

    pub fn get(&self, user: &str, now: Instant) -> Cached {
        match self.table().get(user) {
            None => Cached::Unknown,
            Some((at, c)) if now.saturating_duration_since(*at) < self.ttl => {
                Cached::Fresh(c.clone())
            }
            Some((_, c)) => Cached::Expired(c.clone()),
        }
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, (Instant, Contacts)>> {
        self.read.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Contacts {
        Contacts {
            email: Some("alice@example.com".into()),
            phone: None,
        }
    }

    #[test]
    fn a_reading_is_fresh_for_the_ttl_then_expired() {
        let cache = Cache::new(Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(cache.get("alice", t), Cached::Unknown);
        cache.put("alice", alice(), t);
        assert_eq!(
            cache.get("alice", t + Duration::from_secs(59)),
            Cached::Fresh(alice())
        );
        assert_eq!(
            cache.get("alice", t + Duration::from_secs(60)),
            Cached::Expired(alice())
        );
        assert_eq!(cache.get("bob", t), Cached::Unknown);
    }
}
