//! The rules: what makes a code valid (`totp`), when a user is locked out (`lockout`), and the
//! per-user bookkeeping that ties them to the store (`accounts`).

pub mod accounts;
pub mod challenge;
pub mod lockout;
pub mod recovery;
pub mod totp;
