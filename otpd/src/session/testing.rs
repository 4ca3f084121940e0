//! Test doubles for the session layer, so a whole login runs in a unit test in milliseconds:
//! a scripted user (`Script`, a `Dialog`), a channel that keeps what it delivers in memory
//! (`Outbox`), and a real `State` on a temp state dir (`World`).

use super::dialog::Dialog;
use crate::channel::{Channel, CodeMessage, Delivery, DeliveryError};
use crate::config::Config;
use crate::names::Names;
use crate::peer::{Caller, Callers};
use crate::policy::accounts::Accounts;
use crate::policy::challenge::Challenges;
use crate::policy::proof::{Counts, How, Proof};
use crate::state::State;
use crate::store::{FileStore, TotpKey};
use otp_proto::frame::FrameError;
use otp_proto::{Outcome, Secret, Via};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Everything the daemon said to the user, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    Prompt {
        text: String,
        echo: bool,
    },
    Info(String),
    Error(String),
    /// forward_pass: the password handed back.
    Password(String),
    End(Outcome),
}

/// How the scripted user answers one prompt.
pub enum Answer {
    Type(String),
    /// Worked out when the prompt comes, from what it says or what was just delivered.
    Later(Box<dyn FnOnce(&str) -> String + Send>),
    /// Ctrl-D, or the session closed: pam_otp hangs up without a word.
    HangUp,
}

/// A user who expects a prompt containing each `expect` in turn and answers it; past the end of
/// the script the user hangs up. A prompt other than the expected one fails the test at once.
#[derive(Default)]
pub struct Script {
    turns: VecDeque<(&'static str, Answer)>,
    pub said: Vec<Said>,
}

impl Script {
    pub fn new() -> Script {
        Script::default()
    }

    pub fn answer(mut self, expect: &'static str, typed: impl Into<String>) -> Script {
        self.turns.push_back((expect, Answer::Type(typed.into())));
        self
    }

    pub fn answer_later(
        mut self,
        expect: &'static str,
        typed: impl FnOnce(&str) -> String + Send + 'static,
    ) -> Script {
        self.turns
            .push_back((expect, Answer::Later(Box::new(typed))));
        self
    }

    pub fn hang_up(mut self, expect: &'static str) -> Script {
        self.turns.push_back((expect, Answer::HangUp));
        self
    }

    /// The texts of every prompt shown.
    pub fn prompts(&self) -> Vec<&str> {
        self.texts(|s| match s {
            Said::Prompt { text, .. } => Some(text),
            _ => None,
        })
    }

    pub fn infos(&self) -> Vec<&str> {
        self.texts(|s| match s {
            Said::Info(text) => Some(text),
            _ => None,
        })
    }

    pub fn errors(&self) -> Vec<&str> {
        self.texts(|s| match s {
            Said::Error(text) => Some(text),
            _ => None,
        })
    }

    /// The outcome the login ended with, if it ended.
    pub fn outcome(&self) -> Option<Outcome> {
        self.said.iter().find_map(|s| match s {
            Said::End(outcome) => Some(*outcome),
            _ => None,
        })
    }

    /// Every answer the script holds was given.
    pub fn finished(&self) -> bool {
        self.turns.is_empty()
    }

    fn texts<'a>(&'a self, pick: impl Fn(&'a Said) -> Option<&'a String>) -> Vec<&'a str> {
        self.said
            .iter()
            .filter_map(pick)
            .map(String::as_str)
            .collect()
    }
}

impl Dialog for Script {
    async fn ask(&mut self, text: &str, echo: bool, _: Duration) -> Result<Secret, FrameError> {
        self.said.push(Said::Prompt {
            text: text.into(),
            echo,
        });
        let Some((expect, answer)) = self.turns.pop_front() else {
            return Err(FrameError::Closed);
        };
        assert!(
            text.contains(expect),
            "the daemon asked {text:?}; the script expected a prompt with {expect:?}"
        );
        match answer {
            Answer::Type(typed) => Ok(Secret::new(typed)),
            Answer::Later(typed) => Ok(Secret::new(typed(text))),
            Answer::HangUp => Err(FrameError::Closed),
        }
    }

    async fn info(&mut self, text: &str) -> Result<(), FrameError> {
        self.said.push(Said::Info(text.into()));
        Ok(())
    }

    async fn error(&mut self, text: &str) -> Result<(), FrameError> {
        self.said.push(Said::Error(text.into()));
        Ok(())
    }

    async fn hand_back(&mut self, password: &Secret) -> Result<(), FrameError> {
        self.said.push(Said::Password(password.expose().to_owned()));
        Ok(())
    }

    async fn end(&mut self, outcome: Outcome) -> Result<(), FrameError> {
        self.said.push(Said::End(outcome));
        Ok(())
    }

    async fn hung_up(&mut self) -> FrameError {
        std::future::pending().await
    }
}

/// One message a channel delivered.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub to: String,
    pub code: String,
}

/// A channel that keeps every delivery in memory, or fails every one while `down`.
#[derive(Clone, Default)]
pub struct Outbox {
    delivered: Arc<Mutex<Vec<Delivered>>>,
    down: Arc<AtomicBool>,
}

impl Outbox {
    pub fn delivered(&self) -> Vec<Delivered> {
        self.delivered.lock().unwrap().clone()
    }

    /// The code of the last delivery (empty if none).
    pub fn last_code(&self) -> String {
        self.delivered()
            .last()
            .map(|d| d.code.clone())
            .unwrap_or_default()
    }

    pub fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
    }
}

impl Channel for Outbox {
    fn deliver<'a>(&'a self, to: &'a str, msg: &'a CodeMessage<'a>) -> Delivery<'a> {
        let result = if self.down.load(Ordering::SeqCst) {
            Err(DeliveryError::Failed("the test channel is down".into()))
        } else {
            self.delivered.lock().unwrap().push(Delivered {
                to: to.to_owned(),
                code: msg.code.expose().to_owned(),
            });
            Ok(())
        };
        Box::pin(std::future::ready(result))
    }
}

/// A real `State` on a temp dir, whose email and SMS channels are outboxes.
pub struct World {
    pub state: State,
    pub email: Outbox,
    pub sms: Outbox,
    _dir: tempfile::TempDir,
}

pub const EMAIL: &str = "alice@example.com";
pub const PHONE: &str = "+15555550123";

/// A world on the default configuration, changed by `tune`.
pub fn world(tune: impl FnOnce(&mut Config)) -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    tune(&mut cfg);
    let store = Arc::new(FileStore::open(dir.path()).unwrap());
    let (email, sms) = (Outbox::default(), Outbox::default());
    let state = State {
        accounts: Arc::new(Accounts::new(store, cfg.clone()).unwrap()),
        callers: Arc::new(Callers::new(None)),
        names: Arc::new(Names::new()),
        challenges: Arc::new(Challenges::new(
            cfg.code.clone(),
            cfg.policy.disable_token_ttl,
        )),
        email: Some(Box::new(email.clone())),
        sms: Some(Box::new(sms.clone())),
        duo: None,
        audit: Arc::new(crate::audit::Audit::none("testhost")),
        source: None,
        named: Default::default(),
        host: "testhost".into(),
        issuer: "testhost".into(),
        cfg,
    };
    World {
        state,
        email,
        sms,
        _dir: dir,
    }
}

/// A login of `user` as sshd begins it.
pub fn sshd(user: &str) -> otp_proto::Login {
    otp_proto::Login {
        user: user.into(),
        service: "sshd".into(),
        rhost: Some("192.0.2.1".into()),
        tty: None,
        nullok: false,
        forward_pass: None,
    }
}

/// sshd: root, which may run a login for anyone.
pub fn root() -> Caller {
    Caller {
        uid: 0,
        name: Some("root".into()),
        admin: true,
    }
}

impl World {
    /// `user` with an active authenticator key, confirmed with the previous step's code so
    /// the current one is still unused, and eight recovery codes.
    pub async fn with_app(&self, user: &str) -> (TotpKey, Vec<Secret>) {
        let accounts = &self.state.accounts;
        let (key, codes) = accounts.enrollment.enroll_totp(user, false).await.unwrap();
        let confirm = Secret::new(app_code(&key, -30));
        let proof = self.state.judge(user, &confirm, Counts::Verify).await;
        assert_eq!(proof.unwrap(), Proof::Allowed(How::Activated));
        (key, codes)
    }

    /// `user` may get codes by email (at `EMAIL`) or SMS (at `PHONE`).
    pub async fn with_sent(&self, user: &str, via: Via) {
        let to = match via {
            Via::Email => EMAIL,
            Via::Sms => PHONE,
        };
        let accounts = &self.state.accounts;
        accounts
            .enrollment
            .set_destination(user, via, to)
            .await
            .unwrap();
    }

    /// Fail `user`'s app login until the lockout starts.
    pub async fn lock_out(&self, user: &str) {
        for _ in 0..self.state.cfg.lockout.max_failures {
            let wrong = Secret::new("not a code");
            let proof = self.state.judge(user, &wrong, Counts::AppLogin).await;
            assert!(matches!(proof.unwrap(), Proof::Wrong { .. }));
        }
        assert!(self.state.accounts.lockouts.locked_for(user).is_some());
    }
}

/// The app's code `offset` seconds from now.
pub fn app_code(key: &TotpKey, offset: i64) -> String {
    let now = crate::policy::clock::unix_now() as i64;
    crate::policy::totp::code_at(key, now.saturating_add(offset) as u64).unwrap()
}

/// The key a first-login prompt shows ("Or type the key ABCD EFGH ... (SHA1, 6 digits, 30 s)"),
/// as the user would type it into an app with the default parameters.
pub fn key_on_screen(prompt: &str) -> TotpKey {
    let (_, after) = prompt
        .split_once("Or type the key ")
        .expect("a key on screen");
    let (typed, _) = after.split_once(" (").expect("the key's parameters");
    let cfg = crate::config::TotpConfig::default();
    let template = crate::policy::totp::new_key(&cfg, 0).unwrap();
    TotpKey {
        secret: Secret::new(typed),
        ..template
    }
}
