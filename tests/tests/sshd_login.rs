//! A real sshd on loopback, logged into with OpenSSH's client: password, then code.

use otp_e2e::sshd::{self, Sshd, TestUser};
use otp_e2e::totp::{code, now};
use otp_e2e::Daemon;

#[test]
fn ssh_login_with_password_then_code_reaches_a_shell() {
    if !sshd::available() {
        return;
    }
    let user = TestUser::create();
    let otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&user.name);
    let server = Sshd::start(&otpd, &user);
    let (ok, transcript) = server.login(&user, &code(&secret, now()), "echo OTP-OK");
    assert!(
        ok && transcript.contains("OTP-OK"),
        "{transcript}\n{}",
        otpd.log()
    );
    assert!(transcript.contains("Verification code"), "{transcript}");
    assert!(
        otpd.log()
            .contains(&format!("user={} rhost=127.0.0.1", user.name)),
        "{}",
        otpd.log()
    );
}

#[test]
fn ssh_login_with_a_wrong_code_is_refused() {
    if !sshd::available() {
        return;
    }
    let user = TestUser::create();
    let otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&user.name);
    let right = code(&secret, now());
    let wrong = if right == "123456" {
        "654321"
    } else {
        "123456"
    };
    let server = Sshd::start(&otpd, &user);
    let (ok, transcript) = server.login(&user, wrong, "echo OTP-OK");
    assert!(!ok, "{transcript}");
    assert!(!transcript.contains("OTP-OK"), "{transcript}");
    otpd.assert_logged("denied: wrong code");
}

#[test]
fn a_new_user_enrolls_during_the_ssh_login_itself() {
    if !sshd::available() {
        return;
    }
    let user = TestUser::create();
    let otpd = Daemon::start("[policy]\nunenrolled = \"enroll\"\n");
    let server = Sshd::start(&otpd, &user);
    let (ok, transcript) = server.login(&user, "ENROLL", "echo OTP-OK");
    assert!(
        ok && transcript.contains("OTP-OK"),
        "{transcript}\n{}",
        otpd.log()
    );
    assert!(
        transcript.contains('█'),
        "the QR code reached the ssh client: {transcript}"
    );
    otpd.assert_logged("allowed (enrolled at first login)");
    let status = otpd.otpctl_json(&["--user", &user.name, "status"]);
    assert_eq!(status["totp"], "active");
}
