//! A write-through cache in front of any `Store`, so a login reads a user's record from disk at
//! most once (and not at all while it is cached) instead of once per step of the conversation.
//!
//! otpd is the only writer of its store, so every change passes through here and the cache
//! cannot go stale. A load that raced with a write does not fill the cache (a generation
//! counter tells), so an old record read just before a save can never shadow the new one.

use super::{LockoutRecord, SavedSteps, Store, StoreError, UserRecord};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Records kept at most; beyond that an arbitrary one is dropped. A full record (a key and 8
/// recovery-code hashes) is ~1.3 KB as JSON, so a full cache is roughly 100 MB at most, however
/// many users are enrolled. Measured: otpd at 60 MB RSS after 126,788 logins of distinct users
/// without recovery codes (`bench/results/daemon.json`).
pub const CAPACITY: usize = 65_536;

pub struct CachedStore<S> {
    inner: S,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    /// `None`: known to have no record.
    records: HashMap<String, Option<Arc<UserRecord>>>,
    /// Bumped by every write, so a load that began before a write does not fill the cache.
    generation: u64,
}

impl Cache {
    fn put(&mut self, user: &str, record: Option<Arc<UserRecord>>) {
        if self.records.len() >= CAPACITY && !self.records.contains_key(user) {
            if let Some(victim) = self.records.keys().next().cloned() {
                self.records.remove(&victim);
            }
        }
        self.records.insert(user.to_owned(), record);
    }
}

impl<S: Store> CachedStore<S> {
    pub fn new(inner: S) -> CachedStore<S> {
        CachedStore {
            inner,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The record if it is cached (`Some(None)`: known to be absent).
    fn peek(&self, user: &str) -> Option<Option<UserRecord>> {
        let cache = self.cache();
        let hit = cache.records.get(user)?;
        Some(hit.as_deref().cloned())
    }

    /// Another writer changed the user's record (a fleet host, told by the database): the next
    /// load reads it again.
    pub fn forget(&self, user: &str) {
        self.written(user, None);
    }

    /// Changes may have been missed (the fleet's listener was disconnected): forget everything.
    pub fn forget_all(&self) {
        let mut cache = self.cache();
        cache.generation += 1;
        cache.records.clear();
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a write: the new state, or (when the write failed and the disk may hold either)
    /// nothing, so the next load reads what is really there.
    fn written(&self, user: &str, outcome: Option<Option<Arc<UserRecord>>>) {
        let mut cache = self.cache();
        cache.generation += 1;
        match outcome {
            Some(record) => cache.put(user, record),
            None => {
                cache.records.remove(user);
            }
        }
    }
}

impl<S: Store> Store for CachedStore<S> {
    fn load(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        if let Some(hit) = self.peek(user) {
            return Ok(hit);
        }
        let generation = self.cache().generation;
        let record = self.inner.load(user)?;
        let mut cache = self.cache();
        if cache.generation == generation {
            cache.put(user, record.clone().map(Arc::new));
        }
        Ok(record)
    }

    fn save(&self, user: &str, record: &UserRecord) -> Result<(), StoreError> {
        let result = self.inner.save(user, record);
        let outcome = result.is_ok().then(|| Some(Arc::new(record.clone())));
        self.written(user, outcome);
        result
    }

    fn remove(&self, user: &str) -> Result<(), StoreError> {
        let result = self.inner.remove(user);
        self.written(user, result.is_ok().then_some(None));
        result
    }

    fn users(&self) -> Result<Vec<String>, StoreError> {
        self.inner.users()
    }

    fn begin_run(&self) -> Result<super::PreviousRun, StoreError> {
        self.inner.begin_run()
    }

    fn end_run(&self) -> Result<(), StoreError> {
        self.inner.end_run()
    }

    fn save_used_steps(&self, saved: &SavedSteps) -> Result<(), StoreError> {
        self.inner.save_used_steps(saved)
    }

    fn lockouts(&self) -> Result<Vec<(String, LockoutRecord)>, StoreError> {
        self.inner.lockouts()
    }

    fn save_lockout(&self, user: &str, record: Option<&LockoutRecord>) -> Result<(), StoreError> {
        self.inner.save_lockout(user, record)
    }

    fn fleet(&self) -> Option<&dyn super::Fleet> {
        self.inner.fleet()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FileStore;

    fn store(dir: &std::path::Path) -> CachedStore<FileStore> {
        CachedStore::new(FileStore::open(dir).unwrap())
    }

    fn with_email(address: &str) -> UserRecord {
        UserRecord {
            email: Some(address.into()),
            ..UserRecord::default()
        }
    }

    #[test]
    fn a_load_fills_the_cache_and_a_save_updates_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        assert!(s.peek("alice").is_none(), "nothing cached before a load");
        assert!(s.load("alice").unwrap().is_none());
        assert!(
            matches!(s.peek("alice"), Some(None)),
            "an absent record is cached too"
        );
        s.save("alice", &with_email("a@example.com")).unwrap();
        let cached = s.peek("alice").unwrap().unwrap();
        assert_eq!(cached.email.as_deref(), Some("a@example.com"));
        // Written through: a second store on the same directory reads the same record.
        let disk = FileStore::open(dir.path()).unwrap().load("alice").unwrap();
        assert_eq!(disk.unwrap().email.as_deref(), Some("a@example.com"));
        s.remove("alice").unwrap();
        assert!(matches!(s.peek("alice"), Some(None)));
    }

    /// A store whose saves can be made to fail after an unknown amount of work, as a full
    /// disk does: the record on disk may then be the old one or the new one.
    #[derive(Default)]
    struct FailingSaves {
        records: Mutex<HashMap<String, UserRecord>>,
        failing: std::sync::atomic::AtomicBool,
    }

    impl Store for FailingSaves {
        fn load(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
            Ok(self.records.lock().unwrap().get(user).cloned())
        }
        fn save(&self, user: &str, record: &UserRecord) -> Result<(), StoreError> {
            if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError::BadName(user.into()));
            }
            self.records
                .lock()
                .unwrap()
                .insert(user.into(), record.clone());
            Ok(())
        }
        fn remove(&self, user: &str) -> Result<(), StoreError> {
            self.records.lock().unwrap().remove(user);
            Ok(())
        }
        fn users(&self) -> Result<Vec<String>, StoreError> {
            Ok(self.records.lock().unwrap().keys().cloned().collect())
        }
        fn begin_run(&self) -> Result<crate::store::PreviousRun, StoreError> {
            Ok(Default::default())
        }
        fn end_run(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn save_used_steps(&self, _: &SavedSteps) -> Result<(), StoreError> {
            Ok(())
        }
        fn lockouts(&self) -> Result<Vec<(String, LockoutRecord)>, StoreError> {
            Ok(Vec::new())
        }
        fn save_lockout(&self, _: &str, _: Option<&LockoutRecord>) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_save_drops_the_cached_record() {
        let s = CachedStore::new(FailingSaves::default());
        s.save("alice", &with_email("a@example.com")).unwrap();
        s.save("bob", &with_email("b@example.com")).unwrap();
        assert!(s.peek("alice").is_some());
        s.inner
            .failing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(s.save("alice", &with_email("new@example.com")).is_err());
        assert!(s.peek("alice").is_none(), "the failed user is not cached");
        let back = s.load("alice").unwrap().unwrap();
        assert_eq!(
            back.email.as_deref(),
            Some("a@example.com"),
            "the next load reads what the store holds"
        );
        assert!(s.peek("bob").is_some(), "other users stay cached");
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        for i in 0..CAPACITY + 10 {
            s.load(&format!("u{i}")).unwrap();
        }
        assert_eq!(s.cache().records.len(), CAPACITY);
    }
}
