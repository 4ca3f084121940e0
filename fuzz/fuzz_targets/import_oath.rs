//! A pam_oath usersfile, then the bounds otpd applies to every imported key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd::import::{check_imported, oath_usersfile};

fuzz_target!(|text: &str| {
    if let Ok(keys) = oath_usersfile(text) {
        for (user, key) in keys {
            assert!(!user.is_empty());
            let _ = check_imported(&key).map_err(|e| e.to_string());
        }
    }
});
