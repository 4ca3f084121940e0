//! Reading other tools' OATH setups so users keep their authenticator app: a
//! `~/.google_authenticator` file and a pam_oath usersfile. Parsing only; otpd stores the result.

use otp_proto::{ImportedKey, Secret};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("line {0}: {1}")]
    Line(usize, String),
    #[error("the file holds no secret")]
    Empty,
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
                Some("WINDOW_SIZE") => key.window = Some(number(1)? as u32),
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
}
