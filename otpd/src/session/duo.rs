//! A login's Duo steps: `preauth` (enrolled, allowed, denied, must enroll), the capabilities
//! prompt ("Press Enter for a push to iOS (XXX-XXX-1234), type `phone` for a call, or type a
//! passcode"), then a push or a call followed by `auth_status` long polls, or a passcode.
//!
//! The wait for the phone is bounded by `[duo] timeout`, and ends as soon as pam_otp hangs up
//! (`Dialog::hung_up`), so a push never holds a serving slot longer than that and other logins
//! never wait for it (it is one task among many). The PAM rhost goes to Duo as `ipaddr` when
//! it is an address. A Duo passcode is a typed answer: it is judged by
//! `policy::proof::judge_upstream`, with the lockout's reservation and settling around Duo's
//! verdict, so a refused passcode counts as a failure like a wrong TOTP code. Denial, fraud,
//! timeout and a Duo error are each their own message, deny reason and audit note. Duo's own
//! words (status messages, the enrollment URL) reach the user cleaned of control characters.

use super::dialog::Dialog;
use crate::channel::duo::{DuoClient, DuoError, Factor, Preauth, Started, Status, Verdict};
use crate::config::duo::DuoFailmode;
use crate::logging::field;
use crate::policy::proof::{judge_upstream, Counts, Proof};
use crate::state::State;
use otp_proto::frame::FrameError;
use otp_proto::{DenyReason, Login, Outcome, Secret};
use std::time::{Duration, Instant};

/// What the Duo steps decided; login.rs puts it into its own steps.
pub(super) enum DuoEnd {
    /// The outcome and the audit note.
    Decided(Outcome, String),
    /// Say `text`, deny for `reason`, audit `note`.
    Refused {
        reason: DenyReason,
        text: String,
        note: String,
    },
    /// Locked out: no passcode goes to Duo.
    Locked(Duration),
    /// Duo unreachable with `failmode = "safe"`: Duo is not required for this login.
    Skipped,
}

/// Polls closer together than this are paced, in case Duo answers "waiting" at once.
const POLL_EVERY: Duration = Duration::from_secs(1);

const WAITING: &str = "Waiting for approval on your phone…";

/// Run the Duo steps for `login.user`.
pub(super) async fn run<D: Dialog>(
    dialog: &mut D,
    state: &State,
    login: &Login,
) -> Result<DuoEnd, FrameError> {
    let Some(duo) = state.duo.as_ref() else {
        return Ok(refused(
            DenyReason::DuoUnavailable,
            "Duo is not configured on this server.",
            "denied: Duo not configured",
        ));
    };
    let user = login.user.as_str();
    if let Some(left) = state.accounts.lockouts.locked_for(user) {
        return Ok(DuoEnd::Locked(left));
    }
    // Duo's `ipaddr` is an address; a host name in PAM_RHOST is not sent.
    let ipaddr = login
        .rhost
        .as_deref()
        .filter(|h| h.parse::<std::net::IpAddr>().is_ok());
    let asked = Asked { duo, user, ipaddr };
    let devices = match duo.preauth(user, ipaddr).await {
        Ok(Preauth::Auth(devices)) => devices,
        Ok(Preauth::Allow(_)) => {
            return Ok(DuoEnd::Decided(
                Outcome::Allow,
                "allowed (Duo preauth: allow)".into(),
            ))
        }
        Ok(Preauth::Deny(msg)) => {
            return Ok(refused(
                DenyReason::DuoDenied,
                format!("Duo denied this login: {}", clean(&msg)),
                "denied: Duo preauth deny",
            ))
        }
        Ok(Preauth::Enroll(url)) => {
            return Ok(refused(
                DenyReason::NotEnrolled,
                format!(
                    "You are not enrolled with Duo. Enroll at {} then log in again.",
                    clean(&url)
                ),
                "denied: not enrolled with Duo (enrollment URL shown)",
            ))
        }
        Err(DuoError::Unreachable(why)) if duo.failmode == DuoFailmode::Safe => {
            log::warn!(
                "user={}: Duo unreachable ({}); failmode safe: Duo is not required",
                field(user),
                field(&why)
            );
            return Ok(DuoEnd::Skipped);
        }
        Err(e) => return Ok(failed(user, e, "preauth")),
    };
    let push = devices.iter().find(|d| d.can("push"));
    let phone = devices.iter().find(|d| d.can("phone"));
    let mut offer = Vec::new();
    if let Some(d) = push {
        offer.push(format!(
            "Press Enter for a push to {}",
            clean(&d.display_name)
        ));
    }
    if phone.is_some() {
        offer.push("type `phone` for a call".to_owned());
    }
    offer.push("or type a passcode".to_owned());
    let prompt = format!("Duo: {}: ", offer.join(", "));
    let answer = dialog.ask(&prompt, false, state.cfg.answer_timeout).await?;
    match (answer.expose().trim(), push, phone) {
        ("" | "push", Some(d), _) => asked.wait(dialog, Factor::Push(&d.device), "push").await,
        ("phone", _, Some(d)) | ("", None, Some(d)) => {
            asked.wait(dialog, Factor::Phone(&d.device), "call").await
        }
        ("" | "push" | "phone", _, _) => Ok(refused(
            DenyReason::Cancelled,
            "None of your Duo devices can do that.",
            "denied: no Duo device for the choice",
        )),
        _ => Ok(asked.passcode(state, answer).await),
    }
}

/// One user's request to Duo.
struct Asked<'a> {
    duo: &'a DuoClient,
    user: &'a str,
    ipaddr: Option<&'a str>,
}

impl Asked<'_> {
    /// A push or a call, then long polls until Duo decides, `[duo] timeout` passes or the
    /// peer hangs up (then the error ends the login as aborted).
    async fn wait<D: Dialog>(
        &self,
        dialog: &mut D,
        factor: Factor<'_>,
        what: &'static str,
    ) -> Result<DuoEnd, FrameError> {
        dialog.info(WAITING).await?;
        let decided = async {
            let txid = match self.duo.auth(self.user, self.ipaddr, &factor).await? {
                Started::Waiting(txid) => txid,
                Started::Done(verdict) => return Ok(verdict),
            };
            loop {
                let began = Instant::now();
                match self.duo.auth_status(&txid).await? {
                    Status::Done(verdict) => return Ok(verdict),
                    Status::Waiting(_) => {
                        tokio::time::sleep_until((began + POLL_EVERY).into()).await
                    }
                }
            }
        };
        let bounded = tokio::time::timeout(self.duo.timeout, decided);
        tokio::select! {
            gone = dialog.hung_up() => Err(gone),
            ended = bounded => Ok(match ended {
                Ok(Ok(verdict)) => self.verdict(verdict, what),
                Ok(Err(e)) => failed(self.user, e, what),
                Err(_) => refused(
                    DenyReason::DuoTimeout,
                    format!("The Duo {what} timed out."),
                    format!("denied: Duo {what} timed out (no answer within [duo] timeout)"),
                ),
            }),
        }
    }

    fn verdict(&self, verdict: Verdict, what: &str) -> DuoEnd {
        match verdict {
            Verdict::Allowed => DuoEnd::Decided(Outcome::Allow, format!("allowed (Duo {what})")),
            Verdict::Denied(_) => refused(
                DenyReason::DuoDenied,
                format!("The Duo {what} was denied."),
                format!("denied: Duo {what} denied"),
            ),
            Verdict::Fraud => {
                log::warn!(
                    "user={}: the Duo {what} was reported as fraud",
                    field(self.user)
                );
                refused(
                    DenyReason::DuoFraud,
                    format!("The Duo {what} was reported as fraud; access denied."),
                    "denied: Duo fraud reported",
                )
            }
            Verdict::TimedOut => refused(
                DenyReason::DuoTimeout,
                format!("The Duo {what} timed out."),
                format!("denied: Duo {what} timed out"),
            ),
        }
    }

    /// A passcode goes to Duo inside the lockout's reservation (`judge_upstream`).
    async fn passcode(&self, state: &State, code: Secret) -> DuoEnd {
        let asked = async {
            match self
                .duo
                .auth(self.user, self.ipaddr, &Factor::Passcode(&code))
                .await?
            {
                Started::Done(verdict) => Ok(verdict == Verdict::Allowed),
                Started::Waiting(_) => Err(DuoError::BadReply("a passcode went async".into())),
            }
        };
        let judged = judge_upstream(&state.accounts, self.user, Counts::DuoLogin, asked).await;
        match judged {
            Ok(Ok(Proof::Allowed(_))) => {
                DuoEnd::Decided(Outcome::Allow, "allowed (Duo passcode)".into())
            }
            Ok(Ok(Proof::Locked(left))) => DuoEnd::Locked(left),
            Ok(Ok(_)) => match state.accounts.lockouts.locked_for(self.user) {
                Some(left) => DuoEnd::Locked(left),
                None => refused(
                    DenyReason::DuoDenied,
                    "Wrong Duo passcode.",
                    "denied: wrong Duo passcode",
                ),
            },
            Ok(Err(e)) => failed(self.user, e, "passcode"),
            Err(e) => {
                log::error!("store: {e}");
                refused(
                    DenyReason::Internal,
                    "Internal error; see the system log.",
                    "denied: internal error",
                )
            }
        }
    }
}

/// Duo gave no answer: unreachable (failmode secure, or after the login started), refused
/// the request (keys, signature), or its clock differs from ours.
fn failed(user: &str, e: DuoError, during: &str) -> DuoEnd {
    log::error!(
        "user={}: Duo {during}: {}",
        field(user),
        field(&e.to_string())
    );
    let (text, note) = match &e {
        DuoError::Unreachable(_) => (
            "Duo is unreachable; try again later.",
            format!("denied: Duo unreachable ({during})"),
        ),
        DuoError::ClockSkew { .. } => (
            "Duo refused this server's request: its clock is wrong. Tell your administrator.",
            format!("denied: Duo refused the request's Date, clock skew ({during})"),
        ),
        DuoError::Refused { code, .. } => (
            "Duo refused this server's request. Tell your administrator.",
            format!("denied: Duo error {code} ({during})"),
        ),
        DuoError::BadReply(_) => (
            "Duo's answer was not understood. Tell your administrator.",
            format!("denied: Duo error, bad reply ({during})"),
        ),
    };
    refused(DenyReason::DuoUnavailable, text, note)
}

fn refused(reason: DenyReason, text: impl Into<String>, note: impl Into<String>) -> DuoEnd {
    DuoEnd::Refused {
        reason,
        text: text.into(),
        note: note.into(),
    }
}

/// Duo's words for a terminal: no control characters, at most 512 characters.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(512).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::testing::world;
    use std::sync::atomic::{AtomicBool, Ordering};

    async fn passcode_verdict(state: &State, duo_says: Result<bool, ()>) -> Result<Proof, ()> {
        let verdict = async { duo_says };
        judge_upstream(&state.accounts, "alice", Counts::DuoLogin, verdict)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_passcode_duo_refuses_is_a_failure_and_a_locked_users_is_not_sent() {
        let w = world(|c| c.lockout.max_failures = 1);
        let proof = passcode_verdict(&w.state, Ok(false)).await;
        assert_eq!(proof, Ok(Proof::Wrong { alive: false }));
        assert!(w.state.accounts.lockouts.locked_for("alice").is_some());
        let asked = AtomicBool::new(false);
        let verdict = async {
            asked.store(true, Ordering::SeqCst);
            Ok::<bool, ()>(true)
        };
        let locked = judge_upstream(&w.state.accounts, "alice", Counts::DuoLogin, verdict).await;
        assert!(matches!(locked, Ok(Ok(Proof::Locked(_)))));
        assert!(!asked.load(Ordering::SeqCst), "Duo was never asked");
    }

    #[tokio::test]
    async fn a_passcode_duo_accepts_clears_the_failures_and_no_answer_is_not_counted() {
        let w = world(|_| {});
        assert_eq!(
            passcode_verdict(&w.state, Ok(false)).await,
            Ok(Proof::Wrong { alive: false })
        );
        assert_eq!(passcode_verdict(&w.state, Err(())).await, Err(()));
        assert_eq!(w.state.accounts.lockouts.recent_failures("alice"), 1);
        assert_eq!(
            passcode_verdict(&w.state, Ok(true)).await,
            Ok(Proof::Allowed(crate::policy::proof::How::Upstream))
        );
        assert_eq!(w.state.accounts.lockouts.recent_failures("alice"), 0);
    }

    #[test]
    fn duos_words_lose_their_control_characters() {
        assert_eq!(clean("Denied\x1b[2J\r\nnow"), "Denied[2Jnow");
        assert_eq!(clean(&"x".repeat(600)).len(), 512);
    }
}
