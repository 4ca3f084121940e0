//! Issue 11's attacks on bounded input, mounted the way an attacker mounts them: a local user's
//! own google-authenticator file with a window of 2^32-1, the same key as a hand-made frame on
//! the socket, configurations `check-config` used to call ok, and a symlink planted where root
//! writes recovery codes. Each must fail, and otpd must keep answering.

use otp_e2e::daemon::describe;
use otp_e2e::{artifacts, me, skip, Daemon};
use otp_proto::client::Connection;
use otp_proto::{Command, CommandReply, ImportedKey, Refusal, Reply, Request, Secret};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// A file `nobody` can read, in a directory `nobody` can enter.
fn users_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// otpd still answers a status request, and says how long it took.
fn still_answers(otpd: &Daemon) {
    let started = Instant::now();
    let status = otpd.otpctl(&["--user", &me(), "status"]);
    assert!(status.status.success(), "{}", describe(&status));
    eprintln!("otpctl status answered in {:?}", started.elapsed());
}

#[test]
fn a_local_users_import_with_a_window_of_billions_is_refused_by_otpctl() {
    if !skip::require_root() {
        return;
    }
    let otpd = Daemon::start("");
    let files = tempfile::tempdir().unwrap();
    let attacks = [
        (
            "\" HOTP_COUNTER 1\n\" WINDOW_SIZE 4294967295\n",
            "a window above 100 is refused",
        ),
        (
            "\" HOTP_COUNTER 1\n\" WINDOW_SIZE 1000000\n",
            "a window above 100 is refused",
        ),
        (
            "\" HOTP_COUNTER 18446744073709551615\n",
            "an HOTP counter above",
        ),
        (
            "\" STEP_SIZE 18446744073709551615\n",
            "period must be 1..=300 seconds",
        ),
    ];
    for (i, (options, says)) in attacks.iter().enumerate() {
        let file = users_file(
            files.path(),
            &format!("ga{i}"),
            &format!("JBSWY3DPEHPK3PXP\n{options}"),
        );
        let file = file.to_str().unwrap();
        let out = otpd.otpctl_as_nobody(&["import", "google-authenticator", file]);
        assert_eq!(out.status.code(), Some(2), "{options}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{options}: {stderr}");
    }
    // Nothing was imported: the user has no key, and a verify cannot take 11 minutes.
    let started = Instant::now();
    let verify = otpd.otpctl_as_nobody(&["verify", "000000"]);
    assert!(!verify.status.success(), "{}", describe(&verify));
    eprintln!("otpctl verify 000000 answered in {:?}", started.elapsed());
    still_answers(&otpd);
}

/// The key of the attack as a frame written straight to the socket with otp_proto's client,
/// past otpctl's own check: otpd refuses it itself, whoever sends it.
#[test]
fn a_hand_made_import_frame_with_a_window_of_2_32_is_refused_by_otpd() {
    let otpd = Daemon::start("");
    let key = |window, counter| ImportedKey {
        secret: Secret::new("JBSWY3DPEHPK3PXP"),
        algorithm: "SHA1".into(),
        digits: 6,
        period: 30,
        hotp_counter: Some(counter),
        window: Some(window),
        recovery_codes: Vec::new(),
    };
    let frames = [
        (key(u32::MAX, 1), "a window above 100 is refused"),
        (key(5, u64::MAX), "an HOTP counter above"),
    ];
    // One command per connection, as otpd serves them.
    let call = |request: &Request| {
        Connection::connect(&otpd.socket, Duration::from_secs(10))
            .unwrap()
            .call(request)
    };
    for (key, says) in frames {
        let request = Request::Command(Command::Import {
            user: None,
            key,
            proof: None,
        });
        match call(&request) {
            Ok(Reply::Refused(Refusal::BadRequest(why))) => assert!(why.contains(says), "{why}"),
            other => panic!(
                "a hand-made frame was not refused: {other:?}\n{}",
                otpd.log()
            ),
        }
    }
    let status = Request::Command(Command::Status { user: None });
    match call(&status) {
        Ok(Reply::Done(CommandReply::Status(s))) => {
            assert_eq!(s.totp, otp_proto::MethodState::None, "nothing was imported")
        }
        other => panic!("otpd stopped answering: {other:?}"),
    }
    still_answers(&otpd);
}

/// A config in its own directory, with a socket and state dir there, and secret files.
struct ConfigDir {
    dir: tempfile::TempDir,
}

impl ConfigDir {
    fn new() -> ConfigDir {
        let dir = tempfile::tempdir().unwrap();
        otp_e2e::daemon::keygen(&dir.path().join("key"));
        ConfigDir { dir }
    }

    fn secret(&self, name: &str, mode: u32) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn write(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("otpd.toml");
        std::fs::write(
            &path,
            format!(
                "socket = {:?}\nstate_dir = {:?}\nkey_file = {:?}\n{text}",
                self.dir.path().join("otpd.sock"),
                self.dir.path().join("state"),
                self.dir.path().join("key")
            ),
        )
        .unwrap();
        path
    }
}

fn check_config(config: &Path) -> Output {
    std::process::Command::new(artifacts::otpd())
        .arg("--config")
        .arg(config)
        .arg("check-config")
        .output()
        .unwrap()
}

/// Start the daemon on `config`; it must exit by itself. Ten seconds is only a backstop for a
/// daemon that wrongly starts (it is then killed and the test fails); nothing is timed.
fn daemon_exit(config: &Path) -> (Option<i32>, String) {
    let child = std::process::Command::new(artifacts::otpd())
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(out)) => (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Ok(Err(e)) => panic!("waiting for otpd: {e}"),
        Err(_) => {
            // SAFETY: kill(2) on our own child, which is still running.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("otpd started on a configuration check-config refuses");
        }
    }
}

#[test]
fn check_config_refuses_what_the_daemon_refuses_naming_the_key() {
    let dir = ConfigDir::new();
    let open_token = dir.secret("open.token", 0o644);
    let group_token = dir.secret("group.token", 0o660);
    let twilio = |token: &Path| {
        format!(
            "[sms]\nprovider = \"twilio\"\n[sms.twilio]\naccount_sid = \"AC1\"\n\
             auth_token_file = {token:?}\nfrom = \"+15005550006\"\n"
        )
    };
    let email_with = |password: &Path| {
        format!(
            "[email]\nhost = \"127.0.0.1\"\nfrom = \"otp@example.com\"\nusername = \"otp\"\n\
             password_file = {password:?}\n"
        )
    };
    let mut cases: Vec<(String, &str)> = vec![
        ("[sms]\nprovider = \"twilio\"\n".into(), "sms.provider"),
        ("socket = \"\"\n".into(), "socket"),
        ("[users.x]\nphone = \"123\"\n".into(), "users.x.phone"),
        (
            "[sms]\nprovider = \"custom\"\n[sms.custom]\nurl = \"ftp://x\"\n\
             template = \"{{mobile}} {{body}}\"\n"
                .into(),
            "sms.custom.url",
        ),
        (
            "[sms]\nprovider = \"custom\"\n[sms.custom]\nurl = \"https://x\"\n\
             template = \"{{nope}}\"\n"
                .into(),
            "sms.custom.template",
        ),
        (
            "answer_timeout = \"18446744073709551615s\"\n".into(),
            "answer_timeout",
        ),
        (
            "[lockout]\nlock_for = \"500000000years\"\n".into(),
            "lockout.lock_for",
        ),
        (twilio(&open_token), "twilio.auth_token_file"),
        (twilio(&group_token), "twilio.auth_token_file"),
        (email_with(&open_token), "password_file"),
    ];
    if skip::is_root() {
        let foreign = dir.secret("foreign.token", 0o600);
        std::os::unix::fs::chown(&foreign, Some(65534), None).unwrap();
        cases.push((email_with(&foreign), "password_file"));
    }
    for (text, key) in &cases {
        // A duplicate `socket` key would itself be an error: that case replaces the line.
        let config = if text.starts_with("socket") {
            let path = dir.dir.path().join("otpd.toml");
            std::fs::write(&path, text).unwrap();
            path
        } else {
            dir.write(text)
        };
        let out = check_config(&config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {}", describe(&out));
        assert!(stderr.contains(key), "{text}: {stderr}");
        assert!(stderr.contains("otpd.toml"), "names the file: {stderr}");
        let (code, log) = daemon_exit(&config);
        assert_ne!(code, Some(0), "{text}: {log}");
        assert!(log.contains(key), "the daemon names {key} too: {log}");
    }
}

#[test]
fn check_config_accepts_private_secret_files() {
    let dir = ConfigDir::new();
    let token = dir.secret("twilio.token", 0o600);
    let config = dir.write(&format!(
        "[sms]\nprovider = \"twilio\"\n[sms.twilio]\naccount_sid = \"AC1\"\n\
         auth_token_file = {token:?}\nfrom = \"+15005550006\"\n\
         [users.alice]\nphone = \"+12025550123\"\n"
    ));
    let out = check_config(&config);
    assert!(out.status.success(), "{}", describe(&out));
}

/// Root writes recovery codes for alice into alice's directory; alice planted a symlink there
/// to a file of root's. otpctl refuses, and the file behind the link is untouched.
#[test]
fn codes_file_refuses_a_symlink_the_target_user_planted() {
    let otpd = Daemon::start("");
    let user = me();
    let home = tempfile::tempdir().unwrap();
    let precious = home.path().join("precious");
    std::fs::write(&precious, "root's data\n").unwrap();
    let link = home.path().join("codes");
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    let dangling = home.path().join("dangling");
    std::os::unix::fs::symlink(home.path().join("nothing-yet"), &dangling).unwrap();
    for path in [&link, &dangling, &precious] {
        let out = otpd.otpctl(&[
            "--json",
            "--user",
            &user,
            "enroll",
            "totp",
            "--codes-file",
            path.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        // --json reports errors as JSON on stdout.
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("already exists (or is a symlink)"),
            "{}",
            describe(&out)
        );
    }
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "root's data\n");
    assert!(!home.path().join("nothing-yet").exists());
    // Refused before asking otpd: no enrollment was started.
    let status = otpd.otpctl_json(&["--user", &user, "status"]);
    assert_eq!(status["totp"], "none", "{status}");

    let fresh = home.path().join("fresh");
    let out = otpd.otpctl(&[
        "--json",
        "--user",
        &user,
        "enroll",
        "totp",
        "--codes-file",
        fresh.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let meta = std::fs::symlink_metadata(&fresh).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&fresh).unwrap().lines().count(), 8);
}
