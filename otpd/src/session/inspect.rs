//! The commands that only read: which policy rule applies to a user (`otpctl policy`), the
//! configuration in force (`otpctl config`), the audit trail (`otpctl attempts`, `stats`).

use crate::peer::Caller;
use crate::policy::rules;
use crate::state::State;
use otp_proto::{Command, CommandReply, PolicyReport, Refusal};

/// `otpctl policy` for `user` (already checked: the caller may name them).
pub async fn policy(
    state: &State,
    user: String,
    service: Option<String>,
) -> Result<CommandReply, Refusal> {
    let effective = rules::applies(&state.cfg.policy, &user, service.as_deref())
        .await
        .map_err(|e| {
            log::error!("otpctl: {e}");
            Refusal::Internal
        })?;
    Ok(CommandReply::Policy(PolicyReport {
        user,
        service,
        rule: effective.rule.and_then(|n| u32::try_from(n).ok()),
        require: effective.require.to_string(),
        methods: effective.methods,
        unenrolled: format!("{:?}", effective.unenrolled).to_lowercase(),
        why: effective.why,
    }))
}

/// `otpctl config`, `attempts`, `attempts show`, `stats`.
pub async fn run(
    caller: &Caller,
    _state: &State,
    command: Command,
) -> Result<CommandReply, Refusal> {
    match command {
        Command::Config => {
            caller.require_admin()?;
            Err(Refusal::BadRequest("not available yet".into()))
        }
        _ => Err(Refusal::BadRequest("not available yet".into())),
    }
}
