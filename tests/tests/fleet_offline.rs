//! `[store] offline = "cached"` (issue 12): with the fleet's database stopped, a host takes a
//! fresh TOTP code of a user it has seen from its local sealed copy, never the same step twice
//! (not even across its own restart), refuses users it never saw and recovery codes with the
//! offline message, and writes the spent step back when the database returns, so another host
//! refuses it.

mod fleet_common;

use fleet_common::*;
use otp_e2e::pam::PAM_SUCCESS;
use otp_e2e::postgres::Cluster;
use otp_e2e::totp::{code, now};
use std::sync::Arc;

#[test]
fn cached_logins_work_offline_once_per_step_and_are_written_back() {
    if !ready() {
        return;
    }
    let cluster = Arc::new(Cluster::start());
    let mut fleet = Fleet::on(cluster.clone());
    fleet.store_toml.push_str("offline = \"cached\"\n");
    let (mut a, b) = (fleet.host(), fleet.host());
    let (secret, codes) = enroll(&a);
    // A sees the user once, online.
    let online = login(&a, &code(&secret, now()));
    assert_eq!(online.code, PAM_SUCCESS, "{online:?}\n{}", a.log());

    cluster.stop();
    a.assert_logged("lost the database");
    // The next step (inside the skew window) is one the database never saw.
    let at = now() + 30;
    let fresh = code(&secret, at);
    let cached = login(&a, &fresh);
    assert_eq!(cached.code, PAM_SUCCESS, "{cached:?}\n{}", a.log());
    a.assert_logged("offline cached");
    let again = login(&a, &fresh);
    assert_ne!(again.code, PAM_SUCCESS, "a step spent offline worked twice");
    // B never saw the user: nothing to decide from.
    let unseen = login(&b, &fresh);
    assert_refused_with(&b, &unseen, "database cannot be reached");
    // Recovery codes need the database.
    let recovery = login(&a, &codes[0]);
    assert_refused_with(&a, &recovery, "database cannot be reached");

    // A restart while the database is down keeps the spent step.
    a.restart();
    let after_restart = login(&a, &fresh);
    assert_ne!(
        after_restart.code, PAM_SUCCESS,
        "a step spent offline worked again after a restart: {after_restart:?}"
    );

    cluster.pg_ctl_start();
    a.assert_logged("wrote back");
    let stored = cluster.psql(&fleet.db, "SELECT last_step FROM otpd_users");
    assert_eq!(stored.trim().parse::<u64>().ok(), Some(at / 30), "{stored}");
    let on_b = login(&b, &fresh);
    assert_ne!(
        on_b.code,
        PAM_SUCCESS,
        "B took the step A spent offline: {on_b:?}\n{}",
        b.log()
    );
}
