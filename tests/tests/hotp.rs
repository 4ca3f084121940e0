//! Hardware HOTP tokens (RFC 4226) through real libpam (pam_wrapper), pam_otp and a real otpd,
//! with oathtool --hotp as the token: enrollment with the vendor's secret or a new one, the
//! look-ahead window, resynchronisation on two consecutive codes, and the attacks on them.

use otp_e2e::daemon::describe;
use otp_e2e::pam::{self, PAM_AUTH_ERR, PAM_SUCCESS};
use otp_e2e::{me, Daemon, PamService};
use std::process::Command;

/// RFC 4226 Appendix D's secret, as a vendor ships it: hex.
const TOKEN_HEX: &str = "3132333435363738393031323334353637383930";

/// The token's code for `counter`, from oathtool (an implementation independent of ours);
/// `secret` is hex, or base32 with `base32`.
fn oath(secret: &str, base32: bool, counter: u64, digits: u8) -> String {
    let mut cmd = Command::new("oathtool");
    cmd.args([
        "--hotp",
        "-d",
        &digits.to_string(),
        "-c",
        &counter.to_string(),
    ]);
    if base32 {
        cmd.arg("-b");
    }
    let out = cmd
        .arg(secret)
        .output()
        .expect("oathtool (apt-get install oathtool)");
    assert!(out.status.success(), "oathtool: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn token(counter: u64) -> String {
    oath(TOKEN_HEX, false, counter, 6)
}

/// `otpctl --user ME enroll hotp --secret TOKEN_HEX --counter N`, confirmed with the token's
/// code for N (so N + 1 is its next code).
fn enroll_token(otpd: &Daemon, counter: u64) -> serde_json::Value {
    let n = counter.to_string();
    let args = [
        "--user",
        &me(),
        "enroll",
        "hotp",
        "--secret",
        TOKEN_HEX,
        "--counter",
        &n,
    ];
    let e = otpd.otpctl_json(&args);
    let verify = otpd.otpctl(&["--user", &me(), "verify", &token(counter)]);
    assert!(verify.status.success(), "{}", describe(&verify));
    e
}

#[test]
fn a_token_enrolled_with_its_hex_secret_logs_in_once_per_code() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    let e = enroll_token(&otpd, 5);
    assert_eq!(e["type"], "hotp", "{e}");
    assert_eq!(e["counter"], 5, "{e}");
    assert_eq!(e["digits"], 6, "{e}");
    let uri = e["uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://hotp/") && uri.ends_with("&counter=5"),
        "{uri}"
    );
    otpd.assert_logged("HOTP key (the token's secret, next counter 5) set up, pending");

    let service = PamService::otp(&otpd, "");
    let run = service.login(&me(), &[&token(6)]);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
    let replay = service.login(&me(), &[&token(6)]);
    assert_eq!(replay.code, PAM_AUTH_ERR, "{replay:?}");
    // A skipped press is inside the window; the code skipped over is spent with it.
    assert_eq!(service.login(&me(), &[&token(8)]).code, PAM_SUCCESS);
    assert_eq!(service.login(&me(), &[&token(7)]).code, PAM_AUTH_ERR);
    let status = otpd.otpctl_json(&["status"]);
    assert_eq!(status["totp"], "active", "{status}");
    assert_eq!(
        status["recent_failures"], 1,
        "the success at 8 cleared the replay: {status}"
    );
}

#[test]
fn enroll_hotp_without_a_secret_shows_an_otpauth_hotp_uri_for_an_app() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    let e = otpd.otpctl_json(&["--user", &me(), "enroll", "hotp", "--digits", "8"]);
    let secret = e["secret"].as_str().unwrap().to_owned();
    let uri = e["uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://hotp/"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}&")), "{uri}");
    assert!(uri.contains("&digits=8&counter=0"), "{uri}");
    assert_eq!(e["recovery_codes"].as_array().unwrap().len(), 8, "{e}");
    // Pending until the app's first code: a login is refused meanwhile.
    let service = PamService::otp(&otpd, "");
    let code = |n| oath(&secret, true, n, 8);
    assert_eq!(service.login(&me(), &[&code(0)]).code, PAM_AUTH_ERR);
    let verify = otpd.otpctl(&["--user", &me(), "verify", &code(0)]);
    assert!(verify.status.success(), "{}", describe(&verify));
    let run = service.login(&me(), &[&code(1)]);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
}

#[test]
fn a_token_pressed_past_the_window_resynchronises_on_two_consecutive_codes() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("[hotp]\nwindow = 3\n");
    enroll_token(&otpd, 0);
    let service = PamService::otp(&otpd, "");
    // Counters 1..=4 are the window; the token was pressed away from the server up to 40.
    let run = service.login(&me(), &[&token(40), &token(41)]);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
    assert_eq!(run.prompts().len(), 2, "{run:?}");
    assert!(run.prompts()[1].contains("next code"), "{run:?}");
    otpd.assert_logged("allowed (hotp, resynchronised)");
    // In step again: the window starts after 41, and the pair is spent.
    assert_eq!(service.login(&me(), &[&token(43)]).code, PAM_SUCCESS);
    assert_eq!(
        service.login(&me(), &[&token(40), &token(41)]).code,
        PAM_AUTH_ERR
    );
    // Two codes that are not consecutive resynchronise nothing.
    let apart = service.login(&me(), &[&token(80), &token(82)]);
    assert_eq!(apart.code, PAM_AUTH_ERR, "{apart:?}");
    assert!(
        apart.errors().iter().any(|e| e.contains("Invalid code")),
        "{apart:?}"
    );
    assert_eq!(
        service.login(&me(), &[&token(44)]).code,
        PAM_SUCCESS,
        "not moved"
    );
}

/// An attacker with the password tries resyncs instead of plain guesses: each first code is a
/// counted failure until a right second one clears it, so the lockout comes as soon as before.
#[test]
fn a_resync_is_no_way_round_the_lockout() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("[lockout]\nmax_failures = 4\n[hotp]\nwindow = 3\n");
    enroll_token(&otpd, 0);
    let service = PamService::otp(&otpd, "");
    // Right first codes (as if the attacker had seen the token run ahead), wrong second ones.
    for far in [100, 200] {
        let run = service.login(&me(), &[&token(far), &token(far + 2)]);
        assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    }
    otpd.assert_logged("answer (login, app): HOTP code past the window (counter 100)");
    otpd.assert_logged("answer (login, next HOTP code): wrong code");
    let status = otpd.otpctl_json(&["status"]);
    assert!(status["locked_for_secs"].as_u64().is_some(), "{status}");
    // Locked: the right pair, and the right in-window code, are refused unchecked.
    let locked = service.login(&me(), &[&token(300), &token(301)]);
    assert_eq!(locked.code, PAM_AUTH_ERR, "{locked:?}");
    assert_eq!(
        locked.prompts().len(),
        1,
        "no next code is asked of a locked user"
    );
    assert!(
        locked
            .errors()
            .iter()
            .any(|e| e.contains("Too many failed")),
        "{locked:?}"
    );
    assert_eq!(service.login(&me(), &[&token(1)]).code, PAM_AUTH_ERR);
}

#[test]
fn two_logins_racing_with_one_hotp_code_exactly_one_wins() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    enroll_token(&otpd, 0);
    let service = PamService::otp(&otpd, "");
    let code = token(1);
    let codes: Vec<i32> = std::thread::scope(|s| {
        let logins: Vec<_> = (0..6)
            .map(|_| s.spawn(|| service.login(&me(), &[&code]).code))
            .collect();
        logins.into_iter().map(|l| l.join().unwrap()).collect()
    });
    let won = codes.iter().filter(|&&c| c == PAM_SUCCESS).count();
    assert_eq!(won, 1, "{codes:?}\n{}", otpd.log());
}

#[test]
fn a_bad_secret_digits_or_counter_is_refused_with_the_reason() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    let user = me();
    let enroll = |extra: &[&str]| {
        let mut args = vec!["--user", &user, "enroll", "hotp"];
        args.extend_from_slice(extra);
        otpd.otpctl(&args)
    };
    let short = enroll(&["--secret", "31323334353637383930"]);
    assert_eq!(short.status.code(), Some(1), "{}", describe(&short));
    assert!(
        String::from_utf8_lossy(&short.stderr).contains("128 to 512 bits, not 80"),
        "{}",
        describe(&short)
    );
    let garbage = enroll(&["--secret", "not a secret!"]);
    assert_eq!(garbage.status.code(), Some(1), "{}", describe(&garbage));
    let seven = enroll(&["--secret", TOKEN_HEX, "--digits", "7"]);
    assert_eq!(seven.status.code(), Some(1), "{}", describe(&seven));
    let far = enroll(&["--secret", TOKEN_HEX, "--counter", "281474976710657"]);
    assert_eq!(far.status.code(), Some(1), "{}", describe(&far));
    let status = otpd.otpctl_json(&["status"]);
    assert_eq!(status["totp"], "none", "nothing was stored: {status}");
}
