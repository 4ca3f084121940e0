//! `forward_pass`: password and code in one answer, through real libpam (pam_wrapper): pam_otp
//! then `pam_unix.so use_first_pass` for a real user with a real password (useradd + chpasswd,
//! removed in Drop). `pam_exec.so expose_authtok` between them writes down what PAM_AUTHTOK
//! holds after pam_otp, so the tests see that the code is never left in it.
//!
//! The user's method is an 8-digit HOTP token (oathtool --hotp): the code's length comes from
//! the method, and counters make the codes deterministic.

use otp_e2e::daemon::describe;
use otp_e2e::pam::{self, PAM_AUTH_ERR, PAM_SUCCESS};
use otp_e2e::{skip, Daemon, PamService};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

const TOKEN_HEX: &str = "3132333435363738393031323334353637383930";
const PASSWORD: &str = "correct horse €1";

/// One at a time: useradd and userdel lock /etc/passwd.
static ACCOUNTS: Mutex<()> = Mutex::new(());

/// A local user with a password, for pam_unix; removed when dropped.
struct TestUser {
    name: String,
}

impl TestUser {
    fn new(tag: &str) -> TestUser {
        let name = format!("otpfp{}{tag}", std::process::id() % 100_000);
        let _one = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("userdel").arg(&name).output();
        let add = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/usr/sbin/nologin", &name])
            .output()
            .expect("useradd");
        assert!(add.status.success(), "useradd: {}", describe(&add));
        let user = TestUser { name };
        let mut chpasswd = Command::new("chpasswd")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("chpasswd");
        use std::io::Write;
        let stdin = chpasswd.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{}:{PASSWORD}", user.name).expect("write chpasswd");
        assert!(chpasswd.wait().expect("chpasswd").success());
        user
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _one = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

fn token(counter: u64) -> String {
    let out = Command::new("oathtool")
        .args(["--hotp", "-d", "8", "-c", &counter.to_string(), TOKEN_HEX])
        .output()
        .expect("oathtool (apt-get install oathtool)");
    assert!(out.status.success(), "oathtool: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// otpd, the user with the 8-digit token (counter 0 confirmed it), their recovery codes, and
/// the stack pam_otp forward_pass → pam_exec (records PAM_AUTHTOK) → pam_unix use_first_pass.
struct World {
    otpd: Daemon,
    user: TestUser,
    recovery: Vec<String>,
    service: PamService,
    authtok: PathBuf,
}

fn world(tag: &str, before: &str) -> Option<World> {
    if !skip::require_root() || !pam::available() {
        return None;
    }
    let otpd = Daemon::start("");
    let user = TestUser::new(tag);
    let e = otpd.otpctl_json(&[
        "--user", &user.name, "enroll", "hotp", "--secret", TOKEN_HEX, "--digits", "8",
    ]);
    let recovery = e["recovery_codes"]
        .as_array()
        .expect("recovery codes")
        .iter()
        .map(|c| c.as_str().unwrap_or_default().to_owned())
        .collect();
    let verify = otpd.otpctl(&["--user", &user.name, "verify", &token(0)]);
    assert!(verify.status.success(), "{}", describe(&verify));
    let authtok = otpd.dir().join("authtok");
    let script = otpd.dir().join("record-authtok");
    std::fs::write(&script, format!("#!/bin/sh\ncat > {}\n", authtok.display())).expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let stack = format!(
        "{before}{}\nauth optional pam_exec.so expose_authtok quiet {}\n\
         auth required pam_unix.so use_first_pass",
        PamService::otp_line(&otpd, "forward_pass"),
        script.display()
    );
    let service = PamService::new(&stack);
    Some(World {
        otpd,
        user,
        recovery,
        service,
        authtok,
    })
}

impl World {
    fn login(&self, typed: &str) -> otp_e2e::PamRun {
        let _ = std::fs::remove_file(&self.authtok);
        self.service.login(&self.user.name, &[typed])
    }

    /// What PAM_AUTHTOK held after pam_otp (pam_exec writes it with its NUL), if it was set.
    fn authtok(&self) -> Option<String> {
        let bytes = std::fs::read(&self.authtok).ok()?;
        let text = String::from_utf8_lossy(&bytes);
        Some(text.trim_end_matches('\0').to_owned())
    }
}

#[test]
fn password_and_code_in_one_answer_log_in_and_the_next_module_gets_the_password_only() {
    let Some(w) = world("a", "") else { return };
    let run = w.login(&format!("{PASSWORD}{}", token(1)));
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", w.otpd.log());
    assert_eq!(run.prompts(), ["Password & verification code: "], "{run:?}");
    assert_eq!(
        w.authtok().as_deref(),
        Some(PASSWORD),
        "PAM_AUTHTOK is the password alone"
    );
    w.otpd.assert_logged("allowed (totp, forward_pass)");
    assert!(
        !w.otpd.log().contains(PASSWORD),
        "otpd logs nothing of the password"
    );
    // The code is spent: the same answer again is refused.
    let replay = w.login(&format!("{PASSWORD}{}", token(1)));
    assert_eq!(replay.code, PAM_AUTH_ERR, "{replay:?}");
}

#[test]
fn a_wrong_password_a_wrong_code_or_either_alone_all_fail_and_leave_no_code() {
    let Some(w) = world("b", "") else { return };
    let wrong_code = if token(1) == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    // What PAM_AUTHTOK holds after pam_otp: the part before a right code (pam_unix then
    // refuses it), or nothing at all (pam_exec finds it unset and asks, unanswered).
    let cases = [
        (
            "wrong password",
            format!("not the password{}", token(1)),
            Some("not the password"),
        ),
        ("wrong code", format!("{PASSWORD}{wrong_code}"), None),
        ("password alone", PASSWORD.to_owned(), None),
        ("code alone", token(2), Some("")),
    ];
    for (what, typed, left) in &cases {
        let run = w.login(typed);
        assert_eq!(run.code, PAM_AUTH_ERR, "{what}: {run:?}\n{}", w.otpd.log());
        assert_eq!(w.authtok().as_deref(), *left, "{what}: {run:?}");
    }
    // A right code is spent even when the password after it is wrong (pam_otp runs first).
    w.otpd.assert_logged("denied: wrong code");
    let spent = w.login(&format!("{PASSWORD}{}", token(1)));
    assert_eq!(spent.code, PAM_AUTH_ERR, "{spent:?}");
    let next = w.login(&format!("{PASSWORD}{}", token(3)));
    assert_eq!(next.code, PAM_SUCCESS, "{next:?}\n{}", w.otpd.log());
}

#[test]
fn a_recovery_code_with_its_dash_works_in_the_one_answer() {
    let Some(w) = world("c", "") else { return };
    let run = w.login(&format!("{PASSWORD}{}", w.recovery[0]));
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", w.otpd.log());
    assert_eq!(w.authtok().as_deref(), Some(PASSWORD));
    let again = w.login(&format!("{PASSWORD}{}", w.recovery[0]));
    assert_eq!(again.code, PAM_AUTH_ERR, "spent: {again:?}");
}

/// An earlier module set PAM_AUTHTOK (here pam_unix, which asks "Password:" and fails on the
/// combined string): pam_otp takes it from there and asks nothing.
#[test]
fn a_password_and_code_already_in_pam_authtok_are_not_asked_again() {
    let Some(w) = world("d", "auth optional pam_unix.so\n") else {
        return;
    };
    let run = w.login(&format!("{PASSWORD}{}", token(1)));
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", w.otpd.log());
    assert_eq!(run.prompts().len(), 1, "only pam_unix's prompt: {run:?}");
    assert!(!run.prompts()[0].contains("verification code"), "{run:?}");
    assert_eq!(w.authtok().as_deref(), Some(PASSWORD));
}

#[test]
fn forward_pass_is_an_argument_the_module_knows() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    let service = PamService::otp(&otpd, "forward_pass=yes");
    let run = service.login("root", &["x"]);
    assert_eq!(run.code, otp_e2e::pam::PAM_SERVICE_ERR, "{run:?}");
    assert!(run.prompts().is_empty(), "{run:?}");
}
