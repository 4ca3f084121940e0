//! The one place a typed answer is judged: a login's code, `otpctl verify`, the proof asked
//! before a factor changes, a disable token. Every caller goes through `judge`, which
//!
//! 1. takes a lockout reservation first, so an answer of a locked user is refused unchecked,
//!    and however many answers arrive at once at most `max_failures` are ever checked;
//! 2. checks the answer against what counts for its purpose (`Counts`): the authenticator-app
//!    key with replay protection, open sent codes, recovery codes (on the bounded argon2 pool);
//! 3. spends what it matched, and settles the reservation: a failure is stored before the
//!    verdict is returned (so before the "wrong code" reply leaves otpd); a success clears;
//! 4. writes one audit line (`answer (PURPOSE): ...`); a login's successful answer at debug,
//!    since the login's own audit line records it.
//!
//! Sessions only put the verdict into words. OpenSSH's monitor and pam_faillock are the models;
//! docs/design.md ("Judging an answer") has the reasoning.

use super::accounts::Accounts;
use super::challenge::{ChallengeCheck, Challenges, Purpose};
use super::keys::{KeyCheck, Target};
use super::lockout::Settle;
use super::recovery::RecoveryCheck;
use crate::store::StoreError;
use otp_proto::{MethodKind, Secret};
use std::time::{Duration, Instant};

/// What may match an answer, by what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counts {
    /// A login with the authenticator app: the active key, then a recovery code.
    AppLogin,
    /// A login with a sent code: the open login codes, then a recovery code.
    SentLogin,
    /// First-login enrollment: the pending key only.
    FirstLogin,
    /// `otpctl verify`: a pending key, the active key, or an open code other than a disable
    /// token.
    Verify,
    /// Proof of a working factor before one changes: the active key, an open login code, or a
    /// recovery code.
    Change,
    /// The token mailed for `otpctl disable` of this method (`None`: all).
    DisableToken(Option<MethodKind>),
    /// A login's second code of an HOTP resync: only the code of the counter right after
    /// `after`, the one the first code matched (policy::hotp).
    HotpResync { after: u64 },
    /// A login's Duo passcode: only Duo can check it (`judge_upstream`); `judge` finds nothing
    /// to check it against.
    DuoLogin,
}

/// The verdict on one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// Right; what it matched is spent.
    Allowed(How),
    /// Checked and wrong. `alive`: a sent code can still be answered.
    Wrong { alive: bool },
    /// The code of a step at or before one already used.
    Replayed,
    /// The code of a sent challenge that has expired (not counted: it was the right code).
    Expired,
    /// Refused without being checked; the lock lasts this long.
    Locked(Duration),
    /// A right code refused only because otpd restarted after a crash and cannot know whether
    /// it was used (policy::replay). Not counted. Codes work again from this Unix time.
    RestartGuard { until: u64 },
    /// Nothing could have matched: no key, no code waiting, no recovery code. Not counted.
    NothingToCheck,
    /// An HOTP code past the window, matching `counter`: not a login. Counted as a failure
    /// until the next code (`Counts::HotpResync`) clears it (policy::hotp).
    ResyncNeeded { counter: u64 },
}

/// What a right answer was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// The authenticator app's code (TOTP or HOTP).
    App,
    /// The first code of a pending key, which is now the active one.
    Activated,
    /// A sent code (or token), with the challenge's id and what it was sent for.
    Sent { id: String, purpose: Purpose },
    /// A recovery code, now spent; `left` remain.
    Recovery { left: u32 },
    /// An upstream provider (Duo) accepted it.
    Upstream,
    /// The app's TOTP code, decided from this host's copy while the fleet's database is
    /// unreachable (`[store] offline = "cached"`).
    OfflineCached,
}

/// Judge `answer` for `user` (see the module comment). A store failure is an error (the caller
/// denies); the reservation is then not counted.
pub async fn judge(
    accounts: &Accounts,
    challenges: &Challenges,
    user: &str,
    answer: &Secret,
    counts: Counts,
) -> Result<Proof, StoreError> {
    if let Err(left) = accounts.lockouts.reserve(user) {
        audit(log::Level::Info, user, counts, "locked (not checked)");
        return Ok(Proof::Locked(left));
    }
    let mut reservation = Reservation {
        accounts,
        user,
        settled: false,
    };
    let checked = check(accounts, challenges, user, answer, counts).await;
    let proof = match super::fleet::decide(accounts, user, checked) {
        Ok(proof) => proof,
        Err(e) => {
            reservation.settle(Settle::Uncounted).await?;
            return Err(e);
        }
    };
    let how = match &proof {
        Proof::Allowed(_) => Settle::Success,
        Proof::Wrong { .. } | Proof::Replayed | Proof::ResyncNeeded { .. } => Settle::Failure,
        _ => Settle::Uncounted,
    };
    reservation.settle(how).await?;
    // A login that succeeds already ends in the session's audit line ("allowed (totp)"): its
    // answer's line would only repeat it on the hot path, so it goes to debug.
    let repeated = matches!(proof, Proof::Allowed(_))
        && matches!(
            counts,
            Counts::AppLogin | Counts::SentLogin | Counts::FirstLogin | Counts::HotpResync { .. }
        );
    let level = if repeated {
        log::Level::Debug
    } else {
        log::Level::Info
    };
    audit(level, user, counts, &describe(&proof));
    Ok(proof)
}

/// Judge an answer only an upstream provider can check (a Duo passcode): the same
/// reservation, settling and audit line as `judge`, with the provider's word (`verdict`:
/// `Ok(true)` right, `Ok(false)` wrong) in place of the local check. So a locked user's passcode
/// never reaches the provider, a refused one is a failure written before the verdict returns,
/// and hanging up mid-check counts as one. The provider failing to answer (`Err`) is not
/// counted: nothing was judged.
pub async fn judge_upstream<E>(
    accounts: &Accounts,
    user: &str,
    counts: Counts,
    verdict: impl std::future::Future<Output = Result<bool, E>>,
) -> Result<Result<Proof, E>, StoreError> {
    if let Err(left) = accounts.lockouts.reserve(user) {
        audit(log::Level::Info, user, counts, "locked (not checked)");
        return Ok(Ok(Proof::Locked(left)));
    }
    let mut reservation = Reservation {
        accounts,
        user,
        settled: false,
    };
    let (proof, how, level) = match verdict.await {
        Ok(true) => (
            Proof::Allowed(How::Upstream),
            Settle::Success,
            log::Level::Debug,
        ),
        Ok(false) => (
            Proof::Wrong { alive: false },
            Settle::Failure,
            log::Level::Info,
        ),
        Err(e) => {
            reservation.settle(Settle::Uncounted).await?;
            audit(
                log::Level::Info,
                user,
                counts,
                "provider did not answer (not counted)",
            );
            return Ok(Err(e));
        }
    };
    // A fleet counts Duo's verdicts too, so its lock holds for passcodes as for codes.
    let (proof, how) = match super::fleet::decide(accounts, user, Ok(proof)) {
        Ok(Proof::Locked(left)) => (Proof::Locked(left), Settle::Uncounted),
        Ok(proof) => (proof, how),
        Err(e) => {
            reservation.settle(Settle::Uncounted).await?;
            return Err(e);
        }
    };
    reservation.settle(how).await?;
    audit(level, user, counts, &describe(&proof));
    Ok(Ok(proof))
}

/// A reservation not settled by the end of `judge` (its future was dropped: the connection went
/// away mid-check) counts as a failure, so hanging up cannot buy free guesses.
struct Reservation<'a> {
    accounts: &'a Accounts,
    user: &'a str,
    settled: bool,
}

impl Reservation<'_> {
    async fn settle(&mut self, how: Settle) -> Result<(), StoreError> {
        self.settled = true;
        if how == Settle::Failure {
            self.accounts.grace.forget(self.user); // policy::grace: any failed code ends it
        }
        self.accounts.lockouts.settle(self.user, how).await
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.accounts.grace.forget(self.user);
            self.accounts
                .lockouts
                .settle_later(self.user, Settle::Failure);
        }
    }
}

async fn check(
    accounts: &Accounts,
    challenges: &Challenges,
    user: &str,
    answer: &Secret,
    counts: Counts,
) -> Result<Proof, StoreError> {
    let sent = |accept: &dyn Fn(&Purpose) -> bool| {
        challenges.answer(user, answer.expose(), accept, Instant::now())
    };
    match counts {
        Counts::AppLogin => {
            let app = accounts.keys.check(user, answer, Target::Active).await?;
            match app {
                KeyCheck::Accepted | KeyCheck::Activated => Ok(Proof::Allowed(How::App)),
                KeyCheck::RestartGuard { until } => Ok(Proof::RestartGuard { until }),
                KeyCheck::Resync { counter } => Ok(Proof::ResyncNeeded { counter }),
                _ => or_recovery(accounts, user, answer, from_app(app)).await,
            }
        }
        Counts::HotpResync { after } => {
            Ok(from_app(accounts.keys.resync(user, answer, after).await?))
        }
        Counts::SentLogin => match sent(&|p| *p == Purpose::Login) {
            ChallengeCheck::Accepted { id, purpose } => {
                Ok(Proof::Allowed(How::Sent { id, purpose }))
            }
            ChallengeCheck::Expired => Ok(Proof::Expired),
            ChallengeCheck::Wrong { alive } => {
                or_recovery(accounts, user, answer, Proof::Wrong { alive }).await
            }
            ChallengeCheck::NoChallenge => {
                or_recovery(accounts, user, answer, Proof::NothingToCheck).await
            }
        },
        Counts::FirstLogin => {
            let pending = accounts
                .keys
                .check(user, answer, Target::PendingOrActive)
                .await?;
            Ok(match pending {
                KeyCheck::Activated => Proof::Allowed(How::Activated),
                KeyCheck::NotEnrolled => Proof::NothingToCheck,
                _ => Proof::Wrong { alive: false },
            })
        }
        Counts::Verify => {
            let app = accounts
                .keys
                .check(user, answer, Target::PendingOrActive)
                .await?;
            match app {
                KeyCheck::Activated => return Ok(Proof::Allowed(How::Activated)),
                KeyCheck::Accepted => return Ok(Proof::Allowed(How::App)),
                KeyCheck::RestartGuard { until } => return Ok(Proof::RestartGuard { until }),
                _ => {}
            }
            Ok(match sent(&|p| !matches!(p, Purpose::Disable(_))) {
                ChallengeCheck::Accepted { id, purpose } => {
                    Proof::Allowed(How::Sent { id, purpose })
                }
                ChallengeCheck::Expired => Proof::Expired,
                ChallengeCheck::Wrong { alive } => Proof::Wrong { alive },
                ChallengeCheck::NoChallenge => from_app(app),
            })
        }
        Counts::Change => {
            let app = accounts.keys.check(user, answer, Target::Active).await?;
            match app {
                KeyCheck::Accepted => return Ok(Proof::Allowed(How::App)),
                KeyCheck::RestartGuard { until } => return Ok(Proof::RestartGuard { until }),
                _ => {}
            }
            let otherwise = match sent(&|p| *p == Purpose::Login) {
                ChallengeCheck::Accepted { id, purpose } => {
                    return Ok(Proof::Allowed(How::Sent { id, purpose }))
                }
                ChallengeCheck::Wrong { .. } => Proof::Wrong { alive: false },
                ChallengeCheck::Expired | ChallengeCheck::NoChallenge => from_app(app),
            };
            or_recovery(accounts, user, answer, otherwise).await
        }
        Counts::DuoLogin => Ok(Proof::NothingToCheck),
        Counts::DisableToken(method) => Ok(match sent(&|p| *p == Purpose::Disable(method)) {
            ChallengeCheck::Accepted { id, purpose } => Proof::Allowed(How::Sent { id, purpose }),
            ChallengeCheck::Expired => Proof::Expired,
            ChallengeCheck::Wrong { .. } => Proof::Wrong { alive: false },
            ChallengeCheck::NoChallenge => Proof::NothingToCheck,
        }),
    }
}

/// What the app key's verdict means when nothing else matches.
fn from_app(app: KeyCheck) -> Proof {
    match app {
        KeyCheck::Accepted | KeyCheck::Activated => Proof::Allowed(How::App),
        KeyCheck::Replayed => Proof::Replayed,
        KeyCheck::RestartGuard { until } => Proof::RestartGuard { until },
        KeyCheck::Wrong | KeyCheck::Resync { .. } => Proof::Wrong { alive: false },
        KeyCheck::NotEnrolled => Proof::NothingToCheck,
    }
}

/// A recovery code is good at any code prompt; checked only once the answer failed otherwise.
/// When the user has codes, a miss is a wrong answer even if nothing else was open.
async fn or_recovery(
    accounts: &Accounts,
    user: &str,
    answer: &Secret,
    otherwise: Proof,
) -> Result<Proof, StoreError> {
    Ok(match accounts.recovery.spend(user, answer).await? {
        RecoveryCheck::Used { left } => Proof::Allowed(How::Recovery { left }),
        RecoveryCheck::Wrong if otherwise == Proof::NothingToCheck => Proof::Wrong { alive: false },
        RecoveryCheck::Wrong | RecoveryCheck::NoCodes => otherwise,
    })
}

fn describe(proof: &Proof) -> String {
    match proof {
        Proof::Allowed(How::App) => "accepted (authenticator app)".into(),
        Proof::Allowed(How::Activated) => "accepted (confirms the pending key)".into(),
        Proof::Allowed(How::Sent { id, .. }) => format!("accepted (sent code, challenge {id})"),
        Proof::Allowed(How::Recovery { left }) => {
            format!("accepted (recovery code, {left} left)")
        }
        Proof::Allowed(How::Upstream) => "accepted (by Duo)".into(),
        Proof::Allowed(How::OfflineCached) => {
            "accepted (authenticator app, offline cached: database unreachable)".into()
        }
        Proof::Wrong { .. } => "wrong code".into(),
        Proof::Replayed => "code already used".into(),
        Proof::Expired => "code expired (not counted)".into(),
        Proof::Locked(_) => "locked (not checked)".into(),
        Proof::RestartGuard { .. } => "code from before an unclean restart (not counted)".into(),
        Proof::NothingToCheck => "nothing to check it against (not counted)".into(),
        Proof::ResyncNeeded { counter } => {
            format!("HOTP code past the window (counter {counter}); the next one is asked for")
        }
    }
}

fn audit(level: log::Level, user: &str, counts: Counts, result: &str) {
    let user = crate::logging::field(user);
    log::log!(
        level,
        "user={user}: answer ({}): {result}",
        purpose_name(counts)
    );
}

fn purpose_name(counts: Counts) -> &'static str {
    match counts {
        Counts::AppLogin => "login, app",
        Counts::SentLogin => "login, sent code",
        Counts::FirstLogin => "first-login enrollment",
        Counts::Verify => "otpctl verify",
        Counts::Change => "proof for a change",
        Counts::DisableToken(_) => "disable token",
        Counts::HotpResync { .. } => "login, next HOTP code",
        Counts::DuoLogin => "login, Duo passcode",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::policy::totp;
    use crate::store::{FileStore, TotpKey};
    use std::sync::Arc;

    struct World {
        accounts: Arc<Accounts>,
        challenges: Arc<Challenges>,
        _dir: tempfile::TempDir,
    }

    fn world() -> World {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::default();
        let store = Arc::new(FileStore::open(dir.path()).unwrap());
        World {
            challenges: Arc::new(Challenges::new(
                cfg.code.clone(),
                cfg.policy.disable_token_ttl,
            )),
            accounts: Arc::new(Accounts::new(store, cfg).unwrap()),
            _dir: dir,
        }
    }

    impl World {
        async fn judge(&self, user: &str, answer: &str, counts: Counts) -> Proof {
            judge(
                &self.accounts,
                &self.challenges,
                user,
                &Secret::new(answer),
                counts,
            )
            .await
            .unwrap()
        }

        /// alice with an active key (confirmed with the previous step's code) and recovery codes.
        async fn alice(&self) -> (TotpKey, Vec<Secret>) {
            let (key, codes) = self
                .accounts
                .enrollment
                .enroll_totp("alice", false)
                .await
                .unwrap();
            let confirm = code(&key, -30);
            let v = self.judge("alice", &confirm, Counts::Verify).await;
            assert_eq!(v, Proof::Allowed(How::Activated));
            (key, codes)
        }
    }

    fn code(key: &TotpKey, offset: i64) -> String {
        let t = (super::super::clock::unix_now() as i64 + offset) as u64;
        totp::code_at(key, t).unwrap()
    }

    #[tokio::test]
    async fn a_right_code_passes_once_and_clears_the_failures() {
        let w = world();
        let (key, _) = w.alice().await;
        assert_eq!(
            w.judge("alice", "000000x", Counts::AppLogin).await,
            Proof::Wrong { alive: false }
        );
        assert_eq!(w.accounts.lockouts.recent_failures("alice"), 1);
        let now = code(&key, 0);
        assert_eq!(
            w.judge("alice", &now, Counts::AppLogin).await,
            Proof::Allowed(How::App)
        );
        assert_eq!(w.accounts.lockouts.recent_failures("alice"), 0);
        assert_eq!(
            w.judge("alice", &now, Counts::AppLogin).await,
            Proof::Replayed
        );
    }

    #[tokio::test]
    async fn concurrent_wrong_answers_are_checked_at_most_max_failures_times() {
        let w = world();
        let (_, codes) = w.alice().await;
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let (a, c) = (w.accounts.clone(), w.challenges.clone());
                tokio::spawn(async move {
                    let guess = Secret::new(format!("WRONG-{i:05}"));
                    judge(&a, &c, "alice", &guess, Counts::AppLogin)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let (mut wrong, mut locked) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Proof::Wrong { .. } => wrong += 1,
                Proof::Locked(_) => locked += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(wrong, 5, "max_failures = 5 by default");
        assert_eq!(locked, 35);
        // Locked: even a right recovery code is refused now, unchecked.
        let right = codes[0].expose().to_owned();
        assert!(matches!(
            w.judge("alice", &right, Counts::AppLogin).await,
            Proof::Locked(_)
        ));
        assert_eq!(
            w.accounts
                .registry
                .enrolled("alice")
                .unwrap()
                .recovery_codes_left,
            8
        );
    }

    #[tokio::test]
    async fn a_recovery_code_works_at_any_prompt_once() {
        let w = world();
        let (_, codes) = w.alice().await;
        let c = codes[2].expose().to_owned();
        assert_eq!(
            w.judge("alice", &c, Counts::SentLogin).await,
            Proof::Allowed(How::Recovery { left: 7 })
        );
        assert_eq!(
            w.judge("alice", &c, Counts::Change).await,
            Proof::Wrong { alive: false }
        );
    }

    #[tokio::test]
    async fn nothing_enrolled_is_not_a_failure() {
        let w = world();
        assert_eq!(
            w.judge("bob", "123456", Counts::AppLogin).await,
            Proof::NothingToCheck
        );
        assert_eq!(w.accounts.lockouts.recent_failures("bob"), 0);
    }

    #[tokio::test]
    async fn failures_survive_a_restart_of_the_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::default();
        let open = || Accounts::new(Arc::new(FileStore::open(dir.path()).unwrap()), cfg.clone());
        let challenges = Challenges::new(cfg.code.clone(), cfg.policy.disable_token_ttl);
        {
            let a = open().unwrap();
            a.enrollment.enroll_totp("alice", false).await.unwrap();
            for _ in 0..5 {
                let wrong = Secret::new("1");
                let p = judge(&a, &challenges, "alice", &wrong, Counts::AppLogin);
                assert!(matches!(p.await.unwrap(), Proof::Wrong { .. }));
            }
            assert!(a.lockouts.locked_for("alice").is_some());
            // No close(): as after a kill -9.
        }
        let again = open().unwrap();
        assert!(again.lockouts.locked_for("alice").is_some(), "still locked");
        again.lockouts.unlock("alice").await.unwrap();
        drop(again);
        assert!(open().unwrap().lockouts.locked_for("alice").is_none());
    }
}
