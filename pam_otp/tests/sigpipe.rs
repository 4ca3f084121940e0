//! A daemon that hangs up while the user is typing must not kill the host with SIGPIPE.
//!
//! Rust programs ignore SIGPIPE, but `su` or `login` may not: the module's write to a socket
//! whose peer is gone must fail with EPIPE instead. Alone in its own test binary because it
//! restores SIGPIPE's default action for the whole process.

#![allow(clippy::unwrap_used)]

use otp_proto::frame::{read_frame, write_frame};
use otp_proto::{Login, Reply, Request, Secret};
use pam_otp::options::Options;
use pam_otp::relay::{login, ConvError, Conversation, Relayed};
use pamsm::PamError;
use std::os::unix::net::UnixListener;
use std::time::Duration;

struct SlowUser;

impl Conversation for SlowUser {
    fn prompt(&mut self, _: &str, _: bool) -> Result<Secret, ConvError> {
        std::thread::sleep(Duration::from_millis(300));
        Ok(Secret::new("123456"))
    }
    fn info(&mut self, _: &str) {}
    fn error(&mut self, _: &str) {}
}

#[test]
fn a_write_to_a_daemon_that_hung_up_is_an_error_not_a_signal() {
    // SAFETY: resets one signal's disposition; no handler runs Rust code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("otpd.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let daemon = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let _: Request = read_frame(&mut s).unwrap();
        let prompt = Reply::Prompt {
            text: "Code: ".into(),
            echo: false,
        };
        write_frame(&mut s, &prompt).unwrap();
        // Hang up while the user is still typing.
    });
    let options = Options {
        socket,
        timeout: Duration::from_secs(2),
        ..Options::default()
    };
    let begin = Login {
        user: "alice".into(),
        service: "su".into(),
        rhost: None,
        tty: Some("/dev/pts/0".into()),
        nullok: false,
        forward_pass: None,
    };
    let result = login(&options, begin, &mut SlowUser);
    daemon.join().unwrap();
    assert!(matches!(result, Relayed::Broken(_)), "{result:?}");
    assert_eq!(
        pam_otp::relay::pam_code(&result, &options),
        PamError::AUTH_ERR
    );
}
