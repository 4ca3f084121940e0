//! `otpctl`'s command line, here (not in the binary) so that man pages and shell completions
//! are generated from the same definition.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "otpctl",
    version,
    about = "Manage one-time-password second factors (talks to otpd)"
)]
pub struct Cli {
    /// otpd's configuration, read for its socket path [default: /etc/otpd/otpd.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Connect to this socket instead of the configured one.
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Act on this user (root or the admin group; anyone may name themselves).
    #[arg(long, global = true, value_name = "NAME")]
    pub user: Option<String>,
    /// Print one JSON object, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Set up a second factor.
    Enroll {
        #[arg(value_enum)]
        method: EnrollArg,
        /// The address email codes go to (with `enroll email`).
        #[arg(long, value_name = "ADDRESS")]
        email: Option<String>,
        /// The mobile number SMS codes go to, E.164 like +12025550123 (with `enroll sms`).
        #[arg(long, value_name = "NUMBER")]
        phone: Option<String>,
        /// Also write the recovery codes to this file, mode 0600 (with `enroll totp|hotp`).
        #[arg(long, value_name = "FILE")]
        codes_file: Option<PathBuf>,
        /// The hardware token's secret from its vendor, hex or base32 (with `enroll hotp`);
        /// without it otpd makes one and shows it as a QR code for an app.
        #[arg(long, value_name = "HEX|BASE32")]
        secret: Option<String>,
        /// The counter of the token's next code (with `enroll hotp`) [default: 0].
        #[arg(long, value_name = "N")]
        counter: Option<u64>,
        /// Digits per code, 6 or 8 (with `enroll hotp`) [default: 6].
        #[arg(long, value_name = "6|8", value_parser = clap::value_parser!(u8).range(6..=8))]
        digits: Option<u8>,
        /// A current code or recovery code, when you already have a factor (a new key, address
        /// or number needs one); asked for when needed and omitted.
        #[arg(long, value_name = "CODE")]
        code: Option<String>,
    },
    /// Take over an existing setup so the authenticator app keeps working: a
    /// ~/.google_authenticator file (for --user, or yourself), or a pam_oath usersfile (every
    /// user in it, or only --user).
    Import {
        #[arg(value_enum)]
        format: ImportFormat,
        file: PathBuf,
        /// A current code or recovery code, when you already have a factor; asked for when
        /// needed and omitted.
        #[arg(long, value_name = "CODE")]
        code: Option<String>,
    },
    /// Choose the method offered first at login when you have several.
    Default {
        #[arg(value_enum)]
        method: DefaultArg,
    },
    /// Make a new set of 8 recovery codes; the old set stops working.
    RecoveryCodes {
        /// A current code (or a recovery code) proving it is you; asked for when omitted.
        /// Admins acting for another user (--user) need none.
        code: Option<String>,
        /// Also write the codes to this file, mode 0600.
        #[arg(long, value_name = "FILE")]
        codes_file: Option<PathBuf>,
    },
    /// Send a login code now by email or SMS; it works at the next login within its validity.
    Send {
        /// How to send it [default: email if the user has an address, else SMS].
        #[arg(long, value_enum)]
        via: Option<ViaArg>,
    },
    /// Confirm a pending enrollment with a code, or check that a code works.
    Verify {
        /// The code; asked for (hidden) when omitted.
        code: Option<String>,
    },
    /// Show what is enrolled and whether the user is locked out.
    Status,
    /// Turn second factors off: a user confirms with a current code or recovery code (--code),
    /// or with a token mailed to the address on file; admins with --user do it at once.
    Disable {
        /// Only this method [default: all of them].
        #[arg(value_enum)]
        method: Option<DefaultArg>,
        /// The token mailed by a first `otpctl disable`.
        #[arg(long, value_name = "TOKEN")]
        token: Option<String>,
        /// A current code or a recovery code.
        #[arg(long, value_name = "CODE")]
        code: Option<String>,
    },
    /// Admin: lift a lockout (needs --user).
    Unlock,
    /// Admin: forget everything about a user (needs --user).
    Reset,
    /// Admin: list every enrolled user.
    Users,
    /// Show which policy rule applies to you (or --user) and why.
    Policy {
        /// At a login through this PAM service (sshd, sudo...) [default: otpctl's own commands].
        #[arg(long, value_name = "SERVICE")]
        service: Option<String>,
    },
    /// Admin: print the configuration in force, secrets redacted, and where each value came
    /// from.
    Config,
    /// List audit events, newest first: your own, or (admins) anyone's or --user's.
    Attempts {
        #[command(subcommand)]
        show: Option<AttemptsCmd>,
        /// Only events of the last DURATION ("1h", "30m", "2d").
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Only events with this result.
        #[arg(long, value_enum)]
        result: Option<ResultArg>,
        /// At most N events [default: 50].
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Counts of audit events per kind, result and method, for the last hour and day.
    Stats,
}

/// `otpctl attempts show ID`.
#[derive(Subcommand)]
pub enum AttemptsCmd {
    /// Print one event in full.
    Show { id: String },
}

/// The results `otpctl attempts --result` filters on.
#[derive(Clone, Copy, ValueEnum)]
pub enum ResultArg {
    Allowed,
    Denied,
    Ignored,
    Exempt,
}

/// What `otpctl enroll` sets up (the wire names one factor with `MethodKind`).
#[derive(Clone, Copy, ValueEnum)]
pub enum EnrollArg {
    /// An authenticator app (RFC 6238 TOTP).
    Totp,
    /// A hardware token or an app counting codes (RFC 4226 HOTP).
    Hotp,
    /// Codes sent by email.
    Email,
    /// Codes sent by SMS.
    Sms,
}

/// The old name of `EnrollArg`, for bin/otpctl until it moves to the new one.

#[derive(Clone, Copy, ValueEnum)]
pub enum ViaArg {
    Email,
    Sms,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DefaultArg {
    Totp,
    Email,
    Sms,
    /// Duo push, call or passcode (`[duo]` configured; enrolled with Duo).
    Duo,
    /// Ask every time.
    None,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ImportFormat {
    /// google-authenticator-libpam's ~/.google_authenticator.
    GoogleAuthenticator,
    /// A pam_oath usersfile (HOTP and HOTP/T<seconds> lines).
    Oath,
}
