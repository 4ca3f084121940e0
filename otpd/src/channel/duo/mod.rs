//! Duo's Auth API v2 over HTTPS (reqwest, rustls with ring, as the SMS providers): `check`,
//! `preauth`, `auth` (push, phone, passcode) and `auth_status`, each request signed as Duo's own
//! clients sign (`sign`). This module speaks Duo's API and words nothing for users; the login's
//! Duo steps (session/duo.rs) decide what each answer means. The secret key is read once, with
//! `secret_file`'s rules, kept in a zeroized `Secret` and never logged; the integration key may
//! be.

pub mod reply;
pub mod sign;

use super::secret_file;
use crate::config::duo::{DuoConfig, DuoFailmode};
use otp_proto::Secret;
use reply::{Envelope, Outcome};
use std::time::Duration;

pub use reply::{Device, Preauth, Verdict};

/// How far a request's `Date` may be from Duo's clock before Duo refuses it; also how far
/// Duo's clock may be from ours before a refusal is reported as a clock problem.
pub const ALLOWED_SKEW: Duration = Duration::from_secs(300);

/// A Duo integration, ready to sign requests.
pub struct DuoClient {
    http: reqwest::Client,
    host: String,
    ikey: String,
    skey: Secret,
    /// `[duo] timeout`: the bound of a request and of a push's whole wait.
    pub timeout: Duration,
    pub failmode: DuoFailmode,
}

/// A `[duo]` the daemon cannot start with; `check-config` reports it too.
#[derive(Debug, thiserror::Error)]
#[error("[duo] {key}: {message}")]
pub struct DuoConfigError {
    pub key: &'static str,
    pub message: String,
}

/// Why a request to Duo did not give an answer. Each is its own audit reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DuoError {
    /// No connection, a timeout, or a 5xx: what `failmode` is about.
    #[error("Duo unreachable: {0}")]
    Unreachable(String),
    /// Duo refused the request (bad keys, bad signature, bad parameters), in its own words.
    #[error("Duo refused the request: HTTP {status}, code {code}: {message}")]
    Refused {
        status: u16,
        code: i64,
        message: String,
    },
    /// Duo refused a request, and its clock is `offset` seconds from ours: the request's Date
    /// is outside what Duo accepts. Fix this host's clock (NTP).
    #[error(
        "Duo refused the request's Date: this host's clock is {offset} s {} Duo's (at most {} s \
         allowed); fix the clock (NTP). Duo said: code {code}: {message}",
        if *offset < 0 { "behind" } else { "ahead of" },
        ALLOWED_SKEW.as_secs()
    )]
    ClockSkew {
        offset: i64,
        code: i64,
        message: String,
    },
    /// An answer that is not what Duo documents.
    #[error("Duo's reply was not understood: {0}")]
    BadReply(String),
}

/// The second factor an `auth` request asks for.
pub enum Factor<'a> {
    /// A push to this device (`auto` for Duo's pick).
    Push(&'a str),
    /// A phone call to this device.
    Phone(&'a str),
    /// A passcode the user typed (Duo Mobile, SMS passcode, hardware token).
    Passcode(&'a Secret),
}

/// What `auth` started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// An asynchronous push or call; poll `auth_status` with this transaction id.
    Waiting(String),
    /// Decided at once (a passcode).
    Done(Verdict),
}

/// One `auth_status` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Still waiting for the user; Duo's words (`status_msg`).
    Waiting(String),
    Done(Verdict),
}

fn config_error(key: &'static str, message: impl Into<String>) -> DuoConfigError {
    DuoConfigError {
        key,
        message: message.into(),
    }
}

impl DuoClient {
    pub fn new(cfg: &DuoConfig) -> Result<DuoClient, DuoConfigError> {
        // reqwest is built without a default crypto provider; ring is ours everywhere.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let skey = secret_file::read_secret(&cfg.secret_key_file)
            .map_err(|e| config_error("secret_key_file", e.to_string()))?;
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("otpd/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &cfg.ca_file {
            let pem =
                secret_file::read_ca(ca).map_err(|e| config_error("ca_file", e.to_string()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| config_error("ca_file", format!("{}: {e}", ca.display())))?;
            builder = builder.tls_certs_merge([cert]);
        }
        let http = builder
            .build()
            .map_err(|e| config_error("ca_file", e.to_string()))?;
        if reqwest::Url::parse(&format!("https://{}/", cfg.api_host)).is_err() {
            return Err(config_error(
                "api_host",
                format!("{:?} is not a host", cfg.api_host),
            ));
        }
        Ok(DuoClient {
            http,
            host: cfg.api_host.clone(),
            ikey: cfg.integration_key.clone(),
            skey,
            timeout: cfg.timeout,
            failmode: cfg.failmode,
        })
    }

    pub fn integration_key(&self) -> &str {
        &self.ikey
    }

    /// `/auth/v2/check`: are the keys and the signature right? Duo's clock, as Unix time.
    pub async fn check(&self) -> Result<i64, DuoError> {
        let r = self.call(Method::Get, "/auth/v2/check", &[]).await?;
        r.get("time")
            .and_then(serde_json::Value::as_i64)
            .ok_or_else(|| DuoError::BadReply("check: no time".into()))
    }

    /// `/auth/v2/preauth`: may `user` log in with Duo, and with which devices?
    pub async fn preauth(&self, user: &str, ipaddr: Option<&str>) -> Result<Preauth, DuoError> {
        let mut params = vec![("username", user)];
        if let Some(ip) = ipaddr {
            params.push(("ipaddr", ip));
        }
        let r = self.call(Method::Post, "/auth/v2/preauth", &params).await?;
        Preauth::from_response(r)
    }

    /// `/auth/v2/auth`: a push or a call asynchronously (`async=1`), a passcode at once.
    pub async fn auth(
        &self,
        user: &str,
        ipaddr: Option<&str>,
        factor: &Factor<'_>,
    ) -> Result<Started, DuoError> {
        let mut params = vec![("username", user)];
        if let Some(ip) = ipaddr {
            params.push(("ipaddr", ip));
        }
        match factor {
            Factor::Push(device) => {
                params.extend([("factor", "push"), ("device", device), ("async", "1")])
            }
            Factor::Phone(device) => {
                params.extend([("factor", "phone"), ("device", device), ("async", "1")])
            }
            Factor::Passcode(code) => {
                params.extend([("factor", "passcode"), ("passcode", code.expose())])
            }
        }
        let r = self.call(Method::Post, "/auth/v2/auth", &params).await?;
        if let Some(txid) = r.get("txid").and_then(serde_json::Value::as_str) {
            return Ok(Started::Waiting(txid.to_owned()));
        }
        match Outcome::from_response(r)? {
            Outcome::Waiting(_) => Err(DuoError::BadReply("auth: waiting without a txid".into())),
            Outcome::Done(v) => Ok(Started::Done(v)),
        }
    }

    /// `/auth/v2/auth_status`: Duo holds the request until something changes (a long poll).
    pub async fn auth_status(&self, txid: &str) -> Result<Status, DuoError> {
        let r = self
            .call(Method::Get, "/auth/v2/auth_status", &[("txid", txid)])
            .await?;
        Ok(match Outcome::from_response(r)? {
            Outcome::Waiting(msg) => Status::Waiting(msg),
            Outcome::Done(v) => Status::Done(v),
        })
    }

    /// Sign and send one request; Duo's `response` object, or why there is none.
    async fn call(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<serde_json::Value, DuoError> {
        let date = sign::date(unix_now());
        let (query, body) = match method {
            Method::Get => (params, String::new()),
            Method::Post => (&[][..], sign::canon_json(params)),
        };
        let canonical = sign::Canonical {
            date: &date,
            method: method.name(),
            host: signed_host(&self.host),
            path,
            params: query,
            body: &body,
        };
        let signature = canonical.signature(&self.skey);
        let mut url = format!("https://{}{path}", self.host);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&sign::canon_params(query));
        }
        let request = match method {
            Method::Get => self.http.get(url),
            Method::Post => self
                .http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        };
        let response = request
            .header(reqwest::header::DATE, &date)
            .basic_auth(&self.ikey, Some(signature))
            .send()
            .await
            .map_err(|e| DuoError::Unreachable(crate::logging::error_chain(&e)))?;
        let status = response.status();
        let their_date = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        let text = read_capped(response)
            .await
            .map_err(|e| DuoError::Unreachable(format!("HTTP {status}: {e}")))?;
        if status.is_server_error() {
            return Err(DuoError::Unreachable(format!("HTTP {status}")));
        }
        let envelope: Envelope = serde_json::from_str(&text)
            .map_err(|e| DuoError::BadReply(format!("HTTP {status}: not Duo's JSON: {e}")))?;
        match envelope {
            Envelope::Ok { response } if status.is_success() => Ok(response),
            Envelope::Ok { .. } => Err(DuoError::BadReply(format!("HTTP {status} with stat OK"))),
            Envelope::Fail { code, message } => {
                let offset = their_date.and_then(|t| clock_offset(t, std::time::SystemTime::now()));
                match offset {
                    Some(offset)
                        if status.as_u16() == 401
                            && offset.unsigned_abs() > ALLOWED_SKEW.as_secs() =>
                    {
                        Err(DuoError::ClockSkew {
                            offset,
                            code,
                            message,
                        })
                    }
                    _ => Err(DuoError::Refused {
                        status: status.as_u16(),
                        code,
                        message,
                    }),
                }
            }
        }
    }
}

/// `otpd check-config`: the keys, the CA and the signature, by one `/auth/v2/check`; what to
/// print when it passes.
pub fn check_now(cfg: &DuoConfig) -> Result<String, String> {
    let client = DuoClient::new(cfg).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("[duo]: cannot start a runtime: {e}"))?;
    let time = runtime
        .block_on(client.check())
        .map_err(|e| format!("[duo] /auth/v2/check: {e}"))?;
    let offset = i64::try_from(unix_now())
        .unwrap_or(i64::MAX)
        .saturating_sub(time);
    Ok(format!(
        "Duo check ok (integration {}, {}, clock {offset:+} s from Duo's)",
        client.ikey, cfg.api_host
    ))
}

/// The host a request is signed for: `api_host` without a `:port`, as duo_client signs its
/// `host` (it takes the port apart).
fn signed_host(api_host: &str) -> &str {
    match api_host.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => api_host,
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Duo's replies are a few KiB; a longer one is refused rather than buffered.
pub const MAX_REPLY: usize = 64 * 1024;

async fn read_capped(mut response: reqwest::Response) -> Result<String, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| crate::logging::error_chain(&e))?
    {
        if body.len().saturating_add(chunk.len()) > MAX_REPLY {
            return Err(format!("reply longer than {MAX_REPLY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "reply is not UTF-8".to_owned())
}

/// Our clock minus theirs, in whole seconds (negative: we are behind).
fn clock_offset(theirs: std::time::SystemTime, ours: std::time::SystemTime) -> Option<i64> {
    match ours.duration_since(theirs) {
        Ok(ahead) => i64::try_from(ahead.as_secs()).ok(),
        Err(behind) => i64::try_from(behind.duration().as_secs()).ok().map(|s| -s),
    }
}

#[derive(Clone, Copy)]
enum Method {
    Get,
    Post,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}
