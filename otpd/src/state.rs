//! Everything sessions share, built once at start-up: configuration, accounts, open challenges
//! and the delivery channels.

use crate::channel::email::EmailChannel;
use crate::channel::sms::SmsChannel;
use crate::channel::Channel;
use crate::config::Config;
use crate::names::Names;
use crate::peer::Callers;
use crate::policy::accounts::Accounts;
use crate::policy::challenge::Challenges;
use crate::policy::clock::hostname;
use crate::policy::proof::{self, Counts, Proof};
use crate::store::StoreError;
use otp_proto::{Secret, Via};

pub struct State {
    pub cfg: Config,
    pub accounts: Accounts,
    /// Who each peer uid is, looked up once in a while rather than per connection.
    pub callers: Callers,
    /// User names as typed, resolved to their canonical passwd names.
    pub names: Names,
    pub challenges: Challenges,
    /// `None` when `[email]` is not configured.
    pub email: Option<Box<dyn Channel>>,
    /// `None` when `[sms]` is not configured.
    pub sms: Option<Box<dyn Channel>>,
    /// Named in messages ("your login code for HOST") and in app accounts (USER@HOST); read
    /// once, at start.
    pub host: String,
    /// What the authenticator app files a new key under: `[totp] issuer`, or the host name.
    pub issuer: String,
}

/// The email and SMS channels, each `None` when not configured.
pub type Channels = (Option<Box<dyn Channel>>, Option<Box<dyn Channel>>);

/// A configured channel that could not be set up (its secret or CA file, its address).
#[derive(Debug, thiserror::Error)]
pub enum ChannelSetupError {
    #[error(transparent)]
    Email(#[from] crate::channel::email::EmailConfigError),
    #[error(transparent)]
    Sms(#[from] crate::channel::sms::SmsConfigError),
}

impl State {
    /// Build every configured channel; an error names the section and key to fix.
    pub fn new(cfg: Config, accounts: Accounts) -> Result<State, ChannelSetupError> {
        let (email, sms) = Self::channels(&cfg)?;
        let shared = accounts.shared_store();
        let host = hostname();
        Ok(State {
            sms,
            accounts,
            callers: Callers::new(cfg.admin_group.clone()),
            names: Names::new(),
            challenges: Challenges::new(cfg.code.clone(), cfg.policy.disable_token_ttl)
                .with_fleet(shared),
            email,
            issuer: cfg.totp.issuer.clone().unwrap_or_else(|| host.clone()),
            host,
            cfg,
        })
    }

    /// Judge one typed answer (policy::proof, the only place answers are judged).
    pub async fn judge(
        &self,
        user: &str,
        answer: &Secret,
        counts: Counts,
    ) -> Result<Proof, StoreError> {
        proof::judge(&self.accounts, &self.challenges, user, answer, counts).await
    }

    /// The configured channels (email, SMS), each with its secret and CA files read. Also what
    /// `otpd check-config` builds, so "ok" there means the daemon's channels start.
    pub fn channels(cfg: &Config) -> Result<Channels, ChannelSetupError> {
        let email = match &cfg.email {
            Some(e) => Some(Box::new(EmailChannel::new(e)?) as Box<dyn Channel>),
            None => None,
        };
        let sms = match &cfg.sms {
            Some(s) => Some(Box::new(SmsChannel::new(s)?) as Box<dyn Channel>),
            None => None,
        };
        Ok((email, sms))
    }

    /// The channel codes `via` travel by, if configured.
    pub fn channel(&self, via: Via) -> Option<&dyn Channel> {
        match via {
            Via::Email => self.email.as_deref(),
            Via::Sms => self.sms.as_deref(),
        }
    }
}
