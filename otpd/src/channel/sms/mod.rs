//! SMS delivery over HTTPS (reqwest, rustls with ring): Twilio, Vonage, or a custom gateway
//! described by a template. Each provider file knows only its request and its reply.

pub mod custom;
mod twilio;
mod vonage;

use super::{secret_file, template, Channel, CodeMessage, Delivery, DeliveryError};
use crate::config::{SmsConfig, SmsProvider};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A provider's request, built; and how to read its reply.
enum Provider {
    Twilio(twilio::Twilio),
    Vonage(vonage::Vonage),
    Custom(custom::Custom),
}

pub struct SmsChannel {
    client: reqwest::Client,
    provider: Provider,
    body: String,
    timeout: Duration,
    /// Sends in the last hour, all users together, against `max_total_per_hour`.
    recent: Mutex<Vec<Instant>>,
    max_total_per_hour: u32,
}

/// A configuration the channel cannot start with; `check-config` reports it too.
#[derive(Debug, thiserror::Error)]
#[error("[sms] {key}: {message}")]
pub struct SmsConfigError {
    pub key: &'static str,
    pub message: String,
}

pub(crate) fn config_error(key: &'static str, message: impl Into<String>) -> SmsConfigError {
    SmsConfigError {
        key,
        message: message.into(),
    }
}

impl SmsChannel {
    pub fn new(cfg: &SmsConfig) -> Result<SmsChannel, SmsConfigError> {
        // reqwest is built without a default crypto provider; ring is ours everywhere.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (provider, gateway_ca) = match cfg.provider {
            SmsProvider::Twilio => {
                let c = cfg.twilio.as_ref().ok_or_else(|| missing("twilio"))?;
                (Provider::Twilio(twilio::Twilio::new(c)?), None)
            }
            SmsProvider::Vonage => {
                let c = cfg.vonage.as_ref().ok_or_else(|| missing("vonage"))?;
                (Provider::Vonage(vonage::Vonage::new(c)?), None)
            }
            SmsProvider::Custom => {
                let c = cfg.custom.as_ref().ok_or_else(|| missing("custom"))?;
                (
                    Provider::Custom(custom::Custom::new(c)?),
                    c.ca_file.as_deref(),
                )
            }
        };
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none());
        for ca in [cfg.ca_file.as_deref(), gateway_ca].into_iter().flatten() {
            builder = builder.tls_certs_merge([certificate(ca)?]);
        }
        let client = builder
            .build()
            .map_err(|e| config_error("ca_file", e.to_string()))?;
        Ok(SmsChannel {
            client,
            provider,
            body: cfg.body.clone(),
            timeout: cfg.timeout,
            recent: Mutex::new(Vec::new()),
            max_total_per_hour: cfg.max_total_per_hour,
        })
    }

    /// Count a send against the hourly ceiling for all users; false when it is reached.
    fn within_ceiling(&self) -> bool {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        recent.retain(|t| now.duration_since(*t) < Duration::from_secs(3600));
        if recent.len() as u32 >= self.max_total_per_hour {
            return false;
        }
        recent.push(now);
        true
    }

    async fn send(&self, to: &str, text: &str) -> Result<(), DeliveryError> {
        let request = match &self.provider {
            Provider::Twilio(p) => p.request(&self.client, to, text),
            Provider::Vonage(p) => p.request(&self.client, to, text),
            Provider::Custom(p) => p.request(&self.client, to, text),
        };
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                DeliveryError::Timeout(self.timeout)
            } else {
                DeliveryError::Failed(format!("HTTP: {}", crate::logging::error_chain(&e)))
            }
        })?;
        let status = response.status();
        let reply = response
            .text()
            .await
            .map_err(|e| DeliveryError::Failed(format!("HTTP {status}: unreadable reply: {e}")))?;
        match &self.provider {
            Provider::Twilio(_) => twilio::check(status, &reply),
            Provider::Vonage(_) => vonage::check(status, &reply),
            Provider::Custom(_) => custom::check(status, &reply),
        }
    }
}

impl Channel for SmsChannel {
    fn deliver<'a>(&'a self, to: &'a str, msg: &'a CodeMessage<'a>) -> Delivery<'a> {
        Box::pin(async move {
            if !self.within_ceiling() {
                return Err(DeliveryError::Failed(format!(
                    "max_total_per_hour ({}) reached; not sending",
                    self.max_total_per_hour
                )));
            }
            let text = template::render(&self.body, msg);
            self.send(to, &text).await
        })
    }
}

fn missing(section: &'static str) -> SmsConfigError {
    config_error(
        "provider",
        format!("{section} needs an [sms.{section}] section"),
    )
}

fn certificate(path: &Path) -> Result<reqwest::Certificate, SmsConfigError> {
    let pem = secret_file::read_ca(path).map_err(|e| config_error("ca_file", e.to_string()))?;
    reqwest::Certificate::from_pem(&pem)
        .map_err(|e| config_error("ca_file", format!("{}: {e}", path.display())))
}

/// A provider's secret (`secret_file`'s rules), an error naming `key`.
pub(crate) fn read_secret(
    key: &'static str,
    path: &Path,
) -> Result<otp_proto::Secret, SmsConfigError> {
    secret_file::read_secret(path).map_err(|e| config_error(key, e.to_string()))
}

pub use crate::formats::valid_number;

/// `+1******4567`: the first digit and the last four.
pub fn mask(number: &str) -> String {
    let digits: Vec<char> = number.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.len() < 6 {
        return "+***".into();
    }
    let last: String = digits[digits.len() - 4..].iter().collect();
    format!("+{}{}{last}", digits[0], "*".repeat(digits.len() - 5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_masked_to_the_first_and_last_four_digits() {
        assert_eq!(mask("+12025554567"), "+1******4567");
        assert_eq!(mask("+447700900123"), "+4*******0123");
        assert_eq!(mask("+1"), "+***");
    }

    #[test]
    fn only_e164_numbers_are_valid() {
        assert!(valid_number("+12025554567"));
        assert!(valid_number("+447700900123"));
        for bad in [
            "12025554567",
            "+0123456789",
            "+1 202 555",
            "+1202555456712345",
            "+1234",
            "",
        ] {
            assert!(!valid_number(bad), "{bad}");
        }
    }
}
