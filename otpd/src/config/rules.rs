//! `[[policy.rule]]`: policy per group, user and PAM service. The first rule that matches a
//! login decides; the global `[policy]` keys are the fallback for every key a rule leaves out
//! and for logins no rule matches. Which rule applies is decided in `policy::rules`.

use super::Unenrolled;
use otp_proto::MethodKind;
use serde::{de, Deserialize, Deserializer};

/// At most this many rules, and this many names in one rule's list.
const MAX_RULES: usize = 256;
const MAX_NAMES: usize = 1024;

/// One `[[policy.rule]]`. A list left out matches everyone; a rule with none of them matches
/// every login.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rule {
    /// Unix groups, primary or supplementary, as NSS reports them (getgrouplist).
    #[serde(deserialize_with = "names")]
    pub groups: Vec<String>,
    /// User names (canonical passwd names).
    #[serde(deserialize_with = "names")]
    pub users: Vec<String>,
    /// PAM services (PAM_SERVICE: sshd, sudo, cron...). A rule with services applies only to
    /// logins through them, never to `otpctl enroll`.
    #[serde(deserialize_with = "names")]
    pub services: Vec<String>,
    pub require: Require,
    /// The methods that count for these users: the others are not offered at login and not
    /// accepted by `otpctl enroll`. Left out: every method.
    #[serde(deserialize_with = "methods")]
    pub methods: Option<Vec<MethodKind>>,
    /// What happens to these users when they have nothing enrolled; `[policy] unenrolled` when
    /// left out.
    pub unenrolled: Option<Unenrolled>,
    /// Send these users' SMS codes through `[sms.providers.NAME]` instead of `[sms]`.
    #[serde(deserialize_with = "optional_name")]
    pub sms_provider: Option<String>,
    /// Send these users' email codes through `[email.relays.NAME]` instead of `[email]`.
    #[serde(deserialize_with = "optional_name")]
    pub email_relay: Option<String>,
    /// These users' grace period (policy::grace); `[policy] grace` when left out.
    #[serde(deserialize_with = "super::optional_up_to_30_days")]
    pub grace: Option<std::time::Duration>,
}

/// Whether a second factor is asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Require {
    /// Always (the `unenrolled` policy decides for users with nothing enrolled).
    #[default]
    Always,
    /// Never: the login is let in without one (an exempt allow, logged).
    Never,
    /// Only from users who have one enrolled; the others are let in (as `nullok`).
    Enrolled,
}

impl std::fmt::Display for Require {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Require::Always => "always",
            Require::Never => "never",
            Require::Enrolled => "enrolled",
        })
    }
}

/// The `rule` key of `[policy]`: a bounded list.
pub(super) fn rules<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Rule>, D::Error> {
    let rules = Vec::<Rule>::deserialize(d)?;
    if rules.len() > MAX_RULES {
        return Err(de::Error::custom(format!(
            "more than {MAX_RULES} rules ({})",
            rules.len()
        )));
    }
    Ok(rules)
}

fn optional_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    super::name(d).map(Some)
}

/// What no key alone can check: each named provider and relay is a whole section of its own
/// (not nesting more), with what its provider needs, and every name a rule picks exists.
pub(super) fn check(cfg: &super::Config) -> Result<(), (Vec<&'static str>, String)> {
    if let Some(sms) = &cfg.sms {
        for (name, p) in &sms.providers {
            if !p.providers.is_empty() {
                let why = format!("provider {name:?} names providers of its own");
                return Err((vec!["sms", "providers"], why));
            }
            let present = match p.provider {
                super::SmsProvider::Twilio => p.twilio.is_some(),
                super::SmsProvider::Vonage => p.vonage.is_some(),
                super::SmsProvider::Custom => p.custom.is_some(),
            };
            if !present {
                let why = format!("provider {name:?} lacks the section its provider needs");
                return Err((vec!["sms", "providers"], why));
            }
        }
    }
    if let Some(email) = &cfg.email {
        for (name, r) in &email.relays {
            if !r.relays.is_empty() {
                let why = format!("relay {name:?} names relays of its own");
                return Err((vec!["email", "relays"], why));
            }
            if r.username.is_some() && r.password_file.is_none() {
                let why = format!("relay {name:?}: username needs password_file");
                return Err((vec!["email", "relays"], why));
            }
        }
    }
    for (i, rule) in cfg.policy.rule.iter().enumerate() {
        let n = i + 1;
        if let Some(name) = &rule.sms_provider {
            let known = cfg
                .sms
                .as_ref()
                .is_some_and(|s| s.providers.contains_key(name));
            if !known {
                let why =
                    format!("rule {n}: sms_provider {name:?} is not an [sms.providers.{name}]");
                return Err((vec!["policy", "rule"], why));
            }
        }
        if let Some(name) = &rule.email_relay {
            let known = cfg
                .email
                .as_ref()
                .is_some_and(|e| e.relays.contains_key(name));
            if !known {
                let why = format!("rule {n}: email_relay {name:?} is not an [email.relays.{name}]");
                return Err((vec!["policy", "rule"], why));
            }
        }
    }
    Ok(())
}

fn names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    struct One(#[serde(deserialize_with = "super::name")] String);
    let list = Vec::<One>::deserialize(d)?;
    if list.len() > MAX_NAMES {
        return Err(de::Error::custom(format!("more than {MAX_NAMES} names")));
    }
    if let Some(One(bad)) = list.iter().find(|One(n)| n.contains(char::is_whitespace)) {
        return Err(de::Error::custom(format!("{bad:?} contains a space")));
    }
    Ok(list.into_iter().map(|One(n)| n).collect())
}

fn methods<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<MethodKind>>, D::Error> {
    let list = Vec::<MethodKind>::deserialize(d)?;
    if list.is_empty() {
        return Err(de::Error::custom(
            "lists no method (use require = \"never\" to exempt these users)",
        ));
    }
    Ok(Some(list))
}

/// `[audit]`: the structured audit trail kept in `state_dir/audit.jsonl` (one JSON object per
/// line, appended; the file is rotated by size to `audit.jsonl.1` ... `.N`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Rotate when the file would grow past this many bytes (4 KiB to 1 GiB).
    #[serde(deserialize_with = "file_size")]
    pub max_file_size: u64,
    /// Rotated files kept besides the current one (1 to 100).
    #[serde(deserialize_with = "files_kept")]
    pub keep: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            max_file_size: 16 * 1024 * 1024,
            keep: 5,
        }
    }
}

/// `[metrics]`: the audit counts `otpctl stats` prints, as Prometheus text for
/// node_exporter's textfile collector, written atomically every 15 s.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// The `.prom` file to write (an absolute path); absent: no file.
    #[serde(deserialize_with = "optional_path")]
    pub textfile: Option<std::path::PathBuf>,
}

fn file_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = u64::deserialize(d)?;
    if !(4096..=1 << 30).contains(&n) {
        return Err(de::Error::custom(format!(
            "{n} is not between 4096 and 1073741824 bytes"
        )));
    }
    Ok(n)
}

fn files_kept<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u32::deserialize(d)?;
    if !(1..=100).contains(&n) {
        return Err(de::Error::custom(format!("{n} is not between 1 and 100")));
    }
    Ok(n)
}

fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::path::PathBuf>, D::Error> {
    super::absolute_path(d).map(Some)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("t.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn rules_parse_in_order_with_their_lists() {
        let cfg = parse(
            "[[policy.rule]]\ngroups = [\"contractors\"]\nmethods = [\"totp\"]\n\
             unenrolled = \"enroll\"\n\n[[policy.rule]]\nusers = [\"svc\"]\n\
             services = [\"cron\"]\nrequire = \"never\"\n",
        )
        .unwrap();
        let rules = &cfg.policy.rule;
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].groups, ["contractors"]);
        assert_eq!(rules[1].require, super::Require::Never);
        assert_eq!(rules[1].services, ["cron"]);
    }

    #[test]
    fn a_bad_rule_is_refused_with_its_line_and_key() {
        let e = parse("[[policy.rule]]\nrequire = \"sometimes\"\n").unwrap_err();
        assert!(e.starts_with("t.toml:2:"), "{e}");
        assert!(e.contains("require"), "{e}");
        let e = parse("[[policy.rule]]\nmethods = []\n").unwrap_err();
        assert!(e.contains("lists no method"), "{e}");
        let e = parse("[[policy.rule]]\ngroups = [\"a b\"]\n").unwrap_err();
        assert!(e.contains("contains a space"), "{e}");
        let e = parse("[[policy.rule]]\ngroup = [\"x\"]\n").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }
}
