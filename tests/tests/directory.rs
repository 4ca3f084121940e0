//! Addresses and numbers from a real LDAP directory (Debian's slapd on loopback, with a test
//! CA), through real libpam: an email code whose address only the directory knows, over
//! StartTLS and over ldaps://; the directory going down (the cached address, then the clear
//! message once `cache_ttl` is over, with the other methods still offered); user names that try
//! to widen the filter; numbers that are not E.164.

use otp_e2e::pam::{self, PAM_SUCCESS};
use otp_e2e::slapd::{self, Person, Slapd};
use otp_e2e::smtp::{self, email_section, SmtpOptions, SmtpServer};
use otp_e2e::totp::{code, now};
use otp_e2e::{me, Daemon, PamService};
use std::time::{Duration, Instant};

const FROM_LDAP: &str = "me@ldap.example";

fn ready() -> bool {
    pam::available() && smtp::available() && slapd::available()
}

/// slapd holding the test user's address, alice's (with a national number) and bob's (with
/// a number to normalise).
fn directory() -> Slapd {
    Slapd::start(&[
        Person {
            uid: &me(),
            mail: Some(FROM_LDAP),
            mobile: None,
        },
        Person {
            uid: "bob",
            mail: None,
            mobile: Some("+1 (202) 555-0123"),
        },
        Person {
            uid: "alice",
            mail: Some("alice@ldap.example"),
            mobile: Some("(202) 555-0199"),
        },
    ])
}

/// otpd mailing through `server`, reading addresses from `url` of `ldap`.
fn otpd(server: &SmtpServer, ldap: &Slapd, url: &str, extra: &str) -> Daemon {
    Daemon::start(&format!(
        "{}{}",
        email_section(server.port, "none", ""),
        ldap.section(url, extra)
    ))
}

/// Log the test user in with the code mailed to the directory's address.
#[track_caller]
fn log_in_by_mail(otpd: &Daemon, server: &SmtpServer) {
    let service = PamService::otp(otpd, "");
    let mut login = service.start(&me());
    let prompt = login.next_prompt().expect("a prompt");
    assert!(prompt.contains("m***@l***.example"), "{prompt}");
    let mail = server.next_mail();
    assert_eq!(mail.header("To").as_deref(), Some(FROM_LDAP));
    login.send(&mail.code());
    let run = login.finish();
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
}

#[test]
fn an_email_code_goes_to_the_address_only_the_directory_knows_over_starttls_and_ldaps() {
    if !ready() {
        return;
    }
    let ldap = directory();
    for url in [ldap.starttls_url(), ldap.ldaps_url()] {
        let server = SmtpServer::start(SmtpOptions::default(), None);
        let otpd = otpd(&server, &ldap, &url, "");
        log_in_by_mail(&otpd, &server);
        assert!(otpd.logged("allowed (email"), "{url}:\n{}", otpd.log());
        // A figure, not an assertion: what the lookup adds to a command (otpctl status).
        eprintln!("{url}: otpctl status {:?} each", status_time(&otpd));
    }
    let server = SmtpServer::start(SmtpOptions::default(), None);
    let plain = Daemon::start(&email_section(server.port, "none", ""));
    eprintln!(
        "without a directory: otpctl status {:?} each",
        status_time(&plain)
    );
}

/// The mean time of 20 `otpctl status` runs.
fn status_time(otpd: &Daemon) -> Duration {
    let start = Instant::now();
    for _ in 0..20 {
        assert!(otpd.otpctl(&["status"]).status.success());
    }
    start.elapsed() / 20
}

#[test]
fn a_directory_with_a_certificate_from_another_ca_is_not_believed() {
    if !ready() {
        return;
    }
    let ldap = directory();
    let stranger = otp_e2e::ca::TestCa::new();
    let server = SmtpServer::start(SmtpOptions::default(), None);
    let section = ldap
        .section(&ldap.ldaps_url(), "")
        .replace(&format!("{:?}", ldap.ca.ca), &format!("{:?}", stranger.ca));
    let otpd = Daemon::start(&format!(
        "{}{section}",
        email_section(server.port, "none", "")
    ));
    let run = PamService::otp(&otpd, "").login(&me(), &[]);
    assert_ne!(run.code, PAM_SUCCESS, "{run:?}");
    assert!(
        run.errors().iter().any(|e| e.contains("unavailable now")),
        "{run:?}"
    );
    otpd.assert_logged("did not answer");
    assert!(!server.has_mail());
}

#[test]
fn a_directory_that_goes_down_is_served_from_the_cache_until_cache_ttl() {
    if !ready() {
        return;
    }
    let mut ldap = directory();
    let server = SmtpServer::start(SmtpOptions::default(), None);
    let otpd = otpd(&server, &ldap, &ldap.starttls_url(), "cache_ttl = \"1h\"");
    log_in_by_mail(&otpd, &server);
    ldap.stop();
    // The cached address is still the user's: shown at the login (which waits out the resend
    // cooldown of the code just used), and by otpctl status.
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    let prompt = login.next_prompt().expect("a prompt");
    assert!(
        prompt.starts_with("A code can be sent to m***@l***.example in "),
        "{prompt}"
    );
    drop(login.finish());
    otpd.assert_logged("did not answer");
    let status = otpd.otpctl_json(&["status"]);
    assert_eq!(status["email"], "active", "{status}");
    assert_eq!(status["email_address"], "m***@l***.example", "{status}");
}

#[test]
fn past_cache_ttl_the_method_is_unavailable_with_a_clear_message_and_the_app_still_works() {
    if !ready() {
        return;
    }
    let mut ldap = directory();
    let server = SmtpServer::start(SmtpOptions::default(), None);
    let ttl = Duration::from_secs(1);
    let otpd = otpd(&server, &ldap, &ldap.starttls_url(), "cache_ttl = \"1s\"");
    // The directory's address is a factor: adding the app needs a code, mailed there.
    otpd.otpctl_json(&["send"]);
    let proof = server.next_mail().code();
    let secret = otpd.enroll_totp_proving(&me(), &proof);
    let notice = server.next_mail();
    assert_eq!(
        notice.header("To").as_deref(),
        Some(FROM_LDAP),
        "the change is told there"
    );
    let service = PamService::otp(&otpd, "");
    // The menu offers the directory's address beside the app; the lookup is at its start.
    let mut login = service.start(&me());
    let read = Instant::now();
    let menu = login.next_prompt().expect("the menu");
    assert!(menu.contains("m***@l***.example"), "{menu}");
    drop(login.finish());

    ldap.stop();
    // What is tested is the passing of cache_ttl itself: wait it out.
    std::thread::sleep(ttl.saturating_sub(read.elapsed()) + Duration::from_millis(200));
    let run = service.login(&me(), &[&code(&secret, now())]);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
    assert_eq!(
        run.errors(),
        ["Codes by email are unavailable now: the user directory cannot be reached."],
        "{run:?}"
    );
    assert_eq!(
        run.prompts().len(),
        1,
        "straight to the app's code: {run:?}"
    );
    assert!(!server.has_mail());
}

#[test]
fn a_user_name_with_filter_metacharacters_matches_nobody_else() {
    if !ready() {
        return;
    }
    let ldap = directory();
    let server = SmtpServer::start(SmtpOptions::default(), None);
    let otpd = otpd(&server, &ldap, &ldap.ldaps_url(), "");
    let service = PamService::otp(&otpd, "");
    for name in ["*", "*)(uid=*", "ali*", "alice)(|(uid=*", "*)(mail=*"] {
        let run = service.login(name, &[]);
        assert_ne!(run.code, PAM_SUCCESS, "{name}: {run:?}");
        assert!(
            run.errors()
                .iter()
                .any(|e| e.contains("No second factor is set up")),
            "{name}: {run:?}\n{}",
            otpd.log()
        );
    }
    assert!(!server.has_mail(), "no code went to anyone");
    assert!(!otpd.log().contains("did not answer"), "{}", otpd.log());
}

#[test]
fn a_directory_number_that_is_not_e164_is_refused_with_a_log_line() {
    if !ready() {
        return;
    }
    let ldap = directory();
    let server = SmtpServer::start(SmtpOptions::default(), None);
    let otpd = otpd(&server, &ldap, &ldap.starttls_url(), "");
    let alice = otpd.otpctl_json(&["--user", "alice", "status"]);
    assert_eq!(alice["sms"], "none", "{alice}");
    assert_eq!(alice["email"], "active", "{alice}");
    otpd.assert_logged("user=alice: the directory's number \"(202) 555-0199\" is not an E.164");
    let bob = otpd.otpctl_json(&["--user", "bob", "status"]);
    assert_eq!(
        bob["sms"], "active",
        "normalised from +1 (202) 555-0123: {bob}"
    );
    assert!(!otpd.log().contains("user=bob: the directory's number"));
}

#[test]
fn check_config_says_whether_the_directory_answers_and_refuses_a_readable_password_file() {
    if !slapd::available() {
        return;
    }
    let mut ldap = directory();
    let otpd = Daemon::start(&ldap.section(&ldap.ldaps_url(), ""));
    let check = || {
        std::process::Command::new(otp_e2e::artifacts::otpd())
            .arg("check-config")
            .arg("--config")
            .arg(&otpd.config)
            .output()
            .expect("otpd check-config")
    };
    let out = check();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert!(
        said.contains(&format!("directory {} (base ", ldap.ldaps_url())),
        "{said}"
    );
    assert!(said.contains("): answers"), "{said}");

    ldap.stop();
    let out = check();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "down now is no configuration error: {out:?}"
    );
    assert!(said.contains("does not answer now"), "{said}");

    use std::os::unix::fs::PermissionsExt;
    let password = ldap.dir().join("bind.password");
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = check();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        said.contains("directory.bind_password_file") && said.contains("chmod"),
        "{said}"
    );
}
