//! `forward_pass`: clients that can ask only once (OpenVPN's auth-user-pass, RADIUS front ends,
//! some IMAP and web SSO gateways) send the password and the code as one string. Where the code
//! ends is policy, so it is decided here and not in the module: a trailing recovery code with
//! its dash (`XXXXX-XXXXX`), else as many trailing characters as the user's method's codes have.
//! The two shapes cannot be confused: a code of digits or of the sent-code alphabet has no dash.
//!
//! The password part is only ever handed back, for the next module (pam_unix) to check; otpd
//! keeps it in a `Secret` (zeroized when dropped), and never logs or compares it.

use super::accounts::Accounts;
use super::codes::ALPHANUMERIC;
use crate::store::StoreError;
use otp_proto::Secret;

/// The typed string cut in two.
#[derive(Debug, PartialEq, Eq)]
pub struct Split {
    /// Everything before the code, for PAM_AUTHTOK.
    pub password: Secret,
    /// The trailing code, to judge.
    pub code: Secret,
}

/// Characters of a recovery code as otpd prints it: five, a dash, five.
const RECOVERY_SHAPE: usize = 11;

/// Cut `typed` into password and code; `code_length` is the length of the user's method's
/// codes. `None` when the string is shorter than a code.
pub fn split(typed: &Secret, code_length: usize) -> Option<Split> {
    let typed = typed.expose();
    let length = if recovery_code_at_end(typed) {
        RECOVERY_SHAPE
    } else {
        code_length
    };
    if length == 0 {
        return None;
    }
    // The byte offset where the last `length` characters begin.
    let (at, _) = typed.char_indices().rev().nth(length - 1)?;
    let (password, code) = typed.split_at(at);
    Some(Split {
        password: Secret::new(password),
        code: Secret::new(code),
    })
}

/// Does `typed` end in `XXXXX-XXXXX` from the recovery codes' alphabet (any case)?
fn recovery_code_at_end(typed: &str) -> bool {
    let tail: Vec<char> = typed.chars().rev().take(RECOVERY_SHAPE).collect();
    tail.len() == RECOVERY_SHAPE
        && tail.iter().enumerate().all(|(i, c)| match i {
            5 => *c == '-',
            _ => c.is_ascii() && ALPHANUMERIC.contains(&(c.to_ascii_uppercase() as u8)),
        })
}

/// The length of the codes of the user's authenticator app or token (`None`: no active key).
pub fn app_code_length(accounts: &Accounts, user: &str) -> Result<Option<usize>, StoreError> {
    Ok(accounts.keys.digits(user)?.map(usize::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(typed: &str, length: usize) -> Option<(String, String)> {
        let s = split(&Secret::new(typed), length)?;
        Some((s.password.expose().to_owned(), s.code.expose().to_owned()))
    }

    #[test]
    fn the_code_is_the_tail_of_the_methods_length() {
        let both = |p: &str, c: &str| Some((p.to_owned(), c.to_owned()));
        assert_eq!(cut("hunter2123456", 6), both("hunter2", "123456"));
        assert_eq!(cut("hunter212345678", 8), both("hunter2", "12345678"));
        assert_eq!(cut("123456", 6), both("", "123456"), "a code alone");
        assert_eq!(cut("12345", 6), None, "shorter than a code");
        assert_eq!(cut("", 6), None);
        // Multi-byte characters in the password are kept whole.
        assert_eq!(cut("pässwörd€654321", 6), both("pässwörd€", "654321"));
        assert_eq!(cut("pw€€€€€€", 6), both("pw", "€€€€€€"));
    }

    #[test]
    fn a_trailing_recovery_code_with_its_dash_is_taken_whole() {
        let both = |p: &str, c: &str| Some((p.to_owned(), c.to_owned()));
        assert_eq!(cut("hunter2ABCDE-FGHJK", 6), both("hunter2", "ABCDE-FGHJK"));
        assert_eq!(cut("hunter2abcde-fghjk", 6), both("hunter2", "abcde-fghjk"));
        assert_eq!(cut("ABCDE-FGHJK", 6), both("", "ABCDE-FGHJK"));
        // Not the shape (a look-alike 0, no dash, dash elsewhere): the method's length.
        assert_eq!(cut("pwABCD0-FGHJK", 6), both("pwABCD0", "-FGHJK"));
        assert_eq!(cut("pw-123456", 6), both("pw-", "123456"));
    }
}
