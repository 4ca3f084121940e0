//! Everything sessions share: configuration, accounts, open challenges and the delivery
//! channels. A `State` is one configuration's view: a reload (reload.rs) builds a new one from
//! the new file around the same long-lived parts (accounts, callers, names, challenges, each
//! behind an `Arc`), and every connection keeps the one it started with.

use crate::audit::Audit;
use crate::channel::courier::Courier;
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
use std::collections::BTreeMap;
use std::sync::Arc;

pub struct State {
    pub cfg: Config,
    pub accounts: Arc<Accounts>,
    /// Who each peer uid is, looked up once in a while rather than per connection.
    pub callers: Arc<Callers>,
    /// User names as typed, resolved to their canonical passwd names.
    pub names: Arc<Names>,
    pub challenges: Arc<Challenges>,
    /// The audit trail (audit/), shared across reloads.
    pub audit: Arc<Audit>,
    /// The configuration file's name and text as read, for `otpctl config`'s origins; `None`
    /// on the built-in defaults.
    pub source: Option<Arc<(String, String)>>,
    /// `None` when `[email]` is not configured.
    pub email: Option<Box<dyn Channel>>,
    /// `None` when `[sms]` is not configured.
    pub sms: Option<Box<dyn Channel>>,
    /// `None` when `[duo]` is not configured.
    pub duo: Option<crate::channel::duo::DuoClient>,
    /// `[email.relays.NAME]` and `[sms.providers.NAME]`, which policy rules pick.
    pub named: NamedChannels,
    /// Named in messages ("your login code for HOST") and in app accounts (USER@HOST); read
    /// once, at start.
    pub host: String,
    /// What the authenticator app files a new key under: `[totp] issuer`, or the host name.
    pub issuer: String,
}

/// The email and SMS channels, each `None` when not configured.
pub type Channels = (Option<Box<dyn Channel>>, Option<Box<dyn Channel>>);

/// The named relays and providers, by name.
#[derive(Default)]
pub struct NamedChannels {
    pub email: BTreeMap<String, Box<dyn Channel>>,
    pub sms: BTreeMap<String, Box<dyn Channel>>,
}

/// A configured channel that could not be set up (its secret or CA file, its address).
#[derive(Debug, thiserror::Error)]
pub enum ChannelSetupError {
    #[error(transparent)]
    Email(#[from] crate::channel::email::EmailConfigError),
    #[error(transparent)]
    Sms(#[from] crate::channel::sms::SmsConfigError),
    #[error(transparent)]
    Directory(#[from] crate::directory::ldap::DirectoryConfigError),
    #[error(transparent)]
    Duo(#[from] crate::channel::duo::DuoConfigError),
    /// A named relay or provider (`section` is `email.relays.NAME` or `sms.providers.NAME`).
    #[error("[{section}] {error}")]
    Named {
        section: String,
        error: Box<ChannelSetupError>,
    },
}

impl State {
    /// Build every configured channel; an error names the section and key to fix.
    pub fn new(cfg: Config, mut accounts: Accounts) -> Result<State, ChannelSetupError> {
        let (email, sms) = Self::channels(&cfg)?;
        if let Some(directory) = &cfg.directory {
            let directory = crate::directory::Directory::new(directory)?;
            accounts.registry.set_directory(directory);
        }
        let named = Self::named_channels(&cfg)?;
        let shared = accounts.shared_store();
        let host = hostname();
        let duo = cfg.duo.as_ref().map(crate::channel::duo::DuoClient::new);
        Ok(State {
            duo: duo.transpose()?,
            sms,
            named,
            accounts: Arc::new(accounts),
            callers: Arc::new(Callers::new(cfg.admin_group.clone())),
            names: Arc::new(Names::new()),
            challenges: Arc::new(
                Challenges::new(cfg.code.clone(), cfg.policy.disable_token_ttl).with_fleet(shared),
            ),
            email,
            issuer: cfg.totp.issuer.clone().unwrap_or_else(|| host.clone()),
            audit: Arc::new(Audit::none(&host)),
            source: None,
            host,
            cfg,
        })
    }

    /// The state under a new configuration `cfg`: its own channels, issuer and callers (when
    /// `admin_group` changed), the same accounts, names and challenges. What those hold from
    /// the old file is not changed here: reload.rs refuses a file that changes it.
    pub fn reloaded(&self, cfg: Config) -> Result<State, ChannelSetupError> {
        let (email, sms) = Self::channels(&cfg)?;
        let named = Self::named_channels(&cfg)?;
        let callers = if cfg.admin_group == self.cfg.admin_group {
            self.callers.clone()
        } else {
            Arc::new(Callers::new(cfg.admin_group.clone()))
        };
        let duo = cfg.duo.as_ref().map(crate::channel::duo::DuoClient::new);
        Ok(State {
            sms,
            email,
            named,
            duo: duo.transpose()?,
            accounts: self.accounts.clone(),
            callers,
            names: self.names.clone(),
            challenges: self.challenges.clone(),
            audit: self.audit.clone(),
            source: None,
            issuer: cfg.totp.issuer.clone().unwrap_or_else(|| self.host.clone()),
            host: self.host.clone(),
            cfg,
        })
    }

    /// This state with `audit` as its trail (the daemon's, on the store's sink).
    pub fn with_audit(self, audit: Arc<Audit>) -> State {
        State { audit, ..self }
    }

    /// This state with the text its configuration was parsed from.
    pub fn with_source(self, source: Option<(String, String)>) -> State {
        State {
            source: source.map(Arc::new),
            ..self
        }
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
            Some(e) => Some(Courier::wrap_shared(Box::new(EmailChannel::new(e)?))),
            None => None,
        };
        let sms = match &cfg.sms {
            Some(s) => Some(Courier::wrap_shared(Box::new(SmsChannel::new(s)?))),
            None => None,
        };
        Ok((email, sms))
    }

    /// The named relays and providers, each built like `[email]` and `[sms]` (also what
    /// `otpd check-config` builds).
    pub fn named_channels(cfg: &Config) -> Result<NamedChannels, ChannelSetupError> {
        let mut named = NamedChannels::default();
        let wrap = |section: String| {
            move |e: ChannelSetupError| ChannelSetupError::Named {
                section,
                error: Box::new(e),
            }
        };
        for (name, relay) in cfg.email.iter().flat_map(|e| &e.relays) {
            let channel = EmailChannel::new(relay)
                .map_err(ChannelSetupError::from)
                .map_err(wrap(format!("email.relays.{name}")))?;
            named
                .email
                .insert(name.clone(), Courier::wrap_shared(Box::new(channel)));
        }
        for (name, provider) in cfg.sms.iter().flat_map(|s| &s.providers) {
            let channel = SmsChannel::new(provider)
                .map_err(ChannelSetupError::from)
                .map_err(wrap(format!("sms.providers.{name}")))?;
            named
                .sms
                .insert(name.clone(), Courier::wrap_shared(Box::new(channel)));
        }
        Ok(named)
    }

    /// The channel codes `via` travel by: the named relay or provider `name` (a policy rule's
    /// pick), else the default one; `None` if not configured.
    pub fn channel_named(&self, via: Via, name: Option<&str>) -> Option<&dyn Channel> {
        let named = match via {
            Via::Email => &self.named.email,
            Via::Sms => &self.named.sms,
        };
        match name {
            Some(n) => named.get(n).map(|c| c.as_ref()),
            None => self.channel(via),
        }
    }

    /// The channel codes `via` travel by, if configured.
    pub fn channel(&self, via: Via) -> Option<&dyn Channel> {
        match via {
            Via::Email => self.email.as_deref(),
            Via::Sms => self.sms.as_deref(),
        }
    }
}
