//! Message templates: `{{code}}`, `{{user}}`, `{{host}}`, `{{validity}}` and `{{id}}` are
//! replaced. The configuration refuses any other placeholder ([`check`]), so a typo is an error
//! at start-up rather than a mail that shows `{{cod}}` and no code.

use super::CodeMessage;
use std::time::Duration;

/// The mail that confirms turning a second factor off.
pub const DISABLE_SUBJECT: &str = "Confirm turning off your second factor on {{host}}";
pub const DISABLE_BODY: &str =
    "Hello {{user}},\n\nsomeone asked to turn off the second factor of your \
account on {{host}}. If it was you, run\n\n    otpctl disable --token {{code}}\n\n\
The token is valid for {{validity}}. If it was not you, do nothing and tell your \
administrator.\n\n(request {{id}})\n";

/// The mail that tells the owner of an account that one of its factors changed.
pub const CHANGE_SUBJECT: &str = "A second factor of your account on {{host}} changed";
pub const CHANGE_BODY: &str = "Hello {{user}},\n\nyour account on {{host}} changed: \
{{change}}.\n\nIf it was you, there is nothing to do. If it was not, tell your administrator \
at once: someone who has your password and a logged-in session made the change.\n";

pub use crate::formats::{
    check, TemplateError, GATEWAY_PLACEHOLDERS, MAX_TEMPLATE, MESSAGE_PLACEHOLDERS,
};

/// Fill `template` in one pass, so a value holding `{{code}}` (a user name, say) is never
/// expanded itself; an unknown placeholder stays as written.
pub fn render(template: &str, msg: &CodeMessage) -> zeroize::Zeroizing<String> {
    let validity = validity(msg.validity);
    let mut out = zeroize::Zeroizing::new(String::with_capacity(template.len() + 64));
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            rest = &rest[open..];
            break;
        };
        match &after[..close] {
            "code" => out.push_str(msg.code.expose()),
            // Only the fixed change notice names it; configured templates may not (`check`).
            "change" => out.push_str(msg.change),
            "user" => out.push_str(msg.user),
            "host" => out.push_str(msg.host),
            "validity" => out.push_str(&validity),
            "id" => out.push_str(msg.id),
            _ => out.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

/// "5 minutes", "90 seconds", "1 hour".
pub fn validity(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = if s.is_multiple_of(3600) && s >= 3600 {
        (s / 3600, "hour")
    } else if s.is_multiple_of(60) && s >= 60 {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use otp_proto::Secret;

    #[test]
    fn every_placeholder_is_filled() {
        let code = Secret::new("123456");
        let msg = CodeMessage {
            kind: crate::channel::MessageKind::Code,
            user: "alice",
            code: &code,
            id: "a1b2c3",
            validity: Duration::from_secs(300),
            host: "web1",
            change: "",
        };
        let out = render(
            "{{user}}@{{host}}: {{code}} ({{validity}}, {{id}}) {{other}}",
            &msg,
        );
        assert_eq!(
            out.as_str(),
            "alice@web1: 123456 (5 minutes, a1b2c3) {{other}}"
        );
    }

    #[test]
    fn a_value_holding_a_placeholder_is_not_expanded() {
        let code = Secret::new("123456");
        let msg = CodeMessage {
            kind: crate::channel::MessageKind::Code,
            user: "{{code}}",
            code: &code,
            id: "{{user}}",
            validity: Duration::from_secs(60),
            host: "h",
            change: "",
        };
        let out = render("{{user}} {{id}} {{ open", &msg);
        assert_eq!(out.as_str(), "{{code}} {{user}} {{ open");
    }

    #[test]
    fn validity_reads_naturally() {
        assert_eq!(validity(Duration::from_secs(60)), "1 minute");
        assert_eq!(validity(Duration::from_secs(90)), "90 seconds");
        assert_eq!(validity(Duration::from_secs(7200)), "2 hours");
    }

    #[test]
    fn only_known_placeholders_pass_the_check() {
        let check_message = |t: &str| check(t, MESSAGE_PLACEHOLDERS, &[]);
        assert_eq!(
            check_message("Code {{code}} for {{user}}@{{host}} ({{validity}}, {{id}})"),
            Ok(())
        );
        assert_eq!(
            check_message("no placeholder, { braces } are fine }}"),
            Ok(())
        );
        assert!(
            matches!(check_message("{{nope}}"), Err(TemplateError::Unknown(n, _)) if n == "nope")
        );
        assert!(check_message("{{nope}}")
            .unwrap_err()
            .to_string()
            .contains("{{nope}}"));
        assert_eq!(
            check_message("code {{code"),
            Err(TemplateError::Unclosed(5))
        );
        assert!(matches!(
            check_message("{{ code }}"),
            Err(TemplateError::Unknown(..))
        ));
        assert!(matches!(
            check_message(&"x".repeat(MAX_TEMPLATE + 1)),
            Err(TemplateError::TooLong(_))
        ));
        assert_eq!(
            check("to={{mobile}}", GATEWAY_PLACEHOLDERS, &["mobile", "body"]),
            Err(TemplateError::Missing("body"))
        );
        assert!(matches!(
            check("{{code}}", GATEWAY_PLACEHOLDERS, &[]),
            Err(TemplateError::Unknown(..))
        ));
    }
}
