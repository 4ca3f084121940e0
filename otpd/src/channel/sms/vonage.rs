//! Vonage SMS API: `POST {base_url}/sms/json` with form fields `api_key`, `api_secret`, `from`,
//! `to` (E.164 without the plus) and `text`. Success when `messages[0].status` is "0";
//! otherwise its `error-text` says why.

use super::{read_secret, SmsConfigError};
use crate::channel::DeliveryError;
use crate::config::VonageConfig;
use otp_proto::Secret;

pub struct Vonage {
    url: String,
    key: String,
    secret: Secret,
    from: String,
}

impl Vonage {
    pub fn new(cfg: &VonageConfig) -> Result<Vonage, SmsConfigError> {
        Ok(Vonage {
            url: format!("{}/sms/json", cfg.base_url.trim_end_matches('/')),
            key: cfg.api_key.clone(),
            secret: read_secret("vonage.api_secret_file", &cfg.api_secret_file)?,
            from: cfg.from.clone(),
        })
    }

    pub fn request(
        &self,
        client: &reqwest::Client,
        to: &str,
        text: &str,
    ) -> reqwest::RequestBuilder {
        client.post(&self.url).form(&[
            ("api_key", self.key.as_str()),
            ("api_secret", self.secret.expose()),
            ("from", &self.from),
            ("to", to.trim_start_matches('+')),
            ("text", text),
        ])
    }
}

pub fn check(status: reqwest::StatusCode, reply: &str) -> Result<(), DeliveryError> {
    let json: serde_json::Value = serde_json::from_str(reply).unwrap_or_default();
    let message = &json["messages"][0];
    if status.is_success() && message["status"] == "0" {
        return Ok(());
    }
    Err(DeliveryError::Failed(format!(
        "Vonage HTTP {status}: status {}: {}",
        message["status"],
        message["error-text"].as_str().unwrap_or("no error-text")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn status_zero_is_success_and_anything_else_names_the_error_text() {
        let ok = r#"{"message-count":"1","messages":[{"to":"447700900000","status":"0"}]}"#;
        assert!(check(StatusCode::OK, ok).is_ok());
        let bad =
            r#"{"message-count":"1","messages":[{"status":"4","error-text":"Bad Credentials"}]}"#;
        let err = check(StatusCode::OK, bad).unwrap_err().to_string();
        assert!(
            err.contains("\"4\"") && err.contains("Bad Credentials"),
            "{err}"
        );
    }
}
