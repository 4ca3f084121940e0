//! The few things a login does with the person at the other end: ask (and wait for the answer),
//! inform, warn, and end with an outcome. A login is written against this trait rather than a
//! socket, so every path through it can be played by a script in a unit test (as pam_otp's own
//! tests play a user); `Connection` is the real one (connection.rs).

use crate::connection::Connection;
use otp_proto::frame::{FrameError, Turn};
use otp_proto::{Outcome, Reply, Request, Secret};
use std::future::Future;
use std::time::Duration;

/// The peer of a login. Errors are the peer's: it hung up, timed out, or broke the protocol.
pub trait Dialog: Send {
    /// Show `text` as a prompt (`echo` false for codes) and wait at most `within` for the
    /// answer.
    fn ask(
        &mut self,
        text: &str,
        echo: bool,
        within: Duration,
    ) -> impl Future<Output = Result<Secret, FrameError>> + Send;

    /// Something the user should read (PAM_TEXT_INFO).
    fn info(&mut self, text: &str) -> impl Future<Output = Result<(), FrameError>> + Send;

    /// Something that went wrong (PAM_ERROR_MSG).
    fn error(&mut self, text: &str) -> impl Future<Output = Result<(), FrameError>> + Send;

    /// forward_pass: hand back what the user typed before the code, for the next module's
    /// PAM_AUTHTOK (just before the outcome).
    fn hand_back(
        &mut self,
        password: &Secret,
    ) -> impl Future<Output = Result<(), FrameError>> + Send;

    /// The login is decided; nothing is said after this.
    fn end(&mut self, outcome: Outcome) -> impl Future<Output = Result<(), FrameError>> + Send;

    /// Resolves when the peer hangs up (or sends anything, which it must not while it waits
    /// for the next reply), so that a login waiting on something else (a Duo push) stops
    /// waiting for a peer that is gone.
    fn hung_up(&mut self) -> impl Future<Output = FrameError> + Send;
}

/// A login's peer is the socket: each prompt, info line and error is one reply frame, and an
/// answer is the next request, which must be an `Answer`.
impl Dialog for Connection {
    async fn ask(
        &mut self,
        text: &str,
        echo: bool,
        within: Duration,
    ) -> Result<Secret, FrameError> {
        let text = text.into();
        self.write(Reply::Prompt { text, echo }).await?;
        match self.read(within).await? {
            Request::Answer(answer) => Ok(answer),
            other => Err(FrameError::unexpected(Turn::Answer, &other)),
        }
    }

    async fn info(&mut self, text: &str) -> Result<(), FrameError> {
        self.write(Reply::Info { text: text.into() }).await
    }

    async fn error(&mut self, text: &str) -> Result<(), FrameError> {
        self.write(Reply::Error { text: text.into() }).await
    }

    async fn hand_back(&mut self, password: &Secret) -> Result<(), FrameError> {
        self.write(Reply::Password(password.clone())).await
    }

    async fn end(&mut self, outcome: Outcome) -> Result<(), FrameError> {
        self.write(Reply::Outcome(outcome)).await
    }

    async fn hung_up(&mut self) -> FrameError {
        // Nothing may arrive while the peer waits for a reply: any read that ends is the end.
        match self.read(Duration::from_secs(24 * 3600)).await {
            Err(e) => e,
            Ok(other) => FrameError::unexpected(Turn::Answer, &other),
        }
    }
}
