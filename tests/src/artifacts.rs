//! Where the built otpd, otpctl, libpam_otp.so and pamclient are.

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

pub fn otpd() -> PathBuf {
    artifact("otpd")
}

pub fn otpctl() -> PathBuf {
    artifact("otpctl")
}

pub fn module() -> PathBuf {
    artifact("libpam_otp.so")
}

pub fn pamclient() -> PathBuf {
    artifact("pamclient")
}
