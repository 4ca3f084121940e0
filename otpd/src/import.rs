//! Reading other tools' OATH setups so users keep their authenticator app: a
//! `~/.google_authenticator` file and a pam_oath usersfile, and the bounds every imported key
//! must meet. Parsing and checking only; otpd stores the result.
//!
//! An `ImportedKey` comes from a file the user wrote, or straight from the socket, so nothing in
//! it is trusted: `check_imported` bounds the work one verification can cost (window, counter,
//! period) and refuses what would make codes weaker (short secrets, a huge window).

pub use crate::formats::{MAX_PERIOD, MAX_WINDOW};
use otp_proto::{ImportedKey, Secret};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("line {0}: {1}")]
    Line(usize, String),
    #[error("the file holds no secret")]
    Empty,
}

/// 80 bits: google-authenticator's secrets, which must keep working (RFC 4226 asks for 128).
pub const MIN_SECRET_BYTES: usize = 10;
/// 512 bits, SHA512's block: more adds nothing but work.
pub const MAX_SECRET_BYTES: usize = 64;
/// Characters in the secret as written (base32 of 64 bytes is 103, plus spaces and padding).
const MAX_SECRET_CHARS: usize = 256;
/// Far above any real token's count, far below anything that could overflow `counter + window`
/// or `counter * period`.
pub const MAX_HOTP_COUNTER: u64 = 1 << 48;
/// google-authenticator writes at most 10 scratch codes; each becomes an argon2 hash.
pub const MAX_RECOVERY_CODES: usize = 10;
/// Lengths a scratch code may have (google-authenticator's are 8 digits, ours 11 characters).
pub const RECOVERY_CODE_LEN: std::ops::RangeInclusive<usize> = 6..=32;

/// Why an imported key is refused, said to the user who is importing it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidKey {
    #[error("algorithm {0:?} is not one of SHA1, SHA256, SHA512")]
    Algorithm(String),
    #[error("codes must have 6 to 8 digits, not {0}")]
    Digits(u8),
    #[error("period must be 1..={MAX_PERIOD} seconds, not {0}")]
    Period(u64),
    #[error("the secret is not base32")]
    NotBase32,
    #[error(
        "the secret must be {min} to {max} bits, not {0}",
        min = MIN_SECRET_BYTES * 8,
        max = MAX_SECRET_BYTES * 8
    )]
    SecretLength(usize),
    #[error("a window above {MAX_WINDOW} is refused (the file asks for {0})")]
    Window(u32),
    #[error("an HOTP counter above {MAX_HOTP_COUNTER} is refused (the file has {0})")]
    Counter(u64),
    #[error("at most {MAX_RECOVERY_CODES} scratch codes are accepted, not {0}")]
    TooManyCodes(usize),
    #[error(
        "scratch code {0} must be {min} to {max} letters, digits or dashes",
        min = RECOVERY_CODE_LEN.start(),
        max = RECOVERY_CODE_LEN.end()
    )]
    RecoveryCode(usize),
}

/// Check every field of a key to be imported; otpd calls it on every `Import` request and
/// otpctl before sending, so the user sees the reason without a round trip.
pub fn check_imported(key: &ImportedKey) -> Result<(), InvalidKey> {
    if !matches!(key.algorithm.as_str(), "SHA1" | "SHA256" | "SHA512") {
        // Shown back to the user: cut, so a hostile frame cannot make a long message.
        let shown = key.algorithm.chars().take(16).collect();
        return Err(InvalidKey::Algorithm(shown));
    }
    if !(6..=8).contains(&key.digits) {
        return Err(InvalidKey::Digits(key.digits));
    }
    if !(1..=MAX_PERIOD).contains(&key.period) {
        return Err(InvalidKey::Period(key.period));
    }
    secret_bytes(key.secret.expose())?;
    if let Some(window) = key.window.filter(|w| *w > MAX_WINDOW) {
        return Err(InvalidKey::Window(window));
    }
    if let Some(counter) = key.hotp_counter.filter(|c| *c > MAX_HOTP_COUNTER) {
        return Err(InvalidKey::Counter(counter));
    }
    if key.recovery_codes.len() > MAX_RECOVERY_CODES {
        return Err(InvalidKey::TooManyCodes(key.recovery_codes.len()));
    }
    for (i, code) in key.recovery_codes.iter().enumerate() {
        let code = code.expose();
        let shape = code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !RECOVERY_CODE_LEN.contains(&code.len()) || !shape {
            return Err(InvalidKey::RecoveryCode(i + 1));
        }
    }
    Ok(())
}

/// The secret's length in bytes once decoded, read as `totp` reads it (spaces, padding and
/// case ignored).
fn secret_bytes(secret: &str) -> Result<usize, InvalidKey> {
    if secret.len() > MAX_SECRET_CHARS {
        return Err(InvalidKey::SecretLength(secret.len().saturating_mul(5)));
    }
    let cleaned: zeroize::Zeroizing<String> = zeroize::Zeroizing::new(
        secret
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '=')
            .map(|c| c.to_ascii_uppercase())
            .collect(),
    );
    let decoded =
        totp_rs::Secret::try_from_base32(cleaned.as_str()).map_err(|_| InvalidKey::NotBase32)?;
    let len = decoded.as_ref().len();
    if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&len) {
        return Err(InvalidKey::SecretLength(len * 8));
    }
    Ok(len)
}

/// google-authenticator-libpam's file: the base32 secret, `" OPTION` lines, then scratch codes.
pub fn google_authenticator(text: &str) -> Result<ImportedKey, ImportError> {
    let mut lines = text.lines().enumerate();
    let secret = lines
        .next()
        .map(|(_, l)| l.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or(ImportError::Empty)?;
    let mut key = ImportedKey {
        secret: Secret::new(secret),
        algorithm: "SHA1".into(),
        digits: 6,
        period: 30,
        hotp_counter: None,
        window: None,
        recovery_codes: Vec::new(),
    };
    for (n, line) in lines {
        let line = line.trim();
        if let Some(option) = line.strip_prefix('"') {
            let words: Vec<&str> = option.split_whitespace().collect();
            let number = |i: usize| {
                words
                    .get(i)
                    .and_then(|w| w.parse::<u64>().ok())
                    .ok_or_else(|| ImportError::Line(n + 1, format!("{line:?} needs a number")))
            };
            match words.first().copied() {
                Some("HOTP_COUNTER") => key.hotp_counter = Some(number(1)?),
                Some("STEP_SIZE") => key.period = number(1)?,
                // Saturated, not wrapped: 4294967296 must not become a window of 0.
                Some("WINDOW_SIZE") => {
                    key.window = Some(u32::try_from(number(1)?).unwrap_or(u32::MAX))
                }
                _ => {} // TOTP_AUTH, RATE_LIMIT, DISALLOW_REUSE: otpd's own policy applies.
            }
        } else if line.len() == 8 && line.bytes().all(|b| b.is_ascii_digit()) {
            key.recovery_codes.push(Secret::new(line));
        } else if !line.is_empty() {
            return Err(ImportError::Line(n + 1, format!("unexpected {line:?}")));
        }
    }
    Ok(key)
}

/// A pam_oath usersfile: `TYPE USER PIN HEXSECRET [COUNTER ...]` lines, TYPE being `HOTP`,
/// `HOTP/T30`, `HOTP/T60/8` and the like. Returns (user, key) for every line.
pub fn oath_usersfile(text: &str) -> Result<Vec<(String, ImportedKey)>, ImportError> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| ImportError::Line(n + 1, why.to_owned());
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [kind, user, _pin, hex, rest @ ..] = fields.as_slice() else {
            return Err(bad("want TYPE USER PIN SECRET [COUNTER]"));
        };
        let mut parts = kind.split('/');
        if parts.next() != Some("HOTP") {
            return Err(bad("only HOTP and HOTP/T<seconds> tokens are supported"));
        }
        let (mut period, mut digits, mut totp) = (30, 6, false);
        for part in parts {
            if let Some(secs) = part.strip_prefix('T') {
                period = secs.parse().map_err(|_| bad("bad time step"))?;
                totp = true;
            } else {
                digits = part.parse().map_err(|_| bad("bad digit count"))?;
            }
        }
        let secret = crate::hex::decode(hex).ok_or_else(|| bad("the secret is not hex"))?;
        let counter = match rest.first() {
            Some(c) if !totp => Some(c.parse().map_err(|_| bad("bad counter"))?),
            _ if !totp => Some(0),
            _ => None,
        };
        keys.push((
            (*user).to_owned(),
            ImportedKey {
                secret: Secret::new(base32(&secret)),
                algorithm: "SHA1".into(),
                digits,
                period,
                hotp_counter: counter,
                window: None,
                recovery_codes: Vec::new(),
            },
        ));
    }
    if keys.is_empty() {
        return Err(ImportError::Empty);
    }
    Ok(keys)
}

fn base32(bytes: &[u8]) -> String {
    totp_rs::Secret::from(bytes.to_vec()).to_base32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_google_authenticator_totp_file_is_read_with_its_scratch_codes() {
        let key = google_authenticator(
            "S6P7X76PPD3CSV5NZYTID3VXDE\n\" RATE_LIMIT 3 30\n\" WINDOW_SIZE 3\n\
             \" DISALLOW_REUSE\n\" TOTP_AUTH\n73410669\n14158427\n",
        )
        .unwrap();
        assert_eq!(key.secret.expose(), "S6P7X76PPD3CSV5NZYTID3VXDE");
        assert_eq!((key.digits, key.period, key.hotp_counter), (6, 30, None));
        assert_eq!(key.recovery_codes.len(), 2);
    }

    #[test]
    fn a_google_authenticator_hotp_file_keeps_its_counter() {
        let key = google_authenticator("JBSWY3DPEHPK3PXP\n\" HOTP_COUNTER 4\n\" WINDOW_SIZE 5\n")
            .unwrap();
        assert_eq!(key.hotp_counter, Some(4));
        assert_eq!(key.window, Some(5));
    }

    #[test]
    fn garbage_is_refused_with_its_line() {
        assert_eq!(google_authenticator(""), Err(ImportError::Empty));
        assert!(matches!(
            google_authenticator("JBSWY3DPEHPK3PXP\nhello\n"),
            Err(ImportError::Line(2, _))
        ));
    }

    #[test]
    fn a_pam_oath_usersfile_gives_one_key_per_line() {
        let keys = oath_usersfile(
            "# comment\nHOTP/T30 alice - 3132333435363738393031323334353637383930\n\
             HOTP/T60/8 bob - 00112233445566778899\nHOTP carol - 3132333435363738393031323334353637383930 7\n",
        )
        .unwrap();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys[0].0, "alice");
        assert_eq!(
            keys[0].1.secret.expose(),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        assert_eq!(keys[0].1.hotp_counter, None);
        assert_eq!((keys[1].1.period, keys[1].1.digits), (60, 8));
        assert_eq!(keys[2].1.hotp_counter, Some(7));
        assert!(oath_usersfile("TOTP x - 00").is_err());
        assert!(oath_usersfile("HOTP x - zz").is_err());
    }

    fn ga(text: &str) -> Result<(), InvalidKey> {
        check_imported(&google_authenticator(text).unwrap())
    }

    #[test]
    fn real_google_authenticator_files_pass_the_bounds() {
        assert_eq!(
            ga("S6P7X76PPD3CSV5NZYTID3VXDE\n\" WINDOW_SIZE 3\n\" TOTP_AUTH\n73410669\n"),
            Ok(())
        );
        assert_eq!(
            ga("JBSWY3DPEHPK3PXP\n\" HOTP_COUNTER 1\n\" WINDOW_SIZE 17\n"),
            Ok(())
        );
        let oath =
            oath_usersfile("HOTP/T30/8 bob - 3132333435363738393031323334353637383930\n").unwrap();
        assert_eq!(check_imported(&oath[0].1), Ok(()));
    }

    /// The files of the attack on imports: each is refused, saying why.
    #[test]
    fn a_window_or_counter_that_would_cost_billions_of_hmacs_is_refused() {
        let huge = "JBSWY3DPEHPK3PXP\n\" HOTP_COUNTER 1\n\" WINDOW_SIZE 4294967295\n";
        assert_eq!(ga(huge), Err(InvalidKey::Window(u32::MAX)));
        assert!(ga(huge)
            .unwrap_err()
            .to_string()
            .contains("a window above 100 is refused"));
        let wrapped = "JBSWY3DPEHPK3PXP\n\" HOTP_COUNTER 1\n\" WINDOW_SIZE 4294967296\n";
        assert_eq!(
            ga(wrapped),
            Err(InvalidKey::Window(u32::MAX)),
            "not wrapped to 0"
        );
        let million = "JBSWY3DPEHPK3PXP\n\" HOTP_COUNTER 1\n\" WINDOW_SIZE 1000000\n";
        assert_eq!(ga(million), Err(InvalidKey::Window(1_000_000)));
        let counter = "JBSWY3DPEHPK3PXP\n\" HOTP_COUNTER 18446744073709551615\n";
        assert_eq!(ga(counter), Err(InvalidKey::Counter(u64::MAX)));
        let step = "JBSWY3DPEHPK3PXP\n\" STEP_SIZE 18446744073709551615\n";
        assert!(ga(step)
            .unwrap_err()
            .to_string()
            .contains("period must be 1..=300 seconds"));
        assert_eq!(
            ga("JBSWY3DPEHPK3PXP\n\" STEP_SIZE 0\n"),
            Err(InvalidKey::Period(0))
        );
    }

    fn key() -> ImportedKey {
        google_authenticator("JBSWY3DPEHPK3PXP\n").unwrap()
    }

    #[test]
    fn secrets_are_base32_of_80_to_512_bits() {
        let with = |s: &str| ImportedKey {
            secret: Secret::new(s),
            ..key()
        };
        assert_eq!(check_imported(&with("JBSWY3DPEHPK3PXP")), Ok(()));
        assert_eq!(
            check_imported(&with("jbsw y3dp ehpk 3pxp")),
            Ok(()),
            "as apps show it"
        );
        assert_eq!(
            check_imported(&with("JBSWY3DP")),
            Err(InvalidKey::SecretLength(40))
        );
        assert_eq!(
            check_imported(&with("not base32!")),
            Err(InvalidKey::NotBase32)
        );
        assert_eq!(check_imported(&with("")), Err(InvalidKey::SecretLength(0)));
        let long = "A".repeat(104);
        assert_eq!(check_imported(&with(&long[..103])), Ok(()), "512 bits");
        assert!(matches!(
            check_imported(&with(&"A".repeat(120))),
            Err(InvalidKey::SecretLength(_))
        ));
        assert!(matches!(
            check_imported(&with(&"A".repeat(100_000))),
            Err(InvalidKey::SecretLength(_))
        ));
    }

    #[test]
    fn a_hand_made_key_is_checked_field_by_field() {
        let refused = |k: ImportedKey| check_imported(&k).unwrap_err().to_string();
        assert!(refused(ImportedKey {
            algorithm: "MD5".into(),
            ..key()
        })
        .contains("\"MD5\" is not one of SHA1"));
        assert_eq!(
            check_imported(&ImportedKey { digits: 9, ..key() }),
            Err(InvalidKey::Digits(9))
        );
        assert_eq!(
            check_imported(&ImportedKey { digits: 5, ..key() }),
            Err(InvalidKey::Digits(5))
        );
        assert_eq!(
            check_imported(&ImportedKey {
                window: Some(100),
                hotp_counter: Some(MAX_HOTP_COUNTER),
                period: MAX_PERIOD,
                ..key()
            }),
            Ok(()),
            "the largest accepted values"
        );
        assert_eq!(
            check_imported(&ImportedKey {
                window: Some(101),
                ..key()
            }),
            Err(InvalidKey::Window(101))
        );
        let long_algorithm = refused(ImportedKey {
            algorithm: "X".repeat(10_000),
            ..key()
        });
        assert!(long_algorithm.len() < 100, "{long_algorithm}");
    }

    #[test]
    fn scratch_codes_are_bounded_in_number_and_shape() {
        let codes = |n: usize, code: &str| ImportedKey {
            recovery_codes: vec![Secret::new(code); n],
            ..key()
        };
        assert_eq!(check_imported(&codes(10, "12345678")), Ok(()));
        assert_eq!(check_imported(&codes(1, "ABCDE-FGHIJ")), Ok(()));
        assert_eq!(
            check_imported(&codes(11, "12345678")),
            Err(InvalidKey::TooManyCodes(11))
        );
        assert_eq!(
            check_imported(&codes(1, "12345")),
            Err(InvalidKey::RecoveryCode(1))
        );
        assert_eq!(
            check_imported(&codes(1, &"1".repeat(33))),
            Err(InvalidKey::RecoveryCode(1))
        );
        assert_eq!(
            check_imported(&codes(1, "1234\n5678")),
            Err(InvalidKey::RecoveryCode(1))
        );
    }
}
