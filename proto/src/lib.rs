//! The language `pam_otp`, `otpctl` and `otpd` speak over the daemon's Unix socket.
//!
//! One place for every wire type ([`message`]), the framing ([`frame`]) and the blocking client
//! ([`client`]) that the PAM module and the CLI share. No async runtime here: the PAM module links
//! this crate into sshd, login and sudo.

pub mod client;
pub mod frame;
pub mod message;
pub mod secret;

pub use message::*;
pub use secret::Secret;

/// Bumped whenever a wire type changes shape; checked on every frame.
pub const PROTOCOL_VERSION: u16 = 3;

/// Where `otpd` listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/otpd/otpd.sock";
