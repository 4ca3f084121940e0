//! Everything sessions share, built once at start-up: configuration, accounts, open challenges
//! and the delivery channels.

use crate::channel::email::{EmailChannel, EmailConfigError};
use crate::channel::Channel;
use crate::config::Config;
use crate::policy::accounts::{hostname, Accounts};
use crate::policy::challenge::Challenges;
use crate::store::Store;
use std::sync::Arc;

pub struct State {
    pub cfg: Config,
    pub accounts: Accounts,
    pub challenges: Challenges,
    /// `None` when `[email]` is not configured.
    pub email: Option<Box<dyn Channel>>,
    /// Named in messages: "your login code for HOST".
    pub host: String,
}

impl State {
    pub fn new(cfg: Config, store: Arc<dyn Store>) -> Result<State, EmailConfigError> {
        let email = match &cfg.email {
            Some(e) => Some(Box::new(EmailChannel::new(e)?) as Box<dyn Channel>),
            None => None,
        };
        Ok(State {
            accounts: Accounts::new(store, cfg.clone()),
            challenges: Challenges::new(cfg.code.clone()),
            email,
            host: hostname(),
            cfg,
        })
    }
}
