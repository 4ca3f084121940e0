//! Sending a code: issue a challenge (cooldown, quota, invalidation are the policy's), hand it
//! to the channel, and void it if delivery fails. Shared by logins and `otpctl`.

use crate::channel::email::mask;
use crate::channel::CodeMessage;
use crate::policy::challenge::{Purpose, SendRefusal};
use crate::state::State;
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
    /// No email channel is configured.
    Unavailable,
    /// The channel failed; the log says why.
    Failed,
}

pub async fn email_code(
    state: &State,
    user: &str,
    address: &str,
    purpose: Purpose,
) -> Result<Sent, SendError> {
    let Some(channel) = &state.email else {
        return Err(SendError::Unavailable);
    };
    let issued = state
        .challenges
        .issue(user, purpose, Instant::now())
        .map_err(|r| match r {
            SendRefusal::Cooldown(left) => SendError::Cooldown(left),
            SendRefusal::Quota => {
                log::warn!("user={user}: hourly code quota reached; not sending");
                SendError::Quota
            }
        })?;
    let msg = CodeMessage {
        user,
        code: &issued.code,
        id: &issued.id,
        validity: state.challenges.ttl(),
        host: &state.host,
    };
    let masked = mask(address);
    match channel.deliver(address, &msg).await {
        Ok(()) => {
            log::info!(
                "user={user}: code sent by email to {masked} (challenge {})",
                issued.id
            );
            Ok(Sent {
                id: issued.id,
                masked,
            })
        }
        Err(e) => {
            state.challenges.cancel(user, &issued.id);
            log::error!(
                "user={user}: could not email the code to {masked} (challenge {}): {e}",
                issued.id
            );
            Err(SendError::Failed)
        }
    }
}
