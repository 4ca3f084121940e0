//! The audit event of an otpctl command that changes something (enroll, verify, send,
//! disable, unlock, reset, import, recovery codes, default): who asked, for whom, how it
//! ended. Commands that only read (status, users, policy, config, attempts, stats) make none.

use crate::peer::Caller;
use crate::state::State;
use otp_proto::{
    AuditEvent, AuditKind, AuditResult, Command, CommandReply, MethodKind, Refusal, Via,
};

/// The event `command` will make, before it runs; `None` for the commands that only read.
pub async fn of(caller: &Caller, state: &State, command: &Command) -> Option<AuditEvent> {
    let via = |v: &Option<Via>| {
        v.map(|v| match v {
            Via::Email => MethodKind::Email,
            Via::Sms => MethodKind::Sms,
        })
    };
    let (kind, user, method) = match command {
        Command::EnrollTotp { user, .. } | Command::EnrollHotp { user, .. } => {
            (AuditKind::Enroll, user, Some(MethodKind::Totp))
        }
        Command::EnrollEmail { user, .. } => (AuditKind::Enroll, user, Some(MethodKind::Email)),
        Command::EnrollSms { user, .. } => (AuditKind::Enroll, user, Some(MethodKind::Sms)),
        Command::Send { user, via: v } => (AuditKind::Send, user, via(v)),
        Command::Verify { user, .. } => (AuditKind::Verify, user, None),
        Command::Disable { user, method, .. } => (AuditKind::Disable, user, *method),
        Command::RecoveryCodes { user, .. } => (AuditKind::RecoveryCodes, user, None),
        Command::SetDefault { user, method } => (AuditKind::SetDefault, user, *method),
        Command::Import { user, .. } => (AuditKind::Import, user, Some(MethodKind::Totp)),
        Command::Unlock { user } => (AuditKind::Unlock, &Some(user.clone()), None),
        Command::Reset { user } => (AuditKind::Reset, &Some(user.clone()), None),
        _ => return None,
    };
    // The canonical name of whom it is about, as the command itself resolves it.
    let user = match user {
        Some(typed) => state.names.resolve(typed).await.as_str().to_owned(),
        None => caller
            .name
            .clone()
            .unwrap_or_else(|| format!("uid {}", caller.uid)),
    };
    let mut event = state
        .audit
        .event(kind, AuditResult::Allowed, &user, caller.uid);
    event.method = method;
    event.service = Some("otpctl".to_owned());
    if caller.name.as_deref() != Some(user.as_str()) {
        event.actor = Some(
            caller
                .name
                .clone()
                .unwrap_or_else(|| format!("uid {}", caller.uid)),
        );
    }
    Some(event)
}

/// After a failure recorded as `failed`: if it locked the user, a `lockout` event of its own
/// (the failure itself is `failed`'s; a login refused because already locked makes none).
pub async fn lockout_if_it_began(state: &State, failed: &AuditEvent) {
    let Some(left) = state.accounts.lockouts.locked_for(&failed.user) else {
        return;
    };
    let mut event = state.audit.event(
        AuditKind::Lockout,
        AuditResult::Denied,
        &failed.user,
        failed.caller_uid,
    );
    event.service = failed.service.clone();
    event.rhost = failed.rhost.clone();
    event.method = failed.method;
    event.reason = format!(
        "locked for {} s after too many failed attempts",
        left.as_secs()
    );
    state.audit.record(event).await;
}

/// Record `event` with how the command ended. The reason is the refusal's sentence, which
/// names no code, secret or full address.
pub async fn record(state: &State, mut event: AuditEvent, result: &Result<CommandReply, Refusal>) {
    match result {
        Ok(done) => {
            event.reason = "done".to_owned();
            match done {
                CommandReply::CodeSent { challenge, .. } => {
                    event.challenge = Some(challenge.clone());
                    event.reason = "code sent".to_owned();
                }
                CommandReply::TotpEnrollment(_) => event.reason = "pending key issued".to_owned(),
                CommandReply::TokenSent { .. } => event.reason = "token sent".to_owned(),
                CommandReply::Verified { activated: Some(m) } => {
                    event.method = Some(*m);
                    event.reason = "confirmed".to_owned();
                }
                CommandReply::Verified { activated: None } => {
                    event.reason = "code valid".to_owned()
                }
                _ => {}
            }
        }
        Err(refusal) => {
            event.result = AuditResult::Denied;
            event.reason = match refusal {
                // These two echo what the user typed: say what was wrong, not what it was.
                Refusal::BadAddress(_) => "invalid address".to_owned(),
                Refusal::BadNumber(_) => "invalid phone number".to_owned(),
                other => other.to_string(),
            };
        }
    }
    let failed = matches!(result, Err(Refusal::WrongCode | Refusal::CodeUsed));
    let after = event.clone();
    state.audit.record(event).await;
    if failed {
        lockout_if_it_began(state, &after).await;
    }
}
