//! `otpctl` commands: check who may run them, do them, log every change.

use super::send::{send_code, SendError};
use crate::channel::email::valid_address;
use crate::channel::sms::valid_number;
use crate::peer::Caller;
use crate::policy::accounts::{hostname, EnrollError, ImportRefused, Target, Verdict};
use crate::policy::challenge::{Answer, Purpose};
use crate::policy::totp;
use crate::state::State;
use otp_proto::{
    Command, CommandReply, DisableProof, MethodKind, Refusal, Reply, Secret, TotpEnrollment, Via,
};
use std::time::Instant;

pub async fn run(caller: &Caller, state: &State, command: Command) -> Reply {
    match execute(caller, state, command).await {
        Ok(done) => Reply::Done(done),
        Err(refusal) => Reply::Refused(refusal),
    }
}

async fn execute(
    caller: &Caller,
    state: &State,
    command: Command,
) -> Result<CommandReply, Refusal> {
    let accounts = &state.accounts;
    match command {
        Command::EnrollTotp { user } => enroll_totp(caller, state, caller.target(user)?).await,
        Command::EnrollEmail { user, address } => {
            if !valid_address(&address) {
                return Err(Refusal::BadAddress(address));
            }
            register(caller, state, caller.target(user)?, Via::Email, address).await
        }
        Command::EnrollSms { user, number } => {
            if !valid_number(&number) {
                return Err(Refusal::BadNumber(number));
            }
            register(caller, state, caller.target(user)?, Via::Sms, number).await
        }
        Command::Send { user, via } => {
            let user = caller.target(user)?;
            let methods = accounts.methods(&user).map_err(internal)?;
            let pick = |v: Via| methods.destination(v).map(|d| (v, d.to_owned()));
            let found = match via {
                Some(v) => pick(v),
                None => pick(Via::Email).or_else(|| pick(Via::Sms)),
            };
            let Some((via, destination)) = found else {
                return Err(Refusal::NoAddress(user));
            };
            send(state, &user, via, &destination, Purpose::Login).await
        }
        Command::RecoveryCodes { user, proof } => {
            let user = caller.target(user)?;
            // Users prove a factor, admins included when acting for themselves; an admin
            // replacing someone else's lost codes needs none.
            if !caller.admin || caller.name.as_deref() == Some(user.as_str()) {
                let proof = proof.ok_or(Refusal::ProofRequired)?;
                prove(state, &user, &proof).await?;
            }
            let codes = accounts.new_recovery_codes(&user).await.map_err(internal)?;
            changed(
                caller,
                &user,
                "new recovery codes issued (the old set is void)",
            );
            Ok(CommandReply::RecoveryCodes(codes))
        }
        Command::Import { user, key } => {
            let user = caller.target(user)?;
            let kind = if key.hotp_counter.is_some() {
                "HOTP"
            } else {
                "TOTP"
            };
            accounts.import(&user, key).await.map_err(|e| match e {
                ImportRefused::Invalid(why) => Refusal::BadRequest(why),
                ImportRefused::Store(e) => internal(e),
            })?;
            changed(caller, &user, &format!("{kind} key imported (active)"));
            Ok(CommandReply::Ok)
        }
        Command::SetDefault { user, method } => {
            let user = caller.target(user)?;
            accounts
                .set_default(&user, method)
                .await
                .map_err(internal)?;
            changed(caller, &user, &format!("default method set to {method:?}"));
            Ok(CommandReply::Ok)
        }
        Command::Verify { user, code } => verify(caller, state, caller.target(user)?, code).await,
        Command::Status { user } => {
            let user = caller.target(user)?;
            Ok(CommandReply::Status(
                accounts.status(&user).map_err(internal)?,
            ))
        }
        Command::Disable {
            user,
            method,
            proof,
        } => disable(caller, state, caller.target(user)?, method, proof).await,
        Command::Unlock { user } => {
            caller.require_admin()?;
            accounts.unlock(&user);
            changed(caller, &user, "unlocked");
            Ok(CommandReply::Ok)
        }
        Command::Reset { user } => {
            caller.require_admin()?;
            accounts.reset(&user).await.map_err(internal)?;
            changed(caller, &user, "reset: enrollments and lockout forgotten");
            Ok(CommandReply::Ok)
        }
        Command::Users => {
            caller.require_admin()?;
            let mut all = Vec::new();
            for user in accounts.users().await.map_err(internal)? {
                all.push(accounts.status(&user).map_err(internal)?);
            }
            Ok(CommandReply::Users(all))
        }
    }
}

async fn enroll_totp(
    caller: &Caller,
    state: &State,
    user: String,
) -> Result<CommandReply, Refusal> {
    let (key, recovery_codes) = state
        .accounts
        .enroll_totp(&user)
        .await
        .map_err(|e| match e {
            EnrollError::Random => internal(e),
            EnrollError::Store(e) => internal(e),
        })?;
    changed(
        caller,
        &user,
        "new TOTP secret issued (pending confirmation)",
    );
    let issuer = state.accounts.issuer();
    let account = format!("{user}@{}", hostname());
    Ok(CommandReply::TotpEnrollment(TotpEnrollment {
        uri: totp::uri(&key, &issuer, &account),
        secret: key.secret,
        user,
        issuer,
        account,
        algorithm: key.algorithm.to_string(),
        digits: key.digits,
        period: key.period,
        recovery_codes,
    }))
}

/// A code may confirm a pending TOTP, confirm a registered address, or prove a working factor
/// (TOTP or a sent login code). One answer is one failure toward lockout, whatever it was tried
/// against.
async fn verify(
    caller: &Caller,
    state: &State,
    user: String,
    code: Secret,
) -> Result<CommandReply, Refusal> {
    let accounts = &state.accounts;
    if accounts.locked_for(&user).is_some() {
        return Err(Refusal::Locked);
    }
    let totp = accounts
        .verify_totp(&user, &code, Target::PendingOrActive)
        .await
        .map_err(internal)?;
    let result = match totp {
        // A right code otpd cannot vouch for after a crash: refused, not counted.
        Verdict::RestartGuard { .. } => return Err(Refusal::CodeUsed),
        Verdict::Activated => {
            changed(caller, &user, "TOTP enrollment confirmed");
            Ok(CommandReply::Verified { activated: true })
        }
        Verdict::Accepted => Ok(CommandReply::Verified { activated: false }),
        Verdict::Wrong | Verdict::Replayed | Verdict::NotEnrolled => {
            match state.challenges.answer(
                &user,
                code.expose(),
                |p| !matches!(p, Purpose::Disable(_)),
                Instant::now(),
            ) {
                Answer::Accepted {
                    purpose: Purpose::Confirm(via, destination),
                    ..
                } => {
                    accounts
                        .set_destination(&user, via, &destination)
                        .await
                        .map_err(internal)?;
                    changed(caller, &user, &format!("{via} destination confirmed"));
                    Ok(CommandReply::Verified { activated: true })
                }
                Answer::Accepted {
                    purpose: Purpose::Login | Purpose::Disable(_),
                    ..
                } => Ok(CommandReply::Verified { activated: false }),
                Answer::Expired => Err(Refusal::CodeExpired),
                Answer::Wrong { .. } => Err(Refusal::WrongCode),
                Answer::NoChallenge => Err(match totp {
                    Verdict::Replayed => Refusal::CodeUsed,
                    Verdict::NotEnrolled => Refusal::NotEnrolled(user.clone()),
                    _ => Refusal::WrongCode,
                }),
            }
        }
    };
    match &result {
        Ok(_) => accounts.succeed(&user),
        Err(Refusal::WrongCode | Refusal::CodeUsed) => accounts.fail(&user),
        Err(_) => {}
    }
    result
}

/// The user shows a current factor: a fresh TOTP code, a sent login code, or a recovery code
/// (which is spent). Counts toward lockout like any other answer.
async fn prove(state: &State, user: &str, code: &Secret) -> Result<(), Refusal> {
    let accounts = &state.accounts;
    if accounts.locked_for(user).is_some() {
        return Err(Refusal::Locked);
    }
    let totp = accounts
        .verify_totp(user, code, Target::Active)
        .await
        .map_err(internal)?;
    if let Verdict::RestartGuard { .. } = totp {
        return Err(Refusal::CodeUsed);
    }
    let proved = totp == Verdict::Accepted
        || matches!(
            state.challenges.answer(
                user,
                code.expose(),
                |p| *p == Purpose::Login,
                Instant::now()
            ),
            Answer::Accepted { .. }
        )
        || accounts
            .use_recovery_code(user, code)
            .await
            .map_err(internal)?;
    if proved {
        accounts.succeed(user);
        Ok(())
    } else {
        accounts.fail(user);
        Err(Refusal::WrongCode)
    }
}

/// Turn a method (or all) off. An admin acting for someone else does it at once. A user with
/// an address on file confirms with a token mailed there (so a stolen session cannot quietly
/// drop the second factor); without one, with a current code or a recovery code.
async fn disable(
    caller: &Caller,
    state: &State,
    user: String,
    method: Option<MethodKind>,
    proof: Option<DisableProof>,
) -> Result<CommandReply, Refusal> {
    let for_someone_else = caller.admin && caller.name.as_deref() != Some(user.as_str());
    let address = state.accounts.methods(&user).map_err(internal)?.email;
    match (for_someone_else, proof, address) {
        (true, _, _) => {}
        (false, Some(DisableProof::Token(token)), _) => {
            let answer = state.challenges.answer(
                &user,
                token.expose(),
                |p| *p == Purpose::Disable(method),
                Instant::now(),
            );
            if !matches!(answer, Answer::Accepted { .. }) {
                return Err(Refusal::BadToken);
            }
        }
        (false, Some(DisableProof::Code(code)), None) => prove(state, &user, &code).await?,
        (false, _, Some(address)) => {
            let purpose = Purpose::Disable(method);
            return match send(state, &user, Via::Email, &address, purpose).await? {
                CommandReply::CodeSent { destination, .. } => {
                    changed(
                        caller,
                        &user,
                        "disable requested; confirmation token mailed",
                    );
                    Ok(CommandReply::TokenSent { destination })
                }
                other => Ok(other),
            };
        }
        (false, _, None) => return Err(Refusal::ProofRequired),
    }
    if !state
        .accounts
        .disable_method(&user, method)
        .await
        .map_err(internal)?
    {
        return Err(Refusal::NotEnrolled(user));
    }
    let what = method.map_or("all second factors".to_owned(), |m| format!("{m:?}"));
    changed(caller, &user, &format!("{what} disabled"));
    Ok(CommandReply::Ok)
}

/// Register an address or number: it counts once the code sent there comes back to `verify`.
async fn register(
    caller: &Caller,
    state: &State,
    user: String,
    via: Via,
    destination: String,
) -> Result<CommandReply, Refusal> {
    let purpose = Purpose::Confirm(via, destination.clone());
    let reply = send(state, &user, via, &destination, purpose).await?;
    changed(
        caller,
        &user,
        &format!("{via} destination registered (pending confirmation)"),
    );
    Ok(reply)
}

async fn send(
    state: &State,
    user: &str,
    via: Via,
    destination: &str,
    purpose: Purpose,
) -> Result<CommandReply, Refusal> {
    match send_code(state, user, via, destination, purpose).await {
        Ok(sent) => Ok(CommandReply::CodeSent {
            challenge: sent.id,
            destination: sent.masked,
        }),
        Err(SendError::Cooldown(left)) => Err(Refusal::Cooldown(left.as_secs_f64().ceil() as u64)),
        Err(SendError::Quota) => Err(Refusal::SendQuota),
        Err(SendError::Unavailable) => Err(Refusal::ChannelUnavailable(via.to_string())),
        Err(SendError::Failed) => Err(Refusal::CouldNotSend),
    }
}

fn changed(caller: &Caller, user: &str, what: &str) {
    log::info!("otpctl: user={user} by uid={}: {what}", caller.uid);
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    log::error!("otpctl: {e}");
    Refusal::Internal
}
