//! A login: the daemon chooses every prompt and decides the outcome; `pam_otp` only relays.
//! Every attempt ends in one audit line (service, user, rhost, tty, result), never the code.
//!
//! OpenSSH shows info messages only together with the next prompt (OpenSSH bug 2876), so
//! whatever the user must read ("code sent to j***@e***.com") is part of the prompt text itself.

use super::send::{send_code, SendError};
use crate::channel::mask;
use crate::channel::template::validity;
use crate::config::Unenrolled;
use crate::connection::Connection;
use crate::peer::Caller;
use crate::policy::accounts::Methods;
use crate::policy::challenge::Purpose;
use crate::policy::proof::{Counts, How, Proof};
use crate::state::State;
use otp_proto::frame::{FrameError, Turn};
use otp_proto::{DenyReason, Login, MethodKind, Outcome, Reply, Request, Secret, Via};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The TOTP prompt; it names "code" so users (and tests) know what is asked.
pub const PROMPT: &str = "Verification code: ";

/// Prompts one sent-code login may show before it gives up (resends and retries together).
const MAX_ROUNDS: usize = 10;

/// How the conversation ended, and what the audit line says about it.
type Decision = (Outcome, String);

#[derive(Clone)]
enum Method {
    Totp,
    /// A code sent to this address or number.
    Sent(Via, String),
}

impl Method {
    fn kind(&self) -> MethodKind {
        match self {
            Method::Totp => MethodKind::Totp,
            Method::Sent(Via::Email, _) => MethodKind::Email,
            Method::Sent(Via::Sms, _) => MethodKind::Sms,
        }
    }
}

/// How a sent-code login ended: decided, or the code could not be sent at all (the user may
/// then pick another method).
enum Flow {
    Decided(Decision),
    NotSent(SendError),
}

struct Session<'a> {
    conn: &'a mut Connection,
    state: &'a State,
    login: &'a Login,
    /// The user has a passwd entry (`names`).
    known: bool,
}

pub async fn run(
    conn: &mut Connection,
    caller: &Caller,
    state: &State,
    mut login: Login,
) -> Result<(), FrameError> {
    // Everything is keyed by the canonical passwd name: "ALICE" or "alice " is not a user of
    // its own with its own lockout, and a name without a passwd entry is let in only by an
    // enrolled record of exactly that name.
    let name = state.names.resolve(&login.user).await;
    let known = name.is_known();
    login.user = name.as_str().to_owned();
    let mut session = Session {
        conn,
        state,
        login: &login,
        known,
    };
    let (outcome, note) = match session.decide(caller).await {
        Ok(decision) => decision,
        Err(e) => {
            audit(&login, caller, &format!("aborted: {e}"));
            return Err(e);
        }
    };
    audit(&login, caller, &note);
    session.conn.write(Reply::Outcome(outcome)).await
}

impl Session<'_> {
    fn user(&self) -> &str {
        &self.login.user
    }

    async fn decide(&mut self, caller: &Caller) -> Result<Decision, FrameError> {
        if !caller.may_authenticate(self.user()) {
            let note = format!("denied: uid {} may not authenticate this user", caller.uid);
            return self
                .deny(DenyReason::Forbidden, "Permission denied.", note)
                .await;
        }
        let methods = match self.state.accounts.methods(self.user()) {
            Ok(m) => m,
            Err(e) => return self.internal(e).await,
        };
        if methods.is_empty() {
            return self.unenrolled().await;
        }
        let preferred = methods.default.or(self.state.cfg.policy.default_method);
        let mut choices = menu(methods);
        loop {
            let picked = preferred.and_then(|p| choices.iter().find(|(_, m)| m.kind() == p));
            let method = match picked {
                Some((_, m)) => Some(m.clone()),
                None => self.choose(&choices).await?,
            };
            let Some(method) = method else {
                let note = "denied: no method chosen".into();
                return Ok((deny(DenyReason::Cancelled), note));
            };
            let (via, destination) = match method {
                Method::Totp => return self.totp().await,
                Method::Sent(via, destination) => (via, destination),
            };
            match self.sent_code(via, &destination).await? {
                Flow::Decided(decision) => return Ok(decision),
                Flow::NotSent(e) if choices.len() > 1 => {
                    let text = format!("Could not send the code by {via}; choose another way.");
                    self.conn.write(Reply::Error { text }).await?;
                    log::warn!(
                        "user={}: {via} failed ({e:?}); offering the others",
                        self.user()
                    );
                    choices.retain(|(_, m)| !matches!(m, Method::Sent(v, _) if *v == via));
                }
                Flow::NotSent(e) => return self.send_failed(e).await,
            }
        }
    }

    /// Nothing enrolled: `nullok` or `[policy] unenrolled` decide, for users that exist.
    async fn unenrolled(&mut self) -> Result<Decision, FrameError> {
        if !self.known {
            let text = "No second factor is set up for this account; ask your administrator.";
            let note = "denied: no such user in the passwd database, nothing enrolled".into();
            return self.deny(DenyReason::NotEnrolled, text, note).await;
        }
        if self.login.nullok {
            return Ok((Outcome::Ignore, "ignored: not enrolled (nullok)".into()));
        }
        match self.state.cfg.policy.unenrolled {
            Unenrolled::Allow => Ok((
                Outcome::Ignore,
                "ignored: not enrolled (policy unenrolled = allow)".into(),
            )),
            Unenrolled::Enroll => self.enroll().await,
            Unenrolled::Deny => {
                let text = "No second factor is set up for this account; ask your administrator.";
                let note = "denied: not enrolled".into();
                self.deny(DenyReason::NotEnrolled, text, note).await
            }
        }
    }

    /// First-login enrollment: the QR code and the key in the login itself, a code to confirm,
    /// recovery codes shown once. A second attempt shows the same key again.
    async fn enroll(&mut self) -> Result<Decision, FrameError> {
        let user = self.user().to_owned();
        let accounts = &self.state.accounts;
        let key = match accounts.pending_from_login(&user) {
            Ok(Some(key)) => key,
            Ok(None) => match accounts.enroll_totp(&user, true).await {
                Ok((key, _)) => key,
                Err(e) => return self.internal(e).await,
            },
            Err(e) => return self.internal(e).await,
        };
        let account = format!("{user}@{}", self.state.host);
        let uri = crate::policy::totp::uri(&key, &accounts.issuer(), &account);
        // The picture and the key are secrets too: every copy is wiped when dropped, and
        // `Connection::write` wipes the reply's text.
        let picture = Zeroizing::new(crate::qr::qr(uri.expose()).unwrap_or_default());
        self.conn
            .write(Reply::Info {
                text: format!(
                    "Set up your second factor: scan this QR code with an authenticator app.\n{}",
                    picture.as_str()
                ),
            })
            .await?;
        let grouped = Zeroizing::new(crate::qr::grouped(key.secret.expose()));
        let prompt = Zeroizing::new(format!(
            "Or type the key {} ({}, {} digits, {} s).\nEnter the code your app shows: ",
            grouped.as_str(),
            key.algorithm,
            key.digits,
            key.period
        ));
        for _ in 0..3 {
            let code = self.ask(&prompt, false).await?;
            if code.is_empty() {
                break;
            }
            match self.state.judge(&user, &code, Counts::FirstLogin).await {
                Ok(Proof::Allowed(_)) => return self.enrolled(&user).await,
                Ok(Proof::Locked(left)) => return self.locked(left).await,
                Ok(_) => {
                    self.conn
                        .write(Reply::Error {
                            text: "That code did not match; try the next one.".into(),
                        })
                        .await?;
                }
                Err(e) => return self.internal(e).await,
            }
        }
        let text = "Not enrolled; the same key is shown at your next login.";
        self.deny(
            DenyReason::NotEnrolled,
            text,
            "denied: first-login enrollment not confirmed".into(),
        )
        .await
    }

    /// Enrollment confirmed at login: hand out recovery codes once and let the user in.
    async fn enrolled(&mut self, user: &str) -> Result<Decision, FrameError> {
        let accounts = &self.state.accounts;
        log::info!("user={user}: TOTP enrolled at first login");
        let codes = match accounts.new_recovery_codes(user).await {
            Ok(codes) => codes,
            Err(e) => return self.internal(e).await,
        };
        let list: Vec<&str> = codes.iter().map(|c| c.expose()).collect();
        let list = Zeroizing::new(list.join("  "));
        let text = format!(
            "Enrolled. Your recovery codes, each good once if you lose your phone (not shown again):\n    {}",
            list.as_str()
        );
        self.conn.write(Reply::Info { text }).await?;
        Ok((Outcome::Allow, "allowed (enrolled at first login)".into()))
    }

    /// With one method, that one; with several, ask.
    async fn choose(&mut self, choices: &[(String, Method)]) -> Result<Option<Method>, FrameError> {
        if let [(_, only)] = choices {
            return Ok(Some(only.clone()));
        }
        let menu: Vec<String> = choices
            .iter()
            .enumerate()
            .map(|(i, (label, _))| format!("{}) {label}", i + 1))
            .collect();
        let text = format!("{}\nChoose a second factor [1]: ", menu.join("  "));
        for _ in 0..3 {
            let answer = self.ask(&text, true).await?;
            let pick = match answer.expose().trim() {
                "" => Some(1),
                s => s.parse::<usize>().ok(),
            };
            if let Some(n) = pick.filter(|n| (1..=choices.len()).contains(n)) {
                return Ok(Some(choices[n - 1].1.clone()));
            }
        }
        Ok(None)
    }

    async fn totp(&mut self) -> Result<Decision, FrameError> {
        let code = self.ask(PROMPT, false).await?;
        if code.is_empty() {
            return Ok((deny(DenyReason::Cancelled), "denied: empty answer".into()));
        }
        let user = self.user().to_owned();
        match self.state.judge(&user, &code, Counts::AppLogin).await {
            Ok(Proof::Allowed(How::Recovery { left })) => self.recovered(left).await,
            Ok(Proof::Allowed(_)) => Ok((Outcome::Allow, "allowed (totp)".into())),
            Ok(Proof::Wrong { .. } | Proof::Expired) => {
                let note = "denied: wrong code".into();
                self.deny(DenyReason::WrongCode, "Invalid code.", note)
                    .await
            }
            Ok(Proof::Replayed) => {
                let text = "That code was already used; wait for the next one.";
                let note = "denied: code already used".into();
                self.deny(DenyReason::Replayed, text, note).await
            }
            Ok(Proof::Locked(left)) => self.locked(left).await,
            Ok(Proof::RestartGuard { until }) => self.restart_guard(until).await,
            Ok(Proof::NothingToCheck) => {
                Ok((deny(DenyReason::NotEnrolled), "denied: not enrolled".into()))
            }
            Err(e) => self.internal(e).await,
        }
    }

    async fn restart_guard(&mut self, until: u64) -> Result<Decision, FrameError> {
        let wait = until
            .saturating_sub(crate::policy::clock::unix_now())
            .max(1);
        let text = format!(
            "The login service restarted after a failure and treats recent codes as used. \
             Your code will work again in {wait} s."
        );
        let note = "denied: code from before an unclean restart (not counted)".into();
        self.deny(DenyReason::Replayed, &text, note).await
    }

    /// Send a code (unless one is already waiting), then take answers: an empty one asks for a
    /// new code, a wrong one may be retried until the challenge runs out of attempts.
    async fn sent_code(&mut self, via: Via, destination: &str) -> Result<Flow, FrameError> {
        let user = self.user().to_owned();
        let state = self.state;
        if let Some(left) = state.accounts.locked_for(&user) {
            return self.locked(left).await.map(Flow::Decided);
        }
        let masked = mask(via, destination);
        let valid = validity(state.challenges.ttl());
        let label = match via {
            Via::Email => "Email code: ",
            Via::Sms => "SMS code: ",
        };
        let now = Instant::now();
        let mut notice = if state.challenges.has_open(&user, &Purpose::Login, now) {
            format!("Enter the code already sent to {masked}.")
        } else if let Some(left) = state.challenges.cooldown_left(&user, now) {
            // Say so instead of "Sending..." when nothing can be sent yet.
            format!(
                "A code can be sent to {masked} in {} s; press Enter then.",
                secs(left)
            )
        } else {
            // Answer before the slow part: a delivery that outlasts pam_otp's timeout must end
            // the login as a failure, not look like an unreachable daemon (failmode=safe).
            let text = format!("Sending a code to {masked}...");
            self.conn.write(Reply::Info { text }).await?;
            match send_code(state, &user, via, destination, Purpose::Login).await {
                Ok(sent) => format!(
                    "A code was sent to {masked} (valid {valid}, request {}).",
                    sent.id
                ),
                Err(SendError::Cooldown(left)) => format!(
                    "A code can be sent to {masked} in {} s; press Enter then.",
                    secs(left)
                ),
                Err(e) => return Ok(Flow::NotSent(e)),
            }
        };
        for _ in 0..MAX_ROUNDS {
            let text = format!("{notice}\nEmpty line for a new code. {label}");
            let code = self.ask(&text, false).await?;
            if code.is_empty() {
                notice = match send_code(state, &user, via, destination, Purpose::Login).await {
                    Ok(sent) => format!("A new code was sent to {masked} (request {}).", sent.id),
                    Err(SendError::Cooldown(left)) => {
                        format!("A new code can be sent in {} s.", secs(left))
                    }
                    Err(e) => return self.send_failed(e).await.map(Flow::Decided),
                };
                continue;
            }
            let decided = match state.judge(&user, &code, Counts::SentLogin).await {
                Ok(Proof::Allowed(How::Recovery { left })) => self.recovered(left).await,
                Ok(Proof::Allowed(How::Sent { id, .. })) => {
                    Ok((Outcome::Allow, format!("allowed ({via}, challenge {id})")))
                }
                Ok(Proof::Allowed(_)) => Ok((Outcome::Allow, format!("allowed ({via})"))),
                Ok(Proof::Expired) => {
                    let note = "denied: code expired".into();
                    self.deny(DenyReason::Expired, "That code has expired.", note)
                        .await
                }
                Ok(Proof::NothingToCheck) => {
                    notice = "No code is waiting; press Enter for a new one.".into();
                    continue;
                }
                Ok(Proof::Locked(left)) => self.locked(left).await,
                Ok(Proof::Wrong { alive }) if alive_and_free(state, &user, alive) => {
                    notice = "Wrong code; try again.".into();
                    continue;
                }
                Ok(Proof::Wrong { .. } | Proof::Replayed | Proof::RestartGuard { .. }) => {
                    match state.accounts.locked_for(&user) {
                        Some(left) => self.locked(left).await,
                        None => {
                            let text = "Too many wrong codes.";
                            let note = "denied: too many wrong codes".into();
                            self.deny(DenyReason::TooManyAttempts, text, note).await
                        }
                    }
                }
                Err(e) => self.internal(e).await,
            };
            return decided.map(Flow::Decided);
        }
        Ok(Flow::Decided((
            deny(DenyReason::Cancelled),
            "denied: gave up".into(),
        )))
    }

    /// A recovery code let the user in: say how many are left.
    async fn recovered(&mut self, left: u32) -> Result<Decision, FrameError> {
        let text = match left {
            0 => {
                "Recovery code accepted. It was your last one: run `otpctl recovery-codes`.".into()
            }
            n => format!("Recovery code accepted; {n} left."),
        };
        self.conn.write(Reply::Info { text }).await?;
        Ok((Outcome::Allow, "allowed (recovery code)".into()))
    }

    async fn ask(&mut self, text: &str, echo: bool) -> Result<Secret, FrameError> {
        self.conn
            .write(Reply::Prompt {
                text: text.into(),
                echo,
            })
            .await?;
        match self.conn.read(self.state.cfg.answer_timeout).await? {
            Request::Answer(answer) => Ok(answer),
            other => Err(FrameError::unexpected(Turn::Answer, &other)),
        }
    }

    async fn deny(
        &mut self,
        reason: DenyReason,
        text: &str,
        note: String,
    ) -> Result<Decision, FrameError> {
        self.conn.write(Reply::Error { text: text.into() }).await?;
        Ok((deny(reason), note))
    }

    /// While locked, every code gets this same answer, right or wrong.
    async fn locked(&mut self, left: Duration) -> Result<Decision, FrameError> {
        let minutes = left.as_secs().div_ceil(60).max(1);
        let text = format!(
            "Too many failed attempts; try again in {minutes} minute{}.",
            if minutes == 1 { "" } else { "s" }
        );
        self.deny(DenyReason::Locked, &text, "denied: locked out".into())
            .await
    }

    async fn send_failed(&mut self, e: SendError) -> Result<Decision, FrameError> {
        let text = match e {
            SendError::Quota => "Too many codes were sent in the last hour; try again later.",
            _ => "Could not send the code; try again later or ask your administrator.",
        };
        self.deny(
            DenyReason::SendFailed,
            text,
            format!("denied: send failed ({e:?})"),
        )
        .await
    }

    async fn internal(&mut self, e: impl std::fmt::Display) -> Result<Decision, FrameError> {
        log::error!("store: {e}");
        let text = "Internal error; see the system log.";
        self.deny(DenyReason::Internal, text, "denied: internal error".into())
            .await
    }
}

/// The methods a user may pick from, in the order they are offered.
fn menu(methods: Methods) -> Vec<(String, Method)> {
    let mut choices = Vec::new();
    if methods.totp {
        choices.push(("authenticator app".to_owned(), Method::Totp));
    }
    for via in [Via::Email, Via::Sms] {
        if let Some(destination) = methods.destination(via) {
            let label = format!("{via} {}", mask(via, destination));
            choices.push((label, Method::Sent(via, destination.to_owned())));
        }
    }
    choices
}

/// A wrong sent code may be retried while the challenge lives and the user is not locked.
fn alive_and_free(state: &State, user: &str, alive: bool) -> bool {
    alive && state.accounts.locked_for(user).is_none()
}

fn deny(reason: DenyReason) -> Outcome {
    Outcome::Deny(reason)
}

fn secs(d: Duration) -> u64 {
    d.as_secs_f64().ceil() as u64
}

/// The audit line of a login. Every field the peer chose goes through `logging::field`, so
/// none can pose as another field or another line.
fn audit(login: &Login, caller: &Caller, result: &str) {
    use crate::logging::field;
    log::info!(
        "{}: user={} rhost={} tty={} uid={}: {result}",
        field(&login.service),
        field(&login.user),
        field(login.rhost.as_deref().unwrap_or("-")),
        field(login.tty.as_deref().unwrap_or("-")),
        caller.uid,
    );
}
