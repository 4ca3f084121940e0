//! Attacks from issue 11 on otpd's log, on user names and on the send quotas, mounted the way a
//! local user would: a process running as `nobody` talking to the real socket, real libpam
//! through pam_wrapper, a real SMTP server on loopback.

use otp_e2e::daemon::describe;
use otp_e2e::pam::{self, PAM_SUCCESS};
use otp_e2e::smtp::{self, email_section, SmtpOptions, SmtpServer};
use otp_e2e::totp::{code, now};
use otp_e2e::{me, skip, Daemon, PamService};
use otp_proto::{frame, Login, Request, PROTOCOL_VERSION};
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

const NOBODY: u32 = 65534;
/// Connections a non-root uid may hold (otpd/src/peer_limit.rs).
const PER_UID: usize = 16;

/// The line an attacker wants the log to hold.
const FORGED: &str = "otpd: info: sshd: user=root rhost=- tty=- uid=0: allowed (totp)";

/// Let `nobody` reach the daemon's socket.
fn open_to_others(otpd: &Daemon) {
    std::fs::set_permissions(otpd.dir(), std::fs::Permissions::from_mode(0o755))
        .expect("open the test dir");
}

/// The socket's address, built before any fork.
fn address(otpd: &Daemon) -> libc::sockaddr_un {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let path = otpd.socket.as_os_str().as_encoded_bytes();
    assert!(path.len() < addr.sun_path.len(), "socket path too long");
    for (d, s) in addr.sun_path.iter_mut().zip(path) {
        *d = *s as libc::c_char;
    }
    addr
}

/// One connection as the attacker makes it: connect, write `bytes`, read until otpd hangs up.
/// Only system calls, so it may run in a forked child of this multi-threaded process.
fn send_raw(addr: &libc::sockaddr_un, bytes: &[u8]) -> bool {
    // SAFETY: plain system calls on a descriptor this function owns; the buffers are ours.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return false;
        }
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        let ok = libc::connect(fd, addr as *const _ as *const libc::sockaddr, len) == 0
            && libc::write(fd, bytes.as_ptr().cast(), bytes.len()) == bytes.len() as isize;
        let mut buf = [0u8; 4096];
        while ok && libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) > 0 {}
        libc::close(fd);
        ok
    }
}

/// A connected socket, or -1. Only system calls.
fn connect(addr: &libc::sockaddr_un) -> libc::c_int {
    // SAFETY: plain system calls; the descriptor is closed on failure.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        if fd >= 0 && libc::connect(fd, addr as *const _ as *const libc::sockaddr, len) != 0 {
            libc::close(fd);
            return -1;
        }
        fd
    }
}

/// Hold `PER_UID` connections open without a word, then knock `knocks` times more: each knock
/// is refused by the per-uid cap (and was a log line each). Only system calls.
fn hold_and_knock(addr: &libc::sockaddr_un, knocks: u32) -> bool {
    let mut held = [-1; PER_UID];
    for fd in held.iter_mut() {
        *fd = connect(addr);
    }
    let mut ok = held.iter().all(|fd| *fd >= 0);
    for _ in 0..knocks {
        let fd = connect(addr);
        ok &= fd >= 0;
        // SAFETY: reading into our own buffer until otpd hangs up, then closing our descriptor.
        unsafe {
            let mut buf = [0u8; 64];
            while fd >= 0 && libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) > 0 {}
            libc::close(fd);
        }
    }
    for fd in held {
        // SAFETY: closing descriptors this function opened.
        unsafe { libc::close(fd) };
    }
    ok
}

/// Run `attack` in a forked child that has become `nobody` (uid and gid 65534, no groups); its
/// exit status is whether it returned true. `attack` must make only system calls (no
/// allocation, no locks): the fork copies just this thread of a multi-threaded process.
fn as_nobody(attack: impl FnOnce() -> bool) -> bool {
    // SAFETY: the child makes only async-signal-safe calls and leaves through _exit.
    unsafe {
        match libc::fork() {
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            0 => {
                let dropped = libc::setgroups(0, std::ptr::null()) == 0
                    && libc::setresgid(NOBODY, NOBODY, NOBODY) == 0
                    && libc::setresuid(NOBODY, NOBODY, NOBODY) == 0;
                libc::_exit(if dropped && attack() { 0 } else { 1 });
            }
            child => {
                let mut status = 0;
                assert_eq!(libc::waitpid(child, &mut status, 0), child);
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
            }
        }
    }
}

/// What a peer controls, each with a newline that starts a forged line and a sequence that
/// clears the admin's terminal.
fn hostile(field: &str) -> String {
    format!("{field}\n{FORGED}\x1b[2J")
}

#[test]
fn a_login_with_newlines_and_escapes_in_every_field_cannot_forge_a_log_line() {
    if !skip::require_root() {
        return;
    }
    let otpd = Daemon::start("");
    open_to_others(&otpd);
    let begin = frame::encode(&Request::Begin(Login {
        user: hostile("mallory"),
        service: hostile("sshd"),
        rhost: Some(hostile("10.0.0.1")),
        tty: Some(hostile("pts/0")),
        nullok: false,
        forward_pass: None,
    }))
    .expect("encode");
    let addr = address(&otpd);
    assert!(as_nobody(|| send_raw(&addr, &begin)), "the attack ran");
    otpd.assert_logged("uid=65534: denied");
    let log = otpd.log();
    assert!(log.contains("\\x0a") && log.contains("\\x1b[2J"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "no escape sequence reaches the log:\n{log}"
    );
    for line in log.lines() {
        assert!(!line.starts_with(FORGED), "forged line:\n{log}");
        assert!(
            line.starts_with("otpd: "),
            "a line otpd did not start:\n{log}"
        );
    }
    // Every field the attacker filled is on the one audit line, escaped.
    let audit = log
        .lines()
        .find(|l| l.contains("uid=65534: denied"))
        .expect("the audit line");
    for field in ["sshd\\x0a", "mallory\\x0a", "10.0.0.1\\x0a", "pts/0\\x0a"] {
        assert!(audit.contains(field), "{field} in {audit}");
    }
}

#[test]
fn a_hundred_thousand_malformed_frames_from_one_user_are_a_few_lines_and_a_summary() {
    if !skip::require_root() {
        return;
    }
    let otpd = Daemon::start("");
    open_to_others(&otpd);
    // A valid header and version, then a body that is no Request (variant 255).
    let mut bad = Vec::new();
    bad.extend_from_slice(&3u32.to_be_bytes());
    bad.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    bad.push(0xff);
    let addr = address(&otpd);
    const FRAMES: u32 = 100_000;
    let started = Instant::now();
    let flooded = as_nobody(|| (0..FRAMES).all(|_| send_raw(&addr, &bad)));
    let took = started.elapsed();
    assert!(flooded, "every frame was sent");
    let summed_up = otpd.logged("log lines suppressed");
    let log = otpd.log();
    let from_nobody = log.lines().filter(|l| l.contains("uid=65534")).count();
    let suppressed: u64 = log
        .lines()
        .filter_map(|l| l.strip_suffix(" log lines suppressed"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    eprintln!(
        "{FRAMES} malformed frames in {:.1} s: {from_nobody} log lines from uid 65534, \
         {suppressed} suppressed",
        took.as_secs_f64()
    );
    assert!(summed_up, "no summary of what was dropped:\n{log}");
    assert!(from_nobody <= 300, "{from_nobody} lines:\n{log}");
    assert!(
        log.contains("uid=65534: bad request"),
        "the first lines are kept"
    );
    assert!(suppressed >= u64::from(FRAMES) / 2, "{suppressed}");
    // Root's lines are not limited: a login right after the flood is still audited.
    let service = PamService::new(&format!(
        "auth required pam_permit.so\n{}",
        PamService::otp_line(&otpd, "nullok")
    ));
    if pam::available() {
        let run = service.login(&me(), &[]);
        assert_eq!(run.code, PAM_SUCCESS, "{run:?}");
        otpd.assert_logged("ignored: not enrolled (nullok)");
    }
}

#[test]
fn knocking_on_a_full_per_uid_cap_ten_thousand_times_is_a_few_lines_and_a_summary() {
    if !skip::require_root() {
        return;
    }
    let otpd = Daemon::start("");
    open_to_others(&otpd);
    let addr = address(&otpd);
    const KNOCKS: u32 = 10_000;
    assert!(
        as_nobody(|| hold_and_knock(&addr, KNOCKS)),
        "the attack ran"
    );
    // The refusal is counted, not logged each time: one line per 10 s says how many.
    assert!(otpd.logged("connections open; refused"));
    let log = otpd.log();
    let refusals = log.matches("connections open; refused").count();
    eprintln!("{KNOCKS} connections beyond the cap: {refusals} log lines");
    assert!((1..=5).contains(&refusals), "{refusals} lines:\n{log}");
}

/// otpd resolves PAM_USER through `names::Names` and keys everything by the canonical name.
#[test]
fn look_alike_spellings_of_an_enrolled_user_are_not_let_in_by_nullok() {
    if !skip::require_root() || !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    let secret = otpd.enroll_totp("nobody");
    let service = PamService::new(&format!(
        "auth required pam_permit.so\n{}",
        PamService::otp_line(&otpd, "nullok")
    ));
    for typed in ["NOBODY", "nobody ", "n\u{43e}body", "Nobody"] {
        let run = service.login(typed, &["000000"]);
        assert_ne!(run.code, PAM_SUCCESS, "{typed:?} let in: {run:?}");
    }
    assert!(
        !otpd.log().contains("ignored: not enrolled (nullok)"),
        "no spelling passed as a user with nothing enrolled:\n{}",
        otpd.log()
    );
    // The account itself, with its code, still logs in.
    let run = service.login("nobody", &[&code(&secret, now())]);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
}

#[test]
fn enrolling_a_victims_address_in_any_case_sends_little_and_never_locks_the_victim_out() {
    if !skip::require_root() || !pam::available() || !smtp::available() {
        return;
    }
    let victim = "victim@example.com";
    let server = SmtpServer::start(SmtpOptions::default(), None);
    // The victim's address takes one login code an hour: before, mallory's sends used it up.
    let otpd = Daemon::start(&format!(
        "{}[code]\nmax_sends_per_destination_per_hour = 1\n[users.\"{}\"]\nemail = \"{victim}\"\n",
        email_section(server.port, "none", ""),
        me()
    ));
    let spellings = [
        victim,
        "VICTIM@example.com",
        "Victim@Example.com",
        "victim@EXAMPLE.COM",
        "vIcTiM@example.com",
        "VICTIM@EXAMPLE.COM",
    ];
    let mut sent = 0;
    for address in spellings {
        // otpctl then asks for the code; mallory has none (stdin is empty).
        let out = otpd.otpctl_as_nobody(&["enroll", "email", "--email", address]);
        if String::from_utf8_lossy(&out.stdout).contains("A code was sent") {
            sent += 1;
            server.next_mail();
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let refused = stderr.contains("too many codes") || stderr.contains("can be sent in");
            assert!(refused, "{}", describe(&out));
        }
    }
    eprintln!("mallory's 6 enrollments of the victim's address: {sent} mails sent");
    assert!(sent <= 3, "{sent} mails went out");
    assert!(sent >= 1, "enrollment itself works");
    // The victim's own login still gets its code, and logs in with it.
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    let prompt = login
        .next_prompt()
        .unwrap_or_else(|| panic!("the victim's login was refused:\n{}", otpd.log()));
    assert!(prompt.contains("A code was sent to"), "{prompt}");
    login.send(&server.next_mail().code());
    let run = login.finish();
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
    otpd.assert_logged("hourly quota of email enrollment codes reached");
}

/// `otpctl ARGS` as `daemon` (uid 1), a second local user beside `nobody`.
fn otpctl_as_daemon(otpd: &Daemon, args: &[&str]) -> std::process::Output {
    otpd.otpctl_as_nobody(&["status"]); // opens the test directory to other users
    std::process::Command::new("setpriv")
        .args(["--reuid=1", "--regid=1", "--clear-groups"])
        .arg(otp_e2e::artifacts::otpctl())
        .arg("--config")
        .arg(&otpd.config)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run otpctl as daemon")
}

/// Two users each stay under their own budget (2 of 3), so only the per-destination budget can
/// refuse the fourth send: it must see the four spellings as one address.
#[test]
fn spellings_of_one_address_share_its_enrollment_budget() {
    if !skip::require_root() || !smtp::available() {
        return;
    }
    let server = SmtpServer::start(SmtpOptions::default(), None);
    let otpd = Daemon::start(&email_section(server.port, "none", ""));
    let tries: [(&str, &str); 4] = [
        ("nobody", "victim@example.com"),
        ("daemon", "VICTIM@example.com"),
        ("nobody", "Victim@Example.COM"),
        ("daemon", "victim@EXAMPLE.com"),
    ];
    let mut sent = 0;
    for (who, address) in tries {
        let args = ["enroll", "email", "--email", address];
        let out = match who {
            "nobody" => otpd.otpctl_as_nobody(&args),
            _ => otpctl_as_daemon(&otpd, &args),
        };
        if String::from_utf8_lossy(&out.stdout).contains("A code was sent") {
            sent += 1;
            server.next_mail();
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("too many codes"), "{}", describe(&out));
        }
    }
    assert_eq!(sent, 3, "the address's budget of 3, whatever the case");
}
