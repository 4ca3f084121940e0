//! Phone numbers as directories hold them ("+1 (202) 555-0123", "0044 20 7946 0958") turned
//! into E.164 ("+12025550123"), the only form otpd sends codes to. What cannot be made E.164
//! without guessing (a national number without its country code) is refused.

use crate::formats::valid_number;

/// The E.164 form of `number`: spaces, dashes, dots and parentheses dropped, a leading `00`
/// read as `+`; `None` unless the result is `+` and 8 to 15 digits.
pub fn normalise(number: &str) -> Option<String> {
    let kept: String = number
        .trim()
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '.' | '(' | ')'))
        .collect();
    let e164 = match kept.strip_prefix("00") {
        Some(rest) => format!("+{rest}"),
        None => kept,
    };
    valid_number(&e164).then_some(e164)
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn the_usual_spellings_become_e164() {
        for (typed, e164) in [
            ("+12025550123", "+12025550123"),
            ("+1 (202) 555-0123", "+12025550123"),
            ("+44 20.7946.0958", "+442079460958"),
            ("0044 20 7946 0958", "+442079460958"),
            (" +49\u{a0}30 1234567 ", "+49301234567"),
        ] {
            assert_eq!(normalise(typed).as_deref(), Some(e164), "{typed:?}");
        }
    }

    #[test]
    fn what_is_not_e164_is_refused() {
        for typed in [
            "(202) 555-0123",
            "02079460958",
            "+0123456789",
            "+1234567",
            "+1234567890123456",
            "+1 202 555 O123",
            "tel:+12025550123",
            "",
        ] {
            assert_eq!(normalise(typed), None, "{typed:?}");
        }
    }
}
