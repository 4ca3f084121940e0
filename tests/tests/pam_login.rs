//! Logging in through real libpam (pam_wrapper) with pam_otp and a real otpd: TOTP stories.

use otp_e2e::pam::{self, PAM_AUTHINFO_UNAVAIL, PAM_AUTH_ERR, PAM_SERVICE_ERR, PAM_SUCCESS};
use otp_e2e::totp::{code, now};
use otp_e2e::{artifacts, me, Daemon, PamService};
use std::os::unix::net::UnixListener;

/// Codes for the current and the next time step, taken from one reading of the clock so a step
/// boundary between them cannot make them equal.
fn two_codes(secret: &str) -> (String, String) {
    let t = now();
    (code(secret, t), code(secret, t + 30))
}

#[test]
fn a_valid_code_logs_in_and_the_prompt_asks_for_a_code() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    let run = PamService::otp(&otpd, "").login(&me(), &[&code(&secret, now())]);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
    assert_eq!(run.prompts().len(), 1, "{run:?}");
    assert!(run.prompts()[0].to_lowercase().contains("code"), "{run:?}");
    assert!(
        run.lines[0].starts_with("PROMPT_ECHO_OFF"),
        "codes are not echoed: {run:?}"
    );
}

#[test]
fn a_wrong_code_is_refused() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    let right = code(&secret, now());
    let wrong = if right == "123456" {
        "654321"
    } else {
        "123456"
    };
    let run = PamService::otp(&otpd, "").login(&me(), &[wrong]);
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert!(
        run.errors().iter().any(|e| e.contains("Invalid code")),
        "{run:?}"
    );
    otpd.assert_logged("denied: wrong code");
}

#[test]
fn a_used_code_is_refused_and_so_is_an_earlier_one() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    let service = PamService::otp(&otpd, "");
    let (current, next) = two_codes(&secret);
    assert_eq!(service.login(&me(), &[&next]).code, PAM_SUCCESS);
    let replay = service.login(&me(), &[&next]);
    assert_eq!(replay.code, PAM_AUTH_ERR, "{replay:?}");
    assert!(
        replay.errors().iter().any(|e| e.contains("already used")),
        "{replay:?}"
    );
    let earlier = service.login(&me(), &[&current]);
    assert_eq!(earlier.code, PAM_AUTH_ERR, "{earlier:?}");
}

#[test]
fn a_used_code_is_refused_after_otpd_restarts() {
    if !pam::available() {
        return;
    }
    let mut otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    let service = PamService::otp(&otpd, "");
    let c = code(&secret, now());
    assert_eq!(service.login(&me(), &[&c]).code, PAM_SUCCESS);
    otpd.restart();
    let run = service.login(&me(), &[&c]);
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}\n{}", otpd.log());
}

#[test]
fn a_clean_stop_saves_the_used_codes() {
    if !pam::available() {
        return;
    }
    let mut otpd = Daemon::start("");
    otpd.enroll_totp(&me());
    otpd.restart();
    otpd.assert_logged("used codes saved; stopped cleanly");
    assert!(
        !otpd.log().contains("last stop was not clean"),
        "{}",
        otpd.log()
    );
}

/// otpd spends codes in memory and saves them every few seconds; after a kill -9 the codes of
/// the last moments are unknown, so every code up to the restart (plus the skew) counts as used.
#[test]
fn a_used_code_is_refused_after_otpd_is_killed() {
    if !pam::available() {
        return;
    }
    let mut otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    let service = PamService::otp(&otpd, "");
    let c = code(&secret, now());
    assert_eq!(service.login(&me(), &[&c]).code, PAM_SUCCESS);
    otpd.restart_after_crash();
    otpd.assert_logged("last stop was not clean");
    // More tries than `max_failures` (5): a right code refused by the guard is not the user's
    // fault and must not lock them out.
    for step_code in [&c, &c, &c, &c, &c, &c, &code(&secret, now() + 30)] {
        let run = service.login(&me(), &[step_code]);
        assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}\n{}", otpd.log());
        assert!(
            run.errors()
                .iter()
                .any(|e| e.contains("will work again in")),
            "{run:?}"
        );
    }
    otpd.assert_logged("denied: code from before an unclean restart (not counted)");
    let status = otpd.otpctl_json(&["status"]);
    assert_eq!(status["recent_failures"], 0, "{status}");
    assert!(status["locked_for_secs"].is_null(), "{status}");
}

#[test]
fn a_pending_enrollment_does_not_count() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    let e = otpd.otpctl_json(&["enroll", "totp"]);
    let secret = e["secret"].as_str().unwrap();
    let run = PamService::otp(&otpd, "").login(&me(), &[&code(secret, now())]);
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert!(
        run.prompts().is_empty(),
        "no code is asked of an unenrolled user: {run:?}"
    );
    let status = otpd.otpctl_json(&["status"]);
    assert_eq!(status["totp"], "pending");
}

#[test]
fn lockout_refuses_even_a_right_code_until_unlock() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("[lockout]\nmax_failures = 3\n");
    let secret = otpd.enroll_totp(&me());
    let service = PamService::otp(&otpd, "");
    let (current, next) = two_codes(&secret);
    let wrong = if current == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..3 {
        assert_eq!(service.login(&me(), &[wrong]).code, PAM_AUTH_ERR);
    }
    let locked = service.login(&me(), &[&current]);
    assert_eq!(locked.code, PAM_AUTH_ERR, "{locked:?}");
    assert!(
        locked
            .errors()
            .iter()
            .any(|e| e.contains("Too many failed")),
        "{locked:?}"
    );
    let still = service.login(&me(), &[wrong]);
    assert_eq!(
        still.errors(),
        locked.errors(),
        "a locked user learns nothing from a guess"
    );
    let status = otpd.otpctl_json(&["status"]);
    assert!(status["locked_for_secs"].as_u64().unwrap() > 0, "{status}");

    let unlock = otpd.otpctl(&["--user", &me(), "unlock"]);
    if otp_e2e::skip::is_root() {
        assert!(unlock.status.success());
        assert_eq!(
            service.login(&me(), &[&next]).code,
            PAM_SUCCESS,
            "{}",
            otpd.log()
        );
    } else {
        assert_eq!(
            unlock.status.code(),
            Some(1),
            "only root or admins may unlock"
        );
    }
}

#[test]
fn an_unenrolled_user_is_denied_without_nullok_and_passes_with_it() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    let without = PamService::new(&format!(
        "auth required pam_permit.so\n{}",
        PamService::otp_line(&otpd, "")
    ));
    let run = without.login(&me(), &[]);
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    let with = PamService::new(&format!(
        "auth required pam_permit.so\n{}",
        PamService::otp_line(&otpd, "nullok")
    ));
    let run = with.login(&me(), &[]);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}");
    otpd.assert_logged("ignored: not enrolled (nullok)");
}

#[test]
fn daemon_down_denies_in_secure_mode_and_lets_in_in_safe_mode() {
    if !pam::available() {
        return;
    }
    let mut otpd = Daemon::start("");
    let socket_dir_only = PamService::otp(&otpd, "");
    let safe = PamService::otp(&otpd, "failmode=safe");
    drop(std::mem::replace(&mut otpd, Daemon::start("")));
    // The first daemon is gone; its socket path now has nobody behind it.
    let run = socket_dir_only.login(&me(), &["123456"]);
    assert_eq!(run.code, PAM_AUTHINFO_UNAVAIL, "{run:?}");
    assert!(
        run.prompts().is_empty(),
        "no prompt without a daemon: {run:?}"
    );
    let run = safe.login(&me(), &[]);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}");
}

#[test]
fn a_daemon_that_never_answers_is_timed_out() {
    if !pam::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let _listener = UnixListener::bind(&socket).unwrap();
    let service = PamService::new(&format!(
        "auth required {} socket={} timeout=1",
        artifacts::module().display(),
        socket.display()
    ));
    let run = service.login(&me(), &["123456"]);
    assert_eq!(run.code, PAM_AUTH_ERR, "a silent daemon denies: {run:?}");
}

#[test]
fn sha256_and_8_digit_codes_work() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("[totp]\nalgorithm = \"SHA256\"\ndigits = 8\nperiod = 60\n");
    let e = otpd.otpctl_json(&["enroll", "totp"]);
    assert_eq!(e["algorithm"], "SHA256");
    assert!(e["uri"]
        .as_str()
        .unwrap()
        .contains("algorithm=SHA256&digits=8&period=60"));
    let secret = e["secret"].as_str().unwrap();
    otpd.confirm(&me(), |t| oath(secret, t - 60));
    let run = PamService::otp(&otpd, "").login(&me(), &[&oath(secret, now())]);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());

    fn oath(secret: &str, t: u64) -> String {
        let out = std::process::Command::new("oathtool")
            .args([
                "--totp=SHA256",
                "-d",
                "8",
                "-s",
                "60",
                "-b",
                "-N",
                &format!("@{t}"),
                secret,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

#[test]
fn an_unknown_module_argument_fails_closed() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    let run = PamService::otp(&otpd, "nulok").login(&me(), &[&code(&secret, now())]);
    assert_eq!(run.code, PAM_SERVICE_ERR, "{run:?}");
}

#[test]
fn debians_pamtester_logs_in_with_a_code() {
    if !pam::available() || !otp_e2e::skip::require_file("/usr/bin/pamtester", "pamtester") {
        return;
    }
    let otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    let service = PamService::otp(&otpd, "");
    // pamtester says nothing when pam_wrapper is set up: the lock is held for its whole run.
    let started = pam::WrapperLock::take();
    let mut child = service
        .command(std::path::Path::new("/usr/bin/pamtester"))
        .args([service.name.as_str(), &me(), "authenticate"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{}", code(&secret, now())).unwrap();
    let out = child.wait_with_output().unwrap();
    drop(started);
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("successfully authenticated"), "{text}");
    assert!(text.contains("Verification code"), "{text}");
}

/// A host that serves many logins in one process (a RADIUS or mail server) keeps the module
/// loaded across `pam_end` (it is linked `-z nodelete`, pam_otp/build.rs), and its next login
/// starts from a clean slate: each code works once, and the used one is refused.
#[test]
fn a_long_lived_host_keeps_the_module_loaded_between_logins() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    let (first, next) = two_codes(&secret);
    let run = PamService::otp(&otpd, "").logins_in_one_process(&me(), 3, &[&first, &next, &first]);
    let results: Vec<&str> = run
        .lines
        .iter()
        .filter_map(|l| l.strip_prefix("RESULT: "))
        .filter_map(|r| r.split_whitespace().next())
        .collect();
    let ok = PAM_SUCCESS.to_string();
    let refused = PAM_AUTH_ERR.to_string();
    assert_eq!(results, [&ok, &ok, &refused], "{run:?}");
    let modules: Vec<&String> = run
        .lines
        .iter()
        .filter(|l| l.starts_with("MODULE: "))
        .collect();
    assert_eq!(modules, ["MODULE: loaded"; 3], "{run:?}");
}
