//! Email codes end to end: a real SMTP server on loopback delivers the mail, the test reads the
//! code from it and logs in through real libpam.

use otp_e2e::daemon::describe;
use otp_e2e::pam::{self, PAM_AUTH_ERR, PAM_SUCCESS};
use otp_e2e::smtp::{self, email_section, SmtpOptions, SmtpServer, TestCa};
use otp_e2e::totp::{code, now};
use otp_e2e::{me, skip, Daemon, PamService};
use std::os::unix::fs::PermissionsExt;

const ADDRESS: &str = "me@example.com";

fn ready() -> bool {
    pam::available() && smtp::available()
}

/// otpd mailing through `server` (plain SMTP), the test user's address in `[users]`, plus
/// `extra` TOML (e.g. a `[code]` section).
fn daemon(server: &SmtpServer, email_extra: &str, extra: &str) -> Daemon {
    Daemon::start(&format!(
        "{}[users.\"{}\"]\nemail = \"{ADDRESS}\"\n{extra}",
        email_section(server.port, "none", email_extra),
        me()
    ))
}

fn other_than(code: &str) -> &'static str {
    if code == "000000" {
        "111111"
    } else {
        "000000"
    }
}

#[test]
fn an_emailed_code_logs_in_and_the_mail_is_a_proper_mail() {
    if !ready() {
        return;
    }
    let server = SmtpServer::start(SmtpOptions::default(), None);
    let otpd = daemon(&server, "", "");
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    let prompt = login.next_prompt().expect("a prompt");
    assert!(
        prompt.contains("A code was sent to m***@e***.com"),
        "{prompt}"
    );
    assert!(prompt.contains("Empty line for a new code"), "{prompt}");
    let mail = server.next_mail();
    assert_eq!(mail.header("To").as_deref(), Some(ADDRESS));
    assert!(mail.header("From").unwrap().contains("otp@example.com"));
    assert!(
        mail.header("Date").is_some() && mail.header("Message-ID").is_some(),
        "{}",
        mail.raw
    );
    assert!(
        mail.header("Subject").unwrap().contains("login code"),
        "{}",
        mail.raw
    );
    let body = mail.body();
    assert!(body.contains(&me()) && body.contains("5 minutes"), "{body}");
    let code = mail.code();
    assert_eq!(code.len(), 6);
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    login.send(&code);
    let run = login.finish();
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
    otpd.assert_logged("allowed (email, challenge ");
    let log = otpd.log();
    assert!(
        !log.contains(&code),
        "the code never reaches the log:\n{log}"
    );
}

fn tls_login(tls: &'static str) {
    let ca = TestCa::new();
    let server = SmtpServer::start(
        SmtpOptions {
            tls,
            auth: Some(("otp", "s3cret")),
            ..SmtpOptions::default()
        },
        Some(&ca),
    );
    let secrets = tempfile::tempdir().unwrap();
    let password = secrets.path().join("smtp.pass");
    std::fs::write(&password, "s3cret\n").unwrap();
    std::fs::set_permissions(&password, PermissionsExt::from_mode(0o600)).unwrap();
    let otpd = Daemon::start(&format!(
        "{}[users.\"{}\"]\nemail = \"{ADDRESS}\"\n",
        email_section(
            server.port,
            tls,
            &format!(
                "username = \"otp\"\npassword_file = {:?}\nca_file = {:?}\n",
                password, ca.ca
            )
        ),
        me()
    ));
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    login.next_prompt().expect("a prompt");
    login.send(&server.next_mail().code());
    let run = login.finish();
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
}

#[test]
fn starttls_with_the_test_ca_and_smtp_auth() {
    if ready() {
        tls_login("starttls");
    }
}

#[test]
fn implicit_tls_with_the_test_ca_and_smtp_auth() {
    if ready() {
        tls_login("tls");
    }
}

#[test]
fn a_certificate_from_an_unknown_ca_is_refused() {
    if !ready() {
        return;
    }
    let ca = TestCa::new();
    let server = SmtpServer::start(
        SmtpOptions {
            tls: "tls",
            ..SmtpOptions::default()
        },
        Some(&ca),
    );
    let otpd = Daemon::start(&format!(
        "{}[users.\"{}\"]\nemail = \"{ADDRESS}\"\n",
        email_section(server.port, "tls", ""),
        me()
    ));
    let run = PamService::otp(&otpd, "").login(&me(), &[]);
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert!(
        run.errors()
            .iter()
            .any(|e| e.contains("Could not send the code")),
        "{run:?}"
    );
    assert!(!server.has_mail());
}

#[test]
fn an_empty_answer_sends_a_new_code_and_the_old_one_dies() {
    if !ready() {
        return;
    }
    let server = SmtpServer::start(SmtpOptions::default(), None);
    let otpd = daemon(&server, "", "[code]\nresend_after = \"1ms\"\n");
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    login.next_prompt().unwrap();
    let old = server.next_mail().code();
    login.send("");
    let prompt = login.next_prompt().unwrap();
    assert!(prompt.contains("A new code was sent"), "{prompt}");
    let new = server.next_mail().code();
    if old != new {
        login.send(&old);
        let prompt = login.next_prompt().unwrap();
        assert!(
            prompt.contains("Wrong code"),
            "the old code is dead: {prompt}"
        );
    }
    login.send(&new);
    let run = login.finish();
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
}

#[test]
fn a_resend_within_the_cooldown_says_how_long_to_wait() {
    if !ready() {
        return;
    }
    let server = SmtpServer::start(SmtpOptions::default(), None);
    let otpd = daemon(&server, "", "[code]\nresend_after = \"30s\"\n");
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    login.next_prompt().unwrap();
    let code = server.next_mail().code();
    login.send("");
    let prompt = login.next_prompt().unwrap();
    assert!(prompt.contains("A new code can be sent in"), "{prompt}");
    assert!(!server.has_mail(), "no second mail inside the cooldown");
    login.send(&code);
    assert_eq!(login.finish().code, PAM_SUCCESS);
}

#[test]
fn concurrent_challenges_accept_every_open_code_once_in_any_order() {
    if !ready() {
        return;
    }
    let server = SmtpServer::start(SmtpOptions::default(), None);
    let otpd = daemon(
        &server,
        "",
        "[code]\nconcurrent_challenges = true\nresend_after = \"1ms\"\n",
    );
    let mut codes = Vec::new();
    for _ in 0..3 {
        let sent = otpd.otpctl_json(&["send"]);
        assert_eq!(sent["destination"], "m***@e***.com");
        assert!(sent["challenge"].as_str().unwrap().len() >= 8, "{sent}");
        codes.push(server.next_mail().code());
    }
    let service = PamService::otp(&otpd, "");
    for i in [1, 2, 0] {
        let mut login = service.start(&me());
        let prompt = login.next_prompt().unwrap();
        assert!(prompt.contains("already sent"), "{prompt}");
        login.send(&codes[i]);
        let run = login.finish();
        assert_eq!(run.code, PAM_SUCCESS, "code {i}: {run:?}\n{}", otpd.log());
    }
    // Each once: nothing is waiting any more, so a login sends a fresh code.
    let mut login = service.start(&me());
    let prompt = login.next_prompt().unwrap();
    assert!(prompt.contains("A code was sent"), "{prompt}");
    login.send(&codes[1]);
    let prompt = login.next_prompt().unwrap();
    assert!(prompt.contains("Wrong code"), "{prompt}");
}

#[test]
fn without_concurrent_challenges_only_the_newest_code_works() {
    if !ready() {
        return;
    }
    let server = SmtpServer::start(SmtpOptions::default(), None);
    let otpd = daemon(&server, "", "[code]\nresend_after = \"1ms\"\n");
    otpd.otpctl_json(&["send"]);
    let first = server.next_mail().code();
    otpd.otpctl_json(&["send"]);
    let second = server.next_mail().code();
    let wrong = otpd.otpctl(&["verify", &first]);
    if first != second {
        assert_eq!(wrong.status.code(), Some(1), "{}", describe(&wrong));
    }
    let right = otpd.otpctl(&["verify", &second]);
    assert!(right.status.success(), "{}", describe(&right));
}

#[test]
fn an_expired_code_is_refused_as_expired() {
    if !ready() {
        return;
    }
    let server = SmtpServer::start(SmtpOptions::default(), None);
    // A 1 ms validity has passed before the SMTP exchange even finishes.
    let otpd = daemon(&server, "", "[code]\nttl = \"1ms\"\n");
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    login.next_prompt().unwrap();
    login.send(&server.next_mail().code());
    let run = login.finish();
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert!(
        run.errors().iter().any(|e| e.contains("expired")),
        "{run:?}"
    );
}

#[test]
fn max_attempts_ends_the_login_and_counts_toward_lockout() {
    if !ready() {
        return;
    }
    let server = SmtpServer::start(SmtpOptions::default(), None);
    let otpd = daemon(&server, "", "[code]\nmax_attempts = 2\n");
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    login.next_prompt().unwrap();
    let code = server.next_mail().code();
    login.send(other_than(&code));
    let prompt = login.next_prompt().unwrap();
    assert!(prompt.contains("Wrong code; try again"), "{prompt}");
    login.send(other_than(&code));
    let run = login.finish();
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert!(
        run.errors()
            .iter()
            .any(|e| e.contains("Too many wrong codes")),
        "{run:?}"
    );
    let status = otpd.otpctl_json(&["status"]);
    assert_eq!(status["recent_failures"], 2, "{status}");
}

#[test]
fn alphanumeric_codes_avoid_look_alikes_and_ignore_case() {
    if !ready() {
        return;
    }
    let server = SmtpServer::start(SmtpOptions::default(), None);
    let otpd = daemon(
        &server,
        "",
        "[code]\ncharset = \"alphanumeric\"\nlength = 8\n",
    );
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    login.next_prompt().unwrap();
    let code = server.next_mail().code();
    assert_eq!(code.len(), 8, "{code}");
    assert!(
        code.bytes()
            .all(|b| b"ABCDEFGHJKMNPQRSTUVWXYZ23456789".contains(&b)),
        "{code}"
    );
    login.send(&code.to_lowercase());
    assert_eq!(login.finish().code, PAM_SUCCESS);
}

#[test]
fn a_dead_smtp_server_means_could_not_send_and_a_denied_login() {
    if !ready() {
        return;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let otpd = Daemon::start(&format!(
        "{}[users.\"{}\"]\nemail = \"{ADDRESS}\"\n",
        email_section(port, "none", ""),
        me()
    ));
    let run = PamService::otp(&otpd, "").login(&me(), &[]);
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert!(
        run.errors()
            .iter()
            .any(|e| e.contains("Could not send the code")),
        "{run:?}"
    );
    otpd.assert_logged("could not send the code by email");
}

#[test]
fn refused_smtp_auth_is_logged_with_the_servers_reply() {
    if !ready() {
        return;
    }
    let ca = TestCa::new();
    let server = SmtpServer::start(
        SmtpOptions {
            tls: "starttls",
            auth: Some(("otp", "right")),
            ..SmtpOptions::default()
        },
        Some(&ca),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pass"), "wrong").unwrap();
    std::fs::set_permissions(dir.path().join("pass"), PermissionsExt::from_mode(0o600)).unwrap();
    let otpd = Daemon::start(&format!(
        "{}[users.\"{}\"]\nemail = \"{ADDRESS}\"\n",
        email_section(
            server.port,
            "starttls",
            &format!(
                "username = \"otp\"\npassword_file = {:?}\nca_file = {:?}\n",
                dir.path().join("pass"),
                ca.ca
            )
        ),
        me()
    ));
    let run = PamService::otp(&otpd, "").login(&me(), &[]);
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert!(
        otpd.logged("535"),
        "the SMTP server's reply is logged:\n{}",
        otpd.log()
    );
}

#[test]
fn a_refused_recipient_is_reported() {
    if !ready() {
        return;
    }
    let server = SmtpServer::start(
        SmtpOptions {
            reject: true,
            ..SmtpOptions::default()
        },
        None,
    );
    let otpd = daemon(&server, "", "");
    let sent = otpd.otpctl(&["send"]);
    assert_eq!(sent.status.code(), Some(1), "{}", describe(&sent));
    assert!(String::from_utf8_lossy(&sent.stderr).contains("could not send the code"));
    otpd.assert_logged("550");
}

#[test]
fn a_slow_smtp_server_delays_only_its_own_login() {
    if !ready() || !skip::require_root() {
        return;
    }
    let server = SmtpServer::start(
        SmtpOptions {
            delay: 5,
            ..SmtpOptions::default()
        },
        None,
    );
    let otpd = daemon(&server, "", "");
    let secret = otpd.enroll_totp("someone-else");
    let service = PamService::otp(&otpd, "");
    let mut slow = service.start(&me());
    // While the mail to `me` hangs in DATA, another user's TOTP login completes.
    let other = service.login("someone-else", &[&code(&secret, now())]);
    assert_eq!(other.code, PAM_SUCCESS, "{other:?}\n{}", otpd.log());
    assert!(!server.has_mail(), "the slow mail was still in flight");
    slow.next_prompt().expect("the slow login gets its prompt");
    slow.send(&server.next_mail().code());
    assert_eq!(slow.finish().code, PAM_SUCCESS);
}

#[test]
fn a_registered_address_counts_only_once_confirmed() {
    if !ready() {
        return;
    }
    let server = SmtpServer::start(SmtpOptions::default(), None);
    let otpd = Daemon::start(&format!(
        "{}[code]\nresend_after = \"1ms\"\n",
        email_section(server.port, "none", "")
    ));
    let bad = otpd.otpctl(&["enroll", "email", "--email", "not-an-address"]);
    assert_eq!(bad.status.code(), Some(1), "{}", describe(&bad));
    let sent = otpd.otpctl_json(&["enroll", "email", "--email", "new@example.org"]);
    assert_eq!(sent["destination"], "n***@e***.org");
    let mail = server.next_mail();
    assert_eq!(mail.header("To").as_deref(), Some("new@example.org"));
    let before = PamService::otp(&otpd, "").login(&me(), &[]);
    assert_eq!(before.code, PAM_AUTH_ERR, "not yet a method: {before:?}");
    let verified = otpd.otpctl_json(&["verify", &mail.code()]);
    assert_eq!(verified["activated"], true);
    let status = otpd.otpctl_json(&["status"]);
    assert_eq!(status["email"], "active");
    assert_eq!(status["email_address"], "n***@e***.org");
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    assert!(login.next_prompt().unwrap().contains("n***@e***.org"));
    login.send(&server.next_mail().code());
    assert_eq!(login.finish().code, PAM_SUCCESS);
}

#[test]
fn a_user_with_an_app_and_an_address_chooses() {
    if !ready() {
        return;
    }
    let server = SmtpServer::start(SmtpOptions::default(), None);
    let otpd = daemon(&server, "", "");
    otpd.enroll_totp(&me());
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    let menu = login.next_prompt().unwrap();
    assert!(
        menu.contains("1) authenticator app") && menu.contains("2) email m***@e***.com"),
        "{menu}"
    );
    login.send("2");
    assert!(login.next_prompt().unwrap().contains("A code was sent"));
    login.send(&server.next_mail().code());
    assert_eq!(login.finish().code, PAM_SUCCESS);
}

#[test]
fn a_delivery_slower_than_the_module_timeout_fails_the_login_even_in_safe_mode() {
    if !ready() {
        return;
    }
    let server = SmtpServer::start(
        SmtpOptions {
            delay: 5,
            ..SmtpOptions::default()
        },
        None,
    );
    let otpd = daemon(&server, "", "");
    // otpd answers at once ("Sending a code..."), so the module knows the daemon is there; a
    // timeout after that is a broken exchange, never "daemon unreachable".
    let run = PamService::otp(&otpd, "timeout=2 failmode=safe").login(&me(), &["000000"]);
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert!(
        run.lines
            .iter()
            .any(|l| l.starts_with("INFO: Sending a code to m***@e***.com")),
        "{run:?}"
    );
}
