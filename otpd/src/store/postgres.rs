//! The fleet store: every host's otpd on one PostgreSQL database, so a user enrolls once and a
//! code spent or a failure counted on one host holds on all of them (docs/design.md, "The fleet
//! store").
//!
//! The `Store` trait is synchronous (the file store does blocking I/O): this store runs the
//! database client on a small runtime of its own and waits for each call, every call bounded
//! by `OP_TIMEOUT`, so a dead database costs a login seconds, not the PAM timeout. Records are
//! sealed with the same `seal` rules as the file store (user and field as associated data):
//! the database, and any dump of it, holds no usable secret. Recovery codes, the last step and
//! the lockout live in their own tables, so that one statement can spend or count them under
//! the user's row lock (`otpd_answer`, migrations/001_fleet.sql).

pub mod audit;
pub mod connect;
pub mod copy;
pub mod listen;
pub mod migrations;
pub mod offline;

use super::seal::{Field, Sealed, Sealer};
use super::{
    CachedStore, Fleet, FleetAnswer, FleetRefusal, FleetRules, FleetSend, FleetVerdict,
    LockoutRecord, PreviousRun, RecoveryHash, SavedSteps, Store, StoreError, TotpKey, UserRecord,
};
use crate::config::store::Commit;
use crate::config::Config;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The longest one database call may take before the login is denied as offline.
pub const OP_TIMEOUT: Duration = Duration::from_secs(4);
/// The channel hosts tell each other of changed records on (payload: the user name).
pub const CHANNEL: &str = "otpd_users";
/// The channel a cleared lockout is told on (payload: the user name).
pub const UNLOCKS: &str = "otpd_unlocks";

/// Who hears of lockouts cleared by other hosts (`Fleet::on_unlock`).
type UnlockWatcher = Arc<dyn Fn(&str) + Send + Sync>;

pub struct PostgresStore {
    pool: deadpool_postgres::Pool,
    sealer: Sealer,
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    connect: connect::Connect,
    /// `[store] commit`: whether a right TOTP code's verdict waits for the WAL flush.
    commit: Commit,
    unlock_watchers: std::sync::Mutex<Vec<UnlockWatcher>>,
}

/// The configured database, cached, with the listener that drops what other hosts changed;
/// with `offline = "cached"`, behind this host's copies (store::postgres::offline).
pub fn open_cached(cfg: &Config) -> Result<Arc<dyn Store>, StoreError> {
    if cfg.store.offline == crate::config::store::Offline::Cached {
        let db = PostgresStore::open_or_offline(cfg)?;
        return Ok(listened(
            offline::OfflineStore::new(db, cfg)?,
            offline::OfflineStore::db,
        ));
    }
    Ok(listened(PostgresStore::open(cfg)?, |db| db))
}

/// `inner`, cached, with `db`'s listener dropping what other hosts changed.
fn listened<S: Store>(inner: S, db: fn(&S) -> &PostgresStore) -> Arc<dyn Store> {
    let store = Arc::new(CachedStore::new(inner));
    let weak = Arc::downgrade(&store);
    db(store.inner()).listen(Arc::new(move |change| {
        if let Some(store) = weak.upgrade() {
            match change {
                listen::Changed::User(user) => store.forget(&user),
                listen::Changed::Unlocked(user) => db(store.inner()).unlocked_elsewhere(&user),
                listen::Changed::Everything => store.forget_all(),
            }
        }
    }));
    store
}

/// A change to how a store connects (`Connect::without_commit_wait`), or none.
pub type Tune = fn(connect::Connect) -> connect::Connect;

impl PostgresStore {
    /// Connect, and refuse a schema other than the one this otpd knows.
    pub fn open(cfg: &Config) -> Result<PostgresStore, StoreError> {
        PostgresStore::open_with(cfg, |c| c)
    }

    fn open_with(cfg: &Config, tune: Tune) -> Result<PostgresStore, StoreError> {
        let store = PostgresStore::connect_with(cfg, tune)?;
        let version = store.schema_version()?;
        migrations::check(version)?;
        Ok(store)
    }

    /// With `offline = "cached"`, start while the database is unreachable (its schema is
    /// checked when it answers), so logins can use this host's copies.
    pub fn open_or_offline(cfg: &Config) -> Result<PostgresStore, StoreError> {
        PostgresStore::open_or_offline_with(cfg, |c| c)
    }

    /// `open_or_offline`, with `tune` applied to how it connects (the audit table's sessions).
    pub fn open_or_offline_with(cfg: &Config, tune: Tune) -> Result<PostgresStore, StoreError> {
        match PostgresStore::open_with(cfg, tune) {
            Err(StoreError::Unreachable(why))
                if cfg.store.offline == crate::config::store::Offline::Cached =>
            {
                log::warn!("store: the database cannot be reached ({why}): starting offline");
                PostgresStore::unconnected(cfg, tune)
            }
            other => other,
        }
    }

    /// Connect without looking at the schema (`otpd migrate`).
    pub fn connect(cfg: &Config) -> Result<PostgresStore, StoreError> {
        PostgresStore::connect_with(cfg, |c| c)
    }

    fn connect_with(cfg: &Config, tune: Tune) -> Result<PostgresStore, StoreError> {
        let store = PostgresStore::unconnected(cfg, tune)?;
        // Connect now, so a bad url, password or certificate is said at start, not at login.
        store.call(|pool| async move {
            let _client = pool.get().await.map_err(connect::pool_error)?;
            Ok(())
        })?;
        Ok(store)
    }

    /// The pool, with no connection made yet.
    fn unconnected(cfg: &Config, tune: Tune) -> Result<PostgresStore, StoreError> {
        let key = super::key_file::load(&cfg.key_file)?;
        let connect = tune(connect::Connect::from_config(&cfg.store)?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otpd-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Config(format!("cannot start the database runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let pool = connect.pool(usize::from(cfg.store.pool))?;
        let store = PostgresStore {
            pool,
            sealer: Sealer::new(key),
            runtime: Some(runtime),
            handle,
            connect,
            commit: cfg.store.commit,
            unlock_watchers: std::sync::Mutex::new(Vec::new()),
        };
        Ok(store)
    }

    /// The schema version in the database (0: none yet).
    pub fn schema_version(&self) -> Result<i32, StoreError> {
        self.call(|pool| async move {
            let client = pool.get().await.map_err(connect::pool_error)?;
            migrations::version(&client).await
        })
    }

    /// Create or upgrade the schema (under an advisory lock); returns (before, after).
    pub fn migrate(&self) -> Result<(i32, i32), StoreError> {
        self.call(|pool| async move {
            let mut client = pool.get().await.map_err(connect::pool_error)?;
            migrations::migrate(&mut client).await
        })
    }

    /// Start the listener (store::postgres::listen) on this store's runtime.
    pub fn listen(&self, on_change: Arc<dyn Fn(listen::Changed) + Send + Sync>) {
        self.handle
            .spawn(listen::run(self.connect.clone(), on_change));
    }

    fn unlocked_elsewhere(&self, user: &str) {
        let watchers = self
            .unlock_watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for watcher in watchers {
            watcher(user);
        }
    }

    /// Run `work` on the database runtime and wait for it, at most `OP_TIMEOUT`.
    fn call<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Pool) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let pool = self.pool.clone();
        let fut = work(pool.clone());
        self.handle.spawn(async move {
            let began = std::time::Instant::now();
            let result = tokio::time::timeout(OP_TIMEOUT, fut)
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Unreachable(format!(
                        "no answer within {} s",
                        OP_TIMEOUT.as_secs()
                    )))
                });
            // The work is dropped by now, and a connection it held is back in the pool: if
            // the server did not answer, neither will the other connections made before this
            // call to it (they are all to the server that accepted writes then), so none of
            // them is handed to the next login. Those made since are to whichever server
            // accepts writes now (`target_session_attrs`).
            if matches!(result, Err(StoreError::Unreachable(_))) {
                let retired = pool.retain(|_, m| !connect::made_before(m, began)).removed;
                if !retired.is_empty() {
                    log::warn!(
                        "store: {} idle database connections retired after no answer",
                        retired.len()
                    );
                }
            }
            let _ = tx.send(result);
        });
        let wait = || rx.recv().unwrap_or(Err(StoreError::Stopping));
        // On a worker of otpd's own runtime, let its other tasks move elsewhere meanwhile.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    /// The record as stored: secrets sealed; recovery codes and the last step kept apart.
    fn stored_copy(&self, user: &str, record: &UserRecord) -> Result<UserRecord, StoreError> {
        let mut row = record.clone();
        row.recovery.clear();
        row.pending_recovery.clear();
        for (field, key) in [
            (Field::Totp, row.totp.as_mut()),
            (Field::PendingTotp, row.pending_totp.as_mut()),
        ] {
            let Some(key) = key else { continue };
            let sealed = self
                .sealer
                .seal(user, field, &key.secret)
                .map_err(|source| StoreError::Sealed {
                    user: user.to_owned(),
                    field,
                    source,
                })?;
            key.secret = otp_proto::Secret::new(sealed.to_text());
            if field == Field::Totp {
                key.last_step = None;
            }
        }
        Ok(row)
    }

    fn open_secrets(&self, user: &str, record: &mut UserRecord) -> Result<(), StoreError> {
        for (field, key) in [
            (Field::Totp, record.totp.as_mut()),
            (Field::PendingTotp, record.pending_totp.as_mut()),
        ] {
            let Some(key) = key else { continue };
            let fail = |source| StoreError::Sealed {
                user: user.to_owned(),
                field,
                source,
            };
            // Never a plaintext secret in the database: an unsealed one is refused.
            let sealed = Sealed::parse(key.secret.expose())
                .unwrap_or(Err(super::seal::SealError::Rejected))
                .map_err(fail)?;
            key.secret = self.sealer.open(user, field, &sealed).map_err(fail)?;
        }
        Ok(())
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn db(e: tokio_postgres::Error) -> StoreError {
    connect::db_error(e)
}

fn corrupt(user: &str, message: String) -> StoreError {
    StoreError::Corrupt {
        path: format!("database record of {user:?}").into(),
        message,
    }
}

/// Tell every host's listener (store/postgres/listen.rs) on `channel` that `name` changed, in
/// `tx`: the news goes out only if the change commits.
async fn notify(
    tx: &tokio_postgres::Transaction<'_>,
    channel: &str,
    name: &str,
) -> Result<(), StoreError> {
    tx.execute("SELECT pg_notify($1, $2)", &[&channel, &name])
        .await
        .map_err(db)?;
    Ok(())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn key_created(key: Option<&TotpKey>) -> Option<i64> {
    key.map(|k| to_i64(k.created))
}

impl Store for PostgresStore {
    fn load(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        let name = user.to_owned();
        // One round trip: the row and its recovery codes together.
        let row = self.call(|pool| async move {
            let client = pool.get().await.map_err(connect::pool_error)?;
            let statement = client
                .prepare_cached(
                    "SELECT u.record, u.last_step, r.salt, r.hash, r.pending
                     FROM otpd_users u LEFT JOIN otpd_recovery r ON r.name = u.name
                     WHERE u.name = $1 ORDER BY r.hash",
                )
                .await
                .map_err(db)?;
            let rows = client.query(&statement, &[&name]).await.map_err(db)?;
            let Some(first) = rows.first() else {
                return Ok(None);
            };
            let record: String = first.get(0);
            let last_step: Option<i64> = first.get(1);
            let codes: Vec<(String, String, bool)> = rows
                .iter()
                .filter_map(|r| {
                    Some((
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<bool>>(4)?,
                    ))
                })
                .collect();
            Ok(Some((zeroize::Zeroizing::new(record), last_step, codes)))
        })?;
        let Some((text, last_step, codes)) = row else {
            return Ok(None);
        };
        let mut record: UserRecord =
            serde_json::from_str(&text).map_err(|e| corrupt(user, e.to_string()))?;
        self.open_secrets(user, &mut record)?;
        if let Some(key) = record.totp.as_mut() {
            key.last_step = last_step.and_then(|s| u64::try_from(s).ok());
        }
        for (salt, hash, pending) in codes {
            let code = RecoveryHash { salt, hash };
            if pending {
                record.pending_recovery.push(code);
            } else {
                record.recovery.push(code);
            }
        }
        Ok(Some(record))
    }

    fn save(&self, user: &str, record: &UserRecord) -> Result<(), StoreError> {
        let row = self.stored_copy(user, record)?;
        let json = zeroize::Zeroizing::new(
            serde_json::to_string(&row).map_err(|e| corrupt(user, e.to_string()))?,
        );
        let json = json.to_string();
        let last_step = record.totp.as_ref().and_then(|k| k.last_step).map(to_i64);
        let created = key_created(record.totp.as_ref());
        let (mut salts, mut hashes, mut pending) = (Vec::new(), Vec::new(), Vec::new());
        for (codes, is_pending) in [(&record.recovery, false), (&record.pending_recovery, true)] {
            for c in codes {
                salts.push(c.salt.clone());
                hashes.push(c.hash.clone());
                pending.push(is_pending);
            }
        }
        let name = user.to_owned();
        self.call(|pool| async move {
            let mut client = pool.get().await.map_err(connect::pool_error)?;
            let tx = client.transaction().await.map_err(db)?;
            // The stored step moves only through `otpd_answer` (so one host's stale copy
            // cannot move it back, nor two hosts both spend one HOTP counter), except with a
            // new key, which starts from the step that confirmed it.
            tx.execute(
                "INSERT INTO otpd_users (name, record, last_step, key_created)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET
                   record = EXCLUDED.record,
                   last_step = CASE
                     WHEN otpd_users.key_created IS NOT DISTINCT FROM EXCLUDED.key_created
                     THEN otpd_users.last_step
                     ELSE EXCLUDED.last_step END,
                   key_created = EXCLUDED.key_created,
                   updated = now()",
                &[&name, &json, &last_step, &created],
            )
            .await
            .map_err(db)?;
            tx.execute(
                "WITH gone AS (
                   DELETE FROM otpd_recovery WHERE name = $1 AND NOT (hash = ANY($2))
                   RETURNING name, hash)
                 INSERT INTO otpd_spent_recovery SELECT name, hash FROM gone
                 ON CONFLICT DO NOTHING",
                &[&name, &hashes],
            )
            .await
            .map_err(db)?;
            tx.execute(
                "INSERT INTO otpd_recovery (name, salt, hash, pending)
                 SELECT $1, t.salt, t.hash, t.pending
                 FROM unnest($2::text[], $3::text[], $4::bool[]) AS t(salt, hash, pending)
                 WHERE NOT EXISTS (SELECT 1 FROM otpd_spent_recovery s
                                   WHERE s.name = $1 AND s.hash = t.hash)
                 ON CONFLICT (name, hash) DO UPDATE SET pending = EXCLUDED.pending",
                &[&name, &salts, &hashes, &pending],
            )
            .await
            .map_err(db)?;
            notify(&tx, CHANNEL, &name).await?;
            tx.commit().await.map_err(db)
        })
    }

    fn remove(&self, user: &str) -> Result<(), StoreError> {
        let name = user.to_owned();
        self.call(|pool| async move {
            let mut client = pool.get().await.map_err(connect::pool_error)?;
            let tx = client.transaction().await.map_err(db)?;
            tx.execute(
                "WITH gone AS (DELETE FROM otpd_recovery WHERE name = $1 RETURNING name, hash)
                 INSERT INTO otpd_spent_recovery SELECT name, hash FROM gone
                 ON CONFLICT DO NOTHING",
                &[&name],
            )
            .await
            .map_err(db)?;
            tx.execute("DELETE FROM otpd_users WHERE name = $1", &[&name])
                .await
                .map_err(db)?;
            notify(&tx, CHANNEL, &name).await?;
            tx.commit().await.map_err(db)
        })
    }

    fn users(&self) -> Result<Vec<String>, StoreError> {
        self.call(|pool| async move {
            let client = pool.get().await.map_err(connect::pool_error)?;
            let rows = client
                .query("SELECT name FROM otpd_users ORDER BY name", &[])
                .await
                .map_err(db)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    /// Steps are spent in the database before a code is accepted (`Fleet::answer`), so no
    /// restart guard is needed: every run starts clean.
    fn begin_run(&self) -> Result<PreviousRun, StoreError> {
        Ok(PreviousRun::default())
    }

    fn end_run(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Already in the database (see `begin_run`).
    fn save_used_steps(&self, _: &SavedSteps) -> Result<(), StoreError> {
        Ok(())
    }

    /// The fleet's lockouts are read per answer, under the user's row lock, not at start.
    fn lockouts(&self) -> Result<Vec<(String, LockoutRecord)>, StoreError> {
        Ok(Vec::new())
    }

    /// Failures are counted by `Fleet::answer`; what reaches here is a clean slate (an unlock,
    /// a reset, a success after failures), which clears the fleet's too.
    fn save_lockout(&self, user: &str, record: Option<&LockoutRecord>) -> Result<(), StoreError> {
        if record.is_some() {
            return Ok(());
        }
        let name = user.to_owned();
        self.call(|pool| async move {
            let mut client = pool.get().await.map_err(connect::pool_error)?;
            let tx = client.transaction().await.map_err(db)?;
            tx.execute("DELETE FROM otpd_failures WHERE name = $1", &[&name])
                .await
                .map_err(db)?;
            tx.execute(
                "UPDATE otpd_lockouts SET locked_until = NULL WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(db)?;
            notify(&tx, UNLOCKS, &name).await?;
            tx.commit().await.map_err(db)
        })
    }

    fn fleet(&self) -> Option<&dyn Fleet> {
        Some(self)
    }
}

impl Fleet for PostgresStore {
    fn on_unlock(&self, watcher: UnlockWatcher) {
        self.unlock_watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(watcher);
    }

    fn answer(
        &self,
        user: &str,
        answer: FleetAnswer,
        rules: &FleetRules,
    ) -> Result<FleetVerdict, StoreError> {
        let (kind, value, period) = match answer {
            FleetAnswer::Step { step, period } => ("step", Some(to_i64(step)), to_i64(period)),
            FleetAnswer::Counter(counter) => ("counter", Some(to_i64(counter)), 0),
            FleetAnswer::Success => ("success", None, 0),
            FleetAnswer::Failure => ("failure", None, 0),
        };
        let name = user.to_owned();
        let rules = *rules;
        let fast = self.commit == Commit::Fast;
        let (verdict, until) = self.call(|pool| async move {
            let client = pool.get().await.map_err(connect::pool_error)?;
            let statement = client
                .prepare_cached(
                    "SELECT verdict, until FROM otpd_answer($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .await
                .map_err(db)?;
            let max = i32::try_from(rules.max_failures).unwrap_or(i32::MAX);
            let row = client
                .query_one(
                    &statement,
                    &[
                        &name,
                        &kind,
                        &value,
                        &to_i64(rules.now),
                        &to_i64(rules.window),
                        &max,
                        &to_i64(rules.lock_for),
                        &period,
                        &i32::from(rules.skew),
                        &fast,
                    ],
                )
                .await
                .map_err(db)?;
            let verdict: String = row.get(0);
            let until: Option<i64> = row.get(1);
            Ok((verdict, until))
        })?;
        Ok(match verdict.as_str() {
            "allowed" => FleetVerdict::Allowed,
            "replayed" => FleetVerdict::Replayed,
            "wrong" => FleetVerdict::Wrong,
            "locked" => FleetVerdict::Locked {
                until: until.and_then(|u| u64::try_from(u).ok()).unwrap_or(0),
            },
            "guarded" => FleetVerdict::Guarded {
                until: until.and_then(|u| u64::try_from(u).ok()).unwrap_or(0),
            },
            other => {
                return Err(StoreError::Database(format!(
                    "otpd_answer said {other:?}: is the schema this otpd's?"
                )))
            }
        })
    }

    fn spend_recovery(&self, user: &str, code: &RecoveryHash) -> Result<bool, StoreError> {
        let (name, hash) = (user.to_owned(), code.hash.clone());
        self.call(|pool| async move {
            let client = pool.get().await.map_err(connect::pool_error)?;
            let row = client
                .query_one(
                    "WITH gone AS (
                       DELETE FROM otpd_recovery WHERE name = $1 AND hash = $2 AND NOT pending
                       RETURNING name, hash),
                     spent AS (
                       INSERT INTO otpd_spent_recovery SELECT name, hash FROM gone
                       ON CONFLICT DO NOTHING)
                     SELECT count(*) FROM gone",
                    &[&name, &hash],
                )
                .await
                .map_err(db)?;
            let spent: i64 = row.get(0);
            Ok(spent == 1)
        })
    }

    fn count_send(&self, send: &FleetSend) -> Result<Option<FleetRefusal>, StoreError> {
        let send = send.clone();
        let (verdict, wait) = self.call(|pool| async move {
            let client = pool.get().await.map_err(connect::pool_error)?;
            let statement = client
                .prepare_cached("SELECT verdict, wait FROM otpd_send($1, $2, $3, $4, $5, $6, $7)")
                .await
                .map_err(db)?;
            let max = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
            let row = client
                .query_one(
                    &statement,
                    &[
                        &send.user,
                        &send.destination,
                        &send.confirmed,
                        &to_i64(send.at),
                        &to_i64(send.resend_after),
                        &max(send.max_user),
                        &max(send.max_destination),
                    ],
                )
                .await
                .map_err(db)?;
            Ok((row.get::<_, String>(0), row.get::<_, Option<i64>>(1)))
        })?;
        Ok(match verdict.as_str() {
            "ok" => None,
            "cooldown" => Some(FleetRefusal::Cooldown(
                wait.and_then(|w| u64::try_from(w).ok()).unwrap_or(1),
            )),
            _ => Some(FleetRefusal::Quota),
        })
    }

    fn uncount_send(&self, send: &FleetSend) -> Result<(), StoreError> {
        let send = send.clone();
        self.call(|pool| async move {
            let client = pool.get().await.map_err(connect::pool_error)?;
            for who in [
                format!("user:{}", send.user),
                format!("to:{}", send.destination),
            ] {
                client
                    .execute(
                        "DELETE FROM otpd_sends WHERE ctid IN (SELECT ctid FROM otpd_sends
                           WHERE who = $1 AND confirmed = $2 AND at = $3 LIMIT 1)",
                        &[&who, &send.confirmed, &to_i64(send.at)],
                    )
                    .await
                    .map_err(db)?;
            }
            Ok(())
        })
    }

    fn grace_admits(
        &self,
        user: &str,
        rhost: &str,
        service: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        let (user, rhost, service) = (user.to_owned(), rhost.to_owned(), service.to_owned());
        self.call(move |pool| async move {
            let client = pool.get().await.map_err(connect::pool_error)?;
            let row = client
                .query_opt(
                    "SELECT 1 FROM otpd_grace
                       WHERE username = $1 AND rhost = $2 AND service = $3 AND until > $4",
                    &[&user, &rhost, &service, &to_i64(now)],
                )
                .await
                .map_err(db)?;
            Ok(row.is_some())
        })
    }

    fn grace_grant(
        &self,
        user: &str,
        rhost: &str,
        service: &str,
        until: u64,
    ) -> Result<(), StoreError> {
        let (user, rhost, service) = (user.to_owned(), rhost.to_owned(), service.to_owned());
        self.call(move |pool| async move {
            let client = pool.get().await.map_err(connect::pool_error)?;
            client
                .execute(
                    "INSERT INTO otpd_grace (username, rhost, service, until)
                       VALUES ($1, $2, $3, $4)
                       ON CONFLICT (username, rhost, service) DO UPDATE SET until = $4",
                    &[&user, &rhost, &service, &to_i64(until)],
                )
                .await
                .map_err(db)?;
            Ok(())
        })
    }

    fn grace_forget(&self, user: &str) -> Result<(), StoreError> {
        let user = user.to_owned();
        self.call(move |pool| async move {
            let client = pool.get().await.map_err(connect::pool_error)?;
            client
                .execute("DELETE FROM otpd_grace WHERE username = $1", &[&user])
                .await
                .map_err(db)?;
            Ok(())
        })
    }
}
