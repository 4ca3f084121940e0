//! A login: the daemon chooses every prompt and decides the outcome; `pam_otp` only relays.
//! Every attempt ends in one audit line (service, user, rhost, tty, result), never the code.
//!
//! The login is a small state machine: each `Step` names where the conversation stands, and
//! one function per step says one thing or takes one answer and returns the next step, until
//! `Decided`. Every answer is judged by `State::judge` (policy/proof.rs); the `after_*`
//! functions here only map its verdict to the next step, so a reader finds what each reply
//! leads to in one match. The conversation goes through a [`Dialog`], so every path is
//! unit-tested with a scripted user (the tests below).
//!
//! ```text
//! Start ─┬─ nothing enrolled: Unenrolled ─┬─ FirstLoginEnrollment ─ AskEnrollmentCode ⟲ ─ Enrolled
//!        │                                └─ Decided (nullok, allow) or Refuse (deny)
//!        └─ ChooseMethod ─ (AskChoice ⟲) ─┬─ AskAppCode ─ Decided or Recovered
//!                                         ├─ SendCode ─┬─ AskSentCode ⟲ ─ Decided or Recovered
//!                                         │            └─ not sent: ChooseMethod without it
//!                                         └─ Duo (session/duo.rs) ─┬─ Decided or Refuse
//!                                                                  └─ unreachable, failmode safe:
//!                                                                     ChooseMethod without it
//! ```
//!
//! Any step may end in `Refuse` (say why, deny); `Refuse`, `Recovered` and `Enrolled` say one
//! last thing and reach `Decided`. ⟲: the step repeats (a bad pick, a wrong code, an empty line
//! asking for a new code) within its bound (`TRIES`, `MAX_ROUNDS`, the challenge's attempts).
//!
//! OpenSSH shows info messages only together with the next prompt (OpenSSH bug 2876), so
//! whatever the user must read ("code sent to j***@e***.com") is part of the prompt text itself.

mod forward_pass;

use super::dialog::Dialog;
use super::send::{send_code, SendError};
use crate::channel::mask;
use crate::channel::template::validity;
use crate::config::rules::Require;
use crate::config::Unenrolled;
use crate::logging::field;
use crate::names::Name;
use crate::peer::Caller;
use crate::policy::challenge::Purpose;
use crate::policy::factors::Factors;
use crate::policy::grace::GraceRule;
use crate::policy::proof::{Counts, How, Proof};
use crate::policy::rules::{self, Effective};
use crate::state::State;
use crate::store::{StoreError, TotpKey};
use otp_proto::frame::FrameError;
use otp_proto::{DenyReason, Login, MethodKind, Outcome, Secret, Via};
use std::fmt::Display;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The TOTP prompt; it names "code" so users (and tests) know what is asked.
pub const PROMPT: &str = "Verification code: ";

/// Asked after an HOTP code past the look-ahead window (a resync).
pub const NEXT_HOTP_PROMPT: &str =
    "Your token is ahead of this server. Press its button again and enter the next code: ";

/// Prompts one sent-code login may show before it gives up (resends and retries together).
const MAX_ROUNDS: usize = 10;

/// Times the menu, or the first-login enrollment prompt, is shown before the login gives up.
const TRIES: usize = 3;

const NOT_SET_UP: &str = "No second factor is set up for this account; ask your administrator.";

/// A fleet whose database is down says so.
const OFFLINE: &str =
    "The login database cannot be reached; try again later or ask your administrator.";

/// How the conversation ended, and what the audit line says about it.
type Decision = (Outcome, String);

/// Where a login stands; `Session::decide` lists what each step does.
enum Step {
    /// May the caller run this login, and what has the user enrolled?
    Start,
    /// Nothing enrolled (that the policy counts): `nullok` or the policy decide, for users
    /// that exist.
    Unenrolled(Effective),
    /// The user's default method, or the only one, or else the menu.
    ChooseMethod(Menu),
    /// Show the menu and take a pick; `tries` left.
    AskChoice { menu: Menu, tries: usize },
    /// Ask for the authenticator app's code.
    AskAppCode,
    /// forward_pass: judge the code at the end of what was typed at the one prompt.
    ForwardPass(Menu),
    /// An HOTP code past the window matched `counter`: ask for the token's next code.
    AskNextHotpCode { counter: u64 },
    /// Send a code to `to` (unless one is already waiting); `menu` holds the fallbacks.
    SendCode { menu: Menu, to: SentTo },
    /// Take an answer to a sent code: an empty one asks for a new code.
    AskSentCode(SentCode),
    /// Show the QR code and the key of the user's first-login key.
    FirstLoginEnrollment,
    /// Ask for a code from the app just set up.
    AskEnrollmentCode(Enrollment),
    /// The first-login key is confirmed: hand out recovery codes once, let the user in.
    Enrolled,
    /// A recovery code let the user in: say how many are left.
    Recovered { left: u32 },
    /// Say why, then deny.
    Refuse(Denial),
    /// The outcome, and the audit line's note.
    Decided(Decision),
    /// Duo's steps (session/duo.rs); `menu` holds the fallbacks for failmode safe.
    Duo(Menu),
}

/// A denial with the words the user reads and the note the audit line gets.
struct Denial {
    reason: DenyReason,
    text: String,
    note: String,
}

/// One entry of the login menu.
#[derive(Clone)]
enum Choice {
    /// The authenticator app.
    App,
    /// A code sent by email or SMS.
    Sent(SentTo),
    /// Duo: push, call or passcode (`[duo]`).
    Duo,
}

/// Where a sent code goes.
#[derive(Clone)]
struct SentTo {
    via: Via,
    destination: String,
}

/// The methods a user may still pick, in the order they are offered.
struct Menu {
    choices: Vec<Choice>,
    /// The user's default (`otpctl default`), or the configured one.
    preferred: Option<MethodKind>,
}

/// A sent-code login under way.
struct SentCode {
    to: SentTo,
    /// What the next prompt tells first: sent, already waiting, wrong, wait for the cooldown.
    notice: String,
    rounds: usize,
}

/// A first-login enrollment under way.
struct Enrollment {
    /// Names the key, so it is wiped when dropped.
    prompt: Zeroizing<String>,
    tries: usize,
}

struct Session<'a, D> {
    dialog: &'a mut D,
    state: &'a State,
    caller: &'a Caller,
    login: &'a Login,
    /// How the typed name resolved (`names`); whether it has a passwd entry is `known()`.
    name: Name,
    /// What the audit event records beside the outcome.
    trail: Trail,
    /// The login's policy rule, when `run` already needed it (for grace): `start` takes it.
    rule: Option<Result<Effective, rules::GroupLookupError>>,
}

/// The facts of a login its audit event carries (audit/).
#[derive(Default)]
struct Trail {
    method: Option<MethodKind>,
    challenge: Option<String>,
    /// The policy rule that applied, from 1.
    rule: Option<usize>,
    exempt: bool,
}

/// Run the login of `login.user`, which the caller has resolved to `name` (`State::names`, once
/// per login: the server needs it first, for the per-user connection cap).
pub async fn run<D: Dialog>(
    dialog: &mut D,
    caller: &Caller,
    state: &State,
    mut login: Login,
    name: Name,
) -> Result<(), FrameError> {
    // Everything is keyed by the canonical passwd name: "ALICE" or "alice " is not a user of
    // its own with its own lockout, and a name without a passwd entry is let in only by an
    // enrolled record of exactly that name.
    login.user = name.as_str().to_owned();
    let mut session = Session {
        dialog: &mut *dialog,
        state,
        caller,
        login: &login,
        name,
        trail: Trail::default(),
        rule: None,
    };
    // policy::grace: a second factor from this rhost and service a short while ago, for as long
    // as the login's rule says. Only root's logins can have grace, so only theirs look it up.
    let grace = &state.accounts.grace;
    let policy = &state.cfg.policy;
    let mut grace_rule = GraceRule::default();
    if caller.uid == 0 && (policy.grace.is_some() || policy.rule.iter().any(|r| r.grace.is_some()))
    {
        let rule = rules::applies(policy, &login.user, Some(login.service.as_str())).await;
        if let Ok(effective) = &rule {
            grace_rule = GraceRule {
                period: effective.grace,
                local: policy.grace_local,
            };
        }
        session.rule = Some(rule);
    }
    let graced = grace.admits(caller.uid, &login, grace_rule);
    let decided = match graced {
        true => Ok((Outcome::Allow, "allowed (grace)".to_owned())),
        false => session.decide().await,
    };
    let trail = std::mem::take(&mut session.trail);
    let (outcome, note) = match decided {
        Ok(decision) => decision,
        Err(e) => {
            let note = format!("aborted: {e}");
            audit(&login, caller, &note);
            record(state, &login, caller, None, &note, trail).await;
            return Err(e);
        }
    };
    // Only a second factor grants grace: not grace itself, not an exempting rule.
    if outcome == Outcome::Allow && !graced && !trail.exempt {
        grace.grant(caller.uid, &login, grace_rule);
    }
    // The event is queued before the reply, so a query made after the reply sees it; the line
    // is written after it, so the reply does not wait for the log (docs/design.md, "Latency").
    record(state, &login, caller, Some(outcome), &note, trail).await;
    let replied = reply(dialog, outcome, &login).await;
    audit(&login, caller, &note);
    replied
}

/// The login's last replies: the outcome, after the password handed back when forward_pass
/// found nothing enrolled (no code was typed, all of it is the password).
async fn reply<D: Dialog>(
    dialog: &mut D,
    outcome: Outcome,
    login: &Login,
) -> Result<(), FrameError> {
    if let (Outcome::Ignore, Some(typed)) = (outcome, &login.forward_pass) {
        dialog.hand_back(typed).await?;
    }
    dialog.end(outcome).await
}

impl<D: Dialog> Session<'_, D> {
    /// Run the steps until one decides. This match is the whole login.
    async fn decide(&mut self) -> Result<Decision, FrameError> {
        let mut step = Step::Start;
        loop {
            match &step {
                Step::AskAppCode | Step::FirstLoginEnrollment | Step::AskNextHotpCode { .. } => {
                    self.trail.method = Some(MethodKind::Totp)
                }
                Step::SendCode { to, .. } => self.trail.method = Some(to.kind()),
                Step::Duo(_) => self.trail.method = Some(MethodKind::Duo),
                _ => {}
            }
            step = match step {
                Step::Start => self.start().await?,
                Step::Unenrolled(policy) => self.unenrolled(policy).await,
                Step::ChooseMethod(menu) => choose_method(menu),
                Step::AskChoice { menu, tries } => self.ask_choice(menu, tries).await?,
                Step::AskAppCode => self.ask_app_code().await?,
                Step::ForwardPass(menu) => self.forward_pass(menu).await?,
                Step::AskNextHotpCode { counter } => self.ask_next_hotp_code(counter).await?,
                Step::SendCode { menu, to } => self.send_code(menu, to).await?,
                Step::AskSentCode(sent) => self.ask_sent_code(sent).await?,
                Step::FirstLoginEnrollment => self.first_login_enrollment().await?,
                Step::AskEnrollmentCode(enrollment) => self.ask_enrollment_code(enrollment).await?,
                Step::Enrolled => self.enrolled().await?,
                Step::Recovered { left } => self.recovered(left).await?,
                Step::Refuse(denial) => self.refuse(denial).await?,
                Step::Decided(decision) => return Ok(decision),
                Step::Duo(menu) => self.duo(menu).await?,
            };
        }
    }

    fn user(&self) -> &str {
        &self.login.user
    }

    /// The user has a passwd entry. A name resolved by its record asks NSS now: only the
    /// decisions that depend on it pay for the lookup (names, "resolve_recorded").
    async fn known(&self) -> bool {
        match &self.name {
            Name::Recorded(typed) => self.state.names.resolve(typed).await.is_known(),
            name => name.is_known(),
        }
    }

    async fn start(&mut self) -> Result<Step, FrameError> {
        if !self.caller.may_authenticate(self.user()) {
            let note = format!(
                "denied: uid {} may not authenticate this user",
                self.caller.uid
            );
            return Ok(refuse(DenyReason::Forbidden, "Permission denied.", note));
        }
        // The rule for this user and service (policy/rules.rs): it may exempt the login, and
        // only the methods it counts are offered.
        let service = Some(self.login.service.as_str());
        let rule = match self.rule.take() {
            Some(rule) => rule,
            None => rules::applies(&self.state.cfg.policy, self.user(), service).await,
        };
        let policy = match rule {
            Ok(policy) => policy,
            Err(e) => return Ok(internal(e)),
        };
        self.trail.rule = policy.rule;
        if policy.require == Require::Never {
            self.trail.exempt = true;
            let note = format!("allowed: exempt by {} ({})", policy.name(), policy.why);
            return Ok(decided(Outcome::Allow, note));
        }
        let registry = &self.state.accounts.registry;
        registry.look_up(self.user()).await; // the directory's values, read afresh
                                             // Duo is every passwd user's method when configured (they enroll with Duo).
        let duo = self.state.duo.is_some() && policy.allows(MethodKind::Duo) && self.known().await;
        Ok(
            match registry.factors(self.user()).map(|m| policy.filter(m)) {
                Ok(methods) if methods.is_empty() && !duo => Step::Unenrolled(policy),
                Ok(methods) => {
                    let unavailable = self.unavailable(&methods);
                    let menu = Menu {
                        preferred: methods.default.or(self.state.cfg.policy.default_method),
                        choices: [
                            menu(methods),
                            duo.then_some(Choice::Duo).into_iter().collect(),
                        ]
                        .concat(),
                    };
                    match (unavailable, menu.choices.is_empty()) {
                        // Only methods the directory cannot vouch for now: nothing to offer.
                        (text, true) => refuse(
                            DenyReason::SendFailed,
                            format!(
                                "{} Try again later or ask your administrator.",
                                text.as_deref()
                                    .unwrap_or("The user directory cannot be reached.")
                            ),
                            "denied: directory unavailable",
                        ),
                        // A one-prompt client cannot show a line before its verdict: it gets none.
                        (_, false) if self.login.forward_pass.is_some() => Step::ForwardPass(menu),
                        (Some(text), false) => {
                            self.dialog.error(&text).await?;
                            Step::ChooseMethod(menu)
                        }
                        (None, false) => Step::ChooseMethod(menu),
                    }
                }
                Err(e) => internal(e),
            },
        )
    }

    /// What the user is told when the directory that holds their address or number cannot be
    /// reached (`[directory]`): only for methods whose channel is configured.
    fn unavailable(&self, methods: &Factors) -> Option<String> {
        let via: Vec<String> = (methods.unavailable.iter())
            .filter(|via| self.state.channel(**via).is_some())
            .map(|via| format!("{via}"))
            .collect();
        (!via.is_empty()).then(|| {
            format!(
                "Codes by {} are unavailable now: the user directory cannot be reached.",
                via.join(" and ")
            )
        })
    }

    async fn unenrolled(&self, policy: Effective) -> Step {
        if !self.known().await {
            let note = "denied: no such user in the passwd database, nothing enrolled";
            return refuse(DenyReason::NotEnrolled, NOT_SET_UP, note);
        }
        if self.login.nullok {
            return decided(Outcome::Ignore, "ignored: not enrolled (nullok)");
        }
        if policy.require == Require::Enrolled {
            let note = format!(
                "ignored: not enrolled ({} requires = enrolled)",
                policy.name()
            );
            return decided(Outcome::Ignore, note);
        }
        match policy.unenrolled {
            Unenrolled::Allow => decided(
                Outcome::Ignore,
                "ignored: not enrolled (policy unenrolled = allow)",
            ),
            // With forward_pass the password is checked after this module: whoever typed
            // anything would see the new key.
            Unenrolled::Enroll if self.login.forward_pass.is_some() => {
                let note = "denied: not enrolled (no first-login enrollment with forward_pass)";
                refuse(DenyReason::NotEnrolled, NOT_SET_UP, note)
            }
            Unenrolled::Enroll if !policy.allows(MethodKind::Totp) => refuse(
                DenyReason::NotEnrolled,
                NOT_SET_UP,
                format!(
                    "denied: not enrolled ({} does not count TOTP)",
                    policy.name()
                ),
            ),
            Unenrolled::Enroll => Step::FirstLoginEnrollment,
            Unenrolled::Deny => refuse(DenyReason::NotEnrolled, NOT_SET_UP, "denied: not enrolled"),
        }
    }

    async fn ask_choice(&mut self, menu: Menu, tries: usize) -> Result<Step, FrameError> {
        if tries == 0 {
            return Ok(decided(
                deny(DenyReason::Cancelled),
                "denied: no method chosen",
            ));
        }
        let answer = self.ask(&menu.prompt(), true).await?;
        Ok(match menu.pick(answer.expose()) {
            Some(choice) => chosen(menu, choice),
            None => Step::AskChoice {
                menu,
                tries: tries - 1,
            },
        })
    }

    async fn ask_app_code(&mut self) -> Result<Step, FrameError> {
        let code = self.ask(PROMPT, false).await?;
        if code.is_empty() {
            return Ok(decided(deny(DenyReason::Cancelled), "denied: empty answer"));
        }
        let proof = self.state.judge(self.user(), &code, Counts::AppLogin).await;
        Ok(after_app_code(proof))
    }

    /// The second code of an HOTP resync (policy::hotp): judged like every answer, and only
    /// the code right after the first one moves the counter.
    async fn ask_next_hotp_code(&mut self, counter: u64) -> Result<Step, FrameError> {
        // The first code was a counted failure: it may have been the one that locked.
        if let Some(left) = self.state.accounts.lockouts.locked_for(self.user()) {
            return Ok(locked(left));
        }
        let code = self.ask(NEXT_HOTP_PROMPT, false).await?;
        if code.is_empty() {
            return Ok(decided(deny(DenyReason::Cancelled), "denied: empty answer"));
        }
        let counts = Counts::HotpResync { after: counter };
        Ok(match self.state.judge(self.user(), &code, counts).await {
            Ok(Proof::Allowed(_)) => decided(Outcome::Allow, "allowed (hotp, resynchronised)"),
            other => after_app_code(other),
        })
    }

    /// Send the first code, unless one is already waiting or the cooldown runs (then say so
    /// instead of "Sending...").
    async fn send_code(&mut self, menu: Menu, to: SentTo) -> Result<Step, FrameError> {
        let (state, user) = (self.state, self.login.user.as_str());
        if let Some(left) = state.accounts.lockouts.locked_for(user) {
            return Ok(locked(left));
        }
        let masked = to.masked();
        let now = Instant::now();
        let notice = if state.challenges.has_open(user, &Purpose::Login, now) {
            format!("Enter the code already sent to {masked}.")
        } else if let Some(left) = state.challenges.cooldown_left(user, now) {
            wait_to_send(&masked, left)
        } else {
            // Answer before the slow part: a delivery that outlasts pam_otp's timeout must end
            // the login as a failure, not look like an unreachable daemon (failmode=safe).
            let text = format!("Sending a code to {masked}...");
            self.dialog.info(&text).await?;
            match send_code(state, user, to.via, &to.destination, Purpose::Login).await {
                Ok(sent) => {
                    self.trail.challenge = Some(sent.id.clone());
                    format!(
                        "A code was sent to {masked} (valid {}, request {}).",
                        validity(state.challenges.ttl()),
                        sent.id
                    )
                }
                Err(SendError::Cooldown(left)) => wait_to_send(&masked, left),
                Err(e) => return self.not_sent(menu, to.via, e).await,
            }
        };
        Ok(Step::AskSentCode(SentCode {
            to,
            notice,
            rounds: MAX_ROUNDS,
        }))
    }

    /// The first code could not be sent: offer the other methods, if there are any.
    async fn not_sent(
        &mut self,
        mut menu: Menu,
        via: Via,
        e: SendError,
    ) -> Result<Step, FrameError> {
        if menu.choices.len() <= 1 {
            return Ok(send_failed(e));
        }
        let text = match e {
            // The other methods may still work offline (the app, `[store] offline = "cached"`).
            SendError::Offline => format!(
                "The login database cannot be reached, and codes by {via} need it; choose \
                 another way."
            ),
            _ => format!("Could not send the code by {via}; choose another way."),
        };
        self.dialog.error(&text).await?;
        log::warn!(
            "user={}: {via} failed ({e:?}); offering the others",
            field(self.user())
        );
        menu.choices
            .retain(|c| !matches!(c, Choice::Sent(to) if to.via == via));
        Ok(Step::ChooseMethod(menu))
    }

    async fn ask_sent_code(&mut self, sent: SentCode) -> Result<Step, FrameError> {
        if sent.rounds == 0 {
            return Ok(decided(deny(DenyReason::Cancelled), "denied: gave up"));
        }
        let text = format!(
            "{}\nEmpty line for a new code. {}",
            sent.notice,
            sent.to.prompt()
        );
        let code = self.ask(&text, false).await?;
        let sent = SentCode {
            rounds: sent.rounds - 1,
            ..sent
        };
        if code.is_empty() {
            return Ok(self.resend(sent).await);
        }
        let proof = self
            .state
            .judge(self.user(), &code, Counts::SentLogin)
            .await;
        Ok(self.after_sent_code(proof, sent))
    }

    /// An empty answer: a new code, or how long until one can be sent.
    async fn resend(&self, mut sent: SentCode) -> Step {
        let masked = sent.to.masked();
        let to = &sent.to;
        let resent = send_code(
            self.state,
            self.user(),
            to.via,
            &to.destination,
            Purpose::Login,
        );
        sent.notice = match resent.await {
            Ok(s) => format!("A new code was sent to {masked} (request {}).", s.id),
            Err(SendError::Cooldown(left)) => {
                format!("A new code can be sent in {} s.", secs(left))
            }
            Err(e) => return send_failed(e),
        };
        Step::AskSentCode(sent)
    }

    /// What each verdict on a sent code leads to. A wrong code may be retried while the
    /// challenge lives and the user is not locked.
    fn after_sent_code(&self, proof: Result<Proof, StoreError>, sent: SentCode) -> Step {
        let via = sent.to.via;
        let again = |notice: &str| {
            Step::AskSentCode(SentCode {
                notice: notice.into(),
                ..sent
            })
        };
        let proof = match proof {
            Ok(proof) => proof,
            Err(e) => return internal(e),
        };
        match proof {
            Proof::Allowed(How::Recovery { left }) => Step::Recovered { left },
            Proof::Allowed(How::Sent { id, .. }) => {
                decided(Outcome::Allow, format!("allowed ({via}, challenge {id})"))
            }
            Proof::Allowed(_) => decided(Outcome::Allow, format!("allowed ({via})")),
            Proof::Expired => refuse(
                DenyReason::Expired,
                "That code has expired.",
                "denied: code expired",
            ),
            Proof::NothingToCheck => again("No code is waiting; press Enter for a new one."),
            Proof::Locked(left) => locked(left),
            Proof::Wrong { .. }
            | Proof::Replayed
            | Proof::RestartGuard { .. }
            | Proof::ResyncNeeded { .. } => {
                let alive = proof == Proof::Wrong { alive: true };
                match (self.state.accounts.lockouts.locked_for(self.user()), alive) {
                    (Some(left), _) => locked(left),
                    (None, true) => again("Wrong code; try again."),
                    (None, false) => refuse(
                        DenyReason::TooManyAttempts,
                        "Too many wrong codes.",
                        "denied: too many wrong codes",
                    ),
                }
            }
        }
    }

    /// Show the QR code and the key. Only a pending key that first-login enrollment made is
    /// shown again at a second attempt; otherwise a new one is made.
    async fn first_login_enrollment(&mut self) -> Result<Step, FrameError> {
        let key = match self.first_login_key().await {
            Ok(key) => key,
            Err(e) => return Ok(internal(e)),
        };
        let account = format!("{}@{}", self.user(), self.state.host);
        let uri = crate::policy::totp::uri(&key, &self.state.issuer, &account);
        // The picture, the key and every text holding them are wiped when dropped; the
        // dialog wipes its own copies (`Connection::write`).
        let picture = Zeroizing::new(crate::qr::qr(uri.expose()).unwrap_or_default());
        let text = Zeroizing::new(format!(
            "Set up your second factor: scan this QR code with an authenticator app.\n{}",
            picture.as_str()
        ));
        self.dialog.info(&text).await?;
        let grouped = Zeroizing::new(crate::qr::grouped(key.secret.expose()));
        let prompt = Zeroizing::new(format!(
            "Or type the key {} ({}, {} digits, {} s).\nEnter the code your app shows: ",
            grouped.as_str(),
            key.algorithm,
            key.digits,
            key.period
        ));
        Ok(Step::AskEnrollmentCode(Enrollment {
            prompt,
            tries: TRIES,
        }))
    }

    async fn first_login_key(&self) -> Result<TotpKey, crate::policy::enrollment::EnrollError> {
        let accounts = &self.state.accounts;
        match accounts.enrollment.pending_from_login(self.user())? {
            Some(key) => Ok(key),
            None => Ok(accounts.enrollment.enroll_totp(self.user(), true).await?.0),
        }
    }

    async fn ask_enrollment_code(&mut self, enrollment: Enrollment) -> Result<Step, FrameError> {
        let not_confirmed = || {
            let text = "Not enrolled; the same key is shown at your next login.";
            let note = "denied: first-login enrollment not confirmed";
            refuse(DenyReason::NotEnrolled, text, note)
        };
        if enrollment.tries == 0 {
            return Ok(not_confirmed());
        }
        let code = self.ask(&enrollment.prompt, false).await?;
        if code.is_empty() {
            return Ok(not_confirmed());
        }
        match self
            .state
            .judge(self.user(), &code, Counts::FirstLogin)
            .await
        {
            Ok(Proof::Allowed(_)) => Ok(Step::Enrolled),
            Ok(Proof::Locked(left)) => Ok(locked(left)),
            Ok(_) => {
                let text = "That code did not match; try the next one.";
                self.dialog.error(text).await?;
                Ok(Step::AskEnrollmentCode(Enrollment {
                    tries: enrollment.tries - 1,
                    ..enrollment
                }))
            }
            Err(e) => Ok(internal(e)),
        }
    }

    async fn enrolled(&mut self) -> Result<Step, FrameError> {
        log::info!("user={}: TOTP enrolled at first login", field(self.user()));
        let codes = match self
            .state
            .accounts
            .enrollment
            .new_recovery_codes(self.user())
            .await
        {
            Ok(codes) => codes,
            Err(e) => return Ok(internal(e)),
        };
        let list: Vec<&str> = codes.iter().map(|c| c.expose()).collect();
        let list = Zeroizing::new(list.join("  "));
        let text = Zeroizing::new(format!(
            "Enrolled. Your recovery codes, each good once if you lose your phone (not shown again):\n    {}",
            list.as_str()
        ));
        self.dialog.info(&text).await?;
        Ok(decided(Outcome::Allow, "allowed (enrolled at first login)"))
    }

    async fn recovered(&mut self, left: u32) -> Result<Step, FrameError> {
        let text = match left {
            0 => {
                "Recovery code accepted. It was your last one: run `otpctl recovery-codes`.".into()
            }
            n => format!("Recovery code accepted; {n} left."),
        };
        self.dialog.info(&text).await?;
        Ok(decided(Outcome::Allow, "allowed (recovery code)"))
    }

    async fn refuse(&mut self, denial: Denial) -> Result<Step, FrameError> {
        self.dialog.error(&denial.text).await?;
        Ok(Step::Decided((deny(denial.reason), denial.note)))
    }

    /// Duo's steps; Duo unreachable with failmode safe leaves the other methods, or allows.
    async fn duo(&mut self, mut menu: Menu) -> Result<Step, FrameError> {
        use super::duo::DuoEnd;
        Ok(
            match super::duo::run(self.dialog, self.state, self.login).await? {
                DuoEnd::Decided(outcome, note) => decided(outcome, note),
                DuoEnd::Refused { reason, text, note } => refuse(reason, text, note),
                DuoEnd::Locked(left) => locked(left),
                DuoEnd::Skipped => {
                    menu.choices.retain(|c| !matches!(c, Choice::Duo));
                    if menu.choices.is_empty() {
                        let note = "allowed (Duo unreachable, failmode safe)";
                        return Ok(decided(Outcome::Allow, note));
                    }
                    self.dialog
                        .error("Duo is unreachable; choose another way.")
                        .await?;
                    Step::ChooseMethod(menu)
                }
            },
        )
    }

    async fn ask(&mut self, text: &str, echo: bool) -> Result<Secret, FrameError> {
        let within = self.state.cfg.answer_timeout;
        self.dialog.ask(text, echo, within).await
    }
}

impl Menu {
    /// "1) authenticator app  2) email j***@e***.com", and the question.
    fn prompt(&self) -> String {
        let entries: Vec<String> = self
            .choices
            .iter()
            .enumerate()
            .map(|(i, choice)| format!("{}) {}", i + 1, choice.label()))
            .collect();
        format!("{}\nChoose a second factor [1]: ", entries.join("  "))
    }

    /// The entry an answer names: its number, or the first for an empty line.
    fn pick(&self, answer: &str) -> Option<Choice> {
        let n = match answer.trim() {
            "" => 1,
            s => s.parse::<usize>().ok()?,
        };
        self.choices.get(n.checked_sub(1)?).cloned()
    }
}

impl Choice {
    fn kind(&self) -> MethodKind {
        match self {
            Choice::App => MethodKind::Totp,
            Choice::Sent(SentTo {
                via: Via::Email, ..
            }) => MethodKind::Email,
            Choice::Sent(SentTo { via: Via::Sms, .. }) => MethodKind::Sms,
            Choice::Duo => MethodKind::Duo,
        }
    }

    fn label(&self) -> String {
        match self {
            Choice::App => "authenticator app".to_owned(),
            Choice::Sent(to) => format!("{} {}", to.via, to.masked()),
            Choice::Duo => "Duo push, call or passcode".to_owned(),
        }
    }
}

impl SentTo {
    fn kind(&self) -> MethodKind {
        match self.via {
            Via::Email => MethodKind::Email,
            Via::Sms => MethodKind::Sms,
        }
    }

    fn masked(&self) -> String {
        mask(self.via, &self.destination)
    }

    fn prompt(&self) -> &'static str {
        match self.via {
            Via::Email => "Email code: ",
            Via::Sms => "SMS code: ",
        }
    }
}

/// The methods a user may pick from, in the order they are offered.
fn menu(methods: Factors) -> Vec<Choice> {
    let mut choices = Vec::new();
    if methods.totp {
        choices.push(Choice::App);
    }
    for via in [Via::Email, Via::Sms] {
        if let Some(destination) = methods.destination(via) {
            let destination = destination.to_owned();
            choices.push(Choice::Sent(SentTo { via, destination }));
        }
    }
    choices
}

/// The preferred method if it is on the menu, else the only one, else ask.
fn choose_method(menu: Menu) -> Step {
    let preferred = menu
        .preferred
        .and_then(|p| menu.choices.iter().find(|c| c.kind() == p));
    let only = match menu.choices.as_slice() {
        [only] => Some(only),
        _ => None,
    };
    match preferred.or(only).cloned() {
        Some(choice) => chosen(menu, choice),
        None => Step::AskChoice { menu, tries: TRIES },
    }
}

fn chosen(menu: Menu, choice: Choice) -> Step {
    match choice {
        Choice::App => Step::AskAppCode,
        Choice::Sent(to) => Step::SendCode { menu, to },
        Choice::Duo => Step::Duo(menu),
    }
}

/// What each verdict on an authenticator-app code leads to.
fn after_app_code(proof: Result<Proof, StoreError>) -> Step {
    match proof {
        Ok(Proof::Allowed(How::Recovery { left })) => Step::Recovered { left },
        Ok(Proof::Allowed(How::OfflineCached)) => decided(
            Outcome::Allow,
            "allowed (totp, offline cached: database unreachable)",
        ),
        Ok(Proof::Allowed(_)) => decided(Outcome::Allow, "allowed (totp)"),
        Ok(Proof::Wrong { .. } | Proof::Expired) => {
            refuse(DenyReason::WrongCode, "Invalid code.", "denied: wrong code")
        }
        Ok(Proof::Replayed) => refuse(
            DenyReason::Replayed,
            "That code was already used; wait for the next one.",
            "denied: code already used",
        ),
        Ok(Proof::Locked(left)) => locked(left),
        Ok(Proof::RestartGuard { until }) => restart_guard(until),
        Ok(Proof::ResyncNeeded { counter }) => Step::AskNextHotpCode { counter },
        Ok(Proof::NothingToCheck) => decided(deny(DenyReason::NotEnrolled), "denied: not enrolled"),
        Err(e) => internal(e),
    }
}

fn restart_guard(until: u64) -> Step {
    let wait = until
        .saturating_sub(crate::policy::clock::unix_now())
        .max(1);
    let text = format!(
        "The login service restarted after a failure and treats recent codes as used. \
         Your code will work again in {wait} s."
    );
    let note = "denied: code from before an unclean restart (not counted)";
    refuse(DenyReason::Replayed, text, note)
}

/// While locked, every code gets this same answer, right or wrong.
fn locked(left: Duration) -> Step {
    let minutes = left.as_secs().div_ceil(60).max(1);
    let text = format!(
        "Too many failed attempts; try again in {minutes} minute{}.",
        if minutes == 1 { "" } else { "s" }
    );
    refuse(DenyReason::Locked, text, "denied: locked out")
}

fn send_failed(e: SendError) -> Step {
    let text = match e {
        SendError::Quota => "Too many codes were sent in the last hour; try again later.",
        SendError::Offline => OFFLINE,
        _ => "Could not send the code; try again later or ask your administrator.",
    };
    refuse(
        DenyReason::SendFailed,
        text,
        format!("denied: send failed ({e:?})"),
    )
}

fn internal(e: impl Display + 'static) -> Step {
    log::error!("store: {e}");
    // A fleet whose database is down ([store] offline = "deny") says so.
    if let Some(StoreError::Unreachable(_)) = (&e as &dyn std::any::Any).downcast_ref() {
        return refuse(
            DenyReason::Internal,
            OFFLINE,
            "denied: database unreachable",
        );
    }
    let text = "Internal error; see the system log.";
    refuse(DenyReason::Internal, text, "denied: internal error")
}

fn wait_to_send(masked: &str, left: Duration) -> String {
    format!(
        "A code can be sent to {masked} in {} s; press Enter then.",
        secs(left)
    )
}

fn refuse(reason: DenyReason, text: impl Into<String>, note: impl Into<String>) -> Step {
    Step::Refuse(Denial {
        reason,
        text: text.into(),
        note: note.into(),
    })
}

fn decided(outcome: Outcome, note: impl Into<String>) -> Step {
    Step::Decided((outcome, note.into()))
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
    log::info!(
        "{}: user={} rhost={} tty={} uid={}: {result}",
        field(&login.service),
        field(&login.user),
        field(login.rhost.as_deref().unwrap_or("-")),
        field(login.tty.as_deref().unwrap_or("-")),
        caller.uid,
    );
}

/// The login's structured audit event (audit/): the same facts as its line, typed.
async fn record(
    state: &State,
    login: &Login,
    caller: &Caller,
    outcome: Option<Outcome>,
    note: &str,
    trail: Trail,
) {
    use otp_proto::{AuditKind, AuditResult};
    let result = match outcome {
        Some(Outcome::Allow) if trail.exempt => AuditResult::Exempt,
        Some(Outcome::Allow) => AuditResult::Allowed,
        Some(Outcome::Ignore) => AuditResult::Ignored,
        Some(Outcome::Deny(_)) | None => AuditResult::Denied,
    };
    let mut event = state
        .audit
        .event(AuditKind::Login, result, &login.user, caller.uid);
    event.service = Some(login.service.clone());
    event.rhost = login.rhost.clone();
    event.tty = login.tty.clone();
    event.method = trail.method;
    event.challenge = trail.challenge;
    event.rule = trail.rule.and_then(|n| u32::try_from(n).ok());
    event.reason = note.to_owned();
    let wrong = matches!(
        outcome,
        Some(Outcome::Deny(DenyReason::WrongCode | DenyReason::Replayed))
    );
    // Only a wrong answer can begin a lockout; an allowed login copies nothing.
    let after = wrong.then(|| event.clone());
    state.audit.record(event).await;
    if let Some(after) = after {
        super::trail::lockout_if_it_began(state, &after).await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{
        app_code, key_on_screen, root, world, Outbox, Said, Script, World,
    };
    use super::super::testing::{sshd, EMAIL, PHONE};
    use super::*;

    /// `run` as the server calls it: the typed name resolved first.
    async fn resolve_and_run<D: Dialog>(
        dialog: &mut D,
        caller: &Caller,
        state: &State,
        login: Login,
    ) -> Result<(), FrameError> {
        let accounts = &state.accounts;
        let name = state
            .names
            .resolve_recorded(&login.user, |u| accounts.has_record(u))
            .await;
        run(dialog, caller, state, login, name).await
    }

    const EMAIL_PROMPT: &str = "Email code: ";
    const MENU: &str = "Choose a second factor [1]: ";

    /// How one login ended, and everything the user saw.
    struct Ended {
        outcome: Outcome,
        note: String,
        script: Script,
    }

    /// `login` as sshd runs it, for a user with a passwd entry when `known`.
    async fn attempt(w: &World, login: Login, known: bool, mut script: Script) -> Ended {
        let user = login.user.clone();
        let mut session = Session {
            dialog: &mut script,
            state: &w.state,
            caller: &root(),
            login: &login,
            name: if known {
                Name::Known(user)
            } else {
                Name::Unknown(user)
            },
            trail: Trail::default(),
            rule: None,
        };
        let (outcome, note) = session.decide().await.expect("the dialog never fails");
        Ended {
            outcome,
            note,
            script,
        }
    }

    async fn log_in(w: &World, user: &str, script: Script) -> Ended {
        attempt(w, sshd(user), true, script).await
    }

    /// A login the user walks away from: the dialog ends without an outcome.
    async fn hang_up(w: &World, user: &str, mut script: Script) -> Script {
        let result = resolve_and_run(&mut script, &root(), &w.state, sshd(user)).await;
        assert!(matches!(result, Err(FrameError::Closed)), "{result:?}");
        assert_eq!(script.outcome(), None);
        script
    }

    fn plain() -> World {
        world(|_| {})
    }

    /// The code the user finds in this outbox when the prompt comes.
    fn from(outbox: &Outbox) -> impl FnOnce(&str) -> String + Send + 'static {
        let outbox = outbox.clone();
        move |_| outbox.last_code()
    }

    fn masked_email() -> String {
        mask(Via::Email, EMAIL)
    }

    // The authenticator app.

    #[tokio::test]
    async fn the_app_code_lets_the_user_in() {
        let w = plain();
        let (key, _) = w.with_app("alice").await;
        let ended = log_in(&w, "alice", Script::new().answer(PROMPT, app_code(&key, 0))).await;
        assert_eq!(ended.outcome, Outcome::Allow);
        assert_eq!(ended.note, "allowed (totp)");
        assert_eq!(
            ended.script.said[0],
            Said::Prompt {
                text: PROMPT.into(),
                echo: false
            },
            "one code prompt, not echoed, no menu"
        );
        assert!(ended.script.errors().is_empty());
    }

    #[tokio::test]
    async fn a_wrong_app_code_is_denied_and_counts_toward_the_lockout() {
        let w = plain();
        w.with_app("alice").await;
        let ended = log_in(&w, "alice", Script::new().answer(PROMPT, "12345x")).await;
        assert_eq!(ended.outcome, deny(DenyReason::WrongCode));
        assert_eq!(ended.note, "denied: wrong code");
        assert_eq!(ended.script.errors(), ["Invalid code."]);
        assert_eq!(w.state.accounts.lockouts.recent_failures("alice"), 1);
    }

    #[tokio::test]
    async fn an_app_code_works_once_and_is_refused_as_used_the_second_time() {
        let w = plain();
        let (key, _) = w.with_app("alice").await;
        let code = app_code(&key, 0);
        let first = log_in(&w, "alice", Script::new().answer(PROMPT, code.clone())).await;
        assert_eq!(first.outcome, Outcome::Allow);
        let again = log_in(&w, "alice", Script::new().answer(PROMPT, code)).await;
        assert_eq!(again.outcome, deny(DenyReason::Replayed));
        assert_eq!(again.note, "denied: code already used");
        assert_eq!(
            again.script.errors(),
            ["That code was already used; wait for the next one."]
        );
    }

    #[tokio::test]
    async fn a_locked_out_user_is_refused_even_with_the_right_code() {
        let w = plain();
        let (key, _) = w.with_app("alice").await;
        w.lock_out("alice").await;
        let ended = log_in(&w, "alice", Script::new().answer(PROMPT, app_code(&key, 0))).await;
        assert_eq!(ended.outcome, deny(DenyReason::Locked));
        assert_eq!(ended.note, "denied: locked out");
        assert_eq!(
            ended.script.errors(),
            ["Too many failed attempts; try again in 15 minutes."]
        );
    }

    #[tokio::test]
    async fn an_empty_app_code_cancels_the_login_without_counting() {
        let w = plain();
        w.with_app("alice").await;
        let ended = log_in(&w, "alice", Script::new().answer(PROMPT, "")).await;
        assert_eq!(ended.outcome, deny(DenyReason::Cancelled));
        assert_eq!(ended.note, "denied: empty answer");
        assert!(ended.script.errors().is_empty());
        assert_eq!(w.state.accounts.lockouts.recent_failures("alice"), 0);
    }

    // The menu.

    #[tokio::test]
    async fn with_several_methods_the_user_picks_one_from_the_menu() {
        let w = plain();
        w.with_app("alice").await;
        w.with_sent("alice", Via::Email).await;
        let script = Script::new()
            .answer(MENU, "2")
            .answer_later(EMAIL_PROMPT, from(&w.email));
        let ended = log_in(&w, "alice", script).await;
        let menu = format!(
            "1) authenticator app  2) email {}\nChoose a second factor [1]: ",
            masked_email()
        );
        assert_eq!(ended.script.prompts()[0], menu);
        assert!(matches!(
            ended.script.said[0],
            Said::Prompt { echo: true, .. }
        ));
        assert_eq!(ended.outcome, Outcome::Allow);
        assert!(ended.note.starts_with("allowed (email, challenge "));
        assert_eq!(w.email.delivered().len(), 1);
        assert_eq!(w.email.delivered()[0].to, EMAIL);
    }

    #[tokio::test]
    async fn an_empty_pick_takes_the_first_method() {
        let w = plain();
        let (key, _) = w.with_app("alice").await;
        w.with_sent("alice", Via::Email).await;
        let script = Script::new()
            .answer(MENU, "")
            .answer(PROMPT, app_code(&key, 0));
        assert_eq!(log_in(&w, "alice", script).await.outcome, Outcome::Allow);
        assert!(w.email.delivered().is_empty());
    }

    #[tokio::test]
    async fn a_bad_pick_is_asked_again_and_three_bad_picks_cancel() {
        let w = plain();
        let (key, _) = w.with_app("alice").await;
        w.with_sent("alice", Via::Email).await;
        let script = Script::new()
            .answer(MENU, "3")
            .answer(MENU, "1")
            .answer(PROMPT, app_code(&key, 0));
        assert_eq!(log_in(&w, "alice", script).await.outcome, Outcome::Allow);

        let script = Script::new()
            .answer(MENU, "0")
            .answer(MENU, "email")
            .answer(MENU, "-1");
        let ended = log_in(&w, "alice", script).await;
        assert_eq!(ended.outcome, deny(DenyReason::Cancelled));
        assert_eq!(ended.note, "denied: no method chosen");
        assert!(ended.script.finished());
        assert_eq!(ended.script.prompts().len(), 3);
    }

    #[tokio::test]
    async fn the_users_default_method_comes_without_a_menu_and_beats_the_configured_one() {
        let w = world(|c| {
            c.policy.default_method = Some(MethodKind::Sms);
            c.code.resend_after = Duration::ZERO;
        });
        w.with_app("alice").await;
        w.with_sent("alice", Via::Email).await;
        w.with_sent("alice", Via::Sms).await;
        let script = Script::new().answer_later("SMS code: ", from(&w.sms));
        let ended = log_in(&w, "alice", script).await;
        assert_eq!(ended.outcome, Outcome::Allow, "the configured default");
        assert_eq!(w.sms.delivered()[0].to, PHONE);

        let accounts = &w.state.accounts;
        accounts
            .registry
            .set_default("alice", Some(MethodKind::Email))
            .await
            .unwrap();
        let script = Script::new().answer_later(EMAIL_PROMPT, from(&w.email));
        let ended = log_in(&w, "alice", script).await;
        assert_eq!(ended.outcome, Outcome::Allow, "the user's own default");
        assert!(!ended.script.prompts().iter().any(|p| p.contains(MENU)));
        assert_eq!(w.email.delivered().len(), 1);
    }

    // Sent codes.

    #[tokio::test]
    async fn an_emailed_code_lets_the_user_in() {
        let w = plain();
        w.with_sent("alice", Via::Email).await;
        let script = Script::new().answer_later(EMAIL_PROMPT, from(&w.email));
        let ended = log_in(&w, "alice", script).await;
        let masked = masked_email();
        assert_eq!(
            ended.script.infos(),
            [format!("Sending a code to {masked}...")]
        );
        let prompt = ended.script.prompts()[0];
        assert!(
            prompt.starts_with(&format!(
                "A code was sent to {masked} (valid 5 minutes, request "
            )),
            "{prompt}"
        );
        assert!(prompt.ends_with(").\nEmpty line for a new code. Email code: "));
        assert_eq!(ended.outcome, Outcome::Allow);
        assert!(ended.note.starts_with("allowed (email, challenge "));
    }

    #[tokio::test]
    async fn an_sms_code_lets_the_user_in() {
        let w = plain();
        w.with_sent("alice", Via::Sms).await;
        let script = Script::new().answer_later("SMS code: ", from(&w.sms));
        let ended = log_in(&w, "alice", script).await;
        assert_eq!(ended.outcome, Outcome::Allow);
        assert!(ended.note.starts_with("allowed (SMS, challenge "));
        assert!(ended.script.prompts()[0].contains(&mask(Via::Sms, PHONE)));
    }

    #[tokio::test]
    async fn an_empty_line_during_the_cooldown_says_when_and_the_first_code_still_works() {
        let w = plain();
        w.with_sent("alice", Via::Email).await;
        let script = Script::new()
            .answer(EMAIL_PROMPT, "")
            .answer_later(EMAIL_PROMPT, from(&w.email));
        let ended = log_in(&w, "alice", script).await;
        let second = ended.script.prompts()[1];
        assert!(second.starts_with("A new code can be sent in "), "{second}");
        assert!(second.contains(" s.\nEmpty line for a new code. "));
        assert_eq!(w.email.delivered().len(), 1, "nothing sent in the cooldown");
        assert_eq!(ended.outcome, Outcome::Allow);
    }

    #[tokio::test]
    async fn an_empty_line_after_the_cooldown_sends_a_new_code_and_voids_the_old_one() {
        let w = world(|c| c.code.resend_after = Duration::ZERO);
        w.with_sent("alice", Via::Email).await;
        let outbox = w.email.clone();
        let script = Script::new()
            .answer(EMAIL_PROMPT, "")
            .answer_later(EMAIL_PROMPT, move |_| outbox.delivered()[0].code.clone())
            .answer_later(EMAIL_PROMPT, from(&w.email));
        let ended = log_in(&w, "alice", script).await;
        let prompts = ended.script.prompts();
        let new = format!("A new code was sent to {} (request ", masked_email());
        assert!(prompts[1].starts_with(&new), "{}", prompts[1]);
        assert!(
            prompts[2].starts_with("Wrong code; try again.\n"),
            "the old code is void"
        );
        assert_eq!(w.email.delivered().len(), 2);
        assert_eq!(ended.outcome, Outcome::Allow);
    }

    #[tokio::test]
    async fn a_wrong_sent_code_may_be_retried_and_then_the_right_one_lets_in() {
        let w = plain();
        w.with_sent("alice", Via::Email).await;
        let script = Script::new()
            .answer(EMAIL_PROMPT, "wrong")
            .answer_later(EMAIL_PROMPT, from(&w.email));
        let ended = log_in(&w, "alice", script).await;
        assert!(ended.script.prompts()[1].starts_with("Wrong code; try again.\n"));
        assert_eq!(ended.outcome, Outcome::Allow);
    }

    #[tokio::test]
    async fn an_expired_sent_code_is_refused() {
        let w = world(|c| c.code.ttl = Duration::ZERO);
        w.with_sent("alice", Via::Email).await;
        let script = Script::new().answer_later(EMAIL_PROMPT, from(&w.email));
        let ended = log_in(&w, "alice", script).await;
        assert_eq!(ended.outcome, deny(DenyReason::Expired));
        assert_eq!(ended.note, "denied: code expired");
        assert_eq!(ended.script.errors(), ["That code has expired."]);
    }

    #[tokio::test]
    async fn three_wrong_sent_codes_use_up_the_challenge() {
        let w = plain();
        w.with_sent("alice", Via::Email).await;
        let script = Script::new()
            .answer(EMAIL_PROMPT, "wrong1")
            .answer(EMAIL_PROMPT, "wrong2")
            .answer(EMAIL_PROMPT, "wrong3");
        let ended = log_in(&w, "alice", script).await;
        assert_eq!(ended.outcome, deny(DenyReason::TooManyAttempts));
        assert_eq!(ended.note, "denied: too many wrong codes");
        assert_eq!(ended.script.errors(), ["Too many wrong codes."]);
        assert!(ended.script.finished());
    }

    #[tokio::test]
    async fn wrong_sent_codes_that_reach_the_lockout_say_locked() {
        let w = world(|c| c.lockout.max_failures = 2);
        w.with_sent("alice", Via::Email).await;
        let script = Script::new()
            .answer(EMAIL_PROMPT, "wrong1")
            .answer(EMAIL_PROMPT, "wrong2");
        let ended = log_in(&w, "alice", script).await;
        assert_eq!(ended.outcome, deny(DenyReason::Locked));
        assert_eq!(ended.note, "denied: locked out");
        // Locked before the code is sent: nothing goes out.
        let again = log_in(&w, "alice", Script::new()).await;
        assert_eq!(again.outcome, deny(DenyReason::Locked));
        assert_eq!(w.email.delivered().len(), 1);
    }

    #[tokio::test]
    async fn a_second_login_uses_the_code_already_waiting() {
        let w = plain();
        w.with_sent("alice", Via::Email).await;
        hang_up(&w, "alice", Script::new().hang_up(EMAIL_PROMPT)).await;
        let script = Script::new().answer_later(EMAIL_PROMPT, from(&w.email));
        let ended = log_in(&w, "alice", script).await;
        let waiting = format!("Enter the code already sent to {}.\n", masked_email());
        assert!(ended.script.prompts()[0].starts_with(&waiting));
        assert!(ended.script.infos().is_empty(), "no \"Sending...\"");
        assert_eq!(w.email.delivered().len(), 1);
        assert_eq!(ended.outcome, Outcome::Allow);
    }

    #[tokio::test]
    async fn logging_in_again_within_the_cooldown_says_when_a_code_can_be_sent() {
        let w = plain();
        w.with_sent("alice", Via::Email).await;
        let script = Script::new().answer_later(EMAIL_PROMPT, from(&w.email));
        assert_eq!(log_in(&w, "alice", script).await.outcome, Outcome::Allow);

        let script = Script::new()
            .answer(EMAIL_PROMPT, "123456")
            .hang_up(EMAIL_PROMPT);
        let script = hang_up(&w, "alice", script).await;
        let prompts = script.prompts();
        let wait = format!("A code can be sent to {} in ", masked_email());
        assert!(prompts[0].starts_with(&wait), "{}", prompts[0]);
        assert!(prompts[0].contains(" s; press Enter then.\n"));
        assert!(
            prompts[1].starts_with("No code is waiting; press Enter for a new one.\n"),
            "{}",
            prompts[1]
        );
        assert!(script.infos().is_empty(), "no \"Sending...\"");
        assert_eq!(w.email.delivered().len(), 1);
        assert_eq!(w.state.accounts.lockouts.recent_failures("alice"), 0);
    }

    #[tokio::test]
    async fn ten_prompts_without_a_code_give_up() {
        let w = plain();
        w.with_sent("alice", Via::Email).await;
        let script = (0..MAX_ROUNDS).fold(Script::new(), |s, _| s.answer(EMAIL_PROMPT, ""));
        let ended = log_in(&w, "alice", script).await;
        assert_eq!(ended.outcome, deny(DenyReason::Cancelled));
        assert_eq!(ended.note, "denied: gave up");
        assert_eq!(ended.script.prompts().len(), MAX_ROUNDS);
    }

    #[tokio::test]
    async fn too_many_codes_in_an_hour_end_the_login() {
        let w = world(|c| {
            c.code.resend_after = Duration::ZERO;
            c.code.max_sends_per_hour = 2;
        });
        w.with_sent("alice", Via::Email).await;
        let script = Script::new()
            .answer(EMAIL_PROMPT, "")
            .answer(EMAIL_PROMPT, "");
        let ended = log_in(&w, "alice", script).await;
        assert_eq!(ended.outcome, deny(DenyReason::SendFailed));
        assert_eq!(ended.note, "denied: send failed (Quota)");
        assert_eq!(
            ended.script.errors(),
            ["Too many codes were sent in the last hour; try again later."]
        );
        assert_eq!(w.email.delivered().len(), 2);
    }

    #[tokio::test]
    async fn a_failed_delivery_falls_back_to_the_other_methods() {
        let w = world(|c| c.policy.default_method = Some(MethodKind::Email));
        let (key, _) = w.with_app("alice").await;
        w.with_sent("alice", Via::Email).await;
        w.with_sent("alice", Via::Sms).await;
        w.email.go_down();
        let script = Script::new()
            .answer(MENU, "1")
            .answer(PROMPT, app_code(&key, 0));
        let ended = log_in(&w, "alice", script).await;
        assert_eq!(
            ended.script.errors(),
            ["Could not send the code by email; choose another way."]
        );
        let menu = format!(
            "1) authenticator app  2) SMS {}\n{MENU}",
            mask(Via::Sms, PHONE)
        );
        assert_eq!(ended.script.prompts()[0], menu, "the menu without email");
        assert_eq!(ended.outcome, Outcome::Allow);
        assert_eq!(ended.note, "allowed (totp)");
    }

    #[tokio::test]
    async fn a_failed_delivery_with_one_other_method_goes_straight_to_it() {
        let w = plain();
        let (key, _) = w.with_app("alice").await;
        w.with_sent("alice", Via::Email).await;
        let accounts = &w.state.accounts;
        accounts
            .registry
            .set_default("alice", Some(MethodKind::Email))
            .await
            .unwrap();
        w.email.go_down();
        let ended = log_in(&w, "alice", Script::new().answer(PROMPT, app_code(&key, 0))).await;
        assert_eq!(ended.outcome, Outcome::Allow);
        assert_eq!(ended.script.prompts(), [PROMPT]);
    }

    #[tokio::test]
    async fn a_failed_delivery_with_no_other_method_denies() {
        let w = plain();
        w.with_sent("alice", Via::Email).await;
        w.email.go_down();
        let ended = log_in(&w, "alice", Script::new()).await;
        assert_eq!(ended.outcome, deny(DenyReason::SendFailed));
        assert_eq!(ended.note, "denied: send failed (Failed)");
        assert_eq!(
            ended.script.errors(),
            ["Could not send the code; try again later or ask your administrator."]
        );
        // The failed send is uncounted: a working channel may send at once.
        assert!(w
            .state
            .challenges
            .cooldown_left("alice", Instant::now())
            .is_none());
    }

    // HOTP tokens.

    /// alice with the RFC 4226 test token, confirmed with its counter-0 code.
    async fn with_token(w: &World) -> TotpKey {
        let secret = Secret::new("3132333435363738393031323334353637383930");
        let enrollment = &w.state.accounts.enrollment;
        let (key, _) = enrollment
            .enroll_hotp("alice", Some(&secret), 0, 6)
            .await
            .unwrap();
        let first = Secret::new("755224");
        let proof = w.state.judge("alice", &first, Counts::Verify).await;
        assert_eq!(proof.unwrap(), Proof::Allowed(How::Activated));
        key
    }

    fn hotp_code(key: &TotpKey, counter: u64) -> String {
        crate::policy::totp::code_at(key, counter * key.period).unwrap()
    }

    #[tokio::test]
    async fn a_token_past_the_window_resynchronises_on_the_next_code() {
        let w = plain();
        let key = with_token(&w).await;
        let script = Script::new()
            .answer(PROMPT, hotp_code(&key, 50))
            .answer(NEXT_HOTP_PROMPT, hotp_code(&key, 51));
        let ended = log_in(&w, "alice", script).await;
        assert_eq!(ended.outcome, Outcome::Allow);
        assert_eq!(ended.note, "allowed (hotp, resynchronised)");
        assert_eq!(w.state.accounts.lockouts.recent_failures("alice"), 0);
        // Counter 51 is the last one used now: 52 is within the window again.
        let next = Script::new().answer(PROMPT, hotp_code(&key, 52));
        assert_eq!(log_in(&w, "alice", next).await.outcome, Outcome::Allow);
    }

    #[tokio::test]
    async fn a_resync_counts_both_answers_toward_the_lockout() {
        let w = world(|c| c.lockout.max_failures = 3);
        let key = with_token(&w).await;
        let script = Script::new()
            .answer(PROMPT, hotp_code(&key, 50))
            .answer(NEXT_HOTP_PROMPT, hotp_code(&key, 53));
        let ended = log_in(&w, "alice", script).await;
        assert_eq!(ended.outcome, deny(DenyReason::WrongCode));
        assert_eq!(w.state.accounts.lockouts.recent_failures("alice"), 2);
        // Another far code is the third failure: locked before any next code is asked for.
        let script = Script::new().answer(PROMPT, hotp_code(&key, 60));
        let ended = log_in(&w, "alice", script).await;
        assert_eq!(ended.outcome, deny(DenyReason::Locked), "{:?}", ended.note);
        // Locked: even the right pair is refused unchecked.
        let script = Script::new().answer(PROMPT, hotp_code(&key, 70));
        assert_eq!(
            log_in(&w, "alice", script).await.outcome,
            deny(DenyReason::Locked)
        );
        let stored = w.state.accounts.enrollment.pending_from_login("alice");
        assert!(stored.unwrap().is_none());
    }

    // forward_pass: password and code in one answer.

    fn one_prompt(user: &str, typed: &str) -> Login {
        Login {
            forward_pass: Some(Secret::new(typed)),
            ..sshd(user)
        }
    }

    /// What was handed back for PAM_AUTHTOK, in order.
    fn handed_back(script: &Script) -> Vec<&str> {
        script
            .said
            .iter()
            .filter_map(|s| match s {
                Said::Password(p) => Some(p.as_str()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn forward_pass_judges_the_trailing_code_and_hands_back_the_rest() {
        let w = plain();
        let (key, _) = w.with_app("alice").await;
        let typed = format!("hunter2 €{}", app_code(&key, 0));
        let ended = attempt(&w, one_prompt("alice", &typed), true, Script::new()).await;
        assert_eq!(ended.outcome, Outcome::Allow);
        assert_eq!(ended.note, "allowed (totp, forward_pass)");
        assert_eq!(handed_back(&ended.script), ["hunter2 €"]);
        assert!(ended.script.prompts().is_empty(), "no prompt of its own");
        // The same code again is a replay: nothing handed back.
        let again = attempt(&w, one_prompt("alice", &typed), true, Script::new()).await;
        assert_eq!(again.outcome, deny(DenyReason::Replayed));
        assert!(handed_back(&again.script).is_empty());
    }

    #[tokio::test]
    async fn forward_pass_with_a_wrong_code_or_no_code_hands_back_nothing_and_counts() {
        let w = plain();
        let (key, _) = w.with_app("alice").await;
        let right = app_code(&key, 0);
        let wrong = if right == "000000" {
            "111111"
        } else {
            "000000"
        };
        for typed in [
            format!("hunter2{wrong}"),
            "hunter2".to_owned(),
            "12".to_owned(),
        ] {
            let ended = attempt(&w, one_prompt("alice", &typed), true, Script::new()).await;
            assert_eq!(ended.outcome, deny(DenyReason::WrongCode), "{typed}");
            assert!(handed_back(&ended.script).is_empty(), "{typed}");
        }
        // "hunter2" ends in a 6-character tail that was judged; "12" was too short to judge.
        assert_eq!(w.state.accounts.lockouts.recent_failures("alice"), 2);
    }

    #[tokio::test]
    async fn forward_pass_takes_a_recovery_code_with_its_dash() {
        let w = plain();
        let (_, codes) = w.with_app("alice").await;
        let typed = format!("hunter2{}", codes[0].expose().to_lowercase());
        let ended = attempt(&w, one_prompt("alice", &typed), true, Script::new()).await;
        assert_eq!(ended.outcome, Outcome::Allow);
        assert_eq!(handed_back(&ended.script), ["hunter2"]);
        assert_eq!(ended.script.infos(), ["Recovery code accepted; 7 left."]);
    }

    #[tokio::test]
    async fn forward_pass_with_a_sent_code_sends_one_first_then_takes_it() {
        let w = plain();
        w.with_sent("alice", Via::Email).await;
        let first = attempt(&w, one_prompt("alice", "hunter2"), true, Script::new()).await;
        assert_eq!(first.outcome, deny(DenyReason::WrongCode));
        assert!(first.script.errors()[0]
            .contains("Log in again with your password followed by the code"));
        let typed = format!("hunter2{}", w.email.last_code());
        let ended = attempt(&w, one_prompt("alice", &typed), true, Script::new()).await;
        assert_eq!(ended.outcome, Outcome::Allow, "{}", ended.note);
        assert_eq!(handed_back(&ended.script), ["hunter2"]);
        assert_eq!(w.email.delivered().len(), 1);
    }

    #[tokio::test]
    async fn forward_pass_for_an_unenrolled_user_hands_back_everything_or_enrolls_nobody() {
        let w = plain();
        let login = Login {
            nullok: true,
            ..one_prompt("root", "hunter2")
        };
        let mut script = Script::new();
        resolve_and_run(&mut script, &root(), &w.state, login)
            .await
            .unwrap();
        assert_eq!(script.outcome(), Some(Outcome::Ignore));
        assert_eq!(handed_back(&script), ["hunter2"]);
        // First-login enrollment would show the key before the password is checked.
        let w = enrolling();
        let ended = attempt(&w, one_prompt("carol", "hunter2"), true, Script::new()).await;
        assert_eq!(ended.outcome, deny(DenyReason::NotEnrolled));
        assert!(ended.script.infos().is_empty() && ended.script.prompts().is_empty());
        let pending = w.state.accounts.enrollment.pending_from_login("carol");
        assert!(pending.unwrap().is_none());
    }

    #[tokio::test]
    async fn forward_pass_never_resynchronises_a_token() {
        let w = plain();
        let key = with_token(&w).await;
        let typed = format!("pw{}", hotp_code(&key, 50));
        let ended = attempt(&w, one_prompt("alice", &typed), true, Script::new()).await;
        assert_eq!(ended.outcome, deny(DenyReason::WrongCode));
        assert!(ended.script.prompts().is_empty());
        let typed = format!("pw{}", hotp_code(&key, 1));
        let ended = attempt(&w, one_prompt("alice", &typed), true, Script::new()).await;
        assert_eq!(ended.outcome, Outcome::Allow, "the counter did not move");
    }

    // Recovery codes.

    #[tokio::test]
    async fn a_recovery_code_works_at_the_app_prompt() {
        let w = plain();
        let (_, codes) = w.with_app("alice").await;
        let code = codes[0].expose().to_owned();
        let ended = log_in(&w, "alice", Script::new().answer(PROMPT, code.clone())).await;
        assert_eq!(ended.outcome, Outcome::Allow);
        assert_eq!(ended.note, "allowed (recovery code)");
        assert_eq!(ended.script.infos(), ["Recovery code accepted; 7 left."]);
        let again = log_in(&w, "alice", Script::new().answer(PROMPT, code)).await;
        assert_eq!(again.outcome, deny(DenyReason::WrongCode), "spent");
    }

    #[tokio::test]
    async fn a_recovery_code_works_at_the_sent_code_prompt() {
        let w = plain();
        let (_, codes) = w.with_app("alice").await;
        w.with_sent("alice", Via::Email).await;
        let script = Script::new()
            .answer(MENU, "2")
            .answer(EMAIL_PROMPT, codes[3].expose());
        let ended = log_in(&w, "alice", script).await;
        assert_eq!(ended.outcome, Outcome::Allow);
        assert_eq!(ended.note, "allowed (recovery code)");
        assert_eq!(
            ended.script.infos().last(),
            Some(&"Recovery code accepted; 7 left.")
        );
    }

    // Nothing enrolled.

    fn enrolling() -> World {
        world(|c| c.policy.unenrolled = Unenrolled::Enroll)
    }

    /// The code of the key on screen, as the user's app shows it.
    fn app_on_screen(prompt: &str) -> String {
        app_code(&key_on_screen(prompt), 0)
    }

    const ENROLL_PROMPT: &str = "Enter the code your app shows: ";

    #[tokio::test]
    async fn first_login_enrollment_shows_the_key_and_a_right_code_enrolls() {
        let w = enrolling();
        let script = Script::new().answer_later(ENROLL_PROMPT, app_on_screen);
        let ended = log_in(&w, "carol", script).await;
        assert_eq!(ended.outcome, Outcome::Allow);
        assert_eq!(ended.note, "allowed (enrolled at first login)");
        let infos = ended.script.infos();
        assert!(infos[0].starts_with("Set up your second factor: scan this QR code"));
        assert!(infos[1].starts_with("Enrolled. Your recovery codes"));
        let enrolled = w.state.accounts.registry.enrolled("carol").unwrap();
        assert_eq!(enrolled.recovery_codes_left, 8);
        assert!(w.state.accounts.registry.factors("carol").unwrap().totp);
    }

    #[tokio::test]
    async fn a_wrong_code_at_first_login_is_asked_again() {
        let w = enrolling();
        let script = Script::new()
            .answer(ENROLL_PROMPT, "000000x")
            .answer_later(ENROLL_PROMPT, app_on_screen);
        let ended = log_in(&w, "carol", script).await;
        assert_eq!(
            ended.script.errors(),
            ["That code did not match; try the next one."]
        );
        assert_eq!(ended.outcome, Outcome::Allow);
    }

    #[tokio::test]
    async fn three_wrong_codes_at_first_login_leave_the_user_unenrolled() {
        let w = enrolling();
        let script = (0..3).fold(Script::new(), |s, _| s.answer(ENROLL_PROMPT, "1"));
        let ended = log_in(&w, "carol", script).await;
        assert_eq!(ended.outcome, deny(DenyReason::NotEnrolled));
        assert_eq!(ended.note, "denied: first-login enrollment not confirmed");
        assert_eq!(ended.script.errors().len(), 4, "three misses, then why");
    }

    #[tokio::test]
    async fn an_empty_code_at_first_login_shows_the_same_key_next_time() {
        let w = enrolling();
        let ended = log_in(&w, "carol", Script::new().answer(ENROLL_PROMPT, "")).await;
        assert_eq!(ended.outcome, deny(DenyReason::NotEnrolled));
        assert_eq!(
            ended.script.errors(),
            ["Not enrolled; the same key is shown at your next login."]
        );
        let first = ended.script.prompts()[0].to_owned();
        let again = log_in(&w, "carol", Script::new().answer(ENROLL_PROMPT, "")).await;
        assert_eq!(again.script.prompts()[0], first);
    }

    #[tokio::test]
    async fn nothing_enrolled_is_let_in_only_where_nullok_or_the_policy_says() {
        let w = plain();
        let ended = log_in(&w, "dave", Script::new()).await;
        assert_eq!(ended.outcome, deny(DenyReason::NotEnrolled));
        assert_eq!(ended.note, "denied: not enrolled");
        assert_eq!(ended.script.errors(), [NOT_SET_UP]);

        let nullok = Login {
            nullok: true,
            ..sshd("dave")
        };
        let ended = attempt(&w, nullok, true, Script::new()).await;
        assert_eq!(ended.outcome, Outcome::Ignore);
        assert_eq!(ended.note, "ignored: not enrolled (nullok)");

        let w = world(|c| c.policy.unenrolled = Unenrolled::Allow);
        let ended = log_in(&w, "dave", Script::new()).await;
        assert_eq!(ended.outcome, Outcome::Ignore);
        assert_eq!(
            ended.note,
            "ignored: not enrolled (policy unenrolled = allow)"
        );
        assert!(ended.script.said.is_empty());
    }

    /// A nullok login of `user`, who has no passwd entry: denied as not set up.
    async fn stranger_with_nullok(w: &World, user: &str) -> Script {
        let login = Login {
            nullok: true,
            ..sshd(user)
        };
        let mut script = Script::new();
        resolve_and_run(&mut script, &root(), &w.state, login)
            .await
            .unwrap();
        assert_eq!(script.outcome(), Some(deny(DenyReason::NotEnrolled)));
        assert_eq!(script.errors(), [NOT_SET_UP]);
        script
    }

    #[tokio::test]
    async fn a_name_without_a_passwd_entry_is_denied_even_with_nullok() {
        let w = enrolling();
        let script = stranger_with_nullok(&w, "no-such-user-17").await;
        assert!(script.prompts().is_empty(), "no enrollment for a stranger");
        assert!(w
            .state
            .accounts
            .enrollment
            .pending_from_login("no-such-user-17")
            .unwrap()
            .is_none());
    }

    /// A record stored under a name NSS does not know (a pending key: nothing usable) must
    /// not make the name "known" by being looked up without NSS: still denied under nullok.
    #[tokio::test]
    async fn a_record_does_not_make_a_name_without_a_passwd_entry_known() {
        let w = enrolling();
        let ghost = "no-such-user-18";
        w.state
            .accounts
            .enrollment
            .enroll_totp(ghost, false)
            .await
            .unwrap();
        assert!(w.state.accounts.has_record(ghost));
        stranger_with_nullok(&w, ghost).await;
    }

    // Who asks, and hanging up.

    #[tokio::test]
    async fn a_user_may_not_run_a_login_for_someone_else() {
        let w = plain();
        w.with_app("alice").await;
        let mallory = Caller {
            uid: 1000,
            name: Some("mallory".into()),
            admin: false,
        };
        let mut script = Script::new();
        resolve_and_run(&mut script, &mallory, &w.state, sshd("alice"))
            .await
            .unwrap();
        assert_eq!(script.outcome(), Some(deny(DenyReason::Forbidden)));
        assert_eq!(script.errors(), ["Permission denied."]);
        assert!(script.prompts().is_empty());
    }

    #[tokio::test]
    async fn hanging_up_at_the_prompt_aborts_without_an_outcome_or_a_failure() {
        let w = plain();
        w.with_app("alice").await;
        hang_up(&w, "alice", Script::new().hang_up(PROMPT)).await;
        assert_eq!(w.state.accounts.lockouts.recent_failures("alice"), 0);
    }
}
