//! Attacks on the perimeter (issue 11), mounted as they were found: a busy, confused or
//! impostor daemon must not open `failmode=safe`; a flood of root connections must not stop a
//! normal login; otpd tells systemd it is alive, keeps no core, and stops within 2 s.

use otp_e2e::pam::{self, PAM_AUTHINFO_UNAVAIL, PAM_AUTH_ERR, PAM_SUCCESS};
use otp_e2e::totp::{code, now};
use otp_e2e::{artifacts, me, skip, Daemon, PamService};
use otp_proto::client::Connection;
use otp_proto::frame::{encode, read_frame, write_frame, HEADER_LEN};
use otp_proto::{Login, Outcome, Refusal, Reply, Request};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// `auth required pam_otp.so socket=SOCKET ARGS`, for a daemon that is not an otp_e2e Daemon.
fn service(socket: &Path, args: &str) -> PamService {
    PamService::new(&format!(
        "auth required {} socket={} {args}",
        artifacts::module().display(),
        socket.display()
    ))
}

/// What a fake daemon does with the one connection it takes.
enum Fake {
    /// Accept, read `Begin`, then write these bytes and keep the connection open a while.
    Answer(Vec<u8>),
    /// Accept, read `Begin`, hang up.
    HangUp,
}

/// A fake daemon on a real socket: serves connections in a thread as `fake` says.
fn fake_daemon(socket: &Path, fake: Fake) {
    let listener = UnixListener::bind(socket).expect("bind fake daemon");
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            if read_frame::<Request>(&mut s).is_err() {
                continue;
            }
            match &fake {
                Fake::Answer(bytes) => {
                    let _ = s.write_all(bytes);
                    // Held until the module gives up, as a confused daemon would.
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = read_frame::<Request>(&mut s);
                }
                Fake::HangUp => drop(s),
            }
        }
    });
}

#[test]
fn failmode_safe_opens_only_when_otpd_is_absent() {
    if !pam::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let code_typed = ["000000"];

    // Absent: no socket at all, or a socket nobody listens on (otpd stopped or crashed).
    let missing = dir.path().join("missing.sock");
    let run = service(&missing, "").login(&me(), &code_typed);
    assert_eq!(run.code, PAM_AUTHINFO_UNAVAIL, "{run:?}");
    let run = service(&missing, "failmode=safe").login(&me(), &code_typed);
    assert_eq!(run.code, PAM_SUCCESS, "absent daemon, safe mode: {run:?}");
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let run = service(&stale, "failmode=safe").login(&me(), &code_typed);
    assert_eq!(
        run.code, PAM_SUCCESS,
        "refused connection, safe mode: {run:?}"
    );

    // Present but not deciding: each one used to let a wrong code in with failmode=safe.
    let silent = dir.path().join("silent.sock");
    let _silent = UnixListener::bind(&silent).unwrap();

    let full = dir.path().join("full.sock");
    let full_listener = UnixListener::bind(&full).unwrap();
    // SAFETY: listen(2) again on our own listening socket only lowers its backlog.
    assert_eq!(unsafe { libc::listen(full_listener.as_raw_fd(), 0) }, 0);
    let mut backlog = Vec::new();
    while let Ok(c) = Connection::connect(&full, Duration::from_millis(100)) {
        backlog.push(c);
        assert!(backlog.len() < 64, "the backlog never filled");
    }

    let garbage = dir.path().join("garbage.sock");
    fake_daemon(
        &garbage,
        Fake::Answer(vec![0, 0, 0, 5, 0, 1, 0xff, 0xff, 0xff]),
    );
    let version = dir.path().join("version.sock");
    let mut other_version = encode(&Reply::Outcome(Outcome::Allow)).unwrap().to_vec();
    other_version[HEADER_LEN + 1] = 99;
    fake_daemon(&version, Fake::Answer(other_version));
    let hangup = dir.path().join("hangup.sock");
    fake_daemon(&hangup, Fake::HangUp);

    for (what, socket) in [
        ("a daemon that never answers", &silent),
        ("a full backlog (EAGAIN until the timeout)", &full),
        ("a malformed reply", &garbage),
        ("a reply of another protocol version", &version),
        ("a daemon that hangs up mid-exchange", &hangup),
    ] {
        for mode in ["failmode=safe", "failmode=secure"] {
            let run = service(socket, &format!("{mode} timeout=1")).login(&me(), &code_typed);
            assert_eq!(run.code, PAM_AUTH_ERR, "{what}, {mode}: {run:?}");
        }
    }
}

/// An impostor otpd: a socket bound here, whose listen(2) happens in a forked child running as
/// `uid`, so that SO_PEERCRED names `uid`; it answers every `Begin` with Allow.
struct Impostor {
    pid: libc::pid_t,
}

impl Impostor {
    fn start(socket: &Path, uid: u32) -> Impostor {
        // Everything the child needs is made before fork: it then only makes system calls.
        let allow = encode(&Reply::Outcome(Outcome::Allow)).unwrap().to_vec();
        let mut buf = vec![0u8; 4096];
        // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let path = socket.as_os_str().as_bytes();
        assert!(path.len() < addr.sun_path.len());
        for (dst, src) in addr.sun_path.iter_mut().zip(path) {
            *dst = *src as libc::c_char;
        }
        // SAFETY: plain socket(2) and bind(2) on a fresh descriptor we own.
        let fd = unsafe {
            let raw = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(raw >= 0, "socket");
            OwnedFd::from_raw_fd(raw)
        };
        // SAFETY: `addr` is a valid sockaddr_un.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_un as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "bind {}", socket.display());
        let mut ready = [0 as libc::c_int; 2];
        // SAFETY: pipe2(2) into a two-int array.
        assert_eq!(
            unsafe { libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC) },
            0
        );
        // SAFETY: the child makes only async-signal-safe system calls on memory prepared
        // above, and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            unsafe {
                if uid != 0
                    && (libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(uid) != 0
                        || libc::setuid(uid) != 0)
                {
                    libc::_exit(1);
                }
                if libc::listen(fd.as_raw_fd(), 16) != 0 {
                    libc::_exit(2);
                }
                libc::write(ready[1], b"l".as_ptr() as *const libc::c_void, 1);
                loop {
                    let c =
                        libc::accept(fd.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut());
                    if c < 0 {
                        continue;
                    }
                    libc::read(c, buf.as_mut_ptr() as *mut libc::c_void, buf.len());
                    libc::write(c, allow.as_ptr() as *const libc::c_void, allow.len());
                    libc::close(c);
                }
            }
        }
        drop(fd);
        // Wait until the child listens: it writes one byte then, or the pipe closes on exit.
        let mut byte = [0u8; 1];
        // SAFETY: our pipe's ends; a one-byte read into a one-byte buffer.
        let n = unsafe {
            libc::close(ready[1]);
            let n = libc::read(ready[0], byte.as_mut_ptr() as *mut libc::c_void, 1);
            libc::close(ready[0]);
            n
        };
        let impostor = Impostor { pid };
        assert_eq!(n, 1, "the impostor could not become uid {uid} and listen");
        impostor
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        // SAFETY: kill and reap our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

#[test]
fn a_daemon_that_is_not_root_is_not_believed_in_either_failmode() {
    if !pam::available() || !skip::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The control: the same impostor run by root is believed, so the test can fail.
    let as_root = dir.path().join("root.sock");
    let _root = Impostor::start(&as_root, 0);
    let run = service(&as_root, "").login(&me(), &["000000"]);
    assert_eq!(run.code, PAM_SUCCESS, "a root daemon decides: {run:?}");

    // A user who grabbed the socket path while otpd was down says "allow" to everything.
    let as_nobody = dir.path().join("nobody.sock");
    let _nobody = Impostor::start(&as_nobody, 65534);
    for mode in ["failmode=secure", "failmode=safe"] {
        let run = service(&as_nobody, mode).login(&me(), &["000000"]);
        assert_eq!(
            run.code, PAM_AUTH_ERR,
            "uid 65534's daemon, {mode}: {run:?}"
        );
        assert!(run.prompts().is_empty(), "nothing relayed: {run:?}");
    }
}

/// What the first reply of a held connection was.
#[derive(Debug, Default)]
struct Flood {
    idle: Vec<UnixStream>,
    at_prompt: Vec<UnixStream>,
    busy: usize,
    other: Vec<String>,
}

/// Open `begun` connections that send `Begin` for `users` in turn and sit at whatever the
/// daemon answers, then `idle` ones that never speak. Reading each first reply (bounded, so an
/// otpd that stops accepting cannot hang the test) proves the logins are in place; the idle
/// ones are at least queued ahead of anything connecting later, since otpd accepts in order.
fn flood(socket: &Path, begun: usize, idle: usize, users: &[&str]) -> Flood {
    let mut f = Flood::default();
    for i in 0..begun {
        let mut s = UnixStream::connect(socket).expect("connection");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let login = Login {
            user: users[i % users.len()].into(),
            service: "sshd".into(),
            rhost: Some("203.0.113.9".into()),
            tty: Some("ssh".into()),
            nullok: false,
            forward_pass: None,
        };
        write_frame(&mut s, &Request::Begin(login)).unwrap();
        match read_frame::<Reply>(&mut s) {
            Ok(Reply::Prompt { .. }) => f.at_prompt.push(s),
            Ok(Reply::Refused(Refusal::Busy)) => f.busy += 1,
            Err(otp_proto::frame::FrameError::TimedOut) => {
                // otpd stopped accepting: every later one would wait the same.
                f.other
                    .push(format!("no answer within 10 s after {i} logins"));
                break;
            }
            other => f.other.push(format!("{other:?}")),
        }
    }
    for _ in 0..idle {
        f.idle
            .push(UnixStream::connect(socket).expect("idle connection"));
    }
    f
}

fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max.max(want));
            lim.rlim_max = lim.rlim_max.max(want);
            assert_eq!(
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim),
                0,
                "raise RLIMIT_NOFILE"
            );
        }
    }
}

#[test]
fn eleven_hundred_root_connections_do_not_stop_a_normal_login() {
    if !pam::available() || !skip::require_root() {
        return;
    }
    raise_fd_limit(4096);
    let otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    // The flood's logins are for real, enrolled accounts, so they sit at the code prompt.
    let victims = ["daemon", "bin", "sys"];
    for v in victims {
        otpd.enroll_totp(v);
    }
    let started = Instant::now();
    let held = flood(&otpd.socket, 550, 550, &victims);
    eprintln!(
        "flood: {} idle, {} at the prompt, {} refused busy, {} other, in {:?}",
        held.idle.len(),
        held.at_prompt.len(),
        held.busy,
        held.other.len(),
        started.elapsed()
    );

    // The attack: another user logs in while the flood is held.
    let t = Instant::now();
    let run = PamService::otp(&otpd, "timeout=2").login(&me(), &[&code(&secret, now())]);
    let right_code_took = t.elapsed();
    let t = Instant::now();
    let safe = PamService::otp(&otpd, "failmode=safe timeout=2").login(&me(), &["000000"]);
    let wrong_code_took = t.elapsed();
    eprintln!(
        "during the flood: right code -> PAM code {} in {right_code_took:?}; wrong code with \
         failmode=safe -> PAM code {} in {wrong_code_took:?}",
        run.code, safe.code
    );
    assert_eq!(
        run.code,
        PAM_SUCCESS,
        "right code during the flood: {run:?}\n{}",
        otpd.log()
    );
    assert_eq!(
        safe.code, PAM_AUTH_ERR,
        "wrong code, failmode=safe: {safe:?}"
    );

    // Root's logins are capped per target user, refused with one counted line, not 526.
    let per_target = 8;
    assert_eq!(
        held.at_prompt.len(),
        per_target * victims.len(),
        "{:?}",
        held.other
    );
    assert_eq!(
        held.busy,
        550 - per_target * victims.len(),
        "{:?}",
        held.other
    );
    otpd.assert_logged("logins at once for user=");
    let lines = otpd
        .log()
        .lines()
        .filter(|l| l.contains("logins at once for user="))
        .count();
    assert!(lines <= 3, "{lines} lines for {} refusals", held.busy);
    drop(held);
}

/// An otpd child that is killed if the test fails before it stops it.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// otpd run by hand with extra environment, for what Daemon does not set up.
fn spawn_otpd(dir: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Child {
    let config = dir.join("otpd.toml");
    let key = dir.join("key");
    otp_e2e::daemon::keygen(&key);
    std::fs::write(
        &config,
        format!(
            "socket = {:?}\nstate_dir = {:?}\nkey_file = {key:?}\n",
            dir.join("otpd.sock"),
            dir.join("state")
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(artifacts::otpd());
    cmd.arg("--config")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Child(cmd.spawn().expect("start otpd"))
}

#[test]
fn otpd_tells_systemd_it_is_ready_and_alive_and_keeps_no_core() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify");
    let listener = UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = spawn_otpd(
        dir.path(),
        &[
            ("NOTIFY_SOCKET", notify.as_os_str()),
            ("WATCHDOG_USEC", "200000".as_ref()),
        ],
    );
    let mut buf = [0u8; 256];
    let mut next = || -> String {
        let n = listener.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    assert!(
        dir.path().join("otpd.sock").exists(),
        "READY=1 comes once listening"
    );
    assert_eq!(next(), "WATCHDOG=1");
    assert_eq!(next(), "WATCHDOG=1");

    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.0.id())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core limit line");
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..6],
        ["0", "0"],
        "{core}"
    );

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let mut stopping = false;
    while let Ok(n) = listener.recv(&mut buf) {
        if &buf[..n] == b"STOPPING=1" {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "STOPPING=1 at shutdown");
    assert!(child.0.wait().unwrap().success());
}

#[test]
fn sigterm_ends_logins_in_flight_and_stops_cleanly_within_moments() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    // A used code, spent in memory and saved only by the periodic flush or the clean stop.
    let used = code(&secret, now());
    let run = PamService::otp(&otpd, "").login(&me(), &[&used]);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}");

    let service = PamService::otp(&otpd, "");
    let mut waiting: Vec<_> = (0..8).map(|_| service.start(&me())).collect();
    for s in &mut waiting {
        assert!(s.next_prompt().is_some(), "a login at the prompt");
    }
    let socket = otpd.socket.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut otpd = otpd;
        let t = Instant::now();
        otpd.stop();
        let _ = tx.send((t.elapsed(), otpd));
    });
    let (took, otpd) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("otpd exits after SIGTERM");
    eprintln!("SIGTERM with 8 logins at the prompt: otpd exited in {took:?}");
    otpd.assert_logged("stopped cleanly");
    assert!(!socket.exists(), "socket removed");
    for mut s in waiting {
        // Even an answer typed now finds the connection gone.
        s.send(&code(&secret, now() + 30));
        let run = s.finish();
        assert_eq!(run.code, PAM_AUTH_ERR, "a login cut off is denied: {run:?}");
    }
    // The used code was saved on the way out: after a restart it is still refused.
    let mut otpd = otpd;
    otpd.restart();
    assert!(
        !otpd.log().contains("the last stop was not clean"),
        "{}",
        otpd.log()
    );
    let run = PamService::otp(&otpd, "").login(&me(), &[&used]);
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    otpd.assert_logged("denied: code already used");
}
