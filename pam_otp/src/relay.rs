//! The relay loop: send `Begin`, then show what the daemon says and send back what the user
//! types, until the daemon decides. Written against the `Conversation` trait so that it is
//! tested with a scripted user, and could serve a CLI as well as PAM.

use crate::options::{FailMode, Options};
use otp_proto::client::Connection;
use otp_proto::frame::FrameError;
use otp_proto::{Login, Outcome, Reply, Request, Secret};

/// The person at the other end of the PAM conversation.
pub trait Conversation {
    /// Ask something; `echo` false hides the typing. `Err` when the user or the application
    /// gave up (Ctrl-D, closed session).
    fn prompt(&mut self, text: &str, echo: bool) -> Result<Secret, ConvError>;
    fn info(&mut self, text: &str);
    fn error(&mut self, text: &str);
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvError;

/// How a relayed login ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Relayed {
    /// The daemon decided.
    Decided(Outcome),
    /// The daemon could not be reached or did not answer the first request.
    Unreachable(String),
    /// The daemon engaged, then the exchange broke (timeout, closed, bad frame, refusal).
    Broken(String),
    /// The conversation with the user failed.
    ConvFailed,
}

/// Connect and relay one login.
pub fn login(options: &Options, begin: Login, conv: &mut dyn Conversation) -> Relayed {
    match Connection::connect(&options.socket, options.timeout) {
        Ok(mut conn) => relay(&mut conn, begin, conv),
        Err(e) => Relayed::Unreachable(format!("{}: {e}", options.socket.display())),
    }
}

/// Relay over an open connection.
pub fn relay(conn: &mut Connection, begin: Login, conv: &mut dyn Conversation) -> Relayed {
    if let Err(e) = conn.send(&Request::Begin(begin)) {
        return Relayed::Unreachable(e.to_string());
    }
    let mut engaged = false;
    loop {
        let reply = match conn.recv() {
            Ok(r) => r,
            Err(e) => return failed(engaged, e),
        };
        engaged = true;
        match reply {
            Reply::Prompt { text, echo } => {
                let Ok(answer) = conv.prompt(&text, echo) else {
                    return Relayed::ConvFailed;
                };
                if let Err(e) = conn.send(&Request::Answer(answer)) {
                    return Relayed::Broken(e.to_string());
                }
            }
            Reply::Info { text } => conv.info(&text),
            Reply::Error { text } => conv.error(&text),
            Reply::Outcome(outcome) => return Relayed::Decided(outcome),
            Reply::Refused(r) => return Relayed::Broken(format!("otpd refused: {r}")),
            Reply::Done(_) => return Relayed::Broken("otpd sent a command reply".into()),
        }
    }
}

fn failed(engaged: bool, e: FrameError) -> Relayed {
    if engaged {
        Relayed::Broken(e.to_string())
    } else {
        Relayed::Unreachable(e.to_string())
    }
}

/// The PAM return codes this module uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PamCode {
    Success,
    Ignore,
    AuthErr,
    AuthInfoUnavail,
    ConvErr,
}

/// The one place results become PAM codes. `failmode=safe` only opens the door when the daemon
/// never engaged: after it has spoken, a broken exchange is a failure whatever the mode.
pub fn pam_code(result: &Relayed, failmode: FailMode) -> PamCode {
    match (result, failmode) {
        (Relayed::Decided(Outcome::Allow), _) => PamCode::Success,
        (Relayed::Decided(Outcome::Ignore), _) => PamCode::Ignore,
        (Relayed::Decided(Outcome::Deny(_)), _) => PamCode::AuthErr,
        (Relayed::Unreachable(_), FailMode::Safe) => PamCode::Success,
        (Relayed::Unreachable(_), FailMode::Secure) => PamCode::AuthInfoUnavail,
        (Relayed::Broken(_), _) => PamCode::AuthInfoUnavail,
        (Relayed::ConvFailed, _) => PamCode::ConvErr,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use otp_proto::frame::{read_frame, write_frame};
    use otp_proto::DenyReason;
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::thread::JoinHandle;
    use std::time::Duration;

    /// A user who types the scripted answers and remembers what was shown.
    #[derive(Default)]
    struct User {
        answers: Vec<&'static str>,
        seen: Vec<String>,
    }

    impl Conversation for User {
        fn prompt(&mut self, text: &str, echo: bool) -> Result<Secret, ConvError> {
            self.seen.push(format!("prompt(echo={echo}): {text}"));
            if self.answers.is_empty() {
                return Err(ConvError);
            }
            Ok(Secret::new(self.answers.remove(0)))
        }
        fn info(&mut self, text: &str) {
            self.seen.push(format!("info: {text}"));
        }
        fn error(&mut self, text: &str) {
            self.seen.push(format!("error: {text}"));
        }
    }

    /// A daemon on a real socket playing a script: for each step, the replies to send, then
    /// whether to read one request. Returns every request it read.
    fn daemon(
        script: Vec<(Vec<Reply>, bool)>,
    ) -> (tempfile::TempDir, PathBuf, JoinHandle<Vec<Request>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpd.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut seen = vec![read_frame::<Request>(&mut s).unwrap()];
            for (replies, then_read) in script {
                for r in replies {
                    write_frame(&mut s, &r).unwrap();
                }
                if then_read {
                    match read_frame::<Request>(&mut s) {
                        Ok(req) => seen.push(req),
                        Err(_) => break,
                    }
                }
            }
            seen
        });
        (dir, path, handle)
    }

    fn options(socket: PathBuf) -> Options {
        Options {
            socket,
            timeout: Duration::from_secs(2),
            ..Options::default()
        }
    }

    fn begin() -> Login {
        Login {
            user: "alice".into(),
            service: "sshd".into(),
            rhost: None,
            tty: None,
            nullok: false,
        }
    }

    fn prompt(text: &str) -> Reply {
        Reply::Prompt {
            text: text.into(),
            echo: false,
        }
    }

    #[test]
    fn the_typed_code_reaches_the_daemon_and_allow_is_success() {
        let (_d, path, daemon) = daemon(vec![
            (vec![prompt("Verification code: ")], true),
            (vec![Reply::Outcome(Outcome::Allow)], false),
        ]);
        let mut user = User {
            answers: vec!["123456"],
            ..User::default()
        };
        let result = login(&options(path), begin(), &mut user);
        assert_eq!(result, Relayed::Decided(Outcome::Allow));
        assert_eq!(pam_code(&result, FailMode::Secure), PamCode::Success);
        assert_eq!(user.seen, vec!["prompt(echo=false): Verification code: "]);
        let requests = daemon.join().unwrap();
        assert_eq!(requests[0], Request::Begin(begin()));
        assert_eq!(requests[1], Request::Answer(Secret::new("123456")));
    }

    #[test]
    fn info_and_error_messages_are_shown_in_order() {
        let (_d, path, _daemon) = daemon(vec![
            (
                vec![
                    Reply::Info {
                        text: "sent".into(),
                    },
                    prompt("Code: "),
                ],
                true,
            ),
            (
                vec![
                    Reply::Error {
                        text: "Invalid code.".into(),
                    },
                    Reply::Outcome(Outcome::Deny(DenyReason::WrongCode)),
                ],
                false,
            ),
        ]);
        let mut user = User {
            answers: vec!["000000"],
            ..User::default()
        };
        let result = login(&options(path), begin(), &mut user);
        assert_eq!(pam_code(&result, FailMode::Safe), PamCode::AuthErr);
        assert_eq!(
            user.seen,
            vec![
                "info: sent",
                "prompt(echo=false): Code: ",
                "error: Invalid code."
            ]
        );
    }

    #[test]
    fn ignore_maps_to_pam_ignore() {
        let (_d, path, _daemon) = daemon(vec![(vec![Reply::Outcome(Outcome::Ignore)], false)]);
        let result = login(&options(path), begin(), &mut User::default());
        assert_eq!(pam_code(&result, FailMode::Secure), PamCode::Ignore);
    }

    #[test]
    fn a_missing_daemon_is_unavailable_or_let_through_in_safe_mode() {
        let dir = tempfile::tempdir().unwrap();
        let result = login(
            &options(dir.path().join("none.sock")),
            begin(),
            &mut User::default(),
        );
        assert!(matches!(result, Relayed::Unreachable(_)), "{result:?}");
        assert_eq!(
            pam_code(&result, FailMode::Secure),
            PamCode::AuthInfoUnavail
        );
        assert_eq!(pam_code(&result, FailMode::Safe), PamCode::Success);
    }

    #[test]
    fn a_daemon_that_never_answers_is_timed_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        let mut o = options(path);
        o.timeout = Duration::from_millis(300);
        let result = login(&o, begin(), &mut User::default());
        assert!(
            matches!(result, Relayed::Unreachable(ref e) if e.contains("timed out")),
            "{result:?}"
        );
    }

    #[test]
    fn a_daemon_that_breaks_off_after_engaging_fails_even_in_safe_mode() {
        let (_d, path, _daemon) = daemon(vec![(vec![prompt("Code: ")], true)]);
        let mut user = User {
            answers: vec!["123456"],
            ..User::default()
        };
        let result = login(&options(path), begin(), &mut user);
        assert!(matches!(result, Relayed::Broken(_)), "{result:?}");
        assert_eq!(pam_code(&result, FailMode::Safe), PamCode::AuthInfoUnavail);
    }

    #[test]
    fn garbage_from_the_daemon_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            use std::io::Write;
            let (mut s, _) = listener.accept().unwrap();
            let _ = read_frame::<Request>(&mut s);
            s.write_all(&[0, 0, 0, 5, 0, 1, 0xff, 0xff, 0xff]).unwrap();
        });
        let result = login(&options(path), begin(), &mut User::default());
        t.join().unwrap();
        assert!(matches!(result, Relayed::Unreachable(_)), "{result:?}");
    }

    #[test]
    fn a_user_who_gives_up_is_not_let_in() {
        let (_d, path, _daemon) = daemon(vec![(vec![prompt("Code: ")], true)]);
        let result = login(&options(path), begin(), &mut User::default());
        assert_eq!(result, Relayed::ConvFailed);
        assert_eq!(pam_code(&result, FailMode::Safe), PamCode::ConvErr);
    }
}
