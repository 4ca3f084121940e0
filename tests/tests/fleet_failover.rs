//! The fleet's high availability (issue 12) when the primary's machine vanishes: two hosts run
//! in a network namespace with one veth link to the primary and another to its streaming
//! standby (tests/src/netns.rs), and the primary's link is cut while the primary keeps running,
//! so packets to it vanish, nothing answers and nothing refuses; the connections otpd pooled to
//! it hang rather than fail. Then the standby is promoted. Logins must be judged again within
//! the 10 s, no code accepted before the switch may be accepted after it, and no later
//! login may meet a dead connection to the old primary.

mod fleet_common;

use fleet_common::*;
use otp_e2e::netns::{self, Netns};
use otp_e2e::pam::PAM_SUCCESS;
use otp_e2e::postgres::Cluster;
use otp_e2e::totp::{code, now};
use otp_e2e::{me, PamService};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `[store] pool` of each host: small, so that the test can fill A's (every connection A then
/// holds goes to the primary, and all of them die together at the cut).
const POOL: usize = 4;
/// The bound: logins judged again this soon after the promotion.
const RESUMED_WITHIN: Duration = Duration::from_secs(10);
/// A login after the switch that takes longer has met a dead connection (a call waits 4 s for
/// one) or a new one (which first spends 2 s on the dead primary, the url's first host).
const QUICK: Duration = Duration::from_secs(2);

/// Poll `done` every 20 ms until it holds, for at most 20 s.
#[track_caller]
fn unreachable(run: &otp_e2e::PamRun) -> bool {
    run.errors().iter().any(|e| e.contains("cannot be reached"))
}

/// Log in with `answer` until a login is judged (or three times the bound passed): that
/// login, and how long after `promoted` it ended.
fn first_judged(
    host: &str,
    service: &PamService,
    answer: &str,
    promoted: Instant,
) -> (otp_e2e::PamRun, Duration) {
    let mut denied = 0;
    loop {
        let run = service.login(&me(), &[answer]);
        if !unreachable(&run) || promoted.elapsed() > 3 * RESUMED_WITHIN {
            let judged = promoted.elapsed();
            eprintln!(
                "measured: host {host}: a login judged again {} ms after the promotion, \
                 after {denied} denied as unreachable",
                judged.as_millis()
            );
            return (run, judged);
        }
        denied += 1;
    }
}

#[test]
fn the_primarys_link_dies_the_standby_is_promoted_and_logins_resume_without_a_reused_code() {
    if !ready() || !netns::available() {
        return;
    }
    let ns = Netns::create(); // its first link: to the primary
    let to_standby = ns.add_link();
    let primary = Arc::new(Cluster::start_listening(&[&ns.host_ip]));
    let mut fleet = Fleet::on(primary.clone());
    let standby = primary.standby_listening(&[&to_standby.host_ip]);
    fleet.store_toml = format!(
        "{}pool = {POOL}\n",
        primary.store_toml_with(&format!(
            "postgresql://otpd@{}:{},{}:{}/{}?target_session_attrs=read-write&sslmode=verify-full",
            ns.host_ip, primary.port, to_standby.host_ip, standby.port, fleet.db
        ))
    );
    let a = fleet.host_under("", ns.wrap());
    let b = fleet.host_under("", ns.wrap());
    let (secret, recovery) = enroll(&a);
    let service = PamService::otp(&a, "");
    let b_service = PamService::otp(&b, "");
    // B reads the record (over a connection to the primary it keeps pooled).
    let status = b.otpctl_json(&["--user", &me(), "status"]);
    assert!(!status.is_null(), "{}", b.log());

    // Fill the pool: POOL wrong answers at once, each waiting on a table lock held here (so
    // each holds a connection of its own) until all POOL are waiting, then let them through.
    let held = primary.hold(&fleet.db, "LOCK TABLE otpd_failures IN EXCLUSIVE MODE");
    let count = |sql: &str| count(&fleet, sql);
    wait_for("the table lock held", || {
        count(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
             WHERE c.relname = 'otpd_failures' AND l.mode = 'ExclusiveLock' AND l.granted",
        ) == 1
    });
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..POOL)
            .map(|_| s.spawn(|| service.login(&me(), &["000000x"])))
            .collect();
        wait_for("every pooled connection waiting on the lock", || {
            count(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                 AND application_name = 'otpd' AND wait_event_type = 'Lock'",
            ) == POOL
        });
        held.release();
        for run in runs {
            assert_refused_with(&a, &run.join().expect("login"), "Invalid code");
        }
    });
    // A right code: accepted (and the failures above cleared). Its step is now spent.
    let used = code(&secret, now());
    let before = service.login(&me(), &[&used]);
    assert_eq!(before.code, PAM_SUCCESS, "{before:?}\n{}", a.log());

    ns.cut();
    let cut = Instant::now();
    standby.promote();
    let promoted = Instant::now();
    eprintln!(
        "measured: the promotion took {} ms after the cut",
        (promoted - cut).as_millis()
    );
    // Both hosts at once, until each has one login judged (not "cannot be reached"): A with
    // the code it accepted before the switch, which its own replay memory refuses too; B with
    // a wrong code, so that B's first try of the used code below is judged by the database
    // alone (a try denied as unreachable would also be spent in B's replay memory).
    let (on_a, on_b) = std::thread::scope(|s| {
        let on_b = s.spawn(|| first_judged("B", &b_service, "000000x", promoted));
        let on_a = first_judged("A", &service, &used, promoted);
        (on_a, on_b.join().expect("logins on B"))
    });
    for ((run, judged), host) in [(&on_a, &a), (&on_b, &b)] {
        assert!(
            !unreachable(run) && *judged <= RESUMED_WITHIN,
            "no login judged within {RESUMED_WITHIN:?} of the promotion (after {judged:?}): \
             {run:?}\n{}",
            host.log()
        );
    }
    assert_refused_with(&a, &on_a.0, "already used");
    assert_refused_with(&b, &on_b.0, "Invalid code");
    // The new primary knows the step spent on the old one before the switch.
    assert_refused_with(&b, &b_service.login(&me(), &[&used]), "already used");
    let denials = a.log().matches("denied: database unreachable").count();

    // The next step's code, then five logins in a row (recovery codes: each a write, too).
    let fresh = service.login(&me(), &[&code(&secret, now() + 30)]);
    assert_eq!(fresh.code, PAM_SUCCESS, "{fresh:?}\n{}", a.log());
    for (i, answer) in recovery.iter().take(5).enumerate() {
        let started = Instant::now();
        let run = service.login(&me(), &[answer]);
        let took = started.elapsed();
        eprintln!(
            "measured: login {} after the switch: {} ms",
            i + 1,
            took.as_millis()
        );
        assert_eq!(
            run.code,
            PAM_SUCCESS,
            "login {} after the switch: {run:?}\n{}",
            i + 1,
            a.log()
        );
        assert!(
            took < QUICK,
            "login {} after the switch took {took:?}: a dead or new connection?\n{}",
            i + 1,
            a.log()
        );
    }
    assert_eq!(
        a.log().matches("denied: database unreachable").count(),
        denials,
        "a login after the switch was denied:\n{}",
        a.log()
    );

    // The hosts hear each other again: A's listener left its idle connection to the old
    // primary (nothing tells it that connection is dead but TCP keepalives) and listens on
    // the new one, so an unlock on B reaches A.
    a.assert_logged("fleet listener: the database is back");
    let heard = "unlocked; local failures cleared";
    let before = a.log().matches(heard).count();
    let out = b.otpctl(&["--user", &me(), "unlock"]);
    assert!(out.status.success(), "unlock on B: {}", text(&out));
    wait_for("A to hear of B's unlock", || {
        a.log().matches(heard).count() > before
    });
}
