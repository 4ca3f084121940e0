//! A `~/.google_authenticator` file, which a local user writes and otpctl imports, then the
//! bounds otpd applies to every imported key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd::import::{check_imported, google_authenticator, MAX_RECOVERY_CODES};

fuzz_target!(|text: &str| {
    if let Ok(key) = google_authenticator(text) {
        if check_imported(&key).is_ok() {
            assert!(key.window.unwrap_or(0) <= otpd::policy::totp::MAX_WINDOW);
            assert!(key.recovery_codes.len() <= MAX_RECOVERY_CODES);
            assert!((1..=300).contains(&key.period));
        }
    }
});
