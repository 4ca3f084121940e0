//! The grace period through real libpam: after a code from host R, logins from R through the
//! same service skip the code (`allowed (grace)`); another host, another service, a local
//! user's own PAM program claiming R, and an empty rhost (without `grace_local`) are asked.
//! A failed code, `unlock`, `reset` and `disable` end it.

use otp_e2e::pam::{self, From, PAM_SUCCESS};
use otp_e2e::totp::{code, now};
use otp_e2e::{me, skip, Daemon, PamRun, PamService};

const R: &str = "192.0.2.7";
const OTHER: &str = "198.51.100.3";
const GRACE: &str = "[policy]\ngrace = \"8h\"\n";

fn from(rhost: &str) -> From<'_> {
    From {
        rhost: Some(rhost),
        ..From::default()
    }
}

/// Codes for the current and the next time step, from one reading of the clock.
fn two_codes(secret: &str) -> (String, String) {
    let t = now();
    (code(secret, t), code(secret, t + 30))
}

/// The login was let in without a single prompt.
#[track_caller]
fn skipped_the_code(run: &PamRun, otpd: &Daemon) {
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
    assert!(run.prompts().is_empty(), "{run:?}");
}

/// The login asked for a code (the test then hangs up, which is no failed code).
#[track_caller]
fn asked_for_a_code(run: &PamRun) {
    assert_ne!(run.code, PAM_SUCCESS, "{run:?}");
    assert!(run.prompts().iter().any(|p| p.contains("code")), "{run:?}");
}

fn graces(otpd: &Daemon) -> usize {
    otpd.log().matches("allowed (grace)").count()
}

#[test]
fn a_second_login_from_the_same_host_skips_the_code_and_another_host_or_service_is_asked() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start(GRACE);
    let secret = otpd.enroll_totp(&me());
    let service = PamService::otp(&otpd, "");
    service.add_service("otp-other");
    let (now_code, _) = two_codes(&secret);
    let first = service.login_from(&from(R), &me(), &[&now_code]);
    assert_eq!(first.code, PAM_SUCCESS, "{first:?}\n{}", otpd.log());

    let again = service.login_from(&from(R), &me(), &[]);
    skipped_the_code(&again, &otpd);
    otpd.assert_logged(&format!("user={} rhost={R}", me()));
    otpd.assert_logged("allowed (grace)");

    asked_for_a_code(&service.login_from(&from(OTHER), &me(), &[]));
    let other_service = From {
        service: Some("otp-other"),
        ..from(R)
    };
    asked_for_a_code(&service.login_from(&other_service, &me(), &[]));
    // Being asked elsewhere ended nothing: R still has its grace, and a graced login does not
    // renew it (only a code does).
    skipped_the_code(&service.login_from(&from(R), &me(), &[]), &otpd);
    assert_eq!(graces(&otpd), 2, "{}", otpd.log());
}

#[test]
fn a_failed_code_from_anywhere_ends_the_grace() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start(GRACE);
    let secret = otpd.enroll_totp(&me());
    let service = PamService::otp(&otpd, "");
    let (now_code, next) = two_codes(&secret);
    assert_eq!(
        service.login_from(&from(R), &me(), &[&now_code]).code,
        PAM_SUCCESS
    );
    let wrong = if next == "123456" { "654321" } else { "123456" };
    let failed = service.login_from(&from(OTHER), &me(), &[wrong]);
    assert_ne!(failed.code, PAM_SUCCESS, "{failed:?}");
    otpd.assert_logged("denied: wrong code");
    asked_for_a_code(&service.login_from(&from(R), &me(), &[]));
    assert_eq!(graces(&otpd), 0, "{}", otpd.log());
}

#[test]
fn unlock_reset_and_disable_end_the_grace() {
    if !pam::available() || !skip::require_root() {
        return;
    }
    // An admin's commands, for another user (nobody), who needs no proof from them.
    for command in ["unlock", "reset", "disable"] {
        let otpd = Daemon::start(GRACE);
        let secret = otpd.enroll_totp("nobody");
        let service = PamService::otp(&otpd, "");
        let (now_code, _) = two_codes(&secret);
        let first = service.login_from(&from(R), "nobody", &[&now_code]);
        assert_eq!(first.code, PAM_SUCCESS, "{first:?}");
        skipped_the_code(&service.login_from(&from(R), "nobody", &[]), &otpd);

        let out = otpd.otpctl(&["--user", "nobody", command]);
        assert!(out.status.success(), "otpctl {command}: {out:?}");
        let after = service.login_from(&from(R), "nobody", &[]);
        assert_ne!(after.code, PAM_SUCCESS, "after {command}: {after:?}");
        if command == "unlock" {
            asked_for_a_code(&after);
        }
        assert_eq!(graces(&otpd), 1, "after {command}:\n{}", otpd.log());
    }
}

#[test]
fn a_local_user_claiming_the_host_neither_gets_grace_nor_grants_it() {
    if !pam::available() || !skip::require_root() {
        return;
    }
    let otpd = Daemon::start(GRACE);
    // Let nobody reach the socket, as a local user would.
    {
        use std::os::unix::fs::PermissionsExt;
        let open = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(otpd.dir(), open).expect("open the test dir");
    }
    let secret = otpd.enroll_totp("nobody");
    let service = PamService::otp(&otpd, "");
    let (now_code, next) = two_codes(&secret);
    // sshd (root) lets nobody in from R with a code: R has grace, for root's stack only.
    assert_eq!(
        service.login_from(&from(R), "nobody", &[&now_code]).code,
        PAM_SUCCESS
    );
    let as_nobody = |rhost| From {
        rhost: Some(rhost),
        as_nobody: true,
        ..From::default()
    };
    asked_for_a_code(&service.login_from(&as_nobody(R), "nobody", &[]));
    otpd.assert_logged("uid=65534");

    // nobody's own PAM program, claiming OTHER, passes with a code but grants OTHER nothing.
    let own = service.login_from(&as_nobody(OTHER), "nobody", &[&next]);
    assert_eq!(own.code, PAM_SUCCESS, "{own:?}\n{}", otpd.log());
    asked_for_a_code(&service.login_from(&from(OTHER), "nobody", &[]));
    assert_eq!(graces(&otpd), 0, "{}", otpd.log());
}

#[test]
fn a_login_without_a_remote_host_has_grace_only_with_grace_local() {
    if !pam::available() {
        return;
    }
    for local in [false, true] {
        let otpd = Daemon::start(&format!("{GRACE}grace_local = {local}\n"));
        let secret = otpd.enroll_totp(&me());
        let service = PamService::otp(&otpd, "");
        let (now_code, _) = two_codes(&secret);
        assert_eq!(service.login(&me(), &[&now_code]).code, PAM_SUCCESS);
        let again = service.login(&me(), &[]);
        match local {
            true => skipped_the_code(&again, &otpd),
            false => asked_for_a_code(&again),
        }
        otpd.assert_logged(&format!("user={} rhost=-", me()));
    }
}

#[test]
fn a_policy_rule_gives_its_own_users_grace_and_a_reload_changes_it() {
    if !pam::available() {
        return;
    }
    // No global grace: only the rule naming this user has one.
    let rule = format!("[[policy.rule]]\nusers = [\"{}\"]\ngrace = \"1h\"\n", me());
    let otpd = Daemon::start(&rule);
    let secret = otpd.enroll_totp(&me());
    let service = PamService::otp(&otpd, "");
    let (now_code, next_code) = two_codes(&secret);
    let first = service.login_from(&from(R), &me(), &[&now_code]);
    assert_eq!(first.code, PAM_SUCCESS, "{first:?}\n{}", otpd.log());
    skipped_the_code(&service.login_from(&from(R), &me(), &[]), &otpd);

    // The rule without grace, read again on SIGHUP: the next login from R is asked.
    let text = std::fs::read_to_string(&otpd.config).expect("config");
    assert!(text.contains("grace = \"1h\"\n"), "{text}");
    std::fs::write(&otpd.config, text.replace("grace = \"1h\"\n", "")).expect("rewrite");
    let pid = otpd.pid().expect("otpd runs") as i32;
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    otpd.assert_logged("configuration reloaded");
    asked_for_a_code(&service.login_from(&from(R), &me(), &[]));
    let with_code = service.login_from(&from(R), &me(), &[&next_code]);
    assert_eq!(with_code.code, PAM_SUCCESS, "{with_code:?}\n{}", otpd.log());
    asked_for_a_code(&service.login_from(&from(R), &me(), &[]));
    assert_eq!(graces(&otpd), 1, "{}", otpd.log());
}
