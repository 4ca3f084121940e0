//! SIGHUP (`systemctl reload otpd`) while logins run: a good file applies to the next login at
//! once, the logins in flight finish under the configuration they started with, none dropped;
//! a bad file or one changing what only a restart can apply is refused with check-config's
//! message, logged, and the policy in force stays.

use otp_e2e::pam::{self, PAM_SUCCESS};
use otp_e2e::totp::code;
use otp_e2e::{artifacts, me, Daemon, PamService};

fn hang_up(otpd: &Daemon) {
    let pid = otpd.pid().expect("otpd runs") as i32;
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
}

/// The config file as the daemon wrote it, plus `extra`.
fn rewrite(otpd: &Daemon, base: &str, extra: &str) {
    std::fs::write(&otpd.config, format!("{base}\n{extra}\n")).expect("rewrite config");
}

fn check_config(otpd: &Daemon) -> String {
    let out = std::process::Command::new(artifacts::otpd())
        .arg("--config")
        .arg(&otpd.config)
        .arg("check-config")
        .output()
        .expect("otpd check-config");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    said.trim().trim_start_matches("otpd: ").to_owned()
}

#[test]
fn sighup_applies_a_good_file_to_new_logins_refuses_a_bad_one_and_drops_no_login() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    let base = std::fs::read_to_string(&otpd.config).expect("config");
    let enrolled = otpd.otpctl_json(&["--user", &me(), "enroll", "totp"]);
    let secret = enrolled["secret"].as_str().expect("secret").to_owned();
    otpd.confirm(&me(), |t| code(&secret, t - 30));
    let recovery: Vec<String> = enrolled["recovery_codes"]
        .as_array()
        .expect("recovery codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_owned())
        .collect();
    let service = PamService::otp(&otpd, "");

    // Four logins wait at their code prompt, under the file without rules.
    let mut in_flight = Vec::new();
    for _ in 0..4 {
        let mut login = service.start(&me());
        let prompt = login.next_prompt().expect("a prompt");
        assert!(prompt.contains("code"), "{prompt}");
        in_flight.push(login);
    }

    // A good file: this user is exempt from now on.
    let exempt = format!(
        "[[policy.rule]]\nusers = [\"{}\"]\nrequire = \"never\"\n",
        me()
    );
    rewrite(&otpd, &base, &exempt);
    hang_up(&otpd);
    otpd.assert_logged("configuration reloaded");
    let run = service.login(&me(), &[]);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
    assert!(run.prompts().is_empty(), "exempt at once: {run:?}");

    // A bad file: refused with check-config's words, and the exemption stays.
    rewrite(
        &otpd,
        &base,
        &format!("{exempt}[lockout]\nmax_failures = \"five\"\n"),
    );
    let words = check_config(&otpd);
    assert!(words.contains("max_failures"), "{words}");
    hang_up(&otpd);
    otpd.assert_logged(&format!(
        "reload refused: {words}; the configuration in force stays"
    ));
    let run = service.login(&me(), &[]);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}");
    assert!(run.prompts().is_empty(), "still exempt: {run:?}");

    // What only a restart can change: refused, naming the key.
    let moved = base.replace("/state\"", "/moved\"");
    assert_ne!(moved, base);
    rewrite(&otpd, &moved, "");
    hang_up(&otpd);
    otpd.assert_logged("state_dir changed: a restart is needed to apply it");

    // The logins in flight started before any reload: each still finishes, with a code.
    for (login, recovery_code) in in_flight.into_iter().zip(&recovery) {
        let mut login = login;
        login.send(recovery_code);
        let run = login.finish();
        assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
    }
}

#[test]
fn logins_running_through_a_series_of_reloads_all_end_as_the_policy_says() {
    if !pam::available() {
        return;
    }
    let exempt = format!(
        "[[policy.rule]]\nusers = [\"{}\"]\nrequire = \"never\"\n",
        me()
    );
    let otpd = Daemon::start(&exempt);
    let base = std::fs::read_to_string(&otpd.config).expect("config");
    let service = PamService::otp(&otpd, "");
    std::thread::scope(|s| {
        let logins = s.spawn(|| {
            (0..40)
                .map(|_| service.login(&me(), &[]))
                .filter(|run| run.code != PAM_SUCCESS || !run.prompts().is_empty())
                .map(|run| format!("{run:?}"))
                .collect::<Vec<_>>()
        });
        // Good and bad files in turn while the logins run; each stays exempt.
        for i in 0..12 {
            let extra = match i % 3 {
                0 => format!("[totp]\nissuer = \"Example {i}\"\n"),
                1 => "[lockout]\nmax_failures = \"many\"\n".to_owned(),
                _ => String::new(),
            };
            rewrite(&otpd, &base, &extra);
            hang_up(&otpd);
            let said = if i % 3 == 1 {
                "reload refused"
            } else {
                "configuration reloaded"
            };
            otpd.assert_logged(said);
        }
        let failed = logins.join().expect("logins");
        assert!(failed.is_empty(), "{failed:#?}\n{}", otpd.log());
    });
    assert!(otpd.log().matches("SIGHUP: reading").count() >= 1);
}
