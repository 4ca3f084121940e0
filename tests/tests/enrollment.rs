//! Enrollment and self-service as a person meets them: the interactive flow in a real pty (its
//! QR code decodes back to the URI), recovery codes, and who may touch whose enrollment.

use otp_e2e::daemon::describe;
use otp_e2e::pam::{self, PAM_AUTH_ERR, PAM_SUCCESS};
use otp_e2e::totp::{code, now};
use otp_e2e::{artifacts, me, skip, Daemon, PamService};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Turn the terminal QR block (half blocks, light modules drawn) back into an image and decode
/// it with zbarimg.
fn decode_terminal_qr(lines: &[String], dir: &Path) -> String {
    let mut rows: Vec<Vec<bool>> = Vec::new();
    for line in lines {
        let (mut top, mut bottom) = (Vec::new(), Vec::new());
        for c in line.chars() {
            // Drawn halves are light modules; undrawn ones are dark.
            top.push(!matches!(c, '█' | '▀'));
            bottom.push(!matches!(c, '█' | '▄'));
        }
        rows.push(top);
        rows.push(bottom);
    }
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let scale = 6;
    let border = 4 * scale;
    let (w, h) = (width * scale + 2 * border, rows.len() * scale + 2 * border);
    let mut pbm = format!("P1\n{w} {h}\n");
    for y in 0..h {
        let line: Vec<&str> = (0..w)
            .map(|x| {
                let (mx, my) = (
                    x.wrapping_sub(border) / scale,
                    y.wrapping_sub(border) / scale,
                );
                let dark = x >= border
                    && y >= border
                    && rows
                        .get(my)
                        .and_then(|r| r.get(mx))
                        .copied()
                        .unwrap_or(false);
                if dark {
                    "1"
                } else {
                    "0"
                }
            })
            .collect();
        pbm.push_str(&line.join(" "));
        pbm.push('\n');
    }
    let image = dir.join("qr.pbm");
    std::fs::write(&image, pbm).unwrap();
    let out = Command::new("zbarimg")
        .args(["--quiet", "--raw"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "zbarimg could not read the QR code: {}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_interactive_enrollment_shows_a_scannable_qr_code_and_saves_private_codes() {
    if !skip::require_file("/usr/bin/zbarimg", "zbar-tools")
        || !skip::require(
            Path::new("/usr/lib/python3/dist-packages/pexpect").exists(),
            "pexpect missing (apt-get install python3-pexpect)",
        )
    {
        return;
    }
    let otpd = Daemon::start("[totp]\nissuer = \"ACME\"\n");
    let dir = tempfile::tempdir().unwrap();
    let (codes_file, qr_file) = (dir.path().join("codes.txt"), dir.path().join("qr.txt"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("helpers/enroll_pty.py");
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(artifacts::otpctl())
        .arg(&otpd.config)
        .arg(&codes_file)
        .arg(&qr_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["exit"], 0, "{seen}");
    let uri = seen["uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/ACME:"), "{uri}");

    let qr: Vec<String> = std::fs::read_to_string(&qr_file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(qr.len() > 10, "a QR block was drawn: {qr:?}");
    assert_eq!(
        decode_terminal_qr(&qr, dir.path()),
        uri,
        "the QR code decodes to the URI"
    );

    let mode = std::fs::metadata(&codes_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the codes file is private");
    let saved: Vec<String> = std::fs::read_to_string(&codes_file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let shown: Vec<String> = seen["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(saved.len(), 8);
    assert_eq!(saved, shown, "the file holds the codes shown on screen");
    assert_eq!(otpd.otpctl_json(&["status"])["totp"], "active");
}

/// Enroll with --json and confirm; returns (secret, recovery codes).
fn enroll_with_codes(otpd: &Daemon) -> (String, Vec<String>) {
    let e = otpd.otpctl_json(&["enroll", "totp"]);
    let secret = e["secret"].as_str().unwrap().to_owned();
    let codes: Vec<String> = e["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    otpd.confirm(&me(), |t| code(&secret, t - 30));
    (secret, codes)
}

#[test]
fn a_recovery_code_logs_in_once_at_the_code_prompt() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    let (_, codes) = enroll_with_codes(&otpd);
    assert_eq!(codes.len(), 8);
    assert_eq!(otpd.otpctl_json(&["status"])["recovery_codes_left"], 8);
    let service = PamService::otp(&otpd, "");
    let run = service.login(&me(), &[&codes[0].to_lowercase()]);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
    assert!(
        run.lines
            .iter()
            .any(|l| l.contains("Recovery code accepted; 7 left")),
        "{run:?}"
    );
    let again = service.login(&me(), &[&codes[0]]);
    assert_eq!(
        again.code, PAM_AUTH_ERR,
        "a recovery code works once: {again:?}"
    );
    assert_eq!(otpd.otpctl_json(&["status"])["recovery_codes_left"], 7);
    otpd.assert_logged("allowed (recovery code)");
}

#[test]
fn a_pending_enrollments_codes_count_only_once_it_is_confirmed() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    let e = otpd.otpctl_json(&["enroll", "totp"]);
    let first = e["recovery_codes"][0].as_str().unwrap();
    let run = PamService::otp(&otpd, "").login(&me(), &[first]);
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert_eq!(otpd.otpctl_json(&["status"])["recovery_codes_left"], 0);
}

#[test]
fn new_recovery_codes_need_proof_and_kill_the_old_set() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    let (secret, old) = enroll_with_codes(&otpd);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("codes");
    let wrong = otpd.otpctl(&["recovery-codes", "000000"]);
    assert_eq!(wrong.status.code(), Some(1), "{}", describe(&wrong));
    let fresh = otpd.otpctl_json(&[
        "recovery-codes",
        &code(&secret, now()),
        "--codes-file",
        file.to_str().unwrap(),
    ]);
    let new: Vec<&str> = fresh["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(new.len(), 8);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let service = PamService::otp(&otpd, "");
    assert_eq!(
        service.login(&me(), &[&old[1]]).code,
        PAM_AUTH_ERR,
        "the old set is dead"
    );
    assert_eq!(
        service.login(&me(), &[new[1]]).code,
        PAM_SUCCESS,
        "{}",
        otpd.log()
    );
}

#[test]
fn a_user_cannot_touch_another_users_enrollment() {
    if !skip::require_root() {
        return;
    }
    let otpd = Daemon::start("");
    otpd.enroll_totp(&me());
    for args in [
        vec!["--user", "root", "disable"],
        vec!["--user", "root", "recovery-codes", "123456"],
        vec!["--user", "root", "enroll", "totp"],
        vec!["--user", "root", "verify", "123456"],
        vec!["--user", "root", "send"],
    ] {
        let out = otpd.otpctl_as_nobody(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("permission denied"),
            "{args:?}"
        );
    }
    assert_eq!(
        otpd.otpctl_json(&["status"])["totp"],
        "active",
        "root's enrollment is intact"
    );
}

#[test]
fn first_login_enrollment_shows_the_key_confirms_and_hands_out_recovery_codes() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("[policy]\nunenrolled = \"enroll\"\n");
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    let prompt = login.next_prompt().expect("the enrollment prompt");
    let key = key_in(&prompt);
    login.send(&code(&key, now()));
    let run = login.finish();
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
    assert!(
        run.lines
            .iter()
            .any(|l| l.starts_with("INFO: Set up your second factor") && l.contains('█')),
        "{run:?}"
    );
    let codes_line = run
        .lines
        .iter()
        .find(|l| l.contains("Your recovery codes"))
        .expect("codes shown");
    assert_eq!(codes_line.matches('-').count(), 8, "{codes_line}");
    let status = otpd.otpctl_json(&["status"]);
    assert_eq!(status["totp"], "active");
    assert_eq!(status["recovery_codes_left"], 8);
    // From now on it is an ordinary login.
    let next = service.login(&me(), &[&code(&key, now() + 30)]);
    assert_eq!(next.code, PAM_SUCCESS, "{next:?}");
    assert_eq!(next.prompts(), vec!["Verification code: "]);
}

#[test]
fn an_unconfirmed_first_login_enrollment_shows_the_same_key_next_time() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("[policy]\nunenrolled = \"enroll\"\n");
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    let key = key_in(&login.next_prompt().unwrap());
    login.send("");
    let run = login.finish();
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    let mut again = service.start(&me());
    assert_eq!(key_in(&again.next_prompt().unwrap()), key);
    again.send(&code(&key, now()));
    assert_eq!(again.finish().code, PAM_SUCCESS);
}

#[test]
fn policy_allow_lets_unenrolled_users_in_and_says_so() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("[policy]\nunenrolled = \"allow\"\n");
    let service = PamService::new(&format!(
        "auth required pam_permit.so\n{}",
        PamService::otp_line(&otpd, "")
    ));
    assert_eq!(service.login(&me(), &[]).code, PAM_SUCCESS);
    otpd.assert_logged("policy unenrolled = allow");
}

#[test]
fn a_default_method_skips_the_menu() {
    if !pam::available() || !otp_e2e::smtp::available() {
        return;
    }
    let server = otp_e2e::smtp::SmtpServer::start(Default::default(), None);
    let otpd = Daemon::start(&format!(
        "[policy]\ndefault_method = \"totp\"\n[code]\nresend_after = \"1ms\"\n{}[users.\"{}\"]\nemail = \"me@example.com\"\n",
        otp_e2e::smtp::email_section(server.port, "none", ""),
        me()
    ));
    let secret = enroll_totp_proving_email(&otpd, &server);
    let service = PamService::otp(&otpd, "");
    let run = service.login(&me(), &[&code(&secret, now())]);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}");
    assert_eq!(
        run.prompts(),
        vec!["Verification code: "],
        "policy default: no menu"
    );
    // The user's own default wins over the policy's.
    otpd.otpctl_json(&["default", "email"]);
    let mut login = service.start(&me());
    assert!(login
        .next_prompt()
        .unwrap()
        .contains("A code was sent to m***@e***.com"));
    login.send(&server.next_mail().code());
    assert_eq!(login.finish().code, PAM_SUCCESS);
}

/// The key in a first-login enrollment prompt ("Or type the key ABCD EFGH ... (SHA1, ...").
fn key_in(prompt: &str) -> String {
    let after = prompt
        .split("type the key ")
        .nth(1)
        .expect("a key in the prompt");
    after.split(" (").next().unwrap().replace(' ', "")
}

fn google_authenticator(args: &[&str], file: &Path) -> Vec<String> {
    let out = Command::new("google-authenticator")
        .args(args)
        .args(["-f", "-q", "-C", "-Q", "NONE", "-w", "3", "-s"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn have_google_authenticator() -> bool {
    pam::available()
        && skip::require_file(
            "/usr/bin/google-authenticator",
            "libpam-google-authenticator",
        )
}

#[test]
fn a_google_authenticator_totp_file_imports_and_the_same_app_keeps_working() {
    if !have_google_authenticator() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("google_authenticator");
    let lines = google_authenticator(&["-t", "-d", "-r", "3", "-R", "30", "-e", "3"], &file);
    let (secret, scratch) = (&lines[0], &lines[lines.len() - 1]);
    let otpd = Daemon::start("");
    let imported = otpd.otpctl_json(&["import", "google-authenticator", file.to_str().unwrap()]);
    assert_eq!(imported["ok"], true, "{imported}");
    let status = otpd.otpctl_json(&["status"]);
    assert_eq!(status["totp"], "active");
    assert_eq!(
        status["recovery_codes_left"], 3,
        "scratch codes became recovery codes"
    );
    let service = PamService::otp(&otpd, "");
    assert_eq!(
        service.login(&me(), &[&code(secret, now())]).code,
        PAM_SUCCESS,
        "{}",
        otpd.log()
    );
    assert_eq!(
        service.login(&me(), &[scratch]).code,
        PAM_SUCCESS,
        "a scratch code works once"
    );
    assert_eq!(service.login(&me(), &[scratch]).code, PAM_AUTH_ERR);
}

#[test]
fn a_google_authenticator_hotp_file_imports_with_its_counter() {
    if !have_google_authenticator() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("google_authenticator");
    let lines = google_authenticator(&["-c", "-u", "-e", "1"], &file);
    let otpd = Daemon::start("");
    otpd.otpctl_json(&["import", "google-authenticator", file.to_str().unwrap()]);
    let hotp = |counter: u32| {
        let out = Command::new("oathtool")
            .args(["--hotp", "-b", "-c", &counter.to_string(), &lines[0]])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let service = PamService::otp(&otpd, "");
    assert_eq!(
        service.login(&me(), &[&hotp(1)]).code,
        PAM_SUCCESS,
        "{}",
        otpd.log()
    );
    assert_eq!(
        service.login(&me(), &[&hotp(1)]).code,
        PAM_AUTH_ERR,
        "each counter once"
    );
    assert_eq!(
        service.login(&me(), &[&hotp(3)]).code,
        PAM_SUCCESS,
        "a skipped counter is fine"
    );
}

#[test]
fn a_pam_oath_usersfile_imports_and_oathtool_codes_log_in() {
    if !pam::available() {
        return;
    }
    let hex = "3132333435363738393031323334353637383930";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.oath");
    std::fs::write(
        &file,
        format!("HOTP/T30 {} - {hex}\nHOTP/T30 someone-else - 00ff\n", me()),
    )
    .unwrap();
    let otpd = Daemon::start("");
    let out = otpd.otpctl_json(&["--user", &me(), "import", "oath", file.to_str().unwrap()]);
    assert_eq!(out["imported"], serde_json::json!([me()]), "{out}");
    let totp = Command::new("oathtool")
        .args(["--totp", hex])
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&totp.stdout).trim().to_owned();
    let run = PamService::otp(&otpd, "").login(&me(), &[&code]);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
}

/// otpd mailing through `server`, the test user's address on file, TOTP enrolled.
fn with_address(server: &otp_e2e::smtp::SmtpServer, extra: &str) -> (Daemon, String) {
    // No resend cooldown: the code that proves the email factor was just sent.
    let otpd = Daemon::start(&format!(
        "{extra}\n[code]\nresend_after = \"1ms\"\n{}[users.\"{}\"]\nemail = \"me@example.com\"\n",
        otp_e2e::smtp::email_section(server.port, "none", ""),
        me()
    ));
    let secret = enroll_totp_proving_email(&otpd, server);
    (otpd, secret)
}

/// A user who already has email codes adds an app: the new key needs a code mailed to them.
fn enroll_totp_proving_email(otpd: &Daemon, server: &otp_e2e::smtp::SmtpServer) -> String {
    let bare = otpd.otpctl(&["--json", "enroll", "totp"]);
    assert_eq!(bare.status.code(), Some(1), "{}", describe(&bare));
    assert!(String::from_utf8_lossy(&bare.stdout).contains("prove it is you"));
    otpd.otpctl_json(&["send"]);
    let secret = otpd.enroll_totp_proving(&me(), &server.next_mail().code());
    expect_notice(server, "new authenticator app key");
    secret
}

/// The next mail is the notice that a factor changed, saying `what`.
fn expect_notice(server: &otp_e2e::smtp::SmtpServer, what: &str) {
    let notice = server.next_mail();
    let subject = notice.header("Subject").unwrap_or_default();
    assert!(subject.contains("changed"), "{}", notice.raw);
    assert!(notice.raw.contains(what), "{}", notice.raw);
}

fn token_in(mail: &otp_e2e::smtp::Mail) -> String {
    let line = mail.code();
    line.strip_prefix("otpctl disable --token ")
        .unwrap_or(&line)
        .to_owned()
}

#[test]
fn disabling_needs_the_token_mailed_to_the_user() {
    if !otp_e2e::smtp::available() {
        return;
    }
    let server = otp_e2e::smtp::SmtpServer::start(Default::default(), None);
    let (otpd, _) = with_address(&server, "");
    let asked = otpd.otpctl_json(&["disable", "totp"]);
    assert_eq!(asked["token_sent"], "m***@e***.com", "{asked}");
    assert_eq!(
        otpd.otpctl_json(&["status"])["totp"],
        "active",
        "nothing is off yet"
    );
    let mail = server.next_mail();
    assert!(
        mail.header("Subject")
            .unwrap()
            .contains("Confirm turning off"),
        "{}",
        mail.raw
    );
    let token = token_in(&mail);
    assert_eq!(token.len(), 12, "{token}");
    let wrong = otpd.otpctl(&["disable", "totp", "--token", "AAAAAAAAAAAA"]);
    assert_eq!(wrong.status.code(), Some(1), "{}", describe(&wrong));
    let right = otpd.otpctl(&["disable", "totp", "--token", &token]);
    assert!(right.status.success(), "{}", describe(&right));
    let status = otpd.otpctl_json(&["status"]);
    assert_eq!(status["totp"], "none");
    assert_eq!(status["email"], "active", "only the named method is off");
    otpd.assert_logged("the authenticator app turned off");
    // The address on file hears of it.
    expect_notice(&server, "the authenticator app turned off");
}

#[test]
fn an_expired_disable_token_is_refused() {
    if !otp_e2e::smtp::available() {
        return;
    }
    let server = otp_e2e::smtp::SmtpServer::start(Default::default(), None);
    // A 1 ms validity has passed before the SMTP exchange even finishes.
    let (otpd, _) = with_address(&server, "[policy]\ndisable_token_ttl = \"1ms\"\n");
    otpd.otpctl_json(&["disable"]);
    let token = token_in(&server.next_mail());
    let late = otpd.otpctl(&["disable", "--token", &token]);
    assert_eq!(late.status.code(), Some(1), "{}", describe(&late));
    assert!(String::from_utf8_lossy(&late.stderr).contains("expired"));
    assert_eq!(otpd.otpctl_json(&["status"])["totp"], "active");
}

#[test]
fn without_an_address_a_current_code_disables() {
    let otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    let bare = otpd.otpctl(&["disable"]);
    assert_eq!(bare.status.code(), Some(1), "{}", describe(&bare));
    assert!(String::from_utf8_lossy(&bare.stderr).contains("prove it is you"));
    let wrong = otpd.otpctl(&["disable", "--code", "000000"]);
    assert_eq!(wrong.status.code(), Some(1), "{}", describe(&wrong));
    let ok = otpd.otpctl(&["disable", "--code", &code(&secret, now())]);
    assert!(ok.status.success(), "{}", describe(&ok));
    assert_eq!(otpd.otpctl_json(&["status"])["totp"], "none");
}

#[test]
fn an_admin_disables_another_user_at_once() {
    if !skip::require_root() {
        return;
    }
    let otpd = Daemon::start("");
    otpd.enroll_totp("someone-else");
    let out = otpd.otpctl(&["--user", "someone-else", "disable"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        otpd.otpctl_json(&["--user", "someone-else", "status"])["totp"],
        "none"
    );
    otpd.assert_logged("user=someone-else by uid=0: every second factor turned off");
}
