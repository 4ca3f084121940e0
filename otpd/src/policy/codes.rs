//! The codes otpd makes up and reads back, shared by sent codes (`challenge`) and recovery codes
//! (`recovery`): random bytes from the OS, new codes uniform over an alphabet without look-alikes,
//! and the one spelling typed codes are compared in.

use crate::config::Charset;
use otp_proto::Secret;

/// Letters and digits that cannot be mistaken for each other (no 0/O, 1/I/L).
pub const ALPHANUMERIC: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
const DIGITS: &[u8] = b"0123456789";

/// `N` bytes from the OS random number generator.
pub fn random<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS RNG failing is not recoverable; getrandom only fails on broken systems.
    if getrandom::fill(&mut buf).is_err() {
        log::error!("the OS random number generator failed");
        std::process::abort();
    }
    buf
}

/// Uniform over the alphabet: bytes that would bias the modulo are drawn again.
pub fn new_code(length: u8, charset: Charset) -> Secret {
    let alphabet = match charset {
        Charset::Numeric => DIGITS,
        Charset::Alphanumeric => ALPHANUMERIC,
    };
    let limit = 256 - (256 % alphabet.len());
    let mut code = String::with_capacity(length as usize);
    while code.len() < length as usize {
        for b in random::<32>() {
            if (b as usize) < limit && code.len() < length as usize {
                code.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    Secret::from(code)
}

/// Codes are compared without spaces or dashes and without case ("abcde-fghij", "ABCDE FGHIJ"
/// and "ABCDEFGHIJ" are one code); recovery codes too.
pub fn normalize(code: &str) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(
        code.chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_codes_are_uniform_enough() {
        let mut counts = [0u32; 10];
        for _ in 0..2000 {
            for b in new_code(12, Charset::Numeric).expose().bytes() {
                counts[(b - b'0') as usize] += 1;
            }
        }
        // 24000 digits: each ~2400; a biased generator would drift far outside this band.
        assert!(
            counts.iter().all(|&n| (2100..2700).contains(&n)),
            "{counts:?}"
        );
    }

    #[test]
    fn alphanumeric_codes_avoid_look_alikes() {
        for _ in 0..200 {
            let code = new_code(10, Charset::Alphanumeric);
            assert_eq!(code.expose().len(), 10);
            assert!(code.expose().bytes().all(|b| ALPHANUMERIC.contains(&b)));
            assert!(!code.expose().contains(['0', 'O', '1', 'I', 'L']));
        }
    }

    #[test]
    fn typed_codes_compare_without_case_spaces_or_dashes() {
        for typed in ["abcde-fghij", "ABCDE FGHIJ", " ABCDEFGHIJ\t"] {
            assert_eq!(normalize(typed).as_str(), "ABCDEFGHIJ", "{typed:?}");
        }
    }
}
