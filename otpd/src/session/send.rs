//! Sending a code: issue a challenge (cooldown, quotas, invalidation are the policy's), hand it
//! to the channel, and void it if delivery fails. Shared by logins and `otpctl`.
//!
//! The user and the destination come from a peer, so they reach the log only through
//! `logging::field`.

use crate::channel::{mask, CodeMessage, MessageKind};
use crate::logging::field;
use crate::policy::challenge::{Purpose, SendRefusal};
use crate::state::State;
use otp_proto::Via;
use std::time::{Duration, Instant};

/// A code on its way.
pub struct Sent {
    pub id: String,
    /// The destination as the user may see it.
    pub masked: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    Cooldown(Duration),
    Quota,
    /// The fleet's database cannot be reached (`SendRefusal::Offline`).
    Offline,
    /// The channel is not configured.
    Unavailable,
    /// The channel failed; the log says why.
    Failed,
}

/// Send a new code to `destination` by `via`.
pub async fn send_code(
    state: &State,
    user: &str,
    via: Via,
    destination: &str,
    purpose: Purpose,
) -> Result<Sent, SendError> {
    // A policy rule may route this user's codes through a named relay or provider.
    let Ok(policy) = crate::policy::rules::applies(&state.cfg.policy, user, None).await else {
        log::error!(
            "user={}: cannot read the user's groups; not sending",
            field(user)
        );
        return Err(SendError::Failed);
    };
    let named = match via {
        Via::Email => policy.email_relay,
        Via::Sms => policy.sms_provider,
    };
    let Some(channel) = state.channel_named(via, named.as_deref()) else {
        return Err(SendError::Unavailable);
    };
    let is_token = matches!(purpose, Purpose::Disable(_));
    let masked = mask(via, destination);
    let issued = state
        .challenges
        .issue(user, purpose, destination, Instant::now())
        .map_err(|r| match r {
            SendRefusal::Cooldown(left) => SendError::Cooldown(left),
            SendRefusal::Quota => {
                log::warn!(
                    "user={}: hourly {via} quota reached (user or destination); not sending",
                    field(user)
                );
                SendError::Quota
            }
            SendRefusal::UnconfirmedQuota => {
                log::warn!(
                    "user={}: hourly quota of {via} enrollment codes reached (this user or {}); \
                     not sending",
                    field(user),
                    field(&masked)
                );
                SendError::Quota
            }
            SendRefusal::Offline => {
                log::warn!(
                    "user={}: the login database cannot be reached; not sending by {via}",
                    field(user)
                );
                SendError::Offline
            }
        })?;
    let msg = CodeMessage {
        kind: if is_token {
            MessageKind::DisableToken
        } else {
            MessageKind::Code
        },
        user,
        code: &issued.code,
        id: &issued.id,
        validity: state.challenges.ttl(),
        host: &state.host,
        change: "",
    };
    match channel.deliver(destination, &msg).await {
        Ok(()) => {
            log::info!(
                "user={}: code sent by {via} to {} (challenge {})",
                field(user),
                field(&masked),
                issued.id
            );
            Ok(Sent {
                id: issued.id,
                masked,
            })
        }
        Err(e) => {
            state.challenges.cancel(user, &issued, destination);
            log::error!(
                "user={}: could not send the code by {via} to {} (challenge {}): {e}",
                field(user),
                field(&masked),
                issued.id
            );
            Err(SendError::Failed)
        }
    }
}

/// Tell the user, at the address on file, that a factor of their account changed (`what`), so a
/// stolen session cannot change one unseen. Best effort: a failed notice is logged and the
/// change stands. No address or no email channel: nothing to do.
pub async fn notify_change(state: &State, user: &str, address: Option<&str>, what: &str) {
    let (Some(address), Some(channel)) = (address, state.channel(Via::Email)) else {
        return;
    };
    let none = otp_proto::Secret::new("");
    let msg = CodeMessage {
        kind: MessageKind::ChangeNotice,
        user,
        code: &none,
        id: "",
        validity: Duration::ZERO,
        host: &state.host,
        change: what,
    };
    let masked = mask(Via::Email, address);
    match channel.deliver(address, &msg).await {
        Ok(()) => log::info!(
            "user={}: notice of the change sent to {}",
            field(user),
            field(&masked)
        ),
        Err(e) => log::warn!(
            "user={}: could not send the notice of the change to {}: {e}",
            field(user),
            field(&masked)
        ),
    }
}
