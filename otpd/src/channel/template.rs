//! Message templates: `{{code}}`, `{{user}}`, `{{host}}`, `{{validity}}` and `{{id}}` are
//! replaced; anything else is left as written.

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

pub fn render(template: &str, msg: &CodeMessage) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(
        template
            .replace("{{change}}", msg.change)
            .replace("{{user}}", msg.user)
            .replace("{{host}}", msg.host)
            .replace("{{validity}}", &validity(msg.validity))
            .replace("{{id}}", msg.id)
            .replace("{{code}}", msg.code.expose()),
    )
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
    fn validity_reads_naturally() {
        assert_eq!(validity(Duration::from_secs(60)), "1 minute");
        assert_eq!(validity(Duration::from_secs(90)), "90 seconds");
        assert_eq!(validity(Duration::from_secs(7200)), "2 hours");
    }
}
