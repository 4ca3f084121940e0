//! Templates: the check the configuration applies, rendering a code message (SMS body, email
//! subject and body), and a custom gateway's request body in JSON and form encodings. The input
//! is split on 0xFF bytes into template, user, host, id and message text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otp_proto::Secret;
use otpd::channel::sms::custom;
use otpd::channel::template::{self, GATEWAY_PLACEHOLDERS, MESSAGE_PLACEHOLDERS};
use otpd::channel::{CodeMessage, MessageKind};
use otpd::config::BodyFormat;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0xFF).map(String::from_utf8_lossy);
    let mut next = || parts.next().unwrap_or_default().into_owned();
    let (tpl, user, host, id, text) = (next(), next(), next(), next(), next());
    let _ = template::check(&tpl, MESSAGE_PLACEHOLDERS, &["code"]);
    let _ = template::check(&tpl, GATEWAY_PLACEHOLDERS, &["mobile", "body"]);
    let code = Secret::new("123456");
    let seconds = data.first().copied().unwrap_or(0) as u64 * 97;
    let msg = CodeMessage {
        kind: MessageKind::Code,
        user: &user,
        code: &code,
        id: &id,
        validity: Duration::from_secs(seconds),
        host: &host,
        change: "",
    };
    let rendered = template::render(&tpl, &msg);
    if !tpl.contains("{{") {
        assert_eq!(rendered.as_str(), tpl);
    }
    for format in [BodyFormat::Json, BodyFormat::Form] {
        let _ = custom::body(format, &tpl, "+12025550123", &text);
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(&custom::body(
        BodyFormat::Json,
        "\"{{body}}\"",
        "+1",
        &text,
    )) {
        assert_eq!(value.as_str(), Some(text.as_str()));
    } else {
        panic!("a JSON-escaped body is not a JSON string");
    }
});
