//! `otpd`'s command line, shared with the man page generator.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "otpd",
    version,
    about = "One-time-password daemon for pam_otp and otpctl"
)]
pub struct Cli {
    /// Configuration file [default: /etc/otpd/otpd.toml; built-in defaults if it is absent]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log debug lines too.
    #[arg(long, global = true)]
    pub debug: bool,
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the daemon in the foreground (the default).
    Run,
    /// Check the configuration file and explain every error with its file, line and key.
    CheckConfig,
}
