//! TOTP codes from Debian's oathtool: an implementation independent of ours.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The code for `secret` (base32) at `epoch`; `algorithm` SHA1/SHA256/SHA512.
pub fn code_with(secret: &str, epoch: u64, algorithm: &str, digits: u8) -> String {
    let out = Command::new("oathtool")
        .arg(format!("--totp={algorithm}"))
        .args([
            "-d",
            &digits.to_string(),
            "-b",
            "-N",
            &format!("@{epoch}"),
            secret,
        ])
        .output()
        .expect("oathtool (apt-get install oathtool)");
    assert!(
        out.status.success(),
        "oathtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The default-parameter code at `epoch`.
pub fn code(secret: &str, epoch: u64) -> String {
    code_with(secret, epoch, "SHA1", 6)
}
