//! `otpctl` commands: check who may run them, do them, log every change.
//!
//! Every code a command is given is judged by `policy::proof`; this file only maps the verdict
//! to a `Refusal`. Changing a factor of a user who has one needs a current code or recovery code
//! (`require_proof`), unless an admin does it for someone else.

use super::send::{notify_change, send_code, SendError};
use crate::channel::email::valid_address;
use crate::channel::mask;
use crate::channel::sms::valid_number;
use crate::peer::Caller;
use crate::policy::challenge::Purpose;
use crate::policy::enrollment::{EnrollError, ImportRefused};
use crate::policy::factors::Enrolled;
use crate::policy::proof::{Counts, How, Proof};
use crate::policy::{hotp, totp};
use crate::state::State;
use otp_proto::{
    Command, CommandReply, DisableProof, MethodKind, MethodState, Refusal, Reply, Secret,
    TotpEnrollment, UserStatus, Via,
};

pub async fn run(caller: &Caller, state: &State, command: Command) -> Reply {
    let audited = super::trail::of(caller, state, &command).await;
    let result = execute(caller, state, command).await;
    if let Some(event) = audited {
        super::trail::record(state, event, &result).await;
    }
    match result {
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
        Command::EnrollTotp { user, proof } => {
            let user = target(caller, state, user).await?;
            allowed_by_policy(state, &user, MethodKind::Totp).await?;
            require_proof(caller, state, &user, proof).await?;
            enroll_totp(caller, state, user).await
        }
        Command::EnrollHotp {
            user,
            secret,
            counter,
            digits,
            proof,
        } => {
            let user = target(caller, state, user).await?;
            // An HOTP token is the app method ("totp") to the rules, as at login.
            allowed_by_policy(state, &user, MethodKind::Totp).await?;
            require_proof(caller, state, &user, proof).await?;
            let token = (secret, counter.unwrap_or(0), digits.unwrap_or(6));
            enroll_hotp(caller, state, user, token).await
        }
        Command::EnrollEmail {
            user,
            address,
            proof,
        } => {
            if !valid_address(&address) {
                return Err(Refusal::BadAddress(address));
            }
            let user = target(caller, state, user).await?;
            allowed_by_policy(state, &user, MethodKind::Email).await?;
            require_proof(caller, state, &user, proof).await?;
            register(caller, state, user, Via::Email, address).await
        }
        Command::EnrollSms {
            user,
            number,
            proof,
        } => {
            if !valid_number(&number) {
                return Err(Refusal::BadNumber(number));
            }
            let user = target(caller, state, user).await?;
            allowed_by_policy(state, &user, MethodKind::Sms).await?;
            require_proof(caller, state, &user, proof).await?;
            register(caller, state, user, Via::Sms, number).await
        }
        Command::Send { user, via } => {
            let user = target(caller, state, user).await?;
            let factors = accounts.registry.factors(&user).map_err(internal)?;
            let pick = |v: Via| factors.destination(v).map(|d| (v, d.to_owned()));
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
            let user = target(caller, state, user).await?;
            // Users prove a factor, admins included when acting for themselves; an admin
            // replacing someone else's lost codes needs none.
            if !for_someone_else(caller, &user) {
                prove(state, &user, &proof.ok_or(Refusal::ProofRequired)?).await?;
            }
            let codes = accounts.enrollment.new_recovery_codes(&user);
            let codes = codes.await.map_err(internal)?;
            let what = "new recovery codes were issued (the old ones no longer work)";
            factor_changed(caller, state, &user, on_file(state, &user), what).await;
            Ok(CommandReply::RecoveryCodes(codes))
        }
        Command::Import { user, key, proof } => {
            let user = target(caller, state, user).await?;
            require_proof(caller, state, &user, proof).await?;
            let kind = if key.hotp_counter.is_some() {
                "HOTP"
            } else {
                "TOTP"
            };
            accounts
                .enrollment
                .import(&user, key)
                .await
                .map_err(|e| match e {
                    ImportRefused::Invalid(why) => Refusal::BadRequest(why),
                    ImportRefused::Store(e) => internal(e),
                })?;
            let what = format!("an authenticator {kind} key was imported and is active");
            factor_changed(caller, state, &user, on_file(state, &user), &what).await;
            Ok(CommandReply::Ok)
        }
        Command::SetDefault { user, method } => {
            let user = target(caller, state, user).await?;
            accounts
                .registry
                .set_default(&user, method)
                .await
                .map_err(internal)?;
            changed(caller, &user, &format!("default method set to {method:?}"));
            Ok(CommandReply::Ok)
        }
        Command::Verify { user, code } => {
            verify(caller, state, target(caller, state, user).await?, code).await
        }
        Command::Status { user } => {
            let user = target(caller, state, user).await?;
            Ok(CommandReply::Status(status(state, &user)?))
        }
        Command::Disable {
            user,
            method,
            proof,
        } => {
            let user = target(caller, state, user).await?;
            accounts.grace.forget(&user); // a disable, even one still waiting for its token
            disable(caller, state, user, method, proof).await
        }
        Command::Unlock { user } => {
            caller.require_admin()?;
            let user = target(caller, state, Some(user)).await?;
            accounts.grace.forget(&user);
            accounts.lockouts.unlock(&user).await.map_err(internal)?;
            changed(caller, &user, "unlocked");
            Ok(CommandReply::Ok)
        }
        Command::Reset { user } => {
            caller.require_admin()?;
            let user = target(caller, state, Some(user)).await?;
            let address = accounts.registry.factors(&user).map_err(internal)?.email;
            accounts.reset(&user).await.map_err(internal)?;
            let what = "an administrator removed every second factor";
            factor_changed(caller, state, &user, address, what).await;
            Ok(CommandReply::Ok)
        }
        Command::Users => {
            caller.require_admin()?;
            let mut all = Vec::new();
            for user in accounts.users().await.map_err(internal)? {
                all.push(status(state, &user)?);
            }
            Ok(CommandReply::Users(all))
        }
        Command::Policy { user, service } => {
            let user = target(caller, state, user).await?;
            super::inspect::policy(state, user, service).await
        }
        view @ (Command::Config
        | Command::Attempts(_)
        | Command::AttemptShow { .. }
        | Command::Stats) => super::inspect::run(caller, state, view).await,
    }
}

/// A method the user's policy rule does not count cannot be enrolled (policy/rules.rs; rules
/// limited to PAM services do not apply here).
async fn allowed_by_policy(state: &State, user: &str, method: MethodKind) -> Result<(), Refusal> {
    let policy = crate::policy::rules::applies(&state.cfg.policy, user, None)
        .await
        .map_err(internal)?;
    if policy.allows(method) {
        return Ok(());
    }
    Err(Refusal::MethodNotAllowed {
        method,
        rule: policy.name(),
    })
}

async fn enroll_totp(
    caller: &Caller,
    state: &State,
    user: String,
) -> Result<CommandReply, Refusal> {
    let (key, recovery_codes) = state
        .accounts
        .enrollment
        .enroll_totp(&user, false)
        .await
        .map_err(enroll_refused)?;
    changed(
        caller,
        &user,
        "new TOTP secret issued (pending confirmation)",
    );
    Ok(enrollment_reply(state, user, key, recovery_codes, None))
}

/// What `enroll totp` and `enroll hotp` show: the key, its otpauth URI and QR code's account
/// (USER@HOST under the issuer), and the recovery codes that come into force with it.
/// `hotp_counter`: the token's next counter (an HOTP key has no period).
fn enrollment_reply(
    state: &State,
    user: String,
    key: crate::store::TotpKey,
    recovery_codes: Vec<Secret>,
    hotp_counter: Option<u64>,
) -> CommandReply {
    let issuer = state.issuer.clone();
    let account = format!("{user}@{}", state.host);
    let (uri, period) = match hotp_counter {
        Some(_) => (hotp::uri(&key, &issuer, &account), 0),
        None => (totp::uri(&key, &issuer, &account), key.period),
    };
    CommandReply::TotpEnrollment(TotpEnrollment {
        uri,
        secret: key.secret,
        user,
        issuer,
        account,
        algorithm: key.algorithm.to_string(),
        digits: key.digits,
        period,
        recovery_codes,
        hotp_counter,
    })
}

/// `otpctl enroll hotp`: a pending HOTP key from the vendor's secret (a hardware token) or a
/// new one (an app), confirmed by the token's first code with `otpctl verify`.
async fn enroll_hotp(
    caller: &Caller,
    state: &State,
    user: String,
    (secret, counter, digits): (Option<Secret>, u64, u8),
) -> Result<CommandReply, Refusal> {
    let (key, recovery_codes) = state
        .accounts
        .enrollment
        .enroll_hotp(&user, secret.as_ref(), counter, digits)
        .await
        .map_err(enroll_refused)?;
    let origin = if secret.is_some() {
        "the token's"
    } else {
        "a new"
    };
    let what = format!("HOTP key ({origin} secret, next counter {counter}) set up, pending");
    changed(caller, &user, &what);
    Ok(enrollment_reply(
        state,
        user,
        key,
        recovery_codes,
        Some(counter),
    ))
}

fn enroll_refused(e: EnrollError) -> Refusal {
    match e {
        EnrollError::Hotp(why) => Refusal::BadRequest(why.to_string()),
        EnrollError::Random | EnrollError::Store(_) => internal(e),
    }
}

/// `otpctl status`: the policy's facts about the user, in words the user may see (addresses and
/// numbers masked).
fn status(state: &State, user: &str) -> Result<UserStatus, Refusal> {
    let Enrolled {
        factors,
        app,
        app_kind,
        recovery_codes_left,
    } = state.accounts.registry.enrolled(user).map_err(internal)?;
    let lockouts = &state.accounts.lockouts;
    let state_of = |d: &Option<String>| match d {
        Some(_) => MethodState::Active,
        None => MethodState::None,
    };
    Ok(UserStatus {
        email: state_of(&factors.email),
        email_address: factors.email.as_deref().map(|a| mask(Via::Email, a)),
        sms: state_of(&factors.sms),
        sms_number: factors.sms.as_deref().map(|n| mask(Via::Sms, n)),
        user: user.to_owned(),
        totp: app,
        recovery_codes_left,
        locked_for_secs: lockouts.locked_for(user).map(|d| d.as_secs().max(1)),
        recent_failures: lockouts.recent_failures(user),
        app_kind,
    })
}

/// A code may confirm a pending TOTP, confirm a registered address, or prove a working factor
/// (TOTP or a sent login code).
async fn verify(
    caller: &Caller,
    state: &State,
    user: String,
    code: Secret,
) -> Result<CommandReply, Refusal> {
    let proof = state
        .judge(&user, &code, Counts::Verify)
        .await
        .map_err(internal)?;
    match proof {
        Proof::Allowed(How::Activated) => {
            let what = "a new authenticator app key was confirmed and now counts at login";
            factor_changed(caller, state, &user, on_file(state, &user), what).await;
            Ok(CommandReply::Verified {
                activated: Some(MethodKind::Totp),
            })
        }
        Proof::Allowed(How::Sent {
            purpose: Purpose::Confirm(via, destination),
            ..
        }) => {
            let before = state
                .accounts
                .registry
                .factors(&user)
                .map_err(internal)?
                .email;
            state
                .accounts
                .enrollment
                .set_destination(&user, via, &destination)
                .await
                .map_err(internal)?;
            let what = format!("login codes by {via} now go to {}", mask(via, &destination));
            factor_changed(caller, state, &user, before, &what).await;
            Ok(CommandReply::Verified {
                activated: Some(match via {
                    Via::Email => MethodKind::Email,
                    Via::Sms => MethodKind::Sms,
                }),
            })
        }
        Proof::Allowed(_) => Ok(CommandReply::Verified { activated: None }),
        Proof::NothingToCheck => Err(Refusal::NotEnrolled(user)),
        other => Err(refusal(other)),
    }
}

/// The user shows a current factor: a fresh TOTP code, a sent login code, or a recovery code
/// (which is spent).
async fn prove(state: &State, user: &str, code: &Secret) -> Result<(), Refusal> {
    match state
        .judge(user, code, Counts::Change)
        .await
        .map_err(internal)?
    {
        Proof::Allowed(_) => Ok(()),
        other => Err(refusal(other)),
    }
}

/// Before a factor changes: a user who has one proves it (`prove`); a user with none has
/// nothing to prove (a first enrollment), and an admin acting for someone else needs none.
async fn require_proof(
    caller: &Caller,
    state: &State,
    user: &str,
    proof: Option<Secret>,
) -> Result<(), Refusal> {
    let has_factor = state.accounts.registry.has_factor(user).map_err(internal)?;
    if for_someone_else(caller, user) || !has_factor {
        return Ok(());
    }
    prove(state, user, &proof.ok_or(Refusal::ProofRequired)?).await
}

/// An admin acting on another user's factors (which needs no proof from them).
fn for_someone_else(caller: &Caller, user: &str) -> bool {
    caller.admin && caller.name.as_deref() != Some(user)
}

/// A verdict that is not a success, as otpctl says it.
fn refusal(proof: Proof) -> Refusal {
    match proof {
        Proof::Locked(_) => Refusal::Locked,
        Proof::Replayed | Proof::RestartGuard { .. } => Refusal::CodeUsed,
        Proof::Expired => Refusal::CodeExpired,
        Proof::Wrong { .. }
        | Proof::NothingToCheck
        | Proof::Allowed(_)
        | Proof::ResyncNeeded { .. } => Refusal::WrongCode,
    }
}

/// Turn a method (or all) off. An admin acting for someone else does it at once. A user proves
/// a factor: a current code or a recovery code (`--code`), or a token mailed to the address on
/// file (so a stolen session cannot quietly drop the second factor).
async fn disable(
    caller: &Caller,
    state: &State,
    user: String,
    method: Option<MethodKind>,
    proof: Option<DisableProof>,
) -> Result<CommandReply, Refusal> {
    let address = state
        .accounts
        .registry
        .factors(&user)
        .map_err(internal)?
        .email;
    let before = address.clone();
    match (for_someone_else(caller, &user), proof, address) {
        (true, _, _) => {}
        (false, Some(DisableProof::Token(token)), _) => {
            match state
                .judge(&user, &token, Counts::DisableToken(method))
                .await
                .map_err(internal)?
            {
                Proof::Allowed(_) => {}
                Proof::Locked(_) => return Err(Refusal::Locked),
                _ => return Err(Refusal::BadToken),
            }
        }
        (false, Some(DisableProof::Code(code)), _) => prove(state, &user, &code).await?,
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
        .registry
        .disable_method(&user, method)
        .await
        .map_err(internal)?
    {
        return Err(Refusal::NotEnrolled(user));
    }
    let what = match method {
        None => "every second factor",
        Some(MethodKind::Totp) => "the authenticator app",
        Some(MethodKind::Email) => "email codes",
        Some(MethodKind::Sms) => "SMS codes",
        Some(MethodKind::Duo) => "Duo",
    };
    let notice = format!("{what} turned off");
    factor_changed(caller, state, &user, before, &notice).await;
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
        Err(SendError::Failed | SendError::Offline) => Err(Refusal::CouldNotSend),
    }
}

/// The user a command is about, by canonical name (`names`): "ALICE" is alice. A name without
/// a passwd entry stays as typed (an admin may manage directory users this host cannot see).
async fn target(caller: &Caller, state: &State, user: Option<String>) -> Result<String, Refusal> {
    let user = match user {
        Some(typed) => Some(state.names.resolve(&typed).await.as_str().to_owned()),
        None => None,
    };
    let user = caller.target(user)?;
    state.accounts.registry.look_up(&user).await; // the directory's values, read afresh
    Ok(user)
}

/// Log a change of a factor and tell the user at the address on file before the change (`to`),
/// so the old address hears of a new one, and of a factor turned off.
async fn factor_changed(
    caller: &Caller,
    state: &State,
    user: &str,
    to: Option<String>,
    what: &str,
) {
    changed(caller, user, what);
    notify_change(state, user, to.as_deref(), what).await;
}

/// The address notices go to: the user's email method now.
fn on_file(state: &State, user: &str) -> Option<String> {
    state
        .accounts
        .registry
        .factors(user)
        .ok()
        .and_then(|f| f.email)
}

fn changed(caller: &Caller, user: &str, what: &str) {
    let user = crate::logging::field(user);
    log::info!("otpctl: user={user} by uid={}: {what}", caller.uid);
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    log::error!("otpctl: {e}");
    Refusal::Internal
}
