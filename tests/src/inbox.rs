//! Where sent codes arrive, whatever the channel: the shared sent-code stories
//! (tests/sent_codes.rs) run once against the SMTP server (`smtp`) and once against an SMS
//! provider (`sms`) through this trait, so a story is written once and holds for both.

use crate::pam::{PamRun, PAM_AUTH_ERR};
use crate::{me, Daemon, PamService};
use otp_proto::Via;

/// A message otpd sent, as the far end received it.
#[derive(Debug, Clone)]
pub struct Arrived {
    /// The address or number it went to.
    pub to: String,
    /// The channel that carried it.
    pub via: Via,
    /// What a person reads: a mail's subject and body, or the text message.
    pub text: String,
    code: Option<String>,
}

impl Arrived {
    pub fn new(to: String, via: Via, text: String, code: Option<String>) -> Arrived {
        Arrived {
            to,
            via,
            text,
            code,
        }
    }

    /// The code in the message; a message without one (a notice) fails the test.
    pub fn code(&self) -> String {
        self.code
            .clone()
            .unwrap_or_else(|| panic!("no code in the {} message:\n{}", self.via, self.text))
    }

    pub fn has_code(&self) -> bool {
        self.code.is_some()
    }
}

/// What the stories need to know about a channel besides its messages.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    pub via: Via,
    /// The `[users.NAME]` key that gives a user a destination: "email" or "phone".
    pub user_key: &'static str,
    /// The test user's destination, and how otpd shows it.
    pub destination: &'static str,
    pub masked: &'static str,
    /// `otpctl enroll` for this channel, up to the destination: ["enroll", "email", "--email"].
    pub enroll: [&'static str; 3],
    /// Another destination to register, and how otpd shows it.
    pub other: (&'static str, &'static str),
    /// A destination otpd refuses to register, and words its refusal contains.
    pub invalid: (&'static str, &'static str),
    /// `otpctl status` keys: the method's state and its masked destination.
    pub status: (&'static str, &'static str),
    /// Whether the user hears of every change of a factor this way (only the address on file).
    pub hears_of_changes: bool,
}

impl Facts {
    /// `otpctl send --via` takes this.
    pub fn via_arg(&self) -> &'static str {
        match self.via {
            Via::Email => "email",
            Via::Sms => "sms",
        }
    }
}

/// One channel's far end, as the stories see it.
pub trait Inbox {
    /// Start the far end: a real server on loopback, in its plainest setup.
    fn open() -> Self
    where
        Self: Sized;
    /// otpd's config sections that send this channel's messages here.
    fn config(&self) -> String;
    /// The same sections, pointing at a port on which nothing listens.
    fn config_to_nowhere(&self) -> String;
    fn facts(&self) -> Facts;
    /// The next message that arrived and no test has taken yet, waiting up to 30 s.
    fn next(&self) -> Arrived;
    /// True when nothing arrived that no test has taken yet (takes what did).
    fn nothing_arrived(&self) -> bool;
}

/// otpd sending through `inbox`, the test user's destination in `[users]`, plus `extra`
/// sections (e.g. `[code]`).
pub fn daemon(inbox: &impl Inbox, extra: &str) -> Daemon {
    daemon_with(&inbox.config(), inbox.facts(), extra)
}

/// The same, with the channel's sections pointing at a port on which nothing listens.
pub fn daemon_to_nowhere(inbox: &impl Inbox) -> Daemon {
    daemon_with(&inbox.config_to_nowhere(), inbox.facts(), "")
}

fn daemon_with(config: &str, facts: Facts, extra: &str) -> Daemon {
    Daemon::start(&format!(
        "{config}\n[users.\"{}\"]\n{} = \"{}\"\n{extra}",
        me(),
        facts.user_key,
        facts.destination
    ))
}

/// Log in through `otpd` and see the login denied because the code could not be sent.
pub fn assert_could_not_send(otpd: &Daemon) -> PamRun {
    let run = PamService::otp(otpd, "").login(&me(), &[]);
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert!(
        run.errors()
            .iter()
            .any(|e| e.contains("Could not send the code")),
        "{run:?}"
    );
    run
}

/// A port on 127.0.0.1 on which nothing listens (it was free a moment ago).
pub fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
