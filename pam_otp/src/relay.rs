//! The relay loop and the one mapping from its result to a PAM code.
//!
//! Send `Begin`, then show the user what the daemon says and send back what the user types,
//! until the daemon decides. The loop is written against two small traits, [`Conversation`]
//! (the person) and [`Transport`] (the daemon), so tests script both sides; the module plugs in
//! the PAM conversation and an `otp_proto` [`Connection`].

use crate::options::{FailMode, Options};
use otp_proto::client::Connection;
use otp_proto::frame::FrameError;
use otp_proto::{Login, Outcome, Refusal, Reply, Request, Secret};
use pamsm::PamError;
use std::io;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// Replies one login may take before the module gives up on a daemon that never decides.
/// otpd's longest login (first-login enrollment, or ten rounds of sent codes) is far below.
pub const MAX_REPLIES: usize = 256;

/// The person at the other end of the PAM conversation.
pub trait Conversation {
    /// Ask something; `echo` false hides the typing. `Err` when the user or the application
    /// gave up (Ctrl-D, closed session, no terminal).
    fn prompt(&mut self, text: &str, echo: bool) -> Result<Secret, ConvError>;
    /// Show a notice (PAM_TEXT_INFO). Failing to show it is not an error.
    fn info(&mut self, text: &str);
    /// Show a warning (PAM_ERROR_MSG). Failing to show it is not an error.
    fn error(&mut self, text: &str);
}

/// The conversation could not get an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the conversation with the user failed")]
pub struct ConvError;

/// One connection to the daemon, one frame at a time, each step bounded in time.
pub trait Transport {
    fn send(&mut self, request: &Request) -> Result<(), FrameError>;
    fn recv(&mut self) -> Result<Reply, FrameError>;
}

impl Transport for Connection {
    fn send(&mut self, request: &Request) -> Result<(), FrameError> {
        Connection::send(self, request)
    }

    fn recv(&mut self) -> Result<Reply, FrameError> {
        Connection::recv(self)
    }
}

/// What went wrong between the module and the daemon. `Display` is for the log; it never
/// contains an answer or a message text.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("cannot connect to {}: {source}", path.display())]
    Connect { path: PathBuf, source: io::Error },
    #[error("cannot read the socket's peer credentials: {0}")]
    PeerCred(io::Error),
    #[error("otpd socket peer is uid {0}, not root")]
    UntrustedPeer(u32),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("otpd refused the login: {0}")]
    Refused(Refusal),
    #[error("otpd sent a command reply during a login")]
    CommandReply,
    #[error("otpd sent {MAX_REPLIES} replies without deciding")]
    TooManyReplies,
}

impl Failure {
    /// The daemon did not connect, answer or take a request within `timeout=`.
    pub fn timed_out(&self) -> bool {
        match self {
            Failure::Connect { source, .. } => source.kind() == io::ErrorKind::TimedOut,
            Failure::Frame(FrameError::TimedOut) => true,
            _ => false,
        }
    }

    /// No otpd at all: the socket path does not exist (ENOENT) or nothing listens on it
    /// (ECONNREFUSED). Everything else means something is there and misbehaving, or busy.
    pub fn daemon_absent(&self) -> bool {
        matches!(
            self,
            Failure::Connect { source, .. }
                if matches!(source.raw_os_error(), Some(libc::ENOENT | libc::ECONNREFUSED))
        )
    }
}

/// How a relayed login ended.
#[derive(Debug)]
pub enum Relayed {
    /// The daemon decided.
    Decided(Outcome),
    /// The daemon decided and, for `forward_pass`, handed back the password part of what was
    /// typed (`Reply::Password`) for PAM_AUTHTOK.
    DecidedWithPassword(Outcome, Secret),
    /// No daemon: the socket is missing or refuses connections. Only this lets
    /// `failmode=safe` through.
    Absent(Failure),
    /// Something answered on the socket, or could have, and the exchange failed: a timeout at
    /// connect, read or write (a busy daemon, a full backlog), garbage or another protocol
    /// version, a hang-up, a refusal, a reply that makes no sense in a login, a peer that is
    /// not root. Denied whatever `failmode` says.
    Broken(Failure),
    /// The conversation with the user failed (Ctrl-D, closed session). The daemon is not told
    /// anything; it sees the connection close.
    ConvFailed,
}

/// Connect to the daemon, check who it is, and relay one login.
pub fn login(options: &Options, begin: Login, conv: &mut dyn Conversation) -> Relayed {
    let mut conn = match Connection::connect(&options.socket, options.timeout) {
        Ok(conn) => conn,
        Err(source) => {
            let failure = Failure::Connect {
                path: options.socket.clone(),
                source,
            };
            return if failure.daemon_absent() {
                Relayed::Absent(failure)
            } else {
                Relayed::Broken(failure)
            };
        }
    };
    if let Err(failure) = conn.peer_uid().map_err(Failure::PeerCred).and_then(trusted) {
        return Relayed::Broken(failure);
    }
    relay(&mut conn, begin, conv)
}

/// otpd runs as root. Whoever else holds the socket path (a user who bound it while otpd was
/// down, say) would decide logins, so only root is trusted, or the module's own effective uid:
/// a screen locker's own daemon, or a test's. A process of that uid could ptrace the
/// application and answer for it anyway, so trusting it gives nothing away.
fn trusted(peer: u32) -> Result<(), Failure> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if peer == 0 || peer == me {
        Ok(())
    } else {
        Err(Failure::UntrustedPeer(peer))
    }
}

/// Relay one login over an open transport.
pub fn relay(daemon: &mut dyn Transport, begin: Login, conv: &mut dyn Conversation) -> Relayed {
    if let Err(e) = daemon.send(&Request::Begin(begin)) {
        return Relayed::Broken(e.into());
    }
    let mut handed_back = None;
    for _ in 0..MAX_REPLIES {
        let reply = match daemon.recv() {
            Ok(reply) => reply,
            Err(e) => return Relayed::Broken(e.into()),
        };
        match reply {
            Reply::Prompt { text, echo } => {
                // Prompts and notices may carry a new TOTP key or recovery codes (first-login
                // enrollment): wipe this copy once shown.
                let text = Zeroizing::new(text);
                let Ok(answer) = conv.prompt(&text, echo) else {
                    return Relayed::ConvFailed;
                };
                // The request owns the answer and wipes it when dropped, right after the send.
                if let Err(e) = daemon.send(&Request::Answer(answer)) {
                    return Relayed::Broken(e.into());
                }
            }
            Reply::Info { text } => conv.info(&Zeroizing::new(text)),
            Reply::Error { text } => conv.error(&Zeroizing::new(text)),
            Reply::Password(password) => handed_back = Some(password),
            Reply::Outcome(outcome) => {
                return match handed_back {
                    Some(password) => Relayed::DecidedWithPassword(outcome, password),
                    None => Relayed::Decided(outcome),
                }
            }
            Reply::Refused(refusal) => return Relayed::Broken(Failure::Refused(refusal)),
            Reply::Done(_) => return Relayed::Broken(Failure::CommandReply),
        }
    }
    Relayed::Broken(Failure::TooManyReplies)
}

/// The one place a result becomes a PAM code.
///
/// | result                              | secure             | safe        |
/// |-------------------------------------|--------------------|-------------|
/// | `Decided(Allow)`                    | `SUCCESS`          | `SUCCESS`   |
/// | `Decided(Ignore)`                   | `IGNORE`           | `IGNORE`    |
/// | `Decided(Deny(_))`, every reason    | `AUTH_ERR`         | `AUTH_ERR`  |
/// | `DecidedWithPassword(o, _)`         | as `Decided(o)`    | as `Decided(o)` |
/// | `Absent(_)`                         | `AUTHINFO_UNAVAIL` | `SUCCESS`   |
/// | `Broken(_)`                         | `AUTH_ERR`         | `AUTH_ERR`  |
/// | `ConvFailed`                        | `AUTH_ERR`         | `AUTH_ERR`  |
///
/// `failmode=safe` opens only when there is no daemon at all. A daemon that is slow, full,
/// confused or not root may be under attack, or be the attack: a flood that keeps otpd busy
/// until `timeout=` must not turn a wrong code into a login. So every other failure is a plain
/// `AUTH_ERR`, not `AUTHINFO_UNAVAIL`, which a stack's `authinfo_unavail=ignore` would let
/// through. A failed conversation is `AUTH_ERR` as in pam_google_authenticator: the user did
/// not authenticate, and applications treat `AUTH_ERR` as a failed attempt, while some treat
/// `CONV_ERR` as an internal error. `Deny(Locked)` stays `AUTH_ERR`, not `MAXTRIES`: the daemon
/// already told the user, and a different code would tell a guesser which accounts are locked.
pub fn pam_code(result: &Relayed, options: &Options) -> PamError {
    match result {
        Relayed::Decided(outcome) | Relayed::DecidedWithPassword(outcome, _) => match outcome {
            Outcome::Allow => PamError::SUCCESS,
            Outcome::Ignore => PamError::IGNORE,
            Outcome::Deny(_) => PamError::AUTH_ERR,
        },
        Relayed::Absent(_) => match options.failmode {
            FailMode::Secure => PamError::AUTHINFO_UNAVAIL,
            FailMode::Safe => PamError::SUCCESS,
        },
        Relayed::Broken(_) => PamError::AUTH_ERR,
        Relayed::ConvFailed => PamError::AUTH_ERR,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use otp_proto::frame::{encode, read_frame, write_frame, RequestKind, Turn, HEADER_LEN};
    use otp_proto::{CommandReply, DenyReason};
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixListener;
    use std::path::Path;
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    /// A user who types the scripted answers and remembers what was shown.
    #[derive(Default)]
    struct User {
        answers: Vec<&'static str>,
        seen: Vec<String>,
    }

    impl User {
        fn typing(answers: &[&'static str]) -> User {
            User {
                answers: answers.to_vec(),
                seen: Vec::new(),
            }
        }
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

    /// One step of a scripted daemon.
    enum Step {
        Send(Reply),
        /// Read one request; the script ends when the client has gone.
        Read,
        /// Raw bytes, e.g. garbage or a frame of another version.
        Raw(Vec<u8>),
        /// Wait without answering.
        Sleep(Duration),
    }

    /// Everything the fake daemon read: `Ok` requests, then how reading ended if it failed.
    type Heard = (Vec<Request>, Option<FrameError>);

    /// A daemon on a real socket in a temp dir: reads `Begin`, then plays `script` and hangs
    /// up. Returns every request it read.
    struct Daemon {
        _dir: tempfile::TempDir,
        socket: PathBuf,
        thread: JoinHandle<Heard>,
    }

    impl Daemon {
        fn play(script: Vec<Step>) -> Daemon {
            let dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("otpd.sock");
            let listener = UnixListener::bind(&socket).unwrap();
            let thread = std::thread::spawn(move || {
                let (mut s, _) = listener.accept().unwrap();
                let mut heard = vec![read_frame::<Request>(&mut s).unwrap()];
                for step in script {
                    match step {
                        Step::Send(r) => write_frame(&mut s, &r).unwrap(),
                        Step::Raw(bytes) => s.write_all(&bytes).unwrap(),
                        Step::Sleep(d) => std::thread::sleep(d),
                        Step::Read => match read_frame::<Request>(&mut s) {
                            Ok(req) => heard.push(req),
                            Err(e) => return (heard, Some(e)),
                        },
                    }
                }
                (heard, None)
            });
            Daemon {
                _dir: dir,
                socket,
                thread,
            }
        }

        fn options(&self) -> Options {
            options(&self.socket)
        }

        fn heard(self) -> Heard {
            self.thread.join().unwrap()
        }
    }

    fn options(socket: &Path) -> Options {
        Options {
            socket: socket.into(),
            timeout: Duration::from_secs(2),
            ..Options::default()
        }
    }

    fn login_with(o: &Options, begin: Login, user: &mut User) -> Relayed {
        login(o, begin, user)
    }

    fn safe(o: &Options) -> Options {
        Options {
            failmode: FailMode::Safe,
            ..o.clone()
        }
    }

    fn begin() -> Login {
        Login {
            user: "alice".into(),
            service: "sshd".into(),
            rhost: Some("192.0.2.7".into()),
            tty: Some("ssh".into()),
            nullok: false,
            forward_pass: None,
        }
    }

    fn prompt(text: &str) -> Step {
        Step::Send(Reply::Prompt {
            text: text.into(),
            echo: false,
        })
    }

    fn outcome(o: Outcome) -> Step {
        Step::Send(Reply::Outcome(o))
    }

    /// Both fail modes give `code`.
    fn always(result: &Relayed, o: &Options, code: PamError) {
        assert_eq!(pam_code(result, o), code, "{result:?}");
        assert_eq!(pam_code(result, &safe(o)), code, "{result:?} (safe)");
    }

    #[test]
    fn the_typed_code_reaches_the_daemon_and_allow_is_success() {
        let d = Daemon::play(vec![
            prompt("Verification code: "),
            Step::Read,
            outcome(Outcome::Allow),
        ]);
        let mut user = User::typing(&["123456"]);
        let result = login(&d.options(), begin(), &mut user);
        assert!(
            matches!(result, Relayed::Decided(Outcome::Allow)),
            "{result:?}"
        );
        always(&result, &d.options(), PamError::SUCCESS);
        assert_eq!(user.seen, ["prompt(echo=false): Verification code: "]);
        let (requests, _) = d.heard();
        assert_eq!(
            requests,
            [
                Request::Begin(begin()),
                Request::Answer(Secret::new("123456"))
            ]
        );
    }

    #[test]
    fn a_handed_back_password_is_kept_for_the_outcome_and_the_typed_string_is_sent() {
        let d = Daemon::play(vec![
            Step::Send(Reply::Password(Secret::new("hunter2"))),
            outcome(Outcome::Allow),
        ]);
        let mut user = User::default();
        let login = Login {
            forward_pass: Some(Secret::new("hunter2123456")),
            ..begin()
        };
        let result = login_with(&d.options(), login.clone(), &mut user);
        match &result {
            Relayed::DecidedWithPassword(Outcome::Allow, p) => assert_eq!(p.expose(), "hunter2"),
            other => panic!("{other:?}"),
        }
        always(&result, &d.options(), PamError::SUCCESS);
        assert!(user.seen.is_empty());
        let (requests, _) = d.heard();
        assert_eq!(requests, [Request::Begin(login)]);
    }

    #[test]
    fn info_and_error_messages_are_shown_in_order_and_echo_is_passed_on() {
        let d = Daemon::play(vec![
            Step::Send(Reply::Info {
                text: "A code was sent.".into(),
            }),
            Step::Send(Reply::Prompt {
                text: "Choose [1]: ".into(),
                echo: true,
            }),
            Step::Read,
            prompt("Code: "),
            Step::Read,
            Step::Send(Reply::Error {
                text: "Invalid code.".into(),
            }),
            outcome(Outcome::Deny(DenyReason::WrongCode)),
        ]);
        let mut user = User::typing(&["1", "000000"]);
        let result = login(&d.options(), begin(), &mut user);
        always(&result, &d.options(), PamError::AUTH_ERR);
        assert_eq!(
            user.seen,
            [
                "info: A code was sent.",
                "prompt(echo=true): Choose [1]: ",
                "prompt(echo=false): Code: ",
                "error: Invalid code."
            ]
        );
        let (requests, _) = d.heard();
        assert_eq!(requests[1], Request::Answer(Secret::new("1")));
        assert_eq!(requests[2], Request::Answer(Secret::new("000000")));
    }

    #[test]
    fn deny_is_auth_err_even_in_safe_mode() {
        let d = Daemon::play(vec![
            Step::Send(Reply::Error {
                text: "Too many failed attempts.".into(),
            }),
            outcome(Outcome::Deny(DenyReason::Locked)),
        ]);
        let result = login(&d.options(), begin(), &mut User::default());
        assert!(
            matches!(result, Relayed::Decided(Outcome::Deny(DenyReason::Locked))),
            "{result:?}"
        );
        always(&result, &d.options(), PamError::AUTH_ERR);
    }

    #[test]
    fn ignore_is_pam_ignore() {
        let d = Daemon::play(vec![outcome(Outcome::Ignore)]);
        let mut user = User::default();
        let result = login(&d.options(), begin(), &mut user);
        always(&result, &d.options(), PamError::IGNORE);
        assert!(user.seen.is_empty());
    }

    #[test]
    fn a_missing_daemon_is_absent_and_only_safe_mode_lets_in() {
        let dir = tempfile::tempdir().unwrap();
        let o = options(&dir.path().join("none.sock"));
        let mut user = User::default();
        let result = login(&o, begin(), &mut user);
        assert!(
            matches!(result, Relayed::Absent(Failure::Connect { .. })),
            "{result:?}"
        );
        assert!(result_text(&result).contains("none.sock"), "{result:?}");
        assert_eq!(pam_code(&result, &o), PamError::AUTHINFO_UNAVAIL);
        assert_eq!(pam_code(&result, &safe(&o)), PamError::SUCCESS);
        assert!(user.seen.is_empty(), "no prompt without a daemon");
    }

    #[test]
    fn a_socket_nobody_listens_on_is_absent() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("stale.sock");
        drop(UnixListener::bind(&socket).unwrap());
        let o = options(&socket);
        let result = login(&o, begin(), &mut User::default());
        assert!(matches!(result, Relayed::Absent(_)), "{result:?}");
        assert_eq!(pam_code(&result, &safe(&o)), PamError::SUCCESS);
    }

    #[test]
    fn a_full_backlog_is_denied_even_in_safe_mode() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("full.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        // SAFETY: listen(2) again on our own listening socket only lowers its backlog.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let o = Options {
            timeout: Duration::from_millis(300),
            ..options(&socket)
        };
        // Fill the backlog (nobody accepts), then log in.
        let mut held = Vec::new();
        while let Ok(conn) = Connection::connect(&socket, Duration::from_millis(100)) {
            held.push(conn);
            assert!(held.len() < 64, "the backlog never filled");
        }
        let result = login(&o, begin(), &mut User::default());
        assert!(
            matches!(&result, Relayed::Broken(f @ Failure::Connect { .. }) if f.timed_out()),
            "{result:?}"
        );
        always(&result, &o, PamError::AUTH_ERR);
    }

    #[test]
    fn a_daemon_that_is_not_root_or_me_is_denied_even_in_safe_mode() {
        assert!(trusted(0).is_ok());
        // SAFETY: geteuid has no preconditions.
        assert!(trusted(unsafe { libc::geteuid() }).is_ok());
        let err = trusted(65534).unwrap_err();
        assert_eq!(err.to_string(), "otpd socket peer is uid 65534, not root");
        always(
            &Relayed::Broken(err),
            &Options::default(),
            PamError::AUTH_ERR,
        );
    }

    #[test]
    fn a_daemon_that_never_answers_is_timed_out() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("silent.sock");
        let _listener = UnixListener::bind(&socket).unwrap();
        let o = Options {
            timeout: Duration::from_millis(300),
            ..options(&socket)
        };
        let started = Instant::now();
        let result = login(&o, begin(), &mut User::default());
        assert!(
            matches!(&result, Relayed::Broken(f) if f.timed_out()),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "bounded");
        always(&result, &o, PamError::AUTH_ERR);
    }

    #[test]
    fn a_daemon_that_falls_silent_after_the_prompt_is_timed_out_and_denied() {
        let d = Daemon::play(vec![
            prompt("Code: "),
            Step::Read,
            Step::Sleep(Duration::from_millis(900)),
        ]);
        let o = Options {
            timeout: Duration::from_millis(300),
            ..d.options()
        };
        let result = login(&o, begin(), &mut User::typing(&["123456"]));
        assert!(
            matches!(&result, Relayed::Broken(f) if f.timed_out()),
            "{result:?}"
        );
        always(&result, &o, PamError::AUTH_ERR);
        d.heard();
    }

    #[test]
    fn a_daemon_that_hangs_up_before_answering_is_denied_even_in_safe_mode() {
        let d = Daemon::play(vec![]);
        let result = login(&d.options(), begin(), &mut User::default());
        assert!(
            matches!(result, Relayed::Broken(Failure::Frame(FrameError::Closed))),
            "{result:?}"
        );
        always(&result, &d.options(), PamError::AUTH_ERR);
    }

    #[test]
    fn a_daemon_that_hangs_up_mid_conversation_is_denied_even_in_safe_mode() {
        // Gone before the answer is sent: the write fails (EPIPE), never SIGPIPE or a panic.
        let d = Daemon::play(vec![prompt("Code: ")]);
        let result = login(
            &d.options(),
            begin(),
            &mut SlowUser(Duration::from_millis(200)),
        );
        assert!(
            matches!(result, Relayed::Broken(Failure::Frame(_))),
            "{result:?}"
        );
        always(&result, &d.options(), PamError::AUTH_ERR);
        d.heard();
        // Gone after reading the answer, before deciding.
        let d = Daemon::play(vec![prompt("Code: "), Step::Read]);
        let result = login(&d.options(), begin(), &mut User::typing(&["123456"]));
        assert!(
            matches!(result, Relayed::Broken(Failure::Frame(FrameError::Closed))),
            "{result:?}"
        );
        always(&result, &d.options(), PamError::AUTH_ERR);
    }

    /// A user who types "123456" after a while.
    struct SlowUser(Duration);

    impl Conversation for SlowUser {
        fn prompt(&mut self, _: &str, _: bool) -> Result<Secret, ConvError> {
            std::thread::sleep(self.0);
            Ok(Secret::new("123456"))
        }
        fn info(&mut self, _: &str) {}
        fn error(&mut self, _: &str) {}
    }

    #[test]
    fn garbage_before_or_after_the_first_reply_is_denied_even_in_safe_mode() {
        let [hi, lo] = otp_proto::PROTOCOL_VERSION.to_be_bytes();
        let garbage = vec![0, 0, 0, 5, hi, lo, 0xff, 0xff, 0xff];
        let d = Daemon::play(vec![Step::Raw(garbage.clone())]);
        let result = login(&d.options(), begin(), &mut User::default());
        assert!(
            matches!(
                result,
                Relayed::Broken(Failure::Frame(FrameError::Malformed(_)))
            ),
            "{result:?}"
        );
        always(&result, &d.options(), PamError::AUTH_ERR);

        let d = Daemon::play(vec![
            Step::Send(Reply::Info { text: "hi".into() }),
            Step::Raw(garbage),
        ]);
        let result = login(&d.options(), begin(), &mut User::default());
        assert!(
            matches!(
                result,
                Relayed::Broken(Failure::Frame(FrameError::Malformed(_)))
            ),
            "{result:?}"
        );
        always(&result, &d.options(), PamError::AUTH_ERR);
    }

    #[test]
    fn hostile_frames_are_errors_not_panics() {
        let mut other_version = encode(&Reply::Outcome(Outcome::Allow)).unwrap().to_vec();
        other_version[HEADER_LEN + 1] = 99;
        let cases: Vec<Vec<u8>> = vec![
            other_version,
            u32::MAX.to_be_bytes().to_vec(),
            vec![0, 0, 0, 1, 0],
            vec![0, 0],
            vec![0, 0, 0, 40, 0, 1, 0],
        ];
        for bytes in cases {
            let d = Daemon::play(vec![Step::Raw(bytes.clone())]);
            let o = Options {
                timeout: Duration::from_millis(500),
                ..d.options()
            };
            let result = login(&o, begin(), &mut User::default());
            assert!(
                matches!(result, Relayed::Broken(Failure::Frame(_))),
                "{bytes:?}: {result:?}"
            );
            always(&result, &o, PamError::AUTH_ERR);
        }
    }

    #[test]
    fn another_protocol_version_is_named_and_denied_even_in_safe_mode() {
        let mut bytes = encode(&Reply::Outcome(Outcome::Allow)).unwrap().to_vec();
        let other = otp_proto::PROTOCOL_VERSION + 1;
        bytes[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&other.to_be_bytes());
        let d = Daemon::play(vec![Step::Raw(bytes)]);
        let result = login(&d.options(), begin(), &mut User::default());
        assert!(
            matches!(
                result,
                Relayed::Broken(Failure::Frame(FrameError::Version(v))) if v == other
            ),
            "{result:?}"
        );
        let named = format!("version {other}");
        assert!(result_text(&result).contains(&named), "{result:?}");
        always(&result, &d.options(), PamError::AUTH_ERR);
    }

    #[test]
    fn a_refusal_or_a_command_reply_is_denied_even_in_safe_mode() {
        let d = Daemon::play(vec![Step::Send(Reply::Refused(Refusal::BadRequest(
            "no".into(),
        )))]);
        let result = login(&d.options(), begin(), &mut User::default());
        assert!(
            matches!(result, Relayed::Broken(Failure::Refused(_))),
            "{result:?}"
        );
        always(&result, &d.options(), PamError::AUTH_ERR);

        let d = Daemon::play(vec![Step::Send(Reply::Done(CommandReply::Ok))]);
        let result = login(&d.options(), begin(), &mut User::default());
        assert!(
            matches!(result, Relayed::Broken(Failure::CommandReply)),
            "{result:?}"
        );
        always(&result, &d.options(), PamError::AUTH_ERR);
    }

    #[test]
    fn a_user_who_gives_up_is_not_let_in_and_no_empty_answer_is_sent() {
        let d = Daemon::play(vec![prompt("Code: "), Step::Read]);
        let mut user = User::default();
        let result = login(&d.options(), begin(), &mut user);
        assert!(matches!(result, Relayed::ConvFailed), "{result:?}");
        always(&result, &d.options(), PamError::AUTH_ERR);
        assert_eq!(user.seen, ["prompt(echo=false): Code: "]);
        // An empty answer would ask otpd for a new code; the daemon sees the hang-up instead.
        let (requests, end) = d.heard();
        assert_eq!(requests, [Request::Begin(begin())]);
        assert!(matches!(end, Some(FrameError::Closed)), "{end:?}");
    }

    /// An in-memory daemon for the properties the socket cannot stage cheaply.
    struct Scripted {
        replies: Vec<Reply>,
        sent: Vec<Request>,
    }

    impl Transport for Scripted {
        fn send(&mut self, request: &Request) -> Result<(), FrameError> {
            self.sent.push(request.clone());
            Ok(())
        }
        fn recv(&mut self) -> Result<Reply, FrameError> {
            if self.replies.is_empty() {
                return Err(FrameError::Closed);
            }
            Ok(self.replies.remove(0))
        }
    }

    #[test]
    fn a_daemon_that_never_decides_is_cut_off() {
        let mut daemon = Scripted {
            replies: vec![Reply::Info { text: "x".into() }; MAX_REPLIES + 5],
            sent: Vec::new(),
        };
        let mut user = User::default();
        let result = relay(&mut daemon, begin(), &mut user);
        assert!(
            matches!(result, Relayed::Broken(Failure::TooManyReplies)),
            "{result:?}"
        );
        assert_eq!(user.seen.len(), MAX_REPLIES);
        assert_eq!(daemon.sent, [Request::Begin(begin())]);
    }

    #[test]
    fn the_log_text_of_a_failure_never_holds_the_answer() {
        let mut daemon = Scripted {
            replies: vec![Reply::Prompt {
                text: "Code: ".into(),
                echo: false,
            }],
            sent: Vec::new(),
        };
        let result = relay(&mut daemon, begin(), &mut User::typing(&["987654"]));
        assert!(
            matches!(result, Relayed::Broken(Failure::Frame(FrameError::Closed))),
            "{result:?}"
        );
        assert_eq!(daemon.sent[1], Request::Answer(Secret::new("987654")));
        assert!(!result_text(&result).contains("987654"));
        assert!(!format!("{daemon_sent:?}", daemon_sent = daemon.sent).contains("987654"));
    }

    fn connect_error(errno: i32) -> Relayed {
        let failure = Failure::Connect {
            path: "/run/otpd/otpd.sock".into(),
            source: io::Error::from_raw_os_error(errno),
        };
        if failure.daemon_absent() {
            Relayed::Absent(failure)
        } else {
            Relayed::Broken(failure)
        }
    }

    #[test]
    fn the_pam_code_table() {
        use PamError as P;
        let timed_out = || Failure::Connect {
            path: "/x".into(),
            source: io::ErrorKind::TimedOut.into(),
        };
        // (what happened, secure, safe)
        let table: Vec<(Relayed, P, P)> = vec![
            (Relayed::Decided(Outcome::Allow), P::SUCCESS, P::SUCCESS),
            (Relayed::Decided(Outcome::Ignore), P::IGNORE, P::IGNORE),
            (connect_error(libc::ENOENT), P::AUTHINFO_UNAVAIL, P::SUCCESS),
            (
                connect_error(libc::ECONNREFUSED),
                P::AUTHINFO_UNAVAIL,
                P::SUCCESS,
            ),
            (connect_error(libc::EAGAIN), P::AUTH_ERR, P::AUTH_ERR),
            (connect_error(libc::EACCES), P::AUTH_ERR, P::AUTH_ERR),
            (connect_error(libc::ENOTDIR), P::AUTH_ERR, P::AUTH_ERR),
            (connect_error(libc::EMFILE), P::AUTH_ERR, P::AUTH_ERR),
            (Relayed::Broken(timed_out()), P::AUTH_ERR, P::AUTH_ERR),
            (
                Relayed::Broken(Failure::UntrustedPeer(1000)),
                P::AUTH_ERR,
                P::AUTH_ERR,
            ),
            (
                Relayed::Broken(Failure::PeerCred(io::ErrorKind::Other.into())),
                P::AUTH_ERR,
                P::AUTH_ERR,
            ),
            (Relayed::ConvFailed, P::AUTH_ERR, P::AUTH_ERR),
        ];
        let mut table = table;
        for reason in [
            DenyReason::WrongCode,
            DenyReason::Replayed,
            DenyReason::Locked,
            DenyReason::NotEnrolled,
            DenyReason::Expired,
            DenyReason::TooManyAttempts,
            DenyReason::SendFailed,
            DenyReason::Cancelled,
            DenyReason::Forbidden,
            DenyReason::Internal,
        ] {
            table.push((
                Relayed::Decided(Outcome::Deny(reason)),
                P::AUTH_ERR,
                P::AUTH_ERR,
            ));
        }
        for broken in [
            FrameError::TimedOut,
            FrameError::Closed,
            FrameError::Version(2),
            FrameError::Malformed("x".into()),
            FrameError::Unexpected {
                expected: Turn::Answer,
                got: RequestKind::Command,
            },
            FrameError::TooLarge(1 << 20),
            FrameError::Io(io::ErrorKind::BrokenPipe.into()),
        ] {
            table.push((Relayed::Broken(broken.into()), P::AUTH_ERR, P::AUTH_ERR));
        }
        for broken in [
            Failure::Refused(Refusal::Internal),
            Failure::CommandReply,
            Failure::TooManyReplies,
        ] {
            table.push((Relayed::Broken(broken), P::AUTH_ERR, P::AUTH_ERR));
        }
        let secure = Options::default();
        for (result, in_secure, in_safe) in &table {
            assert_eq!(pam_code(result, &secure), *in_secure, "{result:?} (secure)");
            assert_eq!(
                pam_code(result, &safe(&secure)),
                *in_safe,
                "{result:?} (safe)"
            );
        }
    }

    fn result_text(r: &Relayed) -> String {
        match r {
            Relayed::Absent(f) | Relayed::Broken(f) => f.to_string(),
            other => format!("{other:?}"),
        }
    }
}
