//! Tests that need root or a system package say why they skip instead of passing silently;
//! root-only tests play an unprivileged user through `as_nobody`. Under CI (`CI` set, as
//! `.ci/run` runs), a missing environment is a failure: a skipped test must never count as
//! passed.

use std::path::Path;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// True when the test may run; otherwise prints `skipped: <why>`, or fails when `CI` is set.
pub fn require(ok: bool, why: &str) -> bool {
    if !ok {
        assert!(
            !under_ci(),
            "{why}: CI is set, and a test that cannot run fails there (scripts/setup installs \
             what the tests need; .ci/run runs them as root)"
        );
        eprintln!("skipped: {why}");
    }
    ok
}

/// `CI` is set to anything but "" or "false".
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
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
