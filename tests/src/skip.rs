//! Tests that need root or a system package say why they skip instead of passing silently;
//! root-only tests play an unprivileged user through `as_nobody`.

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

/// `program` run as `nobody` (uid and gid 65534, no groups) through util-linux's setpriv; the
/// caller must be root.
pub fn as_nobody(program: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(program);
    cmd
}
