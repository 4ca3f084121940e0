//! The rules: what makes a code valid (`totp`), when a user is locked out (`lockout`), and the
//! per-user bookkeeping that ties them to the store (`accounts`), with the steps spent at login
//! (`replay`).

pub mod accounts;
pub mod challenge;
pub mod lockout;
pub mod recovery;
pub mod replay;
pub mod totp;
