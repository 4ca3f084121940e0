//! What only email has, end to end: the mail itself, STARTTLS and implicit TLS with a test CA,
//! SMTP AUTH, and what an SMTP server can refuse or delay. A real SMTP server on loopback
//! delivers the mail; the stories every sent code shares are in sent_codes.rs.

use otp_e2e::daemon::describe;
use otp_e2e::inbox::{assert_could_not_send, daemon};
use otp_e2e::pam::{self, PAM_AUTH_ERR, PAM_SUCCESS};
use otp_e2e::smtp::{self, email_section, SmtpOptions, SmtpServer, TestCa, ADDRESS};
use otp_e2e::totp::{code, now};
use otp_e2e::{me, skip, Daemon, PamService};
use std::os::unix::fs::PermissionsExt;

fn ready() -> bool {
    pam::available() && smtp::available()
}

/// otpd with `email` as its `[email]` section and the test user's address in `[users]`.
fn mailing(email: String) -> Daemon {
    Daemon::start(&format!(
        "{email}[users.\"{}\"]\nemail = \"{ADDRESS}\"\n",
        me()
    ))
}

#[test]
fn an_emailed_code_is_a_proper_mail() {
    if !ready() {
        return;
    }
    let server = SmtpServer::start(SmtpOptions::default(), None);
    let otpd = daemon(&server, "");
    otpd.otpctl_json(&["send"]);
    let mail = server.next_mail();
    assert_eq!(mail.header("To").as_deref(), Some(ADDRESS));
    assert!(
        mail.header("From")
            .is_some_and(|f| f.contains("otp@example.com")),
        "{}",
        mail.raw
    );
    assert!(
        mail.header("Date").is_some() && mail.header("Message-ID").is_some(),
        "{}",
        mail.raw
    );
    assert!(
        mail.header("Subject")
            .is_some_and(|s| s.contains("login code")),
        "{}",
        mail.raw
    );
    let body = mail.body();
    assert!(body.contains(&me()) && body.contains("5 minutes"), "{body}");
    let code = mail.code();
    assert_eq!(code.len(), 6);
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
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
    let otpd = mailing(email_section(
        server.port,
        tls,
        &format!(
            "username = \"otp\"\npassword_file = {:?}\nca_file = {:?}\n",
            password, ca.ca
        ),
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
    let otpd = mailing(email_section(server.port, "tls", ""));
    assert_could_not_send(&otpd);
    assert!(!server.has_mail());
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
    let otpd = mailing(email_section(
        server.port,
        "starttls",
        &format!(
            "username = \"otp\"\npassword_file = {:?}\nca_file = {:?}\n",
            dir.path().join("pass"),
            ca.ca
        ),
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
    let otpd = daemon(&server, "");
    let sent = otpd.otpctl(&["send"]);
    assert_eq!(sent.status.code(), Some(1), "{}", describe(&sent));
    assert!(String::from_utf8_lossy(&sent.stderr).contains("could not send the code"));
    otpd.assert_logged("550");
}

/// An SMTP server that waits 5 s before answering DATA, and otpd mailing through it.
fn slow_server() -> (SmtpServer, Daemon) {
    let server = SmtpServer::start(
        SmtpOptions {
            delay: 5,
            ..SmtpOptions::default()
        },
        None,
    );
    let otpd = daemon(&server, "");
    (server, otpd)
}

#[test]
fn a_slow_smtp_server_delays_only_its_own_login() {
    if !ready() || !skip::require_root() {
        return;
    }
    let (server, otpd) = slow_server();
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
fn a_delivery_slower_than_the_module_timeout_fails_the_login_even_in_safe_mode() {
    if !ready() {
        return;
    }
    let (_server, otpd) = slow_server();
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
