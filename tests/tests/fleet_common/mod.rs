//! What the fleet tests share (tests/tests/fleet.rs, fleet_offline.rs): a migrated database,
//! hosts on it, and logins through real libpam.
#![allow(dead_code)]

use otp_e2e::pam::{self, PAM_AUTH_ERR};
use otp_e2e::postgres::{self, Cluster};
use otp_e2e::totp::code;
use otp_e2e::{artifacts, me, Daemon, PamService};
use std::process::{Command, Output};
use std::sync::Arc;

/// A fleet database, migrated, and the key every host shares.
pub struct Fleet {
    pub cluster: Arc<Cluster>,
    pub db: String,
    /// `[store]` the hosts get (the cluster's, unless a test points them elsewhere).
    pub store_toml: String,
    pub dir: tempfile::TempDir,
    pub key: std::path::PathBuf,
}

impl Fleet {
    pub fn on(cluster: Arc<Cluster>) -> Fleet {
        let db = cluster.database();
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("fleet.key");
        otp_e2e::daemon::keygen(&key);
        let fleet = Fleet {
            store_toml: cluster.store_toml(&db),
            cluster,
            db,
            dir,
            key,
        };
        let out = fleet.otpd(&fleet.store(), &["migrate"]);
        assert!(out.status.success(), "otpd migrate: {}", text(&out));
        assert!(
            text(&out).contains("schema version 0 -> 5"),
            "{}",
            text(&out)
        );
        fleet
    }

    /// `[store]` for this fleet's database.
    pub fn store(&self) -> String {
        self.store_toml.clone()
    }

    /// One more host: otpd on the fleet's database with the fleet's key.
    pub fn host(&self) -> Daemon {
        self.host_with("")
    }

    /// A host with `extra` sections too.
    pub fn host_with(&self, extra: &str) -> Daemon {
        self.host_under(extra, Vec::new())
    }

    /// A host whose otpd runs under `wrap` (a network namespace) once it has the fleet key.
    pub fn host_under(&self, extra: &str, wrap: Vec<String>) -> Daemon {
        let mut host = Daemon::start(&format!("{}\n{extra}", self.store()));
        std::fs::copy(&self.key, &host.key_file).expect("share the fleet key");
        host.wrap = wrap;
        host.restart();
        host.assert_logged("listening for changes from other hosts");
        host
    }

    /// `otpd ARGS` on a config of its own with `store` (a broken one, for check-config).
    pub fn otpd(&self, store: &str, args: &[&str]) -> Output {
        let config = self.dir.path().join(format!("otpd-{}.toml", now_nanos()));
        std::fs::write(
            &config,
            format!(
                "socket = {:?}\nstate_dir = {:?}\nkey_file = {:?}\n{store}\n",
                self.dir.path().join("unused.sock"),
                self.dir.path().join("state"),
                self.key
            ),
        )
        .expect("config");
        Command::new(artifacts::otpd())
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .expect("run otpd")
    }
}

pub fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn ready() -> bool {
    postgres::available() && pam::available()
}

/// `me()` enrolled through `host`: the secret and the recovery codes.
pub fn enroll(host: &Daemon) -> (String, Vec<String>) {
    let e = host.otpctl_json(&["--user", &me(), "enroll", "totp"]);
    let secret = e["secret"].as_str().expect("secret").to_owned();
    let codes = e["recovery_codes"]
        .as_array()
        .expect("recovery codes")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    host.confirm(&me(), |t| code(&secret, t - 30));
    (secret, codes)
}

pub fn login(host: &Daemon, answer: &str) -> otp_e2e::PamRun {
    PamService::otp(host, "").login(&me(), &[answer])
}

#[track_caller]
pub fn assert_refused_with(host: &Daemon, run: &otp_e2e::PamRun, words: &str) {
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert!(
        run.errors().iter().any(|e| e.contains(words)),
        "refused, but not with {words:?}: {run:?}\n{}",
        host.log()
    );
}

/// Poll `done` until it holds (at most 20 s, then fail naming `what`).
#[track_caller]
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `SELECT count(*) …` on the fleet's database, as a number.
pub fn count(fleet: &Fleet, sql: &str) -> usize {
    let out = fleet.cluster.psql(&fleet.db, sql);
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{sql}: {out}"))
}
