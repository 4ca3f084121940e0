//! The command lines of `otpd` and `otpctl`: one definition for parsing, man pages and shell
//! completions.

pub mod otpctl;
pub mod otpd;
