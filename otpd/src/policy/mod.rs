//! The rules: what makes a code valid (`totp`), which answer proves what (`proof`, the one
//! place every typed answer is judged), when a user is locked out (`lockout`), sent codes
//! (`challenge`), recovery codes (`recovery`), the steps spent at login (`replay`), the codes
//! otpd makes up (`codes`); and over the store: user records under each user's lock
//! (`records`), checks against the app key (`keys`), adding factors (`enrollment`), what a user
//! can log in with (`factors`), the grace period (`grace`), all owned together by `accounts`.

pub mod accounts;
pub mod challenge;
pub mod clock;
pub mod codes;
pub mod enrollment;
pub mod factors;
pub mod fleet;
pub mod forward_pass;
pub mod grace;
pub mod hotp;
pub mod keys;
pub mod lockout;
pub mod proof;
pub mod records;
pub mod recovery;
pub mod replay;
pub mod rules;
pub mod totp;

use crate::store::StoreError;

/// Run blocking store I/O on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(StoreError::Stopping))
}
