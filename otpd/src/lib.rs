//! `otpd`: the privileged daemon that owns every secret and all policy for pam_otp.
//!
//! Layers, top to bottom: `server` (accept loop, peers, limits) and `connection` (framing) →
//! `session` (a login conversation or an otpctl command) → `policy` (TOTP rules, lockout,
//! per-user bookkeeping) → `store` (durable records). `config` and `logging` serve them all.

pub mod audit;
pub mod channel;
pub mod cli;
pub mod config;
pub mod connection;
pub mod directory;
pub mod formats;
pub mod hex;
pub mod import;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod notify;
pub mod peer;
pub mod peer_limit;
pub mod policy;
pub mod qr;
pub mod reload;
pub mod server;
pub mod session;
pub mod state;
pub mod store;
