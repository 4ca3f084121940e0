//! Guessing attacks on otpd, mounted as they were found (issue: "Close the holes found by
//! attacking otpd"): many wrong answers at the same moment, and restarts to lift a lockout.
//! Each test shows the attack fail.

use otp_e2e::daemon::{answer, describe};
use otp_e2e::totp::{code, now};
use otp_e2e::{me, skip, Daemon};
use otp_proto::client::Connection;
use otp_proto::{DenyReason, Outcome};
use std::sync::{Arc, Barrier};

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// A user with recovery codes is the expensive case: every wrong code is also checked against
/// eight argon2 hashes, which used to let every login in flight pass the lock check.
#[test]
fn two_hundred_concurrent_wrong_codes_are_checked_at_most_max_failures_times() {
    let otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    let logins: Vec<Connection> = (0..200)
        .filter_map(|_| otpd.at_prompt(&me(), "attack"))
        .collect();
    assert!(
        logins.len() >= 8,
        "only {} logins reached the prompt",
        logins.len()
    );
    let barrier = Arc::new(Barrier::new(logins.len()));
    let threads: Vec<_> = logins
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                answer(&mut conn, &format!("WRONG-{i:05}"))
            })
        })
        .collect();
    let outcomes: Vec<Option<Outcome>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let allowed = outcomes
        .iter()
        .filter(|o| matches!(o, Some(Outcome::Allow | Outcome::Ignore)))
        .count();
    let wrong = outcomes
        .iter()
        .filter(|o| **o == Some(Outcome::Deny(DenyReason::WrongCode)))
        .count();
    let locked = outcomes
        .iter()
        .filter(|o| **o == Some(Outcome::Deny(DenyReason::Locked)))
        .count();
    assert_eq!(allowed, 0);
    assert_eq!(wrong, 5, "max_failures = 5: {outcomes:?}");
    assert_eq!(locked, outcomes.len() - 5, "the rest refused unchecked");
    assert!(otpd.logged("answer (login, app): wrong code"));
    let log = otpd.log();
    assert_eq!(count(&log, "answer (login, app): wrong code"), 5);
    assert_eq!(
        count(&log, "answer (login, app): locked (not checked)"),
        outcomes.len() - 5
    );
    // The right code is refused too while locked.
    let mut late = otpd.at_prompt(&me(), "attack").expect("prompt");
    let right = answer(&mut late, &code(&secret, now()));
    assert_eq!(right, Some(Outcome::Deny(DenyReason::Locked)));
    let rss = otpd.peak_rss_kib().expect("VmHWM");
    eprintln!("otpd peak RSS after the storm: {rss} KiB");
    assert!(rss < 256 * 1024, "otpd peak RSS {rss} KiB");
}

/// The same storm through `otpctl recovery-codes CODE` (a proof checked against the key, sent
/// codes and the recovery codes), which a local user may run as often as they like.
#[test]
fn two_hundred_concurrent_wrong_proofs_from_otpctl_are_checked_five_times() {
    // A normal user may hold only 16 connections at once; root may hold them all.
    if !skip::require_root() {
        return;
    }
    let otpd = Daemon::start("");
    otpd.enroll_totp(&me());
    let otpd = Arc::new(otpd);
    let barrier = Arc::new(Barrier::new(200));
    let threads: Vec<_> = (0..200)
        .map(|i| {
            let (otpd, barrier) = (otpd.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let out = otpd.otpctl(&["--json", "recovery-codes", &format!("WRONG-{i:05}")]);
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
        })
        .collect();
    let replies: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let wrong = replies.iter().filter(|r| r.contains("wrong code")).count();
    let locked = replies
        .iter()
        .filter(|r| r.contains("too many failed attempts"))
        .count();
    assert_eq!(wrong, 5, "{replies:?}");
    assert_eq!(locked, 195);
    let status = otpd.otpctl_json(&["status"]);
    assert_eq!(status["recovery_codes_left"], 8, "none was spent");
    assert!(status["locked_for_secs"].as_u64().is_some(), "{status}");
    let rss = otpd.peak_rss_kib().expect("VmHWM");
    eprintln!("otpd peak RSS after 200 concurrent proofs: {rss} KiB");
    assert!(rss < 256 * 1024, "otpd peak RSS {rss} KiB");
}

fn lock_out(otpd: &Daemon) {
    for _ in 0..5 {
        let mut login = otpd.at_prompt(&me(), "attack").expect("prompt");
        let o = answer(&mut login, "000000x");
        assert_eq!(o, Some(Outcome::Deny(DenyReason::WrongCode)));
    }
}

fn assert_locked(otpd: &Daemon, secret: &str) {
    let status = otpd.otpctl_json(&["status"]);
    assert!(status["locked_for_secs"].as_u64().is_some(), "{status}");
    let mut login = otpd.at_prompt(&me(), "attack").expect("prompt");
    let right = answer(&mut login, &code(secret, now()));
    assert_eq!(right, Some(Outcome::Deny(DenyReason::Locked)));
}

#[test]
fn a_clean_restart_does_not_lift_a_lockout() {
    let mut otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    lock_out(&otpd);
    otpd.restart();
    assert_locked(&otpd, &secret);
}

#[test]
fn a_kill_does_not_lift_a_lockout_nor_forget_failures() {
    let mut otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    for _ in 0..3 {
        let mut login = otpd.at_prompt(&me(), "attack").expect("prompt");
        answer(&mut login, "000000x");
    }
    otpd.restart_after_crash();
    let status = otpd.otpctl_json(&["status"]);
    assert_eq!(status["recent_failures"], 3, "{status}");
    lock_out_rest(&otpd, 2);
    otpd.restart_after_crash();
    assert_locked(&otpd, &secret);
    // An admin's unlock is kept too.
    let unlock = otpd.otpctl(&["--user", &me(), "unlock"]);
    // Root (as CI runs) may unlock itself; a normal user is refused.
    assert_eq!(
        unlock.status.success(),
        skip::is_root(),
        "{}",
        describe(&unlock)
    );
    if unlock.status.success() {
        otpd.restart_after_crash();
        let status = otpd.otpctl_json(&["status"]);
        assert!(status["locked_for_secs"].is_null(), "{status}");
    } else {
        assert!(
            String::from_utf8_lossy(&unlock.stdout).contains("permission denied"),
            "{}",
            describe(&unlock)
        );
    }
}

fn lock_out_rest(otpd: &Daemon, n: usize) {
    for _ in 0..n {
        let mut login = otpd.at_prompt(&me(), "attack").expect("prompt");
        answer(&mut login, "000000x");
    }
}
