//! Where the built otpd, otpctl, libpam_otp.so and pamclient are. `OTP_E2E_OTPD`,
//! `OTP_E2E_OTPCTL` and `OTP_E2E_MODULE` point the tests at installed ones instead (the
//! packaging test runs the login stories against the installed .deb).

use std::path::PathBuf;

pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
    .join("debug")
}

/// A built artifact; panics with the fix when it is missing.
pub fn artifact(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins --lib` first (scripts/test does)",
        path.display()
    );
    path.canonicalize().unwrap_or(path)
}

fn installed_or(var: &str, name: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(path) => PathBuf::from(path),
        None => artifact(name),
    }
}

pub fn otpd() -> PathBuf {
    installed_or("OTP_E2E_OTPD", "otpd")
}

pub fn otpctl() -> PathBuf {
    installed_or("OTP_E2E_OTPCTL", "otpctl")
}

pub fn module() -> PathBuf {
    installed_or("OTP_E2E_MODULE", "libpam_otp.so")
}

pub fn pamclient() -> PathBuf {
    artifact("pamclient")
}
