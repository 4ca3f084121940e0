//! User records, read and changed under each user's own lock: two logins of the same user cannot
//! both spend one code, while logins of different users never wait for each other. Reads come
//! from the store's cache or one small file; writes run on the blocking pool.
//!
//! Whatever changes a record goes through `update`, so the one rule every change shares lives
//! here: when the active TOTP key is replaced or removed, the steps spent with the old one are
//! forgotten (`Replay::key_replaced`), whichever command did it.

use super::blocking;
use super::replay::Replay;
use crate::store::{Store, StoreError, UserRecord};
use otp_proto::Secret;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What a change made of a record, with its result: only a changed record is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<T> {
    /// Write the record back (a `None` record is deleted).
    Changed(T),
    /// Leave the stored record as it is.
    Unchanged(T),
}

impl<T> Change<T> {
    /// `Changed` when `changed`, else `Unchanged`.
    pub fn changed_if(changed: bool, result: T) -> Change<T> {
        if changed {
            Change::Changed(result)
        } else {
            Change::Unchanged(result)
        }
    }
}

pub struct Records {
    store: Arc<dyn Store>,
    replay: Arc<Replay>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Records {
    pub fn new(store: Arc<dyn Store>, replay: Arc<Replay>) -> Records {
        Records {
            store,
            replay,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Read in place, not on the blocking pool: a record is one small file, cached after its
    /// first read (CachedStore) and in the page cache before that, and the hop to the pool
    /// costs more than the read (measured: 172 → 128 µs per login at concurrency 1). Writes,
    /// which fsync, do go to the pool.
    pub fn load(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        self.store.load(user)
    }

    /// The user's record, or an empty one.
    pub fn load_or_default(&self, user: &str) -> Result<UserRecord, StoreError> {
        Ok(self.load(user)?.unwrap_or_default())
    }

    /// Read-modify-write under the user's lock; `change` says whether it changed the record.
    pub async fn update<T>(
        &self,
        user: &str,
        change: impl FnOnce(&mut Option<UserRecord>) -> Change<T>,
    ) -> Result<T, StoreError> {
        let lock = self.user_lock(user);
        let result = async {
            // Owned, and moved into the write below: if this future is dropped (the login's
            // connection went away) while the write runs on the pool, the lock is still held
            // until the write ends, so the next change cannot read the record from before it
            // (a spent recovery code coming back).
            let guard = lock.clone().lock_owned().await;
            let mut record = self.load(user)?;
            let before = active_key(&record);
            let result = match change(&mut record) {
                Change::Unchanged(result) => return Ok(result),
                Change::Changed(result) => result,
            };
            let replaced = before != active_key(&record);
            let (store, name) = (self.store.clone(), user.to_owned());
            blocking(move || {
                let _held = guard;
                match record {
                    Some(r) => store.save(&name, &r),
                    None => store.remove(&name),
                }
            })
            .await?;
            if replaced {
                self.replay.key_replaced(user);
            }
            Ok(result)
        }
        .await;
        self.release_user_lock(user, lock);
        result
    }

    /// Every user with a record.
    pub async fn users(&self) -> Result<Vec<String>, StoreError> {
        let store = self.store.clone();
        blocking(move || store.users()).await
    }

    fn user_lock(&self, user: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(user.to_owned()).or_default().clone()
    }

    fn release_user_lock(&self, user: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FileStore, PreviousRun};

    fn records(dir: &std::path::Path) -> Records {
        let store: Arc<dyn Store> = Arc::new(FileStore::open(dir).unwrap());
        Records::new(store, Arc::new(Replay::new(PreviousRun::default(), 1, 0)))
    }

    #[tokio::test]
    async fn only_a_changed_record_is_written_and_a_changed_none_deletes_it() {
        let dir = tempfile::tempdir().unwrap();
        let r = records(dir.path());
        let set = r
            .update("alice", |rec| {
                rec.get_or_insert_with(UserRecord::default).email = Some("a@b.example".into());
                Change::Changed(7)
            })
            .await;
        assert_eq!(set.unwrap(), 7);
        // An unchanged result leaves the stored record as it was, whatever the closure did.
        r.update("alice", |rec| {
            *rec = None;
            Change::Unchanged(())
        })
        .await
        .unwrap();
        let email = r.load("alice").unwrap().and_then(|rec| rec.email);
        assert_eq!(email.as_deref(), Some("a@b.example"));
        r.update("alice", |rec| {
            *rec = None;
            Change::Changed(())
        })
        .await
        .unwrap();
        assert!(r.load("alice").unwrap().is_none());
        assert!(r.users().await.unwrap().is_empty());
    }

    /// A store whose saves say they started, then wait until the test lets them through, as a
    /// slow disk does.
    struct SlowSaves {
        inner: FileStore,
        started: tokio::sync::mpsc::UnboundedSender<()>,
        gate: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    }

    impl Store for SlowSaves {
        fn load(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
            self.inner.load(user)
        }
        fn save(&self, user: &str, record: &UserRecord) -> Result<(), StoreError> {
            let _ = self.started.send(());
            let _ = self.gate.lock().unwrap().recv();
            self.inner.save(user, record)
        }
        fn remove(&self, user: &str) -> Result<(), StoreError> {
            self.inner.remove(user)
        }
        fn users(&self) -> Result<Vec<String>, StoreError> {
            self.inner.users()
        }
        fn begin_run(&self) -> Result<PreviousRun, StoreError> {
            self.inner.begin_run()
        }
        fn end_run(&self) -> Result<(), StoreError> {
            self.inner.end_run()
        }
        fn save_used_steps(&self, saved: &crate::store::SavedSteps) -> Result<(), StoreError> {
            self.inner.save_used_steps(saved)
        }
        fn lockouts(&self) -> Result<Vec<(String, crate::store::LockoutRecord)>, StoreError> {
            self.inner.lockouts()
        }
        fn save_lockout(
            &self,
            user: &str,
            record: Option<&crate::store::LockoutRecord>,
        ) -> Result<(), StoreError> {
            self.inner.save_lockout(user, record)
        }
    }

    /// A login that hangs up while its change is being written must not let the next change in
    /// before the write ends: it would read the record from before it (a spent recovery code
    /// coming back).
    #[tokio::test]
    async fn a_change_dropped_mid_write_holds_the_user_until_the_write_ends() {
        let dir = tempfile::tempdir().unwrap();
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let (open, gate) = std::sync::mpsc::channel();
        let store: Arc<dyn Store> = Arc::new(SlowSaves {
            inner: FileStore::open(dir.path()).unwrap(),
            started: started_tx,
            gate: std::sync::Mutex::new(gate),
        });
        let r = Arc::new(Records::new(
            store,
            Arc::new(Replay::new(PreviousRun::default(), 1, 0)),
        ));
        let first = {
            let r = r.clone();
            tokio::spawn(async move {
                r.update("alice", |rec| {
                    rec.get_or_insert_with(UserRecord::default).email = Some("a@x.example".into());
                    Change::Changed(())
                })
                .await
            })
        };
        started.recv().await.unwrap();
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        assert!(
            r.user_lock("alice").try_lock().is_err(),
            "the dropped change still holds alice while its write runs"
        );
        open.send(()).unwrap();
        // The write ends on the blocking pool; then the lock is free again.
        while r.user_lock("alice").try_lock().is_err() {
            tokio::task::yield_now().await;
        }
        let email = r.load("alice").unwrap().and_then(|rec| rec.email);
        assert_eq!(email.as_deref(), Some("a@x.example"));
    }
}
