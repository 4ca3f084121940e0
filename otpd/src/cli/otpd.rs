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
    /// Make a new sealing key: 32 random bytes as 64 hex digits, root 0600. Never overwrites.
    Keygen {
        /// Where to write it [default: `key_file` from the configuration, /etc/otpd/key].
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
    },
    /// Re-seal every stored secret under the key in NEWFILE (made with `otpd keygen`), then
    /// install it as `key_file`. Offline: refused while otpd runs. Safe to run again after an
    /// interruption: until the new key is installed, secrets under either key are readable.
    Rekey {
        /// The new key.
        #[arg(value_name = "NEWFILE")]
        new_key_file: PathBuf,
    },
}
