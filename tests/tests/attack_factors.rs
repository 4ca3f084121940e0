//! A stolen session (or a curious admin) trying to change someone's second factor, mounted as in
//! the report (issue: "Close the holes found by attacking otpd", items 9 and 10): replacing the
//! key, importing over it, adding an address, disabling, an admin acting on root, a re-import
//! that reset replay state, and first-login enrollment showing a key made with otpctl.

use otp_e2e::daemon::describe;
use otp_e2e::pam::{self, PAM_AUTH_ERR, PAM_SUCCESS};
use otp_e2e::totp::{code, now};
use otp_e2e::{me, skip, Daemon, PamService};
use std::process::Output;

fn refused_with(out: &Output, words: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", describe(out));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(words), "wanted {words:?}: {}", describe(out));
}

#[test]
fn replacing_an_active_key_needs_a_current_code() {
    let otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    refused_with(
        &otpd.otpctl(&["--json", "enroll", "totp"]),
        "prove it is you",
    );
    refused_with(
        &otpd.otpctl(&["--json", "enroll", "totp", "--code", "000000"]),
        "wrong code",
    );
    assert_eq!(otpd.otpctl_json(&["status"])["recent_failures"], 1);
    let ok = otpd.otpctl_json(&["enroll", "totp", "--code", &code(&secret, now())]);
    assert_ne!(ok["secret"].as_str().unwrap(), secret, "a new pending key");
    // The old key still counts until the new one is confirmed.
    assert_eq!(otpd.otpctl_json(&["status"])["totp"], "active");
}

#[test]
fn importing_over_an_active_key_or_adding_an_address_needs_a_code() {
    let otpd = Daemon::start("");
    otpd.enroll_totp(&me());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ga");
    std::fs::write(&file, "JBSWY3DPEHPK3PXPJBSWY3DP\n\" TOTP_AUTH\n").unwrap();
    refused_with(
        &otpd.otpctl(&[
            "--json",
            "import",
            "google-authenticator",
            file.to_str().unwrap(),
        ]),
        "prove it is you",
    );
    refused_with(
        &otpd.otpctl(&[
            "--json",
            "enroll",
            "email",
            "--email",
            "attacker@example.com",
        ]),
        "prove it is you",
    );
    refused_with(
        &otpd.otpctl(&["--json", "enroll", "sms", "--phone", "+12025550123"]),
        "prove it is you",
    );
}

#[test]
fn disable_takes_a_current_code_even_with_an_address_on_file() {
    if !otp_e2e::smtp::available() {
        return;
    }
    let server = otp_e2e::smtp::SmtpServer::start(Default::default(), None);
    let otpd = Daemon::start(&format!(
        "{}[users.\"{}\"]\nemail = \"me@example.com\"\n",
        otp_e2e::smtp::email_section(server.port, "none", ""),
        me()
    ));
    otpd.otpctl_json(&["send"]);
    let secret = otpd.enroll_totp_proving(&me(), &server.next_mail().code());
    let notice = server.next_mail();
    assert!(
        notice.raw.contains("new authenticator app key"),
        "{}",
        notice.raw
    );
    refused_with(
        &otpd.otpctl(&["--json", "disable", "totp", "--code", "000000"]),
        "wrong code",
    );
    let ok = otpd.otpctl(&["disable", "totp", "--code", &code(&secret, now())]);
    assert!(ok.status.success(), "{}", describe(&ok));
    assert_eq!(otpd.otpctl_json(&["status"])["totp"], "none");
}

/// Members of admin_group manage other users, but not root.
#[test]
fn an_admin_group_member_cannot_touch_roots_factor() {
    if !skip::require_root() {
        return;
    }
    // nobody's primary group is nogroup: nobody is an admin here.
    let otpd = Daemon::start("admin_group = \"nogroup\"\n");
    otpd.enroll_totp("root");
    otpd.enroll_totp("daemon");
    for args in [
        &["--user", "root", "disable"][..],
        &["--user", "root", "reset"],
        &["--user", "root", "unlock"],
        &["--user", "root", "enroll", "totp"],
    ] {
        let out = otpd.otpctl_as_nobody(args);
        refused_with(&out, "permission denied");
    }
    assert_eq!(
        otpd.otpctl_json(&["--user", "root", "status"])["totp"],
        "active"
    );
    let other = otpd.otpctl_as_nobody(&["--user", "daemon", "disable"]);
    assert!(other.status.success(), "{}", describe(&other));
}

/// Importing the same secret again used to forget which codes were used.
#[test]
fn re_importing_the_same_secret_keeps_used_codes_used() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ga");
    let secret = "JBSWY3DPEHPK3PXPJBSWY3DP";
    std::fs::write(
        &file,
        format!("{secret}\n\" TOTP_AUTH\n11112222\n33334444\n"),
    )
    .unwrap();
    let path = file.to_str().unwrap();
    otpd.otpctl_json(&["import", "google-authenticator", path]);
    let service = PamService::otp(&otpd, "");
    let used = code(secret, now());
    assert_eq!(service.login(&me(), &[&used]).code, PAM_SUCCESS);
    // Proven with a scratch code (now a recovery code), as the user would.
    otpd.otpctl_json(&["import", "google-authenticator", path, "--code", "11112222"]);
    let again = service.login(&me(), &[&used]);
    assert_eq!(again.code, PAM_AUTH_ERR, "{again:?}");
    assert!(
        again.errors().iter().any(|e| e.contains("already used")),
        "{again:?}"
    );
}

/// A key made with `otpctl enroll totp` and not yet confirmed is never shown to whoever passes
/// the password at a first-login enrollment.
#[test]
fn first_login_enrollment_never_shows_a_key_made_with_otpctl() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("[policy]\nunenrolled = \"enroll\"\n");
    let pending = otpd.otpctl_json(&["enroll", "totp"]);
    let mine = pending["secret"].as_str().unwrap().to_owned();
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    let prompt = login.next_prompt().expect("the enrollment prompt");
    let shown = prompt
        .split("type the key ")
        .nth(1)
        .and_then(|a| a.split(" (").next())
        .unwrap()
        .replace(' ', "");
    assert_ne!(shown, mine, "the login must not show the otpctl key");
    login.send("");
    login.finish();
}

fn with_mail(extra: &str) -> Option<(otp_e2e::smtp::SmtpServer, Daemon)> {
    if !pam::available() || !otp_e2e::smtp::available() {
        return None;
    }
    let server = otp_e2e::smtp::SmtpServer::start(Default::default(), None);
    let otpd = Daemon::start(&format!(
        "{}{extra}",
        otp_e2e::smtp::email_section(server.port, "none", "")
    ));
    Some((server, otpd))
}

/// Right after a code was sent and used (`otpctl send`, then `otpctl verify`), a login used to
/// say "Sending a code to …", send none (the cooldown), then "No code is waiting".
#[test]
fn a_login_during_the_cooldown_says_when_a_code_can_be_sent_and_does_not_pretend_to_send() {
    let Some((server, otpd)) = with_mail(&format!(
        "[users.\"{}\"]\nemail = \"me@example.com\"\n",
        me()
    )) else {
        return;
    };
    otpd.otpctl_json(&["send"]);
    let mailed = server.next_mail().code();
    let verified = otpd.otpctl_json(&["verify", &mailed]);
    assert_eq!(verified["activated"], false, "{verified}");
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    let prompt = login.next_prompt().expect("a prompt");
    assert!(
        prompt.contains("A code can be sent to m***@e***.com in"),
        "{prompt}"
    );
    login.send("000000");
    let run = login.finish();
    assert!(
        !run.lines.iter().any(|l| l.contains("Sending a code")),
        "{run:?}"
    );
    assert!(!server.has_mail(), "nothing was sent");
}

/// `otpctl verify` of an address's code used to say "the authenticator app is now required".
#[test]
fn confirming_an_address_says_that_codes_go_there_now() {
    let Some((server, otpd)) = with_mail("") else {
        return;
    };
    otpd.otpctl_json(&["enroll", "email", "--email", "me@example.com"]);
    let mailed = server.next_mail().code();
    let out = otpd.otpctl(&["verify", &mailed]);
    assert!(out.status.success(), "{}", describe(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("login codes can now be sent to this email address"),
        "{said}"
    );
    assert!(!said.contains("authenticator app"), "{said}");
}

/// A new address needs a code, and the old address hears that login codes go elsewhere now.
#[test]
fn the_old_address_is_told_when_codes_move_to_a_new_one() {
    let Some((server, otpd)) = with_mail(&format!(
        "[users.\"{}\"]\nemail = \"old@example.com\"\n",
        me()
    )) else {
        return;
    };
    otpd.otpctl_json(&["send"]);
    let proof = server.next_mail().code();
    otpd.otpctl_json(&[
        "enroll",
        "email",
        "--email",
        "new@example.com",
        "--code",
        &proof,
    ]);
    let confirm = server.next_mail();
    assert!(confirm.header("To").unwrap().contains("new@example.com"));
    otpd.otpctl_json(&["verify", &confirm.code()]);
    let notice = server.next_mail();
    assert!(
        notice.header("To").unwrap().contains("old@example.com"),
        "{}",
        notice.raw
    );
    assert!(
        notice
            .raw
            .contains("login codes by email now go to n***@e***.com"),
        "{}",
        notice.raw
    );
}
