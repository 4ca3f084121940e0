//! TOTP (RFC 6238 over RFC 4226): new secrets, the otpauth URI, and verification with replay
//! protection. All TOTP rules live in this file.

use crate::config::{Algorithm, TotpConfig};
use crate::store::{KeyKind, TotpKey};
use otp_proto::Secret;

/// RFC 4226 §4 asks for at least 128 bits and recommends 160.
const SECRET_BYTES: usize = 20;

/// What a typed code matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// A step inside the window that was never used: accept, then record it as used.
    Fresh(u64),
    /// A step at or before the last one accepted (RFC 6238 §5.2: each code once).
    Used,
    Wrong,
}

/// A new key from the OS RNG, with the parameters new enrollments get.
pub fn new_key(cfg: &TotpConfig, now: u64) -> Result<TotpKey, getrandom::Error> {
    let mut bytes = zeroize::Zeroizing::new([0u8; SECRET_BYTES]);
    getrandom::fill(bytes.as_mut())?;
    Ok(TotpKey {
        secret: Secret::new(totp_rs::Secret::from(*bytes).to_base32()),
        algorithm: cfg.algorithm,
        digits: cfg.digits,
        period: cfg.period,
        last_step: None,
        kind: KeyKind::Totp,
        window: None,
        created: now,
    })
}

/// `otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=...&algorithm=...&digits=...&period=...`,
/// every parameter spelled out so no app has to guess a default.
pub fn uri(key: &TotpKey, issuer: &str, account: &str) -> Secret {
    Secret::new(format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm={}&digits={}&period={}",
        encode(issuer),
        encode(account),
        key.secret.expose(),
        encode(issuer),
        key.algorithm,
        key.digits,
        key.period
    ))
}

/// HOTP look-ahead when the imported setup named none (RFC 4226 §7.4 suggests a small window).
const HOTP_WINDOW: u32 = 10;

pub use crate::formats::{MAX_SKEW, MAX_WINDOW};

/// Check `code` against the key: for TOTP the steps `now ± skew`, for HOTP the next counters
/// within the window; say whether it matched a fresh step, a used one, or none. Spaces in the
/// code are ignored ("123 456"). The work is bounded whatever the key holds.
pub fn check(key: &TotpKey, code: &str, now: u64, skew: u8) -> Check {
    match key.kind {
        KeyKind::Totp => check_totp(key, code, now, skew.min(MAX_SKEW)),
        KeyKind::Hotp => check_hotp(key, code),
    }
}

/// RFC 4226 §7.2: counters from the one after the last accepted, up to the window; every
/// counter is computed so the time taken does not depend on where the match is. Arithmetic
/// saturates: a counter at the end of its range matches nothing rather than wrapping to 0.
fn check_hotp(key: &TotpKey, code: &str) -> Check {
    let code: zeroize::Zeroizing<String> =
        zeroize::Zeroizing::new(code.chars().filter(|c| !c.is_whitespace()).collect());
    let Some(hotp) = totp_for(key) else {
        return Check::Wrong;
    };
    let first = match key.last_step {
        None => 0,
        Some(last) => match last.checked_add(1) {
            Some(next) => next,
            None => return Check::Wrong,
        },
    };
    let window = key.window.unwrap_or(HOTP_WINDOW).min(MAX_WINDOW);
    let last = first.saturating_add(u64::from(window));
    let mut verdict = Check::Wrong;
    for counter in first..=last {
        let Some(time) = counter.checked_mul(key.period) else {
            break;
        };
        let hit = hotp.check(&code, time).is_some();
        if hit && verdict == Check::Wrong {
            verdict = Check::Fresh(counter);
        }
    }
    verdict
}

fn check_totp(key: &TotpKey, code: &str, now: u64, skew: u8) -> Check {
    let code: zeroize::Zeroizing<String> =
        zeroize::Zeroizing::new(code.chars().filter(|c| !c.is_whitespace()).collect());
    let Some(totp) = totp_for(key) else {
        return Check::Wrong;
    };
    // totp_for refused period 0.
    let current = now / key.period;
    let first = current.saturating_sub(u64::from(skew));
    let last = current.saturating_add(u64::from(skew));
    let mut verdict = Check::Wrong;
    // Newest first, so a code valid for both a used and a fresh step counts as fresh; every step
    // is computed so the time taken does not depend on where the match is.
    for step in (first..=last).rev() {
        let Some(time) = step.checked_mul(key.period) else {
            continue;
        };
        let hit = totp.check(&code, time).is_some();
        let used = key.last_step.is_some_and(|last| step <= last);
        verdict = match (verdict, hit, used) {
            (Check::Fresh(s), _, _) => Check::Fresh(s),
            (_, true, false) => Check::Fresh(step),
            (Check::Wrong, true, true) => Check::Used,
            (v, _, _) => v,
        };
    }
    verdict
}

/// Can this key produce codes at all (base32 secret, 6 to 8 digits, a period)?
pub fn usable(key: &TotpKey) -> bool {
    totp_for(key).is_some()
}

/// The code for `time`: for tests and for `otpctl` demos, never sent anywhere.
pub fn code_at(key: &TotpKey, time: u64) -> Option<String> {
    totp_for(key).map(|t| t.generate(time).to_string())
}

/// A checker for exactly one step (skew 0); `None` if the stored secret is not base32.
/// Secrets shorter than 128 bits are accepted here because imported keys (google-authenticator
/// uses 80 bits) must keep working; new keys are always 160 bits.
pub(super) fn totp_for(key: &TotpKey) -> Option<totp_rs::Totp> {
    let cleaned: zeroize::Zeroizing<String> = zeroize::Zeroizing::new(
        key.secret
            .expose()
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '=')
            .map(|c| c.to_ascii_uppercase())
            .collect(),
    );
    let secret = totp_rs::Secret::try_from_base32(cleaned.as_str()).ok()?;
    if !(6..=8).contains(&key.digits) || key.period == 0 {
        return None;
    }
    Some(
        totp_rs::Builder::new()
            .with_algorithm(match key.algorithm {
                Algorithm::SHA1 => totp_rs::Algorithm::SHA1,
                Algorithm::SHA256 => totp_rs::Algorithm::SHA256,
                Algorithm::SHA512 => totp_rs::Algorithm::SHA512,
            })
            .with_digits(key.digits)
            .with_skew(0)
            .with_step_duration(key.period)
            .with_secret(secret)
            .build_noncompliant(),
    )
}

/// Percent-encode everything but RFC 3986's unreserved characters.
pub(super) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base32(bytes: &[u8]) -> String {
        totp_rs::Secret::from(bytes.to_vec()).to_base32()
    }

    fn key(secret: &[u8], algorithm: Algorithm, digits: u8) -> TotpKey {
        TotpKey {
            secret: Secret::new(base32(secret)),
            algorithm,
            digits,
            period: 30,
            last_step: None,
            kind: KeyKind::Totp,
            window: None,
            created: 0,
        }
    }

    /// RFC 6238 Appendix B: the seeds are ASCII "1234567890" repeated to 20, 32 and 64 bytes.
    #[test]
    fn rfc6238_appendix_b_vectors() {
        let sha1 = key(b"12345678901234567890", Algorithm::SHA1, 8);
        let sha256 = key(b"12345678901234567890123456789012", Algorithm::SHA256, 8);
        let sha512 = key(
            b"1234567890123456789012345678901234567890123456789012345678901234",
            Algorithm::SHA512,
            8,
        );
        let table: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (time, a, b, c) in table {
            assert_eq!(code_at(&sha1, time).unwrap(), a, "SHA1 at {time}");
            assert_eq!(code_at(&sha256, time).unwrap(), b, "SHA256 at {time}");
            assert_eq!(code_at(&sha512, time).unwrap(), c, "SHA512 at {time}");
            assert_eq!(check(&sha1, a, time, 0), Check::Fresh(time / 30));
            assert_eq!(check(&sha256, b, time, 0), Check::Fresh(time / 30));
            assert_eq!(check(&sha512, c, time, 0), Check::Fresh(time / 30));
        }
    }

    /// RFC 4226 Appendix D: HOTP values for counters 0..9 are TOTP at time = counter * period.
    #[test]
    fn rfc4226_appendix_d_vectors() {
        let k = key(b"12345678901234567890", Algorithm::SHA1, 6);
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(code_at(&k, counter as u64 * 30).unwrap(), *code);
        }
    }

    #[test]
    fn a_code_from_the_next_or_previous_step_is_accepted_within_skew() {
        let k = key(b"12345678901234567890", Algorithm::SHA1, 6);
        let now = 1_000_000_000;
        let next = code_at(&k, now + 30).unwrap();
        let prev = code_at(&k, now - 30).unwrap();
        assert_eq!(check(&k, &next, now, 1), Check::Fresh(now / 30 + 1));
        assert_eq!(check(&k, &prev, now, 1), Check::Fresh(now / 30 - 1));
        assert_eq!(check(&k, &next, now, 0), Check::Wrong);
        let far = code_at(&k, now + 90).unwrap();
        assert_eq!(check(&k, &far, now, 1), Check::Wrong);
    }

    #[test]
    fn a_used_step_and_every_earlier_one_are_refused() {
        let mut k = key(b"12345678901234567890", Algorithm::SHA1, 6);
        let now = 1_000_000_000;
        let code = code_at(&k, now).unwrap();
        k.last_step = Some(now / 30);
        assert_eq!(check(&k, &code, now, 1), Check::Used);
        let prev = code_at(&k, now - 30).unwrap();
        assert_eq!(check(&k, &prev, now, 1), Check::Used);
        let next = code_at(&k, now + 30).unwrap();
        assert_eq!(check(&k, &next, now, 1), Check::Fresh(now / 30 + 1));
    }

    #[test]
    fn malformed_codes_are_wrong_not_errors() {
        let k = key(b"12345678901234567890", Algorithm::SHA1, 6);
        for bad in [
            "",
            "12345",
            "1234567",
            "abcdef",
            "+12345",
            "１２３４５６",
            "99999999999999",
        ] {
            assert_eq!(check(&k, bad, 59, 1), Check::Wrong, "{bad:?}");
        }
        let spaced = code_at(&k, 59).unwrap();
        let spaced = format!("{} {}", &spaced[..3], &spaced[3..]);
        assert_eq!(check(&k, &spaced, 59, 0), Check::Fresh(1));
    }

    #[test]
    fn hotp_accepts_the_next_counters_within_the_window_once() {
        let mut k = key(b"12345678901234567890", Algorithm::SHA1, 6);
        k.kind = KeyKind::Hotp;
        k.window = Some(3);
        // RFC 4226 Appendix D: counter 0 is 755224, 3 is 969429, 9 is 520489.
        assert_eq!(check(&k, "755224", 0, 1), Check::Fresh(0));
        assert_eq!(check(&k, "969429", 0, 1), Check::Fresh(3));
        assert_eq!(check(&k, "520489", 0, 1), Check::Wrong, "beyond the window");
        k.last_step = Some(3);
        assert_eq!(check(&k, "969429", 0, 1), Check::Wrong, "used");
        assert_eq!(check(&k, "520489", 0, 1), Check::Wrong, "counter 9 > 4 + 3");
        assert_eq!(check(&k, "254676", 0, 1), Check::Fresh(5));
    }

    #[test]
    fn new_keys_are_160_random_bits_and_differ() {
        let cfg = TotpConfig::default();
        let a = new_key(&cfg, 0).unwrap();
        let b = new_key(&cfg, 0).unwrap();
        assert_ne!(a.secret, b.secret);
        let bytes = totp_rs::Secret::try_from_base32(a.secret.expose()).unwrap();
        assert_eq!(bytes.as_ref().len(), 20);
    }

    #[test]
    fn the_uri_spells_out_every_parameter() {
        let k = key(b"12345678901234567890", Algorithm::SHA256, 8);
        let uri = uri(&k, "ACME Corp", "alice@host1");
        assert_eq!(
            uri.expose(),
            "otpauth://totp/ACME%20Corp:alice@host1?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=ACME%20Corp&algorithm=SHA256&digits=8&period=30"
        );
    }

    fn hotp(last_step: Option<u64>, window: Option<u32>, period: u64) -> TotpKey {
        TotpKey {
            kind: KeyKind::Hotp,
            last_step,
            window,
            period,
            ..key(b"12345678901234567890", Algorithm::SHA1, 6)
        }
    }

    /// A record saved before imports were bounded may hold a window of 2^32-1: checking it
    /// must cost at most MAX_WINDOW + 1 HMACs, so a code beyond that is simply wrong.
    #[test]
    fn a_stored_huge_window_is_clamped_to_100() {
        let k = hotp(None, Some(u32::MAX), 30);
        let beyond = code_at(&k, 30 * 150).unwrap();
        let within = code_at(&k, 30 * 100).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(check(&k, &within, 0, 1), Check::Fresh(100));
        if check(&k, &beyond, 0, 1) != Check::Wrong {
            // The same 6 digits may recur below 100; only a fresh match at 150 is a failure.
            assert_ne!(check(&k, &beyond, 0, 1), Check::Fresh(150));
        }
        eprintln!("two checks of a 2^32-1 window took {:?}", started.elapsed());
    }

    #[test]
    fn counters_and_periods_at_the_end_of_u64_do_not_wrap_or_panic() {
        assert_eq!(
            check(&hotp(Some(u64::MAX), None, 30), "755224", 0, 1),
            Check::Wrong
        );
        assert_eq!(
            check(
                &hotp(Some(u64::MAX - 2), Some(u32::MAX), u64::MAX),
                "755224",
                0,
                1
            ),
            Check::Wrong
        );
        let mut totp = key(b"12345678901234567890", Algorithm::SHA1, 6);
        // Only steps 0 and 1 fit in u64 seconds; the rest are skipped, not wrapped.
        totp.period = u64::MAX;
        assert_eq!(check(&totp, "755224", u64::MAX, u8::MAX), Check::Fresh(0));
        totp.period = 30;
        let code = code_at(&totp, u64::MAX).unwrap();
        assert_eq!(
            check(&totp, &code, u64::MAX, u8::MAX),
            Check::Fresh(u64::MAX / 30)
        );
    }

    #[test]
    fn a_skew_above_the_maximum_is_clamped() {
        let k = key(b"12345678901234567890", Algorithm::SHA1, 6);
        let now = 1_000_000_000;
        let far = code_at(&k, now + 30 * 50).unwrap();
        assert_ne!(check(&k, &far, now, u8::MAX), Check::Fresh(now / 30 + 50));
        let edge = code_at(&k, now + 30 * u64::from(MAX_SKEW)).unwrap();
        assert_eq!(
            check(&k, &edge, now, u8::MAX),
            Check::Fresh(now / 30 + u64::from(MAX_SKEW))
        );
    }
}
