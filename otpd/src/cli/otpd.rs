//! `otpd`'s command line, shared with the man page generator.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const LONG_ABOUT: &str = "One-time-password daemon for pam_otp and otpctl.

Every TOTP/HOTP key otpd stores is sealed (XChaCha20-Poly1305, bound to its user) under the \
key in `key_file` (default /etc/otpd/key; under systemd the credential otpd.key, from \
LoadCredential=, takes precedence). otpd refuses to start without it, or when group or others \
may read or write it, or when it belongs to anyone but root or otpd's user. \
`otpd keygen` makes one; back it up apart from the state directory, since no enrollment can \
be read without it. To change it: `otpd keygen --key-file NEW`, stop otpd, `otpd rekey NEW` \
(re-seals every record, then installs NEW as key_file; safe to run again if interrupted), \
start otpd.";

#[derive(Parser)]
#[command(
    name = "otpd",
    version,
    about = "One-time-password daemon for pam_otp and otpctl",
    long_about = LONG_ABOUT
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
    ///
    /// The key seals every TOTP/HOTP key otpd stores (`key_file` in otpd.toml(5)); without it
    /// no enrollment can be read, so back it up apart from the state directory. The packages
    /// run `otpd keygen --key-file /etc/otpd/key` when that file is missing.
    Keygen {
        /// Where to write it [default: `key_file` from the configuration, /etc/otpd/key].
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
    },
    /// Re-seal every stored secret under the key in NEWFILE, then install it as `key_file`.
    ///
    /// Offline: refused while otpd runs (it takes the state directory's lock). Each record is
    /// rewritten atomically; until the new key is installed, secrets sealed under either key
    /// open, so an interrupted run is finished by running it again. Also seals records written
    /// before sealing. Typical use: `otpd keygen --key-file /root/new.key`,
    /// `systemctl stop otpd`, `otpd rekey /root/new.key`, `systemctl start otpd`.
    Rekey {
        /// The new key.
        #[arg(value_name = "NEWFILE")]
        new_key_file: PathBuf,
    },
    /// Create or upgrade the fleet database's schema (`[store] backend = "postgres"`), or copy
    /// this host's enrollments into it.
    ///
    /// Without options: apply the embedded migrations the database lacks, under an advisory
    /// lock (hosts migrating at once take turns); safe to run again. otpd refuses to start on a
    /// schema older or newer than it knows. `--from files --to postgres` copies every record of
    /// `state_dir` into the database (sealed under `key_file`, which every host shares),
    /// skipping users the database already has; it reports what it copied and skipped, and
    /// running it again copies nothing twice.
    Migrate {
        /// Copy records from this store (only `files`).
        #[arg(long, value_name = "STORE", requires = "to")]
        from: Option<StoreKind>,
        /// Into this store (only `postgres`).
        #[arg(long, value_name = "STORE", requires = "from")]
        to: Option<StoreKind>,
    },
}

/// A store `otpd migrate` copies from or to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// `state_dir` on this host.
    Files,
    /// The `[store]` database.
    Postgres,
}
