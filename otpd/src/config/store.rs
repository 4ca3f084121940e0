//! `[store]`: where enrollments live. `files` (the default) is the state directory of this one
//! machine; `postgres` is a database every host of a fleet shares (store::postgres), so one
//! enrollment works everywhere and replay and lockout are refused fleet-wide.
//!
//! The password is never part of `url` (a url ends up in process lists, logs and bug reports):
//! it is read from `password_file`, root 0600. Checked while parsing, so `otpd check-config`
//! names the key.

use serde::Deserialize;
use std::path::PathBuf;

/// Which store the daemon uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// `state_dir` on this machine.
    #[default]
    Files,
    /// A PostgreSQL database shared by the fleet.
    Postgres,
}

/// What a login does while the database cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Offline {
    /// Deny, with a message saying the database is unreachable.
    #[default]
    Deny,
    /// TOTP from the local sealed copy of users seen in the last `offline_days`.
    Cached,
}

/// When a right TOTP code's spent step is known to be on disk (docs/design.md, "The fleet
/// store").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Commit {
    /// Every verdict waits for the database's WAL flush (and a synchronous standby's).
    #[default]
    Durable,
    /// A right TOTP code commits without waiting for the flush (a round trip's fsync less);
    /// what a database crash or failover may lose is covered by the fleet's restart guard.
    /// Failures, lockouts and HOTP counters still wait.
    Fast,
}

/// Most connections a host keeps to the database.
pub const MAX_POOL: u16 = 256;
/// Longest `offline_days`.
pub const MAX_OFFLINE_DAYS: u16 = 365;

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawStore")]
pub struct StoreConfig {
    pub backend: Backend,
    /// libpq-style: `postgresql://USER@HOST1,HOST2/DB?target_session_attrs=read-write&sslmode=verify-full`.
    /// Required with `backend = "postgres"`; never holds a password.
    pub url: Option<String>,
    /// The database password (one line), root 0600.
    pub password_file: Option<PathBuf>,
    /// The CA that signed the database's certificate (PEM). With it the connection is TLS
    /// and the server's name is verified against the host in `url`.
    pub ca_file: Option<PathBuf>,
    /// Connections kept per host (1 to 256).
    pub pool: u16,
    pub offline: Offline,
    /// `offline = "cached"`: users seen this many days back may log in while the database is
    /// down (1 to 365).
    pub offline_days: u16,
    pub commit: Commit,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: Backend::Files,
            url: None,
            password_file: None,
            ca_file: None,
            pool: 8,
            offline: Offline::Deny,
            offline_days: 7,
            commit: Commit::Durable,
        }
    }
}

impl StoreConfig {
    pub fn is_postgres(&self) -> bool {
        self.backend == Backend::Postgres
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(default)]
    backend: Backend,
    url: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    pool: Option<u16>,
    #[serde(default)]
    offline: Offline,
    offline_days: Option<u16>,
    #[serde(default)]
    commit: Commit,
}

impl TryFrom<RawStore> for StoreConfig {
    type Error = String;

    fn try_from(raw: RawStore) -> Result<StoreConfig, String> {
        let defaults = StoreConfig::default();
        let pool = raw.pool.unwrap_or(defaults.pool);
        if !(1..=MAX_POOL).contains(&pool) {
            return Err(format!("pool must be 1 to {MAX_POOL}, not {pool}"));
        }
        let offline_days = raw.offline_days.unwrap_or(defaults.offline_days);
        if !(1..=MAX_OFFLINE_DAYS).contains(&offline_days) {
            return Err(format!(
                "offline_days must be 1 to {MAX_OFFLINE_DAYS}, not {offline_days}"
            ));
        }
        if let Some(url) = &raw.url {
            check_url(url)?;
        }
        for (key, path) in [
            ("password_file", &raw.password_file),
            ("ca_file", &raw.ca_file),
        ] {
            if path.as_ref().is_some_and(|p| !p.is_absolute()) {
                return Err(format!("{key} must be an absolute path"));
            }
        }
        if raw.backend == Backend::Postgres && raw.url.is_none() {
            return Err("backend = \"postgres\" needs url".into());
        }
        Ok(StoreConfig {
            backend: raw.backend,
            url: raw.url,
            password_file: raw.password_file,
            ca_file: raw.ca_file,
            pool,
            offline: raw.offline,
            offline_days,
            commit: raw.commit,
        })
    }
}

/// A `postgresql://` url without a password in it (the password belongs in `password_file`).
fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
        .ok_or("url must start with postgresql://")?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if userinfo.contains(':') {
            return Err(
                "url must not contain a password: put it in password_file (root 0600)".into(),
            );
        }
    }
    let query = rest.split_once('?').map(|(_, q)| q).unwrap_or("");
    if query
        .split('&')
        .any(|pair| pair.split('=').next() == Some("password"))
    {
        return Err("url must not contain a password: put it in password_file (root 0600)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StoreConfig, String> {
        toml::from_str::<StoreConfig>(text).map_err(|e| e.message().to_owned())
    }

    #[test]
    fn a_password_in_the_url_is_refused() {
        for url in [
            "postgresql://otpd:hunter2@db1/otp",
            "postgresql://otpd@db1/otp?password=hunter2",
        ] {
            let e = parse(&format!("backend = \"postgres\"\nurl = {url:?}\n")).unwrap_err();
            assert!(e.contains("password_file"), "{url}: {e}");
        }
    }

    #[test]
    fn postgres_needs_a_url_and_bounds_hold() {
        assert!(parse("backend = \"postgres\"\n")
            .unwrap_err()
            .contains("url"));
        assert!(parse("pool = 0\n").unwrap_err().contains("pool"));
        assert!(parse("offline_days = 400\n").is_err());
        let c = parse(
            "backend = \"postgres\"\nurl = \"postgresql://otpd@db1,db2/otp?target_session_attrs=read-write\"\n",
        )
        .unwrap();
        assert_eq!((c.pool, c.offline_days, c.offline), (8, 7, Offline::Deny));
        assert_eq!(
            parse("offline = \"cached\"\n").unwrap().offline,
            Offline::Cached
        );
        assert_eq!(parse("").unwrap(), StoreConfig::default());
    }

    #[test]
    fn commit_is_durable_unless_asked_fast_and_names_are_checked() {
        assert_eq!(parse("").unwrap().commit, Commit::Durable);
        assert_eq!(parse("commit = \"fast\"\n").unwrap().commit, Commit::Fast);
        let e = parse("commit = \"async\"\n").unwrap_err();
        assert!(e.contains("durable") && e.contains("fast"), "{e}");
    }
}
