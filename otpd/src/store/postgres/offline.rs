//! `[store] offline = "cached"` (docs/design.md, "The fleet store", "Offline logins"): while the
//! database cannot be reached, TOTP logins of users this host has seen in the last
//! `offline_days` are decided from a local sealed copy of their record, with replay and
//! failures kept on this host, and written back when the database returns.
//!
//! Under `state_dir/offline`: `users/NAME.json` (the copies, sealed like the file store's
//! records, by `FileStore`) and `state.json` (when each user was last seen, the last step this
//! host knows spent, and what is pending write-back). Every file is 0600, written to a temp
//! file, fsynced and renamed. A step spent offline is written there before it is accepted, so
//! neither a crash nor a restart lets it be accepted again on this host. A step the database
//! spent (an online login) is the database's to keep: this host notes it in memory and writes
//! the state within `WRITE_BACK_EVERY` and at a clean stop, off the login's path; after an
//! unclean stop (`clean` not set), offline answers are under a restart guard, as the file
//! store's are (docs/design.md, "Offline logins").

use super::{connect, db, notify, to_i64, PostgresStore, CHANNEL};
use crate::store::files::{write_atomically, FileStore};
use crate::store::{
    Fleet, FleetAnswer, FleetRefusal, FleetRules, FleetSend, FleetVerdict, KeyKind, LockoutRecord,
    PreviousRun, RecoveryHash, SavedSteps, Store, StoreError, UserRecord,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How often the write-back is tried while something is pending.
const WRITE_BACK_EVERY: Duration = Duration::from_secs(1);

/// The postgres store, falling back to this host's copies while the database is unreachable.
pub struct OfflineStore {
    db: Arc<PostgresStore>,
    local: Arc<Local>,
}

struct Local {
    copies: FileStore,
    state_path: PathBuf,
    /// `offline_days` in seconds.
    keep_for: u64,
    /// Unix seconds this run started if the last one did not stop cleanly: TOTP steps up to
    /// this one's plus the skew may have been spent online unnoted (the restart guard).
    guard_from: Option<u64>,
    state: Mutex<State>,
}

/// `state.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    /// Unix seconds of the last record read from the database or login decided by it.
    #[serde(default)]
    seen: BTreeMap<String, u64>,
    /// The highest step this host knows spent (online or offline).
    #[serde(default)]
    spent: BTreeMap<String, u64>,
    /// What offline logins did that the database does not know yet.
    #[serde(default)]
    pending: BTreeMap<String, Pending>,
    /// Written by a clean stop, cleared at start: a start that finds it unset follows a crash,
    /// and the last online steps may be missing.
    #[serde(default)]
    clean: bool,
    /// Changed since the last write (not stored).
    #[serde(skip)]
    dirty: bool,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pending {
    /// A step spent offline (the highest).
    #[serde(default)]
    step: Option<u64>,
    /// Failures since the last offline success, Unix seconds.
    #[serde(default)]
    failures: Vec<u64>,
    #[serde(default)]
    locked_until: Option<u64>,
}

/// Unix seconds (the store sits below policy, so it keeps its own clock reading).
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The highest step this host knows spent for `user`: online, or offline and pending.
fn spent_here(state: &State, user: &str) -> Option<u64> {
    let pending = state.pending.get(user).and_then(|p| p.step);
    state.spent.get(user).copied().max(pending)
}

fn offline(e: &StoreError) -> bool {
    matches!(e, StoreError::Unreachable(_))
}

impl OfflineStore {
    /// `cfg.state_dir/offline`, sealed with `cfg.key_file` (the fleet key).
    pub fn new(db: PostgresStore, cfg: &crate::config::Config) -> Result<Self, StoreError> {
        let dir = cfg.state_dir.join("offline");
        let copies = FileStore::open_with_key_file(&dir, &cfg.key_file)?;
        let local = Arc::new(Local::open(copies, &dir, cfg.store.offline_days)?);
        let db = Arc::new(db);
        spawn_write_back(Arc::downgrade(&db), Arc::downgrade(&local));
        Ok(OfflineStore { db, local })
    }

    pub fn db(&self) -> &PostgresStore {
        &self.db
    }
}

impl Local {
    /// The copies in `copies` and `dir/state.json` (as the last run left it).
    fn open(copies: FileStore, dir: &std::path::Path, days: u16) -> Result<Local, StoreError> {
        let state_path = dir.join("state.json");
        let mut state: State = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: state_path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                clean: true,
                ..State::default()
            },
            Err(source) => {
                return Err(StoreError::Io {
                    path: state_path,
                    source,
                })
            }
        };
        let guard_from = (!state.clean).then(now);
        if let Some(from) = guard_from {
            log::warn!(
                "store: offline: the last run did not stop cleanly; offline codes from before {from} are refused"
            );
        }
        state.clean = false;
        let local = Local {
            copies,
            state_path,
            keep_for: u64::from(days) * 86_400,
            guard_from,
            state: Mutex::new(State::default()),
        };
        // On disk before any login: a crash from now on is seen by the next start.
        local.write(&state)?;
        *local.state() = state;
        Ok(local)
    }

    /// Write the state if it changed (the write-back thread, every `WRITE_BACK_EVERY`).
    fn flush(&self) -> Result<(), StoreError> {
        let mut state = self.state();
        if !state.dirty {
            return Ok(());
        }
        self.write(&state)?;
        state.dirty = false;
        Ok(())
    }

    /// A clean stop: everything noted, and the next start needs no guard.
    fn close(&self) -> Result<(), StoreError> {
        let mut state = self.state();
        state.clean = true;
        self.write(&state)?;
        state.clean = false;
        state.dirty = false;
        Ok(())
    }

    /// The restart guard's verdict on a right code of `step` of `key`: the Unix time codes
    /// work again, if it is refused.
    fn guarded(&self, key: &crate::store::TotpKey, step: u64, skew: u8) -> Option<u64> {
        let floor = key.guard_floor(self.guard_from?, u64::from(skew))?;
        (step <= floor).then(|| (floor + 1) * key.period)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, state: &State) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(state).map_err(|e| StoreError::Corrupt {
            path: self.state_path.clone(),
            message: e.to_string(),
        })?;
        write_atomically(&self.state_path, &bytes)
    }

    /// Keep a copy of a record read from (or written to) the database: TOTP keys only, HOTP
    /// counters are the database's alone.
    fn keep(&self, user: &str, record: &UserRecord) -> Result<(), StoreError> {
        let totp = record.totp.as_ref().filter(|k| k.kind == KeyKind::Totp);
        let Some(key) = totp else {
            return self.drop_copy(user);
        };
        self.copies.save(user, record)?;
        let mut state = self.state();
        state.seen.insert(user.to_owned(), now());
        if let Some(step) = key.last_step {
            let spent = state.spent.entry(user.to_owned()).or_default();
            *spent = (*spent).max(step);
        }
        // The database holds the step: noted here, written by `flush`.
        state.dirty = true;
        Ok(())
    }

    fn drop_copy(&self, user: &str) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.seen.remove(user).is_some() {
            self.write(&state)?;
            drop(state);
            self.copies.remove(user)?;
        }
        Ok(())
    }

    /// A step the database spent for this host: remembered, so the copy is never behind
    /// (written by `flush`; a crash before it is what the restart guard covers).
    fn spent_online(&self, user: &str, step: u64) {
        let mut state = self.state();
        state.seen.insert(user.to_owned(), now());
        let spent = state.spent.entry(user.to_owned()).or_default();
        *spent = (*spent).max(step);
        state.dirty = true;
    }

    /// The copy, if the user was seen recently enough.
    fn copy(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        let (seen, spent) = {
            let state = self.state();
            (state.seen.get(user).copied(), spent_here(&state, user))
        };
        if seen.is_none_or(|s| now().saturating_sub(s) > self.keep_for) {
            return Ok(None);
        }
        let Some(mut record) = self.copies.load(user)? else {
            return Ok(None);
        };
        if let Some(key) = record.totp.as_mut() {
            key.last_step = key.last_step.max(spent);
        }
        Ok(Some(record))
    }

    /// Decide one answer on this host alone (the database is unreachable).
    fn answer(
        &self,
        user: &str,
        answer: FleetAnswer,
        rules: &FleetRules,
    ) -> Option<Result<FleetVerdict, StoreError>> {
        let record = match self.copy(user) {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        let known = record.totp.as_ref().and_then(|k| k.last_step);
        let mut state = self.state();
        // Again under the lock: an answer racing this one may have spent a step since `copy`.
        let known = known.max(spent_here(&state, user));
        let pending = state.pending.entry(user.to_owned()).or_default();
        if let Some(until) = pending.locked_until.filter(|u| *u > rules.now) {
            return Some(Ok(FleetVerdict::Locked { until }));
        }
        pending
            .failures
            .retain(|at| *at > rules.now.saturating_sub(rules.window));
        let verdict = match answer {
            FleetAnswer::Step { step, .. } if known.is_none_or(|k| step > k) => {
                let key = record.totp.as_ref();
                if let Some(until) = key.and_then(|k| self.guarded(k, step, rules.skew)) {
                    // A right code, perhaps spent online just before a crash: not counted.
                    return Some(Ok(FleetVerdict::Guarded { until }));
                }
                pending.step = Some(pending.step.unwrap_or(0).max(step));
                pending.failures.clear();
                pending.locked_until = None;
                FleetVerdict::Allowed
            }
            // Sent codes, confirmations and HOTP counters need the database.
            FleetAnswer::Success | FleetAnswer::Counter(_) => return None,
            FleetAnswer::Step { .. } | FleetAnswer::Failure => {
                pending.failures.push(rules.now);
                if pending.failures.len() >= rules.max_failures as usize {
                    pending.locked_until = Some(rules.now + rules.lock_for);
                }
                match answer {
                    FleetAnswer::Step { .. } => FleetVerdict::Replayed,
                    _ => FleetVerdict::Wrong,
                }
            }
        };
        // Durable before the verdict is given.
        Some(self.write(&state).map(|()| verdict))
    }
}

/// Write back what offline logins did, every `WRITE_BACK_EVERY` while anything is pending,
/// until the store is dropped. Idempotent: the step only moves up, a failure is added once.
fn spawn_write_back(db: std::sync::Weak<PostgresStore>, local: std::sync::Weak<Local>) {
    let spawned = std::thread::Builder::new()
        .name("otpd-offline".into())
        .spawn(move || loop {
            std::thread::sleep(WRITE_BACK_EVERY);
            let (Some(db), Some(local)) = (db.upgrade(), local.upgrade()) else {
                return;
            };
            if let Err(e) = local.flush() {
                log::error!("store: offline: {e}");
            }
            let pending: Vec<(String, Pending)> = local
                .state()
                .pending
                .iter()
                .map(|(u, p)| (u.clone(), p.clone()))
                .collect();
            if pending.is_empty() {
                continue;
            }
            let count = pending.len();
            match write_back(&db, pending.clone()) {
                Ok(()) => {
                    let mut state = local.state();
                    for (user, sent) in pending {
                        // Only what was written: an offline login since then stays pending.
                        if state.pending.get(&user).is_some_and(|p| {
                            p.step == sent.step && p.failures == sent.failures
                        }) {
                            state.pending.remove(&user);
                        }
                    }
                    match local.write(&state) {
                        Ok(()) => log::info!(
                            "store: offline: wrote back {count} users' spent steps and failures to the database"
                        ),
                        Err(e) => log::error!("store: offline: {e}"),
                    }
                }
                Err(e) if offline(&e) => {}
                Err(e) => log::error!("store: offline write-back: {e}"),
            }
        });
    if let Err(e) = spawned {
        log::error!("store: offline: cannot start the write-back: {e}");
    }
}

fn write_back(store: &PostgresStore, pending: Vec<(String, Pending)>) -> Result<(), StoreError> {
    store.call(|pool| async move {
        let mut client = pool.get().await.map_err(connect::pool_error)?;
        let tx = client.transaction().await.map_err(db)?;
        for (name, p) in pending {
            if let Some(step) = p.step {
                tx.execute(
                    "UPDATE otpd_users SET last_step = $2
                     WHERE name = $1 AND coalesce(last_step, -1) < $2",
                    &[&name, &to_i64(step)],
                )
                .await
                .map_err(db)?;
            }
            let failures: Vec<i64> = p.failures.iter().map(|f| to_i64(*f)).collect();
            tx.execute(
                "INSERT INTO otpd_failures (name, at)
                 SELECT $1, a FROM unnest($2::bigint[]) AS a
                 WHERE NOT EXISTS (SELECT 1 FROM otpd_failures f WHERE f.name = $1 AND f.at = a)",
                &[&name, &failures],
            )
            .await
            .map_err(db)?;
            if let Some(until) = p.locked_until {
                tx.execute(
                    "INSERT INTO otpd_lockouts AS l (name, locked_until) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE
                     SET locked_until = GREATEST(coalesce(l.locked_until, 0), $2)",
                    &[&name, &to_i64(until)],
                )
                .await
                .map_err(db)?;
            }
            notify(&tx, CHANNEL, &name).await?;
        }
        tx.commit().await.map_err(db)
    })
}

impl Store for OfflineStore {
    fn load(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        match self.db.load(user) {
            Ok(Some(record)) => {
                if let Err(e) = self.local.keep(user, &record) {
                    log::error!(
                        "store: offline copy of user={}: {e}",
                        crate::logging::field(user)
                    );
                }
                Ok(Some(record))
            }
            Ok(None) => {
                self.local.drop_copy(user)?;
                Ok(None)
            }
            Err(e) if offline(&e) => match self.local.copy(user)? {
                Some(record) => Ok(Some(record)),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    fn save(&self, user: &str, record: &UserRecord) -> Result<(), StoreError> {
        self.db.save(user, record)?;
        if let Err(e) = self.local.keep(user, record) {
            log::error!(
                "store: offline copy of user={}: {e}",
                crate::logging::field(user)
            );
        }
        Ok(())
    }

    fn remove(&self, user: &str) -> Result<(), StoreError> {
        self.db.remove(user)?;
        self.local.drop_copy(user)
    }

    fn users(&self) -> Result<Vec<String>, StoreError> {
        self.db.users()
    }
    fn begin_run(&self) -> Result<PreviousRun, StoreError> {
        self.db.begin_run()
    }
    fn end_run(&self) -> Result<(), StoreError> {
        self.local.close()?;
        self.db.end_run()
    }
    fn save_used_steps(&self, saved: &SavedSteps) -> Result<(), StoreError> {
        self.db.save_used_steps(saved)
    }
    fn lockouts(&self) -> Result<Vec<(String, LockoutRecord)>, StoreError> {
        self.db.lockouts()
    }
    fn save_lockout(&self, user: &str, record: Option<&LockoutRecord>) -> Result<(), StoreError> {
        self.db.save_lockout(user, record)
    }
    fn fleet(&self) -> Option<&dyn Fleet> {
        Some(self)
    }
}

impl Fleet for OfflineStore {
    fn answer(
        &self,
        user: &str,
        answer: FleetAnswer,
        rules: &FleetRules,
    ) -> Result<FleetVerdict, StoreError> {
        match self.db.answer(user, answer, rules) {
            Ok(verdict) => {
                if let (FleetVerdict::Allowed, FleetAnswer::Step { step, .. }) = (verdict, answer) {
                    self.local.spent_online(user, step);
                }
                Ok(verdict)
            }
            Err(e) if offline(&e) => match self.local.answer(user, answer, rules) {
                Some(Ok(FleetVerdict::Allowed)) => Ok(FleetVerdict::AllowedOffline),
                Some(other) => other,
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    fn spend_recovery(&self, user: &str, code: &RecoveryHash) -> Result<bool, StoreError> {
        self.db.spend_recovery(user, code)
    }
    fn count_send(&self, send: &FleetSend) -> Result<Option<FleetRefusal>, StoreError> {
        self.db.count_send(send)
    }
    fn uncount_send(&self, send: &FleetSend) -> Result<(), StoreError> {
        self.db.uncount_send(send)
    }
    fn grace_admits(
        &self,
        user: &str,
        rhost: &str,
        service: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        self.db.grace_admits(user, rhost, service, now)
    }
    fn grace_grant(
        &self,
        user: &str,
        rhost: &str,
        service: &str,
        until: u64,
    ) -> Result<(), StoreError> {
        self.db.grace_grant(user, rhost, service, until)
    }
    fn grace_forget(&self, user: &str) -> Result<(), StoreError> {
        self.db.grace_forget(user)
    }
    fn on_unlock(&self, watcher: std::sync::Arc<dyn Fn(&str) + Send + Sync>) {
        self.db.on_unlock(watcher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::seal::{Sealer, SealingKey};
    use crate::store::TotpKey;

    fn local(dir: &std::path::Path) -> Local {
        local_with(dir, &SealingKey::generate().unwrap())
    }

    fn local_with(dir: &std::path::Path, key: &SealingKey) -> Local {
        let copies = FileStore::open_sealed(dir, Sealer::new(key.clone())).unwrap();
        Local::open(copies, dir, 7).unwrap()
    }

    /// A host's copies in a fresh dir, alice seen at step 10 and written down.
    fn alice_seen() -> (tempfile::TempDir, SealingKey, Local) {
        let dir = tempfile::tempdir().unwrap();
        let key = SealingKey::generate().unwrap();
        let l = local_with(dir.path(), &key);
        l.keep("alice", &record(10)).unwrap();
        l.flush().unwrap();
        (dir, key, l)
    }

    fn step(l: &Local, step: u64) -> Option<Result<FleetVerdict, StoreError>> {
        l.answer("alice", FleetAnswer::Step { step, period: 30 }, &rules())
    }

    /// An online login's step is noted in memory, not written on the login's path; the
    /// write-back thread's `flush` and a clean stop write it.
    #[test]
    fn online_steps_are_written_by_flush_and_a_clean_stop_not_per_login() {
        let (dir, key, l) = alice_seen();
        let on_disk = || -> State {
            serde_json::from_slice(&std::fs::read(dir.path().join("state.json")).unwrap()).unwrap()
        };
        l.spent_online("alice", 12);
        assert_eq!(on_disk().spent.get("alice"), Some(&10), "written per login");
        l.flush().unwrap();
        assert_eq!(on_disk().spent.get("alice"), Some(&12));
        l.spent_online("alice", 13);
        l.close().unwrap();
        let stopped = on_disk();
        assert_eq!(
            (stopped.spent.get("alice"), stopped.clean),
            (Some(&13), true)
        );
        // A clean stop: the next run has no guard, and knows the step.
        let again = local_with(dir.path(), &key);
        assert!(again.guard_from.is_none());
        assert!(!on_disk().clean, "a run in progress must not look clean");
        assert!(matches!(step(&again, 13), Some(Ok(FleetVerdict::Replayed))));
        assert!(matches!(step(&again, 14), Some(Ok(FleetVerdict::Allowed))));
    }

    /// The attack: a code accepted online, otpd killed before the flush, the database down at
    /// the restart. The step is unknown here, so the guard refuses every step that could have
    /// been valid before the crash (uncounted), and no later one; a key made since is free.
    #[test]
    fn after_an_unclean_stop_offline_steps_from_before_it_are_guarded() {
        let (dir, key, l) = alice_seen();
        let current = now() / 30;
        l.spent_online("alice", current);
        drop(l); // killed: no close, no flush
        let l = local_with(dir.path(), &key);
        let from = l.guard_from.expect("an unclean stop is guarded");
        let floor = from / 30 + 1;
        for s in [current, floor] {
            match step(&l, s) {
                Some(Ok(FleetVerdict::Guarded { until })) => assert_eq!(until, (floor + 1) * 30),
                other => panic!("step {s}: {other:?}"),
            }
        }
        assert!(l
            .state()
            .pending
            .get("alice")
            .is_none_or(|p| p.failures.is_empty()));
        assert!(matches!(
            step(&l, floor + 1),
            Some(Ok(FleetVerdict::Allowed))
        ));
        // A key created after the guard's start is not covered.
        let mut fresh = record(0);
        fresh.totp.as_mut().unwrap().created = from + 1;
        l.keep("bob", &fresh).unwrap();
        let bob = l.answer(
            "bob",
            FleetAnswer::Step {
                step: current,
                period: 30,
            },
            &rules(),
        );
        assert!(matches!(bob, Some(Ok(FleetVerdict::Allowed))), "{bob:?}");
    }

    fn record(last_step: u64) -> UserRecord {
        UserRecord {
            totp: Some(TotpKey {
                secret: otp_proto::Secret::new(String::from("JBSWY3DPEHPK3PXP")),
                algorithm: crate::config::Algorithm::SHA1,
                digits: 6,
                period: 30,
                last_step: Some(last_step),
                kind: KeyKind::Totp,
                window: None,
                created: 1,
            }),
            ..UserRecord::default()
        }
    }

    fn rules() -> FleetRules {
        FleetRules {
            now: now(),
            window: 300,
            max_failures: 3,
            lock_for: 600,
            skew: 1,
        }
    }

    #[test]
    fn a_step_is_spent_once_and_survives_reopening_and_failures_lock() {
        let dir = tempfile::tempdir().unwrap();
        let l = local(dir.path());
        assert!(l
            .answer(
                "alice",
                FleetAnswer::Step {
                    step: 11,
                    period: 30
                },
                &rules()
            )
            .is_none());
        l.keep("alice", &record(10)).unwrap();
        let spend =
            |l: &Local, step| l.answer("alice", FleetAnswer::Step { step, period: 30 }, &rules());
        assert!(matches!(spend(&l, 10), Some(Ok(FleetVerdict::Replayed))));
        assert!(matches!(spend(&l, 11), Some(Ok(FleetVerdict::Allowed))));
        assert!(matches!(spend(&l, 11), Some(Ok(FleetVerdict::Replayed))));
        assert!(l.answer("alice", FleetAnswer::Success, &rules()).is_none());
        // The state is on disk: the step stays spent, with what is pending write-back.
        let state = std::fs::read(dir.path().join("state.json")).unwrap();
        let reopened: State = serde_json::from_slice(&state).unwrap();
        let pending = &reopened.pending["alice"];
        assert_eq!((pending.step, pending.failures.len()), (Some(11), 1));
        assert_eq!(
            l.copy("alice").unwrap().unwrap().totp.unwrap().last_step,
            Some(11)
        );
        for _ in 0..2 {
            let wrong = l.answer("alice", FleetAnswer::Failure, &rules());
            assert!(matches!(wrong, Some(Ok(FleetVerdict::Wrong))));
        }
        assert!(matches!(
            spend(&l, 12),
            Some(Ok(FleetVerdict::Locked { .. }))
        ));
    }
}
