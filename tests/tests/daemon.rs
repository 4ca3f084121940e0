//! otpd as an adversary or a stranger would meet it: hostile frames, other users' uids, a
//! broken configuration, SIGTERM.

use otp_e2e::daemon::describe;
use otp_e2e::pam::{self, PAM_AUTH_ERR};
use otp_e2e::{artifacts, me, skip, Daemon, PamService};
use otp_proto::frame::{self, read_frame};
use otp_proto::{Command, Refusal, Reply, Request, PROTOCOL_VERSION};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn connect(otpd: &Daemon) -> UnixStream {
    let s = UnixStream::connect(&otpd.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Send raw bytes, close our side, and read whatever comes back (a refusal or nothing).
fn send_raw(otpd: &Daemon, bytes: &[u8]) -> Option<Reply> {
    let mut s = connect(otpd);
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    read_frame::<Reply>(&mut s).ok()
}

/// A tiny deterministic generator, so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn hostile_frames_get_a_refusal_or_a_closed_connection_and_never_crash_the_daemon() {
    let mut otpd = Daemon::start("");

    let mut wrong_version = frame::encode(&Request::Command(Command::Users))
        .unwrap()
        .to_vec();
    wrong_version[5] = wrong_version[5].wrapping_add(1);
    match send_raw(&otpd, &wrong_version) {
        Some(Reply::Refused(Refusal::VersionMismatch { supported, .. })) => {
            assert_eq!(supported, PROTOCOL_VERSION)
        }
        other => panic!("wrong version: {other:?}"),
    }

    let oversized = (frame::MAX_FRAME as u32 + 1).to_be_bytes();
    assert!(matches!(
        send_raw(&otpd, &oversized),
        Some(Reply::Refused(Refusal::BadRequest(_)))
    ));

    let mut garbage = vec![0, 0, 0, 6];
    garbage.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    garbage.extend_from_slice(&[0xff, 0xfe, 0xfd, 0xfc]);
    assert!(matches!(
        send_raw(&otpd, &garbage),
        Some(Reply::Refused(Refusal::BadRequest(_)))
    ));

    let answer_first = frame::encode(&Request::Answer(otp_proto::Secret::new("1"))).unwrap();
    assert!(matches!(
        send_raw(&otpd, &answer_first),
        Some(Reply::Refused(_))
    ));

    let valid = frame::encode(&Request::Command(Command::Status { user: None })).unwrap();
    for cut in 0..valid.len() {
        assert_eq!(send_raw(&otpd, &valid[..cut]), None, "truncated at {cut}");
    }

    let mut rng = XorShift(0x5eed_1234_abcd_0001);
    for _ in 0..300 {
        let len = (rng.next() % 64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if rng.next().is_multiple_of(2) && bytes.len() >= 6 {
            // A plausible header and version, so the body decoder gets exercised.
            let body = (bytes.len() - 4) as u32;
            bytes[..4].copy_from_slice(&body.to_be_bytes());
            bytes[4..6].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        }
        let _ = send_raw(&otpd, &bytes);
    }

    assert!(otpd.is_running(), "otpd died:\n{}", otpd.log());
    assert!(!otpd.log().contains("panicked"), "{}", otpd.log());
    let status = otpd.otpctl(&["status"]);
    assert!(
        status.status.success(),
        "otpd still serves: {}",
        describe(&status)
    );
}

#[test]
fn sigterm_stops_the_daemon_cleanly_and_removes_its_socket() {
    let mut otpd = Daemon::start("");
    assert!(otpd.socket.exists());
    otpd.stop();
    assert!(!otpd.socket.exists(), "the socket is removed on SIGTERM");
    otpd.assert_logged("shutting down");
    assert!(
        otpd.state_dir().join("users").is_dir(),
        "state survives a stop"
    );
}

/// Two daemons on one state directory would each keep their own used codes in memory, so a code
/// could be used once on each: the second one refuses to start.
#[test]
fn a_second_otpd_on_the_same_state_directory_refuses_to_start() {
    let otpd = Daemon::start("");
    let config = otpd.dir().join("second.toml");
    let toml = format!(
        "socket = {:?}\nstate_dir = {:?}\nkey_file = {:?}\n",
        otpd.dir().join("second.sock"),
        otpd.state_dir(),
        otpd.key_file
    );
    std::fs::write(&config, toml).unwrap();
    let out = std::process::Command::new(artifacts::otpd())
        .arg("--config")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run a second otpd");
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another otpd is using this state directory"),
        "{stderr}"
    );
    assert!(!otpd.dir().join("second.sock").exists());
}

#[test]
fn check_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("otpd.toml");
    std::fs::write(&path, "socket = \"/tmp/x\"\n[lockout]\nwindow = \"soon\"\n").unwrap();
    let out = std::process::Command::new(artifacts::otpd())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3:", path.display())), "{err}");
    assert!(err.contains("lockout.window"), "{err}");
    // A valid file, but no sealing key: the daemon would refuse to start, so the check fails.
    let key = dir.path().join("key");
    std::fs::write(&path, format!("key_file = {key:?}\n[totp]\ndigits = 8\n")).unwrap();
    let check = || {
        std::process::Command::new(artifacts::otpd())
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let keyless = check();
    assert_eq!(keyless.status.code(), Some(2), "{}", describe(&keyless));
    assert!(
        String::from_utf8_lossy(&keyless.stderr).contains("run `otpd keygen`"),
        "{}",
        describe(&keyless)
    );
    otp_e2e::daemon::keygen(&key);
    let ok = check();
    assert!(ok.status.success(), "{}", describe(&ok));
}

#[test]
fn otpctl_exit_codes_say_what_happened() {
    let otpd = Daemon::start("");
    let wrong = otpd.otpctl(&["verify", "000000"]);
    assert_eq!(wrong.status.code(), Some(1), "{}", describe(&wrong));
    let usage = otpd.otpctl(&["enroll", "fax"]);
    assert_eq!(usage.status.code(), Some(2), "{}", describe(&usage));
    let down = std::process::Command::new(artifacts::otpctl())
        .args(["--socket", "/nonexistent/otpd.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(3), "{}", describe(&down));
}

#[test]
fn another_uid_may_manage_and_authenticate_only_itself() {
    if !skip::require_root() {
        return;
    }
    let otpd = Daemon::start("");
    otpd.enroll_totp(&me());

    let other = otpd.otpctl_as_nobody(&["--user", &me(), "status"]);
    assert_eq!(other.status.code(), Some(1), "{}", describe(&other));
    assert!(String::from_utf8_lossy(&other.stderr).contains("permission denied"));
    let enroll = otpd.otpctl_as_nobody(&["--user", &me(), "enroll", "totp"]);
    assert_eq!(enroll.status.code(), Some(1), "{}", describe(&enroll));
    let own = otpd.otpctl_as_nobody(&["--json", "status"]);
    assert!(own.status.success(), "{}", describe(&own));
    assert!(String::from_utf8_lossy(&own.stdout).contains("\"user\":\"nobody\""));
    let users = otpd.otpctl_as_nobody(&["users"]);
    assert_eq!(
        users.status.code(),
        Some(1),
        "admin only: {}",
        describe(&users)
    );

    if !pam::available() {
        return;
    }
    // A screen locker running as nobody tries to unlock someone else's session.
    let service = PamService::otp(&otpd, "");
    std::fs::set_permissions(service.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let started = pam::WrapperLock::take();
    let out = skip::as_nobody(&artifacts::pamclient())
        .args([&service.name, &me()])
        .env("LD_PRELOAD", pam::wrapper().unwrap())
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", service.dir())
        .output()
        .unwrap();
    drop(started);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("RESULT: {PAM_AUTH_ERR} ")), "{text}");
    otpd.assert_logged("may not authenticate this user");
}

#[test]
fn one_user_holding_connections_cannot_lock_others_out() {
    if !skip::require_root() {
        return;
    }
    let otpd = Daemon::start("");
    // Opens the test dir to others as a side effect, so nobody can reach the socket.
    let before = otpd.otpctl_as_nobody(&["status"]);
    assert!(before.status.success(), "{}", describe(&before));
    let hold = "import socket, sys\n\
                conns = [socket.socket(socket.AF_UNIX) for _ in range(16)]\n\
                [c.connect(sys.argv[1]) for c in conns]\n\
                print('HELD', flush=True)\n\
                sys.stdin.read()\n";
    let mut holder = skip::as_nobody(std::path::Path::new("/usr/bin/python3"))
        .args(["-c", hold])
        .arg(&otpd.socket)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "HELD");
    let refused = otpd.otpctl_as_nobody(&["status"]);
    assert_eq!(
        refused.status.code(),
        Some(3),
        "the 17th is refused: {}",
        describe(&refused)
    );
    let root = otpd.otpctl(&["status"]);
    assert!(
        root.status.success(),
        "root is not affected: {}",
        describe(&root)
    );
    drop(holder.stdin.take());
    holder.wait().unwrap();
    otpd.assert_logged("more than 16 connections open");
}
