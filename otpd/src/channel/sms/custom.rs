//! A custom HTTP gateway: the admin's template becomes the body, with `{{mobile}}` and
//! `{{body}}` JSON-escaped (json) or form-encoded (form). Any 2xx is success.

use super::{config_error, SmsConfigError};
use crate::channel::DeliveryError;
use crate::config::{BodyFormat, CustomSmsConfig, HttpMethod};

pub struct Custom {
    url: String,
    method: reqwest::Method,
    format: BodyFormat,
    template: String,
    headers: Vec<(String, String)>,
}

impl Custom {
    pub fn new(cfg: &CustomSmsConfig) -> Result<Custom, SmsConfigError> {
        let headers = cfg
            .headers
            .pairs()
            .map_err(|e| config_error("custom.headers", e))?;
        reqwest::Url::parse(&cfg.url).map_err(|e| config_error("custom.url", e.to_string()))?;
        Ok(Custom {
            url: cfg.url.clone(),
            method: match cfg.method {
                HttpMethod::POST => reqwest::Method::POST,
                HttpMethod::PUT => reqwest::Method::PUT,
            },
            format: cfg.content_type,
            template: cfg.template.clone(),
            headers,
        })
    }

    pub fn request(
        &self,
        client: &reqwest::Client,
        to: &str,
        text: &str,
    ) -> reqwest::RequestBuilder {
        let content_type = match self.format {
            BodyFormat::Json => "application/json",
            BodyFormat::Form => "application/x-www-form-urlencoded",
        };
        let body = body(self.format, &self.template, to, text);
        let mut request = client
            .request(self.method.clone(), &self.url)
            .header(reqwest::header::CONTENT_TYPE, content_type);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        request.body(body)
    }
}

pub fn check(status: reqwest::StatusCode, reply: &str) -> Result<(), DeliveryError> {
    if status.is_success() {
        return Ok(());
    }
    let excerpt: String = reply.chars().take(200).collect();
    Err(DeliveryError::Failed(format!(
        "gateway HTTP {status}: {excerpt}"
    )))
}

/// The request body: the admin's template with `{{mobile}}` and `{{body}}` escaped for `format`.
pub fn body(format: BodyFormat, template: &str, to: &str, text: &str) -> String {
    match format {
        BodyFormat::Json => fill(template, to, text, json_escape),
        BodyFormat::Form => fill(template, to, text, form_encode),
    }
}

fn fill(template: &str, to: &str, text: &str, escape: fn(&str) -> String) -> String {
    template
        .replace("{{mobile}}", &escape(to))
        .replace("{{body}}", &escape(text))
}

/// The inside of a JSON string literal.
fn json_escape(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_owned()).to_string();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or_default()
        .to_owned()
}

/// application/x-www-form-urlencoded.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_templates_escape_and_form_templates_encode() {
        let text = "Code \"12\" & more\nline";
        let json = fill(
            r#"{"to":"{{mobile}}","text":"{{body}}"}"#,
            "+15550001",
            text,
            json_escape,
        );
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["text"], text);
        assert_eq!(parsed["to"], "+15550001");
        let form = fill(
            "to={{mobile}}&text={{body}}",
            "+15550001",
            "a b&c=d",
            form_encode,
        );
        assert_eq!(form, "to=%2B15550001&text=a+b%26c%3Dd");
    }
}
