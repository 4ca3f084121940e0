//! HOTP (RFC 4226) rules beyond the look-ahead window that `totp::check` applies: new keys for
//! hardware tokens and apps, the vendor's secret read as hex or base32, the `otpauth://hotp`
//! URI, and resynchronisation on two consecutive codes.
//!
//! Resync: a token pressed many times away from the server runs ahead of the window. A code
//! matching a counter up to `RESYNC_LIMIT` past the last accepted one does not log in; it asks
//! for the very next code, and only that pair moves the counter (as pam_oath and privacyIDEA
//! do). Both answers go through `proof::judge`: the first is a counted failure until the second
//! clears it, so a resync costs an attacker two lockout places per try, and a random guess must
//! hit one of `RESYNC_LIMIT` counters (~1/1000) and then the one next code (1/10^6).

use super::totp;
use crate::config::Algorithm;
use crate::store::{KeyKind, TotpKey};
use otp_proto::Secret;
use subtle::ConstantTimeEq;

/// How far past the last accepted counter a resync searches: privacyIDEA's default sync window.
/// Each wrong HOTP answer costs this many HMACs (bounded, like the window), and a larger value
/// only makes the first guess of a resync likelier.
pub const RESYNC_LIMIT: u64 = 1000;

/// The "period" HOTP counters are scaled by to reuse the TOTP code generator (`time = counter
/// * period`); any non-zero value gives the same codes.
pub const COUNTER_SCALE: u64 = 30;

/// RFC 4226 R6 asks for at least 128 bits; 512 is SHA512's block.
const MIN_SECRET_BYTES: usize = 16;
const MAX_SECRET_BYTES: usize = 64;
/// The largest counter otpd takes (as for imports): far from `counter * scale` overflowing.
pub use crate::import::MAX_HOTP_COUNTER;

/// Why an HOTP enrollment is refused, said to whoever enrolls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HotpRefused {
    #[error("the secret is neither hex nor base32")]
    NotHexOrBase32,
    #[error("the secret must be 128 to 512 bits, not {0}")]
    SecretLength(usize),
    #[error("HOTP codes have 6 or 8 digits, not {0}")]
    Digits(u8),
    #[error("a counter above {MAX_HOTP_COUNTER} is refused")]
    Counter,
}

/// A pending HOTP key: `secret` as the vendor gave it (hex or base32), or a new random one;
/// `counter` is the one of the token's next code.
pub fn new_key(
    secret: Option<&Secret>,
    counter: u64,
    digits: u8,
    now: u64,
) -> Result<TotpKey, HotpRefused> {
    if digits != 6 && digits != 8 {
        return Err(HotpRefused::Digits(digits));
    }
    if counter > MAX_HOTP_COUNTER {
        return Err(HotpRefused::Counter);
    }
    let secret = match secret {
        Some(given) => base32_of(given.expose())?,
        None => {
            let bytes = zeroize::Zeroizing::new(super::codes::random::<20>());
            Secret::new(totp_rs::Secret::from(bytes.to_vec()).to_base32())
        }
    };
    Ok(TotpKey {
        secret,
        algorithm: Algorithm::SHA1,
        digits,
        period: COUNTER_SCALE,
        last_step: counter.checked_sub(1),
        kind: KeyKind::Hotp,
        window: None,
        created: now,
    })
}

/// Hex (pam_oath, YubiKey personalisation) when every character is a hex digit, else base32;
/// spaces and base32 padding are ignored. A random base32 secret made only of hex digits
/// (A-F, 2-7) has a chance of about 10^-14 for 160 bits.
fn base32_of(typed: &str) -> Result<Secret, HotpRefused> {
    let cleaned: zeroize::Zeroizing<String> = zeroize::Zeroizing::new(
        typed
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '=')
            .collect(),
    );
    if cleaned.len() > 256 {
        return Err(HotpRefused::SecretLength(cleaned.len().saturating_mul(4)));
    }
    let bytes = if !cleaned.is_empty() && cleaned.bytes().all(|b| b.is_ascii_hexdigit()) {
        crate::hex::decode(&cleaned).ok_or(HotpRefused::NotHexOrBase32)?
    } else {
        let upper = zeroize::Zeroizing::new(cleaned.to_ascii_uppercase());
        let secret = totp_rs::Secret::try_from_base32(upper.as_str())
            .map_err(|_| HotpRefused::NotHexOrBase32)?;
        zeroize::Zeroizing::new(secret.as_ref().to_vec())
    };
    if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
        return Err(HotpRefused::SecretLength(bytes.len() * 8));
    }
    Ok(Secret::new(
        totp_rs::Secret::from(bytes.to_vec()).to_base32(),
    ))
}

/// `otpauth://hotp/ISSUER:ACCOUNT?secret=...&issuer=...&algorithm=...&digits=...&counter=N`
/// (Key URI Format), every parameter spelled out; `counter` is the next code's.
pub fn uri(key: &TotpKey, issuer: &str, account: &str) -> Secret {
    let next = key.last_step.map_or(0, |last| last.saturating_add(1));
    Secret::new(format!(
        "otpauth://hotp/{}:{}?secret={}&issuer={}&algorithm={}&digits={}&counter={next}",
        totp::encode(issuer),
        totp::encode(account),
        key.secret.expose(),
        totp::encode(issuer),
        key.algorithm,
        key.digits,
    ))
}

/// Past the window: the counter up to `RESYNC_LIMIT` after the last accepted one whose code is
/// `code`, if any (the first such). Every counter is computed, so the time taken does not say
/// where it matched.
pub fn find_ahead(key: &TotpKey, code: &str, window: u32) -> Option<u64> {
    let code = digits_only(code);
    let first = key
        .last_step
        .map_or(Some(0), |last| last.checked_add(1))?
        .checked_add(u64::from(window))?
        .checked_add(1)?;
    let last = key
        .last_step
        .map_or(Some(0), |l| l.checked_add(1))?
        .saturating_add(RESYNC_LIMIT);
    let generator = totp::totp_for(key)?;
    let mut found = None;
    for counter in first..=last {
        let hit = code_is(&generator, key.period, &code, counter);
        if hit && found.is_none() {
            found = Some(counter);
        }
    }
    found
}

/// Does `code` belong to exactly `counter` (constant-time)?
pub fn is_code_at(key: &TotpKey, code: &str, counter: u64) -> bool {
    totp::totp_for(key)
        .is_some_and(|generator| code_is(&generator, key.period, &digits_only(code), counter))
}

/// One HMAC: HOTP(counter) is TOTP at `counter * period`.
fn code_is(generator: &totp_rs::Totp, period: u64, code: &str, counter: u64) -> bool {
    let Some(time) = counter.checked_mul(period) else {
        return false;
    };
    let expected = zeroize::Zeroizing::new(generator.generate(time).to_string());
    expected.len() == code.len() && bool::from(expected.as_bytes().ct_eq(code.as_bytes()))
}

fn digits_only(code: &str) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(code.chars().filter(|c| !c.is_whitespace()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4226 Appendix D's secret, "12345678901234567890", in hex.
    const RFC_HEX: &str = "3132333435363738393031323334353637383930";
    /// Counters 0..9 of that secret.
    const RFC_CODES: [&str; 10] = [
        "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871",
        "520489",
    ];

    #[test]
    fn a_hex_or_base32_vendor_secret_gives_rfc_4226_codes() {
        let hex = new_key(Some(&Secret::new(RFC_HEX)), 0, 6, 0).unwrap();
        let b32 = Secret::new("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        let base32 = new_key(Some(&b32), 0, 6, 0).unwrap();
        assert_eq!(hex.secret, base32.secret);
        for (counter, code) in RFC_CODES.iter().enumerate() {
            assert!(is_code_at(&hex, code, counter as u64), "counter {counter}");
        }
        assert_eq!(hex.last_step, None, "counter 0 is the next code");
        let later = new_key(Some(&b32), 5, 6, 0).unwrap();
        assert_eq!(later.last_step, Some(4));
    }

    #[test]
    fn bad_secrets_digits_and_counters_are_refused() {
        let short = Secret::new("31323334353637383930");
        assert_eq!(
            new_key(Some(&short), 0, 6, 0).unwrap_err(),
            HotpRefused::SecretLength(80)
        );
        for bad in ["", "xyz!", "3132333", "GEZDGNBVGY3TQOJQ1"] {
            assert!(
                new_key(Some(&Secret::new(bad)), 0, 6, 0).is_err(),
                "{bad:?}"
            );
        }
        let ok = Secret::new(RFC_HEX);
        assert_eq!(
            new_key(Some(&ok), 0, 7, 0).unwrap_err(),
            HotpRefused::Digits(7)
        );
        assert_eq!(
            new_key(Some(&ok), MAX_HOTP_COUNTER + 1, 6, 0).unwrap_err(),
            HotpRefused::Counter
        );
        assert!(new_key(Some(&ok), MAX_HOTP_COUNTER, 8, 0).is_ok());
    }

    #[test]
    fn a_new_key_is_160_random_bits_and_the_uri_carries_the_counter() {
        let a = new_key(None, 0, 6, 0).unwrap();
        let b = new_key(None, 0, 6, 0).unwrap();
        assert_ne!(a.secret, b.secret);
        let bytes = totp_rs::Secret::try_from_base32(a.secret.expose()).unwrap();
        assert_eq!(bytes.as_ref().len(), 20);
        let k = new_key(Some(&Secret::new(RFC_HEX)), 7, 8, 0).unwrap();
        assert_eq!(
            uri(&k, "ACME Corp", "alice@host1").expose(),
            "otpauth://hotp/ACME%20Corp:alice@host1?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=ACME%20Corp&algorithm=SHA1&digits=8&counter=7"
        );
    }

    #[test]
    fn a_code_past_the_window_is_found_up_to_the_resync_limit_only() {
        let mut k = new_key(Some(&Secret::new(RFC_HEX)), 0, 6, 0).unwrap();
        // Window 3 from counter 0: 0..=3 are the window's, 9 is past it.
        assert_eq!(find_ahead(&k, "520489", 3), Some(9));
        assert_eq!(find_ahead(&k, "969429", 3), None, "inside the window");
        k.last_step = Some(8);
        assert_eq!(find_ahead(&k, "520489", 0), None, "used");
        let far = totp::code_at(&k, (9 + RESYNC_LIMIT + 5) * COUNTER_SCALE).unwrap();
        if find_ahead(&k, &far, 0).is_some() {
            // The same six digits may come up again below the limit; never at the far counter.
            assert_ne!(find_ahead(&k, &far, 0), Some(9 + RESYNC_LIMIT + 5));
        }
        k.last_step = Some(u64::MAX - 1);
        assert_eq!(find_ahead(&k, "520489", 100), None, "no overflow, no panic");
        // What a wrong answer costs past the window (measured, not asserted).
        k.last_step = Some(0);
        let started = std::time::Instant::now();
        let _ = find_ahead(&k, "000000", 10);
        eprintln!(
            "a resync search of {RESYNC_LIMIT} counters took {:?}",
            started.elapsed()
        );
    }
}
