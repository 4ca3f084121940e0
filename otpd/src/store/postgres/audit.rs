//! The fleet's audit trail: every host's events in one table (schema 3), so `otpctl attempts`
//! on any host lists the whole fleet's attempts. One INSERT per event; a query filters on the
//! indexed columns and reads the events back from their JSON.

use super::{connect, PostgresStore};
use crate::audit::{AuditError, Filter, Sink};
use crate::config::Config;
use crate::store::StoreError;
use otp_proto::{AuditEvent, AuditResult};

pub struct AuditTable {
    store: PostgresStore,
}

impl AuditTable {
    /// Its own pool on the configured database (the schema checked as the store checks it),
    /// whose commits do not wait for the WAL flush (`Connect::without_commit_wait`).
    pub fn open(cfg: &Config) -> Result<AuditTable, StoreError> {
        Ok(AuditTable {
            store: PostgresStore::open_or_offline_with(cfg, connect::Connect::without_commit_wait)?,
        })
    }
}

/// The result column's spelling: the one the JSON uses.
fn result_text(result: AuditResult) -> Result<String, AuditError> {
    match serde_json::to_value(result)? {
        serde_json::Value::String(s) => Ok(s),
        other => Ok(other.to_string()),
    }
}

fn database(e: StoreError) -> AuditError {
    AuditError::Database(e.to_string())
}

impl Sink for AuditTable {
    fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let json = serde_json::to_string(event)?;
        let result = result_text(event.result)?;
        let (id, host, user) = (event.id.clone(), event.host.clone(), event.user.clone());
        let time = i64::try_from(event.time).unwrap_or(i64::MAX);
        self.store
            .call(move |pool| async move {
                let client = pool.get().await.map_err(connect::pool_error)?;
                // Prepared once per connection: a statement given as text is parsed in a
                // round trip of its own every time.
                let insert = client
                    .prepare_cached(
                        "INSERT INTO otpd_audit (id, time, host, username, result, event) \
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                    )
                    .await
                    .map_err(connect::db_error)?;
                client
                    .execute(&insert, &[&id, &time, &host, &user, &result, &json])
                    .await
                    .map_err(connect::db_error)?;
                Ok(())
            })
            .map_err(database)
    }

    fn query(&self, filter: &Filter, limit: usize) -> Result<Vec<AuditEvent>, AuditError> {
        let user = filter.user.clone();
        let since = filter.since.map(|s| i64::try_from(s).unwrap_or(i64::MAX));
        let result = filter.result.map(result_text).transpose()?;
        let id = filter.id.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .store
            .call(move |pool| async move {
                let client = pool.get().await.map_err(connect::pool_error)?;
                let rows = client
                    .query(
                        "SELECT event FROM otpd_audit \
                         WHERE ($1::text IS NULL OR username = $1) \
                           AND ($2::bigint IS NULL OR time >= $2) \
                           AND ($3::text IS NULL OR result = $3) \
                           AND ($4::text IS NULL OR id = $4) \
                         ORDER BY time DESC, id DESC LIMIT $5",
                        &[&user, &since, &result, &id, &limit],
                    )
                    .await
                    .map_err(connect::db_error)?;
                Ok(rows
                    .iter()
                    .map(|row| row.get::<_, String>(0))
                    .collect::<Vec<_>>())
            })
            .map_err(database)?;
        // A row this otpd cannot read (written by a newer one) is skipped, not fatal.
        Ok(rows
            .iter()
            .filter_map(|text| serde_json::from_str(text).ok())
            .collect())
    }
}
