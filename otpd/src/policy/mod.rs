//! The rules: what makes a code valid (`totp`), which answer proves what (`proof`, the one
//! place every typed answer is judged), when a user is locked out (`lockout`), sent codes
//! (`challenge`), recovery codes (`recovery`), the steps spent at login (`replay`), and the
//! per-user bookkeeping that ties them to the store (`accounts`).

pub mod accounts;
pub mod challenge;
pub mod clock;
pub mod codes;
pub mod lockout;
pub mod proof;
pub mod recovery;
pub mod replay;
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
