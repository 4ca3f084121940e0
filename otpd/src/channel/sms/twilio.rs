//! Twilio Programmable Messaging: `POST {base_url}/2010-04-01/Accounts/{sid}/Messages.json`,
//! form fields `To`, `From`, `Body`, HTTP Basic auth `sid:token`. Success is 201 with a `sid`;
//! an error reply carries `code` and `message`.

use super::{read_secret, SmsConfigError};
use crate::channel::DeliveryError;
use crate::config::TwilioConfig;
use otp_proto::Secret;

pub struct Twilio {
    url: String,
    sid: String,
    token: Secret,
    from: String,
}

impl Twilio {
    pub fn new(cfg: &TwilioConfig) -> Result<Twilio, SmsConfigError> {
        Ok(Twilio {
            url: format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                cfg.base_url.trim_end_matches('/'),
                cfg.account_sid
            ),
            sid: cfg.account_sid.clone(),
            token: read_secret("twilio.auth_token_file", &cfg.auth_token_file)?,
            from: cfg.from.clone(),
        })
    }

    pub fn request(
        &self,
        client: &reqwest::Client,
        to: &str,
        text: &str,
    ) -> reqwest::RequestBuilder {
        client
            .post(&self.url)
            .basic_auth(&self.sid, Some(self.token.expose()))
            .form(&[("To", to), ("From", &self.from), ("Body", text)])
    }
}

pub fn check(status: reqwest::StatusCode, reply: &str) -> Result<(), DeliveryError> {
    let json: serde_json::Value = serde_json::from_str(reply).unwrap_or_default();
    if status == reqwest::StatusCode::CREATED && json["sid"].is_string() {
        return Ok(());
    }
    Err(DeliveryError::Failed(format!(
        "Twilio HTTP {status}: error {}: {}",
        json["code"],
        json["message"].as_str().unwrap_or("no message")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn a_201_with_a_sid_is_success_and_an_error_names_code_and_message() {
        assert!(check(StatusCode::CREATED, r#"{"sid":"SM123","status":"queued"}"#).is_ok());
        let err = check(
            StatusCode::BAD_REQUEST,
            r#"{"code":21211,"message":"The 'To' number is not a valid phone number.","status":400}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("21211") && err.contains("not a valid phone number"),
            "{err}"
        );
        assert!(check(StatusCode::CREATED, "not json").is_err());
    }
}
