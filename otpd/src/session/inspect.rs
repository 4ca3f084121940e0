//! The commands that only read: which policy rule applies to a user (`otpctl policy`), the
//! configuration in force (`otpctl config`), the audit trail (`otpctl attempts`, `stats`).

use crate::audit::{Filter, DEFAULT_LIMIT};
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
        sms_provider: effective.sms_provider,
        email_relay: effective.email_relay,
    }))
}

/// `otpctl config`, `attempts`, `attempts show`, `stats`.
pub async fn run(
    caller: &Caller,
    state: &State,
    command: Command,
) -> Result<CommandReply, Refusal> {
    match command {
        Command::Config => {
            caller.require_admin()?;
            Ok(CommandReply::Config(super::config_view::entries(state)))
        }
        Command::Attempts(query) => {
            let mut filter = Filter::from_query(&query, crate::audit::now());
            filter.user = whose(caller, state, query.user).await?;
            let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
            let events = state.audit.query(filter, limit).await.map_err(internal)?;
            Ok(CommandReply::Attempts(events))
        }
        Command::AttemptShow { id } => {
            let filter = Filter {
                id: Some(id.clone()),
                // A user asking for someone else's event finds none.
                user: whose(caller, state, None).await?,
                ..Filter::default()
            };
            let mut found = state.audit.query(filter, 1).await.map_err(internal)?;
            match found.pop() {
                Some(event) => Ok(CommandReply::Attempt(Box::new(event))),
                None => Err(Refusal::UnknownEvent(id)),
            }
        }
        Command::Stats => {
            // Counts of everyone's logins: for admins.
            caller.require_admin()?;
            Ok(CommandReply::Stats(state.audit.stats()))
        }
        _ => Err(Refusal::BadRequest("not a read-only command".into())),
    }
}

/// Whose events the caller may see: a user only their own (naming another is refused), an
/// admin anyone's (`None`: everyone's).
async fn whose(
    caller: &Caller,
    state: &State,
    user: Option<String>,
) -> Result<Option<String>, Refusal> {
    let user = match user {
        Some(typed) => Some(state.names.resolve(&typed).await.as_str().to_owned()),
        None => None,
    };
    match user {
        None if caller.admin => Ok(None),
        user => caller.target(user).map(Some),
    }
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    log::error!("otpctl: {e}");
    Refusal::Internal
}
