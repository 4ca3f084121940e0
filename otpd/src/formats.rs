//! What valid input looks like: message templates, email addresses, phone numbers, and the
//! bounds on keys. The configuration and imports check them when they are read, the channels,
//! commands and verification when they are used; all import this one place (the configuration
//! is below the channels and the policy, so it may not import them).

use lettre::Address;

/// The largest HOTP window: imports above it are refused, and a stored record that holds more
/// (saved before the bound existed) is checked with this, so one check costs at most 101 HMACs.
pub const MAX_WINDOW: u32 = 100;

/// The largest clock skew, in steps either side (21 HMACs per check); the configuration refuses
/// more, and verification clamps to it whatever it is given.
pub const MAX_SKEW: u8 = 10;

/// Seconds per step: 30 everywhere in practice; RFC 6238 allows others, up to this.
pub const MAX_PERIOD: u64 = 300;

/// What a code message (email subject and body, SMS text) may name.
pub const MESSAGE_PLACEHOLDERS: &[&str] = &["code", "user", "host", "validity", "id"];
/// What a custom SMS gateway's request body may name (both are required).
pub const GATEWAY_PLACEHOLDERS: &[&str] = &["mobile", "body"];
/// Longest template accepted: far more than any message, little memory per send.
pub const MAX_TEMPLATE: usize = 16 * 1024;

/// Why a template is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder {{{{{0}}}}}; known: {1}")]
    Unknown(String, String),
    #[error("\"{{{{\" at byte {0} is not closed by \"}}}}\"")]
    Unclosed(usize),
    #[error("must contain {{{{{0}}}}}")]
    Missing(&'static str),
    #[error("is {0} bytes; at most {MAX_TEMPLATE} are accepted")]
    TooLong(usize),
}

/// Refuse a template that names a placeholder outside `known`, leaves a `{{` open, lacks one
/// of `required`, or is longer than [`MAX_TEMPLATE`].
pub fn check(
    template: &str,
    known: &[&str],
    required: &[&'static str],
) -> Result<(), TemplateError> {
    if template.len() > MAX_TEMPLATE {
        return Err(TemplateError::TooLong(template.len()));
    }
    let mut rest = template;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(TemplateError::Unclosed(offset + open));
        };
        let name = &after[..close];
        if !known.contains(&name) {
            let shown: String = name.chars().take(32).collect();
            return Err(TemplateError::Unknown(shown, known.join(", ")));
        }
        offset += open + 2 + close + 2;
        rest = &after[close + 2..];
    }
    match required
        .iter()
        .find(|r| !template.contains(&format!("{{{{{r}}}}}")))
    {
        Some(missing) => Err(TemplateError::Missing(missing)),
        None => Ok(()),
    }
}

/// Is this something we can send mail to? Used before accepting an enrollment.
pub fn valid_address(address: &str) -> bool {
    address.parse::<Address>().is_ok()
}

/// E.164: a plus, a country code that does not start with 0, at most 15 digits in all.
pub fn valid_number(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}
