//! Channels deliver a message to a person: `email` (SMTP) and `sms` (HTTPS to a provider). A
//! channel delivers; expiry, attempts, cooldowns and the per-user and per-destination quotas are
//! the challenge policy's (`policy::challenge`). One exception, on purpose: the SMS channel
//! keeps `[sms] max_total_per_hour`, a ceiling on the provider's bill for all users together,
//! because it is about the provider, not about any user. Secret and CA files are read by one
//! helper (`secret_file`) for every channel.
//!
//! Channels are behind a trait so they could later move to a less-privileged process, and so
//! that a slow provider delays only the challenge that waits on it. The daemon's channels
//! deliver through the courier (`courier`): their own thread, below the logins' priority.

pub mod courier;
pub mod duo;
pub mod email;
pub mod secret_file;
pub mod sms;
pub mod template;

use otp_proto::Secret;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Everything a channel may put into its message.
pub struct CodeMessage<'a> {
    pub kind: MessageKind,
    pub user: &'a str,
    pub code: &'a Secret,
    /// The challenge id, for the recipient to quote to an admin.
    pub id: &'a str,
    pub validity: Duration,
    pub host: &'a str,
    /// What changed, for a `ChangeNotice` (empty otherwise).
    pub change: &'a str,
}

/// What the code is for, which decides the wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A login or confirmation code: the configured templates.
    Code,
    /// A token confirming that a second factor is to be turned off: fixed wording.
    DisableToken,
    /// A factor of the account changed (`change` says how): fixed wording, no code. Sent to
    /// the address on file, so a stolen session cannot change a factor unseen.
    ChangeNotice,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The server's or provider's own words, for the log.
    #[error("{0}")]
    Failed(String),
    /// The courier already has this many sends in flight (channel::courier).
    #[error("{0} messages are already on their way; not sending more at once")]
    Busy(usize),
}

/// A destination as its owner may see it: `j***@e***.com`, `+1******4567`.
pub fn mask(via: otp_proto::Via, destination: &str) -> String {
    match via {
        otp_proto::Via::Email => email::mask(destination),
        otp_proto::Via::Sms => sms::mask(destination),
    }
}

pub type Delivery<'a> = Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>>;

pub trait Channel: Send + Sync {
    /// Send `msg` to `to` (an address or number already validated by the channel).
    fn deliver<'a>(&'a self, to: &'a str, msg: &'a CodeMessage<'a>) -> Delivery<'a>;
}
