//! `[hotp]`: counter-based keys (RFC 4226): hardware tokens (`otpctl enroll hotp`) and imported
//! HOTP setups.

use serde::{Deserialize, Deserializer};

/// Counters past the next one a code may match without resynchronising; a key imported with a
/// window of its own keeps it.
pub const DEFAULT_WINDOW: u32 = 10;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HotpConfig {
    /// Look-ahead (0..=100): each one more code an attacker may guess per try, so RFC 4226
    /// §7.4 asks for a small one. A code further ahead asks for the next code too (a resync).
    #[serde(deserialize_with = "window")]
    pub window: u32,
}

impl Default for HotpConfig {
    fn default() -> Self {
        HotpConfig {
            window: DEFAULT_WINDOW,
        }
    }
}

fn window<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    super::in_range(d, 0, crate::formats::MAX_WINDOW, "window")
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn the_window_defaults_to_10_and_is_bounded_by_100() {
        let cfg = Config::parse(Path::new("t.toml"), "").unwrap();
        assert_eq!(cfg.hotp.window, 10);
        let cfg = Config::parse(Path::new("t.toml"), "[hotp]\nwindow = 100\n").unwrap();
        assert_eq!(cfg.hotp.window, 100);
        let err = Config::parse(Path::new("t.toml"), "[hotp]\nwindow = 101\n").unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("t.toml:2:") && err.contains("hotp.window"),
            "{err}"
        );
        assert!(err.contains("between 0 and 100, not 101"), "{err}");
        assert!(Config::parse(Path::new("t.toml"), "[hotp]\nsize = 3\n").is_err());
    }
}
