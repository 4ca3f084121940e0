//! The login's step for `forward_pass` (password and code in one prompt): no menu and no
//! further prompt, since the client asks only once. The method is the user's default, else the
//! first on the menu (the app, then email, then SMS); policy::forward_pass cuts the code off
//! the end; `proof::judge` judges it as at any prompt; on success the rest goes back to the
//! module for PAM_AUTHTOK.
//!
//! With a sent-code method and no code waiting, a code is sent and the login denied: the user
//! logs in again with the password followed by that code (`otpctl send` works too).

use super::*;
use crate::policy::forward_pass::{app_code_length, split};

impl<D: Dialog> Session<'_, D> {
    pub(super) async fn forward_pass(&mut self, menu: Menu) -> Result<Step, FrameError> {
        let Some(typed) = self.login.forward_pass.clone() else {
            return Ok(choose_method(menu));
        };
        // A code typed into the password is judged here; Duo's push or call needs a second
        // exchange this client cannot have, so Duo is taken only when nothing else is left.
        let typed_codes = || menu.choices.iter().filter(|c| !matches!(c, Choice::Duo));
        let preferred = menu
            .preferred
            .and_then(|p| typed_codes().find(|c| c.kind() == p));
        let fallback = typed_codes().next().or(menu.choices.first());
        let Some(choice) = preferred.or(fallback).cloned() else {
            return Ok(refuse(
                DenyReason::NotEnrolled,
                NOT_SET_UP,
                "denied: not enrolled",
            ));
        };
        match choice {
            Choice::App => self.forward_app_code(&typed).await,
            Choice::Sent(to) => self.forward_sent_code(&typed, to).await,
            Choice::Duo => Ok(refuse(
                DenyReason::DuoUnavailable,
                "Duo cannot be used by a client that asks only once: log in with a client that \
                 can ask twice, or ask your administrator.",
                "denied: duo needs a second prompt (forward_pass)",
            )),
        }
    }

    async fn forward_app_code(&mut self, typed: &Secret) -> Result<Step, FrameError> {
        let length = match app_code_length(&self.state.accounts, self.user()) {
            Ok(Some(length)) => length,
            Ok(None) => {
                return Ok(decided(
                    deny(DenyReason::NotEnrolled),
                    "denied: not enrolled",
                ))
            }
            Err(e) => return Ok(internal(e)),
        };
        let Some(parts) = split(typed, length) else {
            return Ok(no_code());
        };
        let proof = self
            .state
            .judge(self.user(), &parts.code, Counts::AppLogin)
            .await;
        Ok(match proof {
            Ok(Proof::Allowed(how)) => {
                self.dialog.hand_back(&parts.password).await?;
                match how {
                    How::Recovery { left } => Step::Recovered { left },
                    _ => decided(Outcome::Allow, "allowed (totp, forward_pass)"),
                }
            }
            // One prompt only: no next code can be asked for (resync with a normal login).
            Ok(Proof::ResyncNeeded { .. }) => refuse(
                DenyReason::WrongCode,
                "Invalid code.",
                "denied: HOTP code past the window (no resync with forward_pass)",
            ),
            other => after_app_code(other),
        })
    }

    async fn forward_sent_code(&mut self, typed: &Secret, to: SentTo) -> Result<Step, FrameError> {
        let (state, user) = (self.state, self.login.user.as_str());
        if let Some(left) = state.accounts.lockouts.locked_for(user) {
            return Ok(locked(left));
        }
        if !state
            .challenges
            .has_open(user, &Purpose::Login, Instant::now())
        {
            return Ok(self.forward_send(to).await);
        }
        let length = usize::from(state.cfg.code.length);
        let Some(parts) = split(typed, length) else {
            return Ok(no_code());
        };
        let proof = state.judge(user, &parts.code, Counts::SentLogin).await;
        Ok(match proof {
            Ok(Proof::Allowed(how)) => {
                self.dialog.hand_back(&parts.password).await?;
                match how {
                    How::Recovery { left } => Step::Recovered { left },
                    _ => decided(
                        Outcome::Allow,
                        format!("allowed ({}, forward_pass)", to.via),
                    ),
                }
            }
            Ok(Proof::Expired) => refuse(
                DenyReason::Expired,
                "That code has expired.",
                "denied: code expired",
            ),
            Ok(Proof::Locked(left)) => locked(left),
            Ok(_) => refuse(DenyReason::WrongCode, "Invalid code.", "denied: wrong code"),
            Err(e) => internal(e),
        })
    }

    /// No code is waiting: send one for the next login.
    async fn forward_send(&mut self, to: SentTo) -> Step {
        let masked = to.masked();
        let sent = send_code(
            self.state,
            self.user(),
            to.via,
            &to.destination,
            Purpose::Login,
        );
        match sent.await {
            Ok(sent) => refuse(
                DenyReason::WrongCode,
                format!(
                    "A code was sent to {masked} (valid {}, request {}). Log in again with \
                     your password followed by the code.",
                    validity(self.state.challenges.ttl()),
                    sent.id
                ),
                "denied: no code was waiting; one was sent (forward_pass)",
            ),
            Err(SendError::Cooldown(left)) => refuse(
                DenyReason::WrongCode,
                format!(
                    "A code can be sent to {masked} in {} s; log in again then.",
                    secs(left)
                ),
                "denied: no code was waiting (cooldown, forward_pass)",
            ),
            Err(e) => send_failed(e),
        }
    }
}

fn no_code() -> Step {
    refuse(
        DenyReason::WrongCode,
        "Invalid code.",
        "denied: no code at the end of the answer (forward_pass)",
    )
}
