//! A login: the daemon chooses every prompt and decides the outcome; `pam_otp` only relays.
//! Every attempt ends in one audit line (service, user, rhost, tty, result), never the code.

use crate::connection::Connection;
use crate::peer::Caller;
use crate::policy::accounts::{Accounts, Target, Verdict};
use otp_proto::frame::FrameError;
use otp_proto::{DenyReason, Login, Outcome, Reply, Request};
use std::time::Duration;

/// The prompt names "code" so users (and tests) know what is asked.
pub const PROMPT: &str = "Verification code: ";

pub async fn run(
    conn: &mut Connection,
    caller: &Caller,
    accounts: &Accounts,
    answer_timeout: Duration,
    login: Login,
) -> Result<(), FrameError> {
    let result = decide(conn, caller, accounts, answer_timeout, &login).await;
    let (outcome, note) = match result {
        Ok(decision) => decision,
        Err(e) => {
            audit(&login, caller, &format!("aborted: {e}"));
            return Err(e);
        }
    };
    audit(&login, caller, &note);
    conn.write(&Reply::Outcome(outcome)).await
}

/// The conversation; returns the outcome and what the audit line says about it.
async fn decide(
    conn: &mut Connection,
    caller: &Caller,
    accounts: &Accounts,
    answer_timeout: Duration,
    login: &Login,
) -> Result<(Outcome, String), FrameError> {
    let user = login.user.as_str();
    if !caller.may_authenticate(user) {
        conn.write(&error("Permission denied.")).await?;
        let note = format!("denied: uid {} may not authenticate this user", caller.uid);
        return Ok((Outcome::Deny(DenyReason::Forbidden), note));
    }
    match accounts.has_active(user).await {
        Ok(true) => {}
        Ok(false) if login.nullok => {
            return Ok((Outcome::Ignore, "ignored: not enrolled (nullok)".into()));
        }
        Ok(false) => {
            conn.write(&error(
                "No second factor is set up for this account; ask your administrator.",
            ))
            .await?;
            return Ok((deny(DenyReason::NotEnrolled), "denied: not enrolled".into()));
        }
        Err(e) => return internal(conn, e).await,
    }
    conn.write(&Reply::Prompt {
        text: PROMPT.into(),
        echo: false,
    })
    .await?;
    let code = match conn.read(answer_timeout).await? {
        Request::Answer(code) => code,
        _ => return Err(FrameError::Malformed("expected an answer".into())),
    };
    if code.is_empty() {
        return Ok((deny(DenyReason::Cancelled), "denied: empty answer".into()));
    }
    let verdict = match accounts.verify(user, &code, Target::Active).await {
        Ok(v) => v,
        Err(e) => return internal(conn, e).await,
    };
    let (outcome, message, note) = match verdict {
        Verdict::Accepted | Verdict::Activated => (Outcome::Allow, None, "allowed"),
        Verdict::Wrong => (
            deny(DenyReason::WrongCode),
            Some("Invalid code.".to_owned()),
            "denied: wrong code",
        ),
        Verdict::Replayed => (
            deny(DenyReason::Replayed),
            Some("That code was already used; wait for the next one.".to_owned()),
            "denied: code already used",
        ),
        Verdict::Locked(left) => (
            deny(DenyReason::Locked),
            Some(format!(
                "Too many failed attempts; try again in {}.",
                minutes(left)
            )),
            "denied: locked out",
        ),
        Verdict::NotEnrolled => (deny(DenyReason::NotEnrolled), None, "denied: not enrolled"),
    };
    if let Some(text) = message {
        conn.write(&Reply::Error { text }).await?;
    }
    Ok((outcome, note.into()))
}

async fn internal(
    conn: &mut Connection,
    e: impl std::fmt::Display,
) -> Result<(Outcome, String), FrameError> {
    log::error!("store: {e}");
    conn.write(&error("Internal error; see the system log."))
        .await?;
    Ok((deny(DenyReason::Internal), "denied: internal error".into()))
}

fn deny(reason: DenyReason) -> Outcome {
    Outcome::Deny(reason)
}

fn error(text: &str) -> Reply {
    Reply::Error { text: text.into() }
}

fn minutes(d: Duration) -> String {
    let m = d.as_secs().div_ceil(60).max(1);
    if m == 1 {
        "1 minute".into()
    } else {
        format!("{m} minutes")
    }
}

fn audit(login: &Login, caller: &Caller, result: &str) {
    log::info!(
        "{}: user={} rhost={} tty={} uid={}: {result}",
        login.service,
        login.user,
        login.rhost.as_deref().unwrap_or("-"),
        login.tty.as_deref().unwrap_or("-"),
        caller.uid,
    );
}
