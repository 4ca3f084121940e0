//! `otpd.toml` as otpd reads it: parsing, every bound, the cross-key checks and the locating
//! of errors (file, line, key). An error is fine; a panic is not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|text: &str| {
    match otpd::config::Config::parse(Path::new("fuzz.toml"), text) {
        Ok(cfg) => {
            assert!(cfg.socket.is_absolute());
            assert!(cfg.lockout.lock_for.as_secs() <= 30 * 24 * 3600);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
