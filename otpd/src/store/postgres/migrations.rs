//! The schema, as numbered migrations embedded in the binary. `otpd migrate` applies the ones
//! the database lacks, each in its own transaction, under an advisory lock so that hosts
//! migrating at once take turns; the daemon refuses any version but `CURRENT`, naming both.

use crate::store::StoreError;

/// The schema version this otpd is written for.
pub const CURRENT: i32 = 5;

/// Every migration, in order: (version it brings the schema to, SQL).
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/001_fleet.sql")),
    (2, include_str!("migrations/002_sends.sql")),
    (3, include_str!("migrations/003_audit.sql")),
    (4, include_str!("migrations/004_grace.sql")),
    (5, include_str!("migrations/005_fast_commit.sql")),
];

/// pg_advisory_lock key: "otpd" in ASCII.
const LOCK: i64 = 0x6f74_7064;

/// The schema version in the database; 0 when otpd's schema is not there at all.
pub async fn version(client: &tokio_postgres::Client) -> Result<i32, StoreError> {
    let row = client
        .query_one("SELECT to_regclass('otpd_schema') IS NOT NULL", &[])
        .await
        .map_err(super::connect::db_error)?;
    if !row.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = client
        .query_one("SELECT coalesce(max(version), 0) FROM otpd_schema", &[])
        .await
        .map_err(super::connect::db_error)?;
    Ok(row.get(0))
}

/// Refuse a schema this otpd was not written for.
pub fn check(found: i32) -> Result<(), StoreError> {
    let advice = match found.cmp(&CURRENT) {
        std::cmp::Ordering::Equal => return Ok(()),
        std::cmp::Ordering::Less if found == 0 => "no otpd schema yet: run `otpd migrate`",
        std::cmp::Ordering::Less => "older: run `otpd migrate` to upgrade it",
        std::cmp::Ordering::Greater => "newer: a newer otpd migrated it; upgrade this host's otpd",
    };
    Err(StoreError::Schema {
        found,
        known: CURRENT,
        advice,
    })
}

/// Apply what is missing; (version before, version after).
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<(i32, i32), StoreError> {
    let db = super::connect::db_error;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK])
        .await
        .map_err(db)?;
    let result = apply(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK])
        .await
        .map_err(db);
    let done = result?;
    unlocked?;
    Ok(done)
}

async fn apply(client: &mut tokio_postgres::Client) -> Result<(i32, i32), StoreError> {
    let db = super::connect::db_error;
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS otpd_schema (version integer NOT NULL)")
        .await
        .map_err(db)?;
    let before = version(client).await?;
    if before > CURRENT {
        check(before)?;
    }
    for (to, sql) in MIGRATIONS.iter().filter(|(to, _)| *to > before) {
        let tx = client.transaction().await.map_err(db)?;
        tx.batch_execute(sql).await.map_err(db)?;
        tx.execute("DELETE FROM otpd_schema", &[])
            .await
            .map_err(db)?;
        tx.execute("INSERT INTO otpd_schema (version) VALUES ($1)", &[to])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
    }
    Ok((before, CURRENT.max(before)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrations_end_at_the_current_version() {
        assert_eq!(MIGRATIONS.last().map(|m| m.0), Some(CURRENT));
        assert!(MIGRATIONS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn another_schema_version_is_refused_naming_both() {
        assert!(check(CURRENT).is_ok());
        for (found, word) in [(0, "migrate"), (CURRENT + 1, "newer")] {
            let e = check(found).unwrap_err().to_string();
            assert!(e.contains(&format!("version {found}")), "{e}");
            assert!(e.contains(&format!("knows version {CURRENT}")), "{e}");
            assert!(e.contains(word), "{e}");
        }
    }
}
