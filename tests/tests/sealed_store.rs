//! Secrets at rest, attacked the way someone with a copy of the state directory (a backup, a
//! stolen disk) or write access to one record would: TOTP keys are sealed under the key file,
//! bound to their user and field, and the key file itself must be private.

use otp_e2e::daemon::{describe, keygen};
use otp_e2e::pam::{self, PAM_SUCCESS};
use otp_e2e::totp::{code, now};
use otp_e2e::{artifacts, me, Daemon, PamService};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `grep -r NEEDLE DIR`: true when grep finds it.
fn grep_finds(dir: &Path, needle: &str) -> bool {
    let out = Command::new("grep")
        .args(["-r", "-q", needle])
        .arg(dir)
        .output()
        .expect("grep");
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("grep: {}", describe(&out)),
    }
}

/// A login with the stack `pam_permit` + `pam_otp nullok`: an unenrolled user passes it, so it
/// shows a record that fails to open is not taken for "not enrolled".
fn nullok_login(otpd: &Daemon, user: &str, answer: &str) -> otp_e2e::PamRun {
    PamService::new(&format!(
        "auth required pam_permit.so\n{}",
        PamService::otp_line(otpd, "nullok")
    ))
    .login(user, &[answer])
}

/// A current code for `secret` that the enrollment's confirming code (the previous step) has
/// not used up.
fn current(secret: &str) -> String {
    code(secret, now())
}

/// Run otpd on `config` expecting it to refuse to start; its stderr.
fn refused_start(config: &Path, env: &[(&str, &Path)]) -> String {
    let child = Command::new(artifacts::otpd())
        .arg("--config")
        .arg(config)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start otpd");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out: Output = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => out.expect("wait for otpd"),
        Err(_) => {
            // SAFETY: kill(2) on our own child, which did not exit.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("otpd started although it should have refused");
        }
    };
    assert!(!out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn enrolled_and_pending_keys_are_not_in_the_state_directory_and_still_log_in() {
    if !pam::available() {
        return;
    }
    let mut otpd = Daemon::start("");
    let active = otpd.enroll_totp(&me());
    let pending = otpd.otpctl_json(&["--user", "nobody", "enroll", "totp"])["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let state = otpd.state_dir();
    assert!(!grep_finds(&state, &active), "the active key is on disk");
    assert!(!grep_finds(&state, &pending), "the pending key is on disk");
    assert!(grep_finds(&state, "sealed:v1:"));
    let key_mode = std::fs::metadata(&otpd.key_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);

    // A fresh process reads the sealed key back from disk.
    otpd.restart();
    let run = nullok_login(&otpd, &me(), &current(&active));
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
    assert!(!otpd.log().contains(&active), "the key is never logged");
}

#[test]
fn a_sealed_key_copied_into_another_users_record_does_not_log_that_user_in() {
    if !pam::available() {
        return;
    }
    let mut otpd = Daemon::start("");
    // The attacker knows their own key, and can write records (a restored backup, a writable
    // copy of the state): they put their own sealed key into the victim's record.
    let attackers = otpd.enroll_totp("nobody");
    otpd.enroll_totp(&me());
    otpd.stop();
    let users = otpd.state_dir().join("users");
    std::fs::copy(
        users.join("nobody.json"),
        users.join(format!("{}.json", me())),
    )
    .unwrap();
    otpd.restart();
    let run = nullok_login(&otpd, &me(), &current(&attackers));
    assert_ne!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
    otpd.assert_logged(&format!(
        "user {:?}: the totp secret cannot be decrypted with the configured key",
        me()
    ));
    assert!(!otpd.log().contains("not enrolled"), "{}", otpd.log());
}

#[test]
fn another_key_cannot_open_the_records_and_they_are_never_taken_for_unenrolled() {
    if !pam::available() {
        return;
    }
    let mut otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    otpd.stop();
    std::fs::remove_file(&otpd.key_file).unwrap();
    keygen(&otpd.key_file);
    otpd.restart();
    let run = nullok_login(&otpd, &me(), &current(&secret));
    assert_ne!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
    otpd.assert_logged(&format!(
        "user {:?}: the totp secret cannot be decrypted with the configured key",
        me()
    ));
    assert!(!otpd.log().contains("not enrolled"), "{}", otpd.log());
}

#[test]
fn a_plaintext_record_from_before_sealing_logs_in_and_is_sealed_on_its_next_write() {
    if !pam::available() {
        return;
    }
    let mut otpd = Daemon::start("");
    otpd.stop();
    // As every installation before sealing wrote it.
    let secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let record = format!(
        r#"{{"totp":{{"secret":"{secret}","algorithm":"SHA1","digits":6,"period":30,"created":1}}}}"#
    );
    let path = otpd.state_dir().join(format!("users/{}.json", me()));
    std::fs::write(&path, record).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    otpd.restart();
    let run = nullok_login(&otpd, &me(), &current(secret));
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());

    let out = otpd.otpctl(&["--user", &me(), "default", "totp"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!grep_finds(&otpd.state_dir(), secret), "sealed on write");
    assert!(grep_finds(&otpd.state_dir(), "sealed:v1:"));
}

#[test]
fn rekey_is_refused_while_otpd_runs_then_reseals_everything_under_the_new_key() {
    if !pam::available() {
        return;
    }
    let mut otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    let new_key = otpd.dir().join("new.key");
    keygen(&new_key);
    let old_text = std::fs::read_to_string(&otpd.key_file).unwrap();
    let rekey = |otpd: &Daemon| {
        Command::new(artifacts::otpd())
            .arg("--config")
            .arg(&otpd.config)
            .arg("rekey")
            .arg(&new_key)
            .output()
            .expect("otpd rekey")
    };

    let busy = rekey(&otpd);
    assert!(!busy.status.success(), "{}", describe(&busy));
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("otpd is running"),
        "{}",
        describe(&busy)
    );
    assert_eq!(std::fs::read_to_string(&otpd.key_file).unwrap(), old_text);

    otpd.stop();
    let done = rekey(&otpd);
    assert!(done.status.success(), "{}", describe(&done));
    assert!(String::from_utf8_lossy(&done.stdout).contains("1 record(s) re-sealed"));
    let new_text = std::fs::read_to_string(&new_key).unwrap();
    assert_eq!(std::fs::read_to_string(&otpd.key_file).unwrap(), new_text);
    assert!(!grep_finds(&otpd.state_dir(), &secret));
    // Safe to run again (as after an interruption).
    let again = rekey(&otpd);
    assert!(again.status.success(), "{}", describe(&again));

    // Under the new key only, the record opens.
    std::fs::remove_file(&new_key).unwrap();
    otpd.restart();
    let run = nullok_login(&otpd, &me(), &current(&secret));
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
}

#[test]
fn otpd_refuses_a_key_file_that_is_missing_open_to_others_or_someone_elses() {
    if !otp_e2e::skip::require_root() {
        return;
    }
    let mut otpd = Daemon::start("");
    otpd.stop();
    let key = otpd.key_file.clone();
    let shown = key.display().to_string();

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = refused_start(&otpd.config, &[]);
    assert!(
        err.contains(&format!("{shown}: the key file is open to group or others")),
        "{err}"
    );
    assert!(err.contains(&format!("chmod 600 {shown}")), "{err}");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&key, Some(65534), None).unwrap();
    let err = refused_start(&otpd.config, &[]);
    assert!(err.contains("belongs to uid 65534"), "{err}");
    assert!(err.contains(&format!("chown root {shown}")), "{err}");

    std::os::unix::fs::chown(&key, Some(0), None).unwrap();
    let before = std::fs::read(&key).unwrap();
    let again = Command::new(artifacts::otpd())
        .args(["keygen", "--key-file"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "keygen never overwrites: {}",
        describe(&again)
    );
    assert_eq!(std::fs::read(&key).unwrap(), before);

    std::fs::remove_file(&key).unwrap();
    let err = refused_start(&otpd.config, &[]);
    assert!(
        err.contains(&format!("no key file at {shown}; run `otpd keygen`")),
        "{err}"
    );
    assert!(!otpd.socket.exists(), "nothing was served");
}

#[test]
fn a_systemd_credential_is_used_instead_of_key_file() {
    if !pam::available() {
        return;
    }
    let mut otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    otpd.stop();
    // As LoadCredential=otpd.key:... leaves it: the key under $CREDENTIALS_DIRECTORY, and
    // key_file gone (so only the credential can open the record).
    let credentials = otpd.dir().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::rename(&otpd.key_file, credentials.join("otpd.key")).unwrap();
    otpd.env
        .push(("CREDENTIALS_DIRECTORY".into(), credentials.clone()));
    otpd.restart();
    let run = nullok_login(&otpd, &me(), &current(&secret));
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());

    // The credential is held to the same rules as the file.
    otpd.stop();
    let credential = credentials.join("otpd.key");
    std::fs::set_permissions(&credential, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = refused_start(&otpd.config, &[("CREDENTIALS_DIRECTORY", &credentials)]);
    assert!(
        err.contains(&format!("{}: the key file is open", credential.display())),
        "{err}"
    );
}

#[test]
fn temp_files_left_by_a_kill_are_removed_at_the_next_start_but_never_under_a_live_otpd() {
    let mut otpd = Daemon::start("");
    otpd.enroll_totp(&me());
    // What a SIGKILL between writing a temp file and renaming it leaves behind.
    let stale = [
        otpd.state_dir()
            .join(format!("users/{}.json.tmp999999", me())),
        otpd.state_dir().join("used-steps.json.tmp999999"),
    ];
    for path in &stale {
        std::fs::write(path, b"{ half a reco").unwrap();
    }
    // A second otpd on the same state directory, while the first runs, must leave them: they
    // could be the live one's writes in flight.
    let second = otpd.dir().join("second.toml");
    std::fs::write(
        &second,
        format!(
            "socket = {:?}\nstate_dir = {:?}\nkey_file = {:?}\n",
            otpd.dir().join("second.sock"),
            otpd.state_dir(),
            otpd.key_file
        ),
    )
    .unwrap();
    let err = refused_start(&second, &[]);
    assert!(
        err.contains("another otpd is using this state directory"),
        "{err}"
    );
    assert!(stale.iter().all(|p| p.exists()));

    otpd.restart_after_crash();
    otpd.assert_logged("removed 2 temp file(s) left by an interrupted write");
    for path in &stale {
        assert!(!path.exists(), "{} is still there", path.display());
    }
    let status = otpd.otpctl(&["--user", &me(), "status"]);
    assert!(status.status.success(), "{}", describe(&status));
}
