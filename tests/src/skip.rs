//! Tests that need root or a system package say why they skip instead of passing silently.

use std::path::Path;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// True when the test may run; otherwise prints `skipped: <why>`.
pub fn require(ok: bool, why: &str) -> bool {
    if !ok {
        eprintln!("skipped: {why}");
    }
    ok
}

pub fn require_root() -> bool {
    require(is_root(), "needs root")
}

pub fn require_file(path: &str, package: &str) -> bool {
    require(
        Path::new(path).exists(),
        &format!("{path} missing (apt-get install {package})"),
    )
}
