//! `otpctl` commands: check who may run them, do them, log every change.

use crate::peer::Caller;
use crate::policy::accounts::{hostname, Accounts, EnrollError, Target, Verdict};
use crate::policy::totp;
use otp_proto::{Command, CommandReply, Refusal, Reply, TotpEnrollment};

pub async fn run(caller: &Caller, accounts: &Accounts, command: Command) -> Reply {
    match execute(caller, accounts, command).await {
        Ok(done) => Reply::Done(done),
        Err(refusal) => Reply::Refused(refusal),
    }
}

async fn execute(
    caller: &Caller,
    accounts: &Accounts,
    command: Command,
) -> Result<CommandReply, Refusal> {
    match command {
        Command::EnrollTotp { user } => {
            let user = caller.target(user)?;
            let key = accounts.enroll_totp(&user).await.map_err(|e| match e {
                EnrollError::Random => internal(e),
                EnrollError::Store(e) => internal(e),
            })?;
            changed(
                caller,
                &user,
                "new TOTP secret issued (pending confirmation)",
            );
            let issuer = accounts.issuer();
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
            }))
        }
        Command::Verify { user, code } => {
            let user = caller.target(user)?;
            let verdict = accounts
                .verify(&user, &code, Target::PendingOrActive)
                .await
                .map_err(internal)?;
            match verdict {
                Verdict::Activated => {
                    changed(caller, &user, "TOTP enrollment confirmed");
                    Ok(CommandReply::Verified { activated: true })
                }
                Verdict::Accepted => Ok(CommandReply::Verified { activated: false }),
                Verdict::Wrong => Err(Refusal::WrongCode),
                Verdict::Replayed => Err(Refusal::CodeUsed),
                Verdict::Locked(_) => Err(Refusal::Locked),
                Verdict::NotEnrolled => Err(Refusal::NotEnrolled(user)),
            }
        }
        Command::Status { user } => {
            let user = caller.target(user)?;
            Ok(CommandReply::Status(
                accounts.status(&user).await.map_err(internal)?,
            ))
        }
        Command::Disable { user } => {
            let user = caller.target(user)?;
            if !accounts.disable(&user).await.map_err(internal)? {
                return Err(Refusal::NotEnrolled(user));
            }
            changed(caller, &user, "TOTP disabled");
            Ok(CommandReply::Ok)
        }
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
                all.push(accounts.status(&user).await.map_err(internal)?);
            }
            Ok(CommandReply::Users(all))
        }
    }
}

fn changed(caller: &Caller, user: &str, what: &str) {
    log::info!("otpctl: user={user} by uid={}: {what}", caller.uid);
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    log::error!("otpctl: {e}");
    Refusal::Internal
}
