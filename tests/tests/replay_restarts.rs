//! A code accepted once is never accepted again, across any sequence of crashes and clean
//! restarts (issue: "A code used before a crash is accepted again after the next clean
//! restart"). Real libpam through pam_wrapper, a real otpd killed and restarted, oathtool's codes.
//!
//! Each story logs in with the code of the current step and then retries that same code after
//! the restarts; the code stays inside the skew for the whole test (a few seconds of a 30 s step
//! plus one step of skew), so a refusal can only be the replay protection's. Each refusal is
//! checked to be the restart guard's or the replay check's, never "Invalid code".

use otp_e2e::pam::{self, PAM_AUTH_ERR, PAM_SUCCESS};
use otp_e2e::totp::{code, now};
use otp_e2e::{me, Daemon, PamService};

/// otpd with alice (the test's own user) enrolled, her PAM service, and a code accepted once.
fn logged_in_once() -> Option<(Daemon, PamService, String)> {
    if !pam::available() {
        return None;
    }
    let otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    let service = PamService::otp(&otpd, "");
    let used = code(&secret, now());
    let first = service.login(&me(), &[&used]);
    assert_eq!(first.code, PAM_SUCCESS, "{first:?}");
    Some((otpd, service, used))
}

/// The used code is refused, as replayed or as guarded, and the refusal is not "Invalid code".
fn assert_refused(otpd: &Daemon, service: &PamService, used: &str) {
    let run = service.login(&me(), &[used]);
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}\n{}", otpd.log());
    assert!(
        run.errors()
            .iter()
            .any(|e| e.contains("already used") || e.contains("will work again in")),
        "refused for the wrong reason: {run:?}"
    );
}

/// The exact sequence of the report: kill -9 inside the 5 s batch, then `systemctl restart`.
#[test]
fn a_code_used_before_a_crash_stays_used_after_the_next_clean_restart() {
    let Some((mut otpd, service, used)) = logged_in_once() else {
        return;
    };
    otpd.restart_after_crash();
    otpd.assert_logged("last stop was not clean");
    assert_refused(&otpd, &service, &used);
    otpd.restart();
    assert!(otpd.logged("stopped cleanly"));
    assert_refused(&otpd, &service, &used);
    // And once more: the guard outlives any number of clean restarts while it matters.
    otpd.restart();
    assert_refused(&otpd, &service, &used);
}

#[test]
fn killed_twice_then_stopped_cleanly() {
    let Some((mut otpd, service, used)) = logged_in_once() else {
        return;
    };
    otpd.restart_after_crash();
    otpd.restart_after_crash();
    assert_refused(&otpd, &service, &used);
    otpd.restart();
    assert_refused(&otpd, &service, &used);
}

#[test]
fn a_clean_stop_then_a_crash_then_a_clean_stop() {
    let Some((mut otpd, service, used)) = logged_in_once() else {
        return;
    };
    otpd.restart();
    assert_refused(&otpd, &service, &used);
    otpd.restart_after_crash();
    assert_refused(&otpd, &service, &used);
    otpd.restart();
    assert_refused(&otpd, &service, &used);
}

/// The guard's horizon is in the store: the file otpd saves at a clean stop names it.
#[test]
fn the_guard_is_in_the_saved_state_after_a_clean_stop() {
    let Some((mut otpd, _service, _used)) = logged_in_once() else {
        return;
    };
    otpd.restart_after_crash();
    otpd.stop();
    let saved = std::fs::read_to_string(otpd.state_dir().join("used-steps.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&saved).unwrap();
    assert!(json["guard_from"].as_u64().is_some(), "{saved}");
}
