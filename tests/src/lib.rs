//! The harness for end-to-end tests: the built binaries (`artifacts`), a real otpd on a temp
//! config (`daemon`), real libpam through pam_wrapper (`pam`), oathtool's codes (`totp`), a real
//! SMTP server (`smtp`), SMS providers' APIs on loopback (`sms`), either seen as where sent
//! codes arrive (`inbox`), a test CA (`ca`), a real sshd (`sshd`), a real slapd (`slapd`), a
//! network namespace on a veth link (`netns`), and skipping with a reason (`skip`).

pub mod artifacts;
pub mod ca;
pub mod daemon;
pub mod duo;
pub mod inbox;
pub mod netns;
pub mod pam;
pub mod postgres;
pub mod skip;
pub mod slapd;
pub mod sms;
pub mod smtp;
pub mod sshd;
pub mod totp;

pub use daemon::Daemon;
pub use pam::{PamRun, PamService};

/// The user every test logs in as: the one running the tests. Root may act for anyone, a normal
/// user only for itself, so this works for both; each test has its own daemon and state.
pub fn me() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
