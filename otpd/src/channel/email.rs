//! Email delivery over SMTP (lettre on tokio, rustls), with plain, STARTTLS or implicit TLS,
//! optional AUTH, extra CA certificates, and a hard timeout.

use super::{secret_file, template, Channel, CodeMessage, Delivery, DeliveryError, MessageKind};
use crate::config::{EmailConfig, TlsMode};
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

pub struct EmailChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    subject: String,
    body: String,
    timeout: std::time::Duration,
}

/// A configuration the channel cannot start with; `check-config` reports it too.
#[derive(Debug, thiserror::Error)]
#[error("[email] {key}: {message}")]
pub struct EmailConfigError {
    pub key: &'static str,
    pub message: String,
}

impl EmailChannel {
    pub fn new(cfg: &EmailConfig) -> Result<EmailChannel, EmailConfigError> {
        let err = |key, message: String| EmailConfigError { key, message };
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| err("from", format!("{:?} is not an address: {e}", cfg.from)))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host)
            .port(cfg.port.unwrap_or(match cfg.tls {
                TlsMode::None => 25,
                TlsMode::Starttls => 587,
                TlsMode::Tls => 465,
            }))
            .timeout(Some(cfg.timeout));
        if cfg.tls != TlsMode::None {
            let mut params = TlsParameters::builder(cfg.host.clone());
            if let Some(ca) = &cfg.ca_file {
                let pem = secret_file::read_ca(ca).map_err(|e| err("ca_file", e.to_string()))?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| err("ca_file", format!("{}: {e}", ca.display())))?;
                params = params.add_root_certificate(cert);
            }
            let params = params.build().map_err(|e| err("tls", e.to_string()))?;
            builder = builder.tls(match cfg.tls {
                TlsMode::Tls => Tls::Wrapper(params),
                _ => Tls::Required(params),
            });
        }
        if cfg.username.is_some() && cfg.tls == TlsMode::None {
            log::warn!("[email] sends the SMTP password without TLS (tls = \"none\")");
        }
        if let Some(user) = &cfg.username {
            // The configuration refuses a username without a password_file.
            let Some(file) = &cfg.password_file else {
                return Err(err("password_file", "is required with username".into()));
            };
            let password =
                secret_file::read_secret(file).map_err(|e| err("password_file", e.to_string()))?;
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(EmailChannel {
            transport: builder.build(),
            from,
            subject: cfg.subject.clone(),
            body: cfg.body.clone(),
            timeout: cfg.timeout,
        })
    }

    fn message(&self, to: &str, msg: &CodeMessage) -> Result<Message, DeliveryError> {
        let to: Address = to
            .parse()
            .map_err(|e| DeliveryError::Failed(format!("bad recipient: {e}")))?;
        let (subject, body) = match msg.kind {
            MessageKind::Code => (self.subject.as_str(), self.body.as_str()),
            MessageKind::DisableToken => (template::DISABLE_SUBJECT, template::DISABLE_BODY),
            MessageKind::ChangeNotice => (template::CHANGE_SUBJECT, template::CHANGE_BODY),
        };
        let body = template::render(body, msg);
        Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(template::render(subject, msg).as_str())
            .date_now()
            .message_id(None)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_string())
            .map_err(|e| DeliveryError::Failed(format!("cannot build the message: {e}")))
    }
}

impl Channel for EmailChannel {
    fn deliver<'a>(&'a self, to: &'a str, msg: &'a CodeMessage<'a>) -> Delivery<'a> {
        Box::pin(async move {
            let message = self.message(to, msg)?;
            match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
                Err(_) => Err(DeliveryError::Timeout(self.timeout)),
                Ok(Err(e)) => Err(DeliveryError::Failed(format!("SMTP: {e}"))),
                Ok(Ok(_)) => Ok(()),
            }
        })
    }
}

pub use crate::formats::valid_address;

/// `j***@e***.com`: enough for the owner to recognise, little for a shoulder surfer.
pub fn mask(address: &str) -> String {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return "***".into();
    };
    let first = |s: &str| s.chars().next().map(String::from).unwrap_or_default();
    let (name, tld) = match domain.rsplit_once('.') {
        Some((name, tld)) => (name, format!(".{tld}")),
        None => (domain, String::new()),
    };
    format!("{}***@{}***{tld}", first(local), first(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_masked_to_first_letters_and_tld() {
        assert_eq!(mask("jane.doe@example.com"), "j***@e***.com");
        assert_eq!(mask("x@mail.example.org"), "x***@m***.org");
        assert_eq!(mask("root@localhost"), "r***@l***");
        assert_eq!(mask("nonsense"), "***");
    }

    #[test]
    fn only_real_addresses_are_valid() {
        assert!(valid_address("alice@example.com"));
        assert!(!valid_address("alice"));
        assert!(!valid_address("alice@"));
        assert!(!valid_address("a b@example.com"));
    }
}
