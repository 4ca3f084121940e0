//! Duo's replies, as the Auth API v2 documents them: `{"stat": "OK", "response": ...}` or
//! `{"stat": "FAIL", "code": ..., "message": ...}`. Anything else is a `BadReply`; fields
//! otpd does not use are ignored.

use super::DuoError;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(tag = "stat")]
pub(super) enum Envelope {
    #[serde(rename = "OK")]
    Ok { response: serde_json::Value },
    #[serde(rename = "FAIL")]
    Fail {
        #[serde(default)]
        code: i64,
        #[serde(default)]
        message: String,
    },
}

/// What `preauth` says of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preauth {
    /// Enrolled: authenticate with one of these devices (or a passcode).
    Auth(Vec<Device>),
    /// Duo lets this user in without a second factor (a bypass user, or a policy).
    Allow(String),
    /// Duo refuses this user; its words.
    Deny(String),
    /// Not enrolled: the user enrolls at this URL first.
    Enroll(String),
}

/// One of a user's Duo devices.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Device {
    /// Duo's device id, or `auto`.
    pub device: String,
    /// "iOS (XXX-XXX-1234)".
    #[serde(default)]
    pub display_name: String,
    /// `push`, `phone`, `sms`, `mobile_otp`, `auto`.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

impl Device {
    pub fn can(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }
}

/// How an authentication ended, by Duo's `status` (`result` is allow or deny).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// The user refused, or the passcode was wrong; Duo's words.
    Denied(String),
    /// The user reported the request as fraud.
    Fraud,
    /// Nobody answered the push or the call in Duo's time.
    TimedOut,
}

/// An `auth` or `auth_status` answer: still waiting, or done.
pub(super) enum Outcome {
    Waiting(String),
    Done(Verdict),
}

#[derive(Deserialize)]
struct AuthResult {
    result: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    status_msg: String,
}

impl Outcome {
    pub(super) fn from_response(r: serde_json::Value) -> Result<Outcome, DuoError> {
        let a: AuthResult =
            serde_json::from_value(r).map_err(|e| DuoError::BadReply(format!("auth: {e}")))?;
        Ok(match (a.result.as_str(), a.status.as_str()) {
            ("waiting", _) => Outcome::Waiting(a.status_msg),
            ("allow", _) => Outcome::Done(Verdict::Allowed),
            ("deny", "fraud") => Outcome::Done(Verdict::Fraud),
            ("deny", "timeout") => Outcome::Done(Verdict::TimedOut),
            ("deny", _) => Outcome::Done(Verdict::Denied(a.status_msg)),
            (other, _) => return Err(DuoError::BadReply(format!("auth: result {other:?}"))),
        })
    }
}

#[derive(Deserialize)]
struct PreauthResult {
    result: String,
    #[serde(default)]
    status_msg: String,
    #[serde(default)]
    devices: Vec<Device>,
    #[serde(default)]
    enroll_portal_url: Option<String>,
}

impl Preauth {
    pub(super) fn from_response(r: serde_json::Value) -> Result<Preauth, DuoError> {
        let p: PreauthResult =
            serde_json::from_value(r).map_err(|e| DuoError::BadReply(format!("preauth: {e}")))?;
        Ok(match p.result.as_str() {
            "auth" => Preauth::Auth(p.devices),
            "allow" => Preauth::Allow(p.status_msg),
            "deny" => Preauth::Deny(p.status_msg),
            "enroll" => Preauth::Enroll(p.enroll_portal_url.unwrap_or_default()),
            other => return Err(DuoError::BadReply(format!("preauth: result {other:?}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn auth_status_answers_map_to_distinct_verdicts() {
        let done = |result: &str, status: &str| {
            let r = json!({"result": result, "status": status, "status_msg": "m"});
            match Outcome::from_response(r).unwrap() {
                Outcome::Done(v) => Some(v),
                Outcome::Waiting(_) => None,
            }
        };
        assert_eq!(done("allow", "allow"), Some(Verdict::Allowed));
        assert_eq!(done("deny", "deny"), Some(Verdict::Denied("m".into())));
        assert_eq!(done("deny", "fraud"), Some(Verdict::Fraud));
        assert_eq!(done("deny", "timeout"), Some(Verdict::TimedOut));
        assert_eq!(done("waiting", "pushed"), None);
        assert!(Outcome::from_response(json!({"result": "maybe"})).is_err());
    }

    #[test]
    fn preauth_answers_as_duo_documents_them() {
        let r = json!({"result": "enroll", "status_msg": "Enroll", "enroll_portal_url": "https://x/portal"});
        assert_eq!(
            Preauth::from_response(r).unwrap(),
            Preauth::Enroll("https://x/portal".into())
        );
        let r = json!({"result": "auth", "status_msg": "ok", "devices": [
            {"device": "DP1", "type": "phone", "display_name": "iOS (XXX-XXX-1234)",
             "capabilities": ["auto", "push", "phone", "mobile_otp"]}]});
        let Preauth::Auth(devices) = Preauth::from_response(r).unwrap() else {
            panic!("auth")
        };
        assert!(devices[0].can("push") && !devices[0].can("sms"));
    }
}
