//! Which `[[policy.rule]]` applies to a login (a user through a PAM service) or to a user's
//! `otpctl` command, and why, in words a user can read. First match wins; no match means the
//! global `[policy]`. Groups come from NSS (getgrouplist: primary and supplementary, whatever
//! NSS nests), asked only when a rule that could match names groups.

use super::factors::Factors;
use crate::config::rules::{Require, Rule};
use crate::config::{PolicyConfig, Unenrolled};
use otp_proto::{MethodKind, Via};
use std::ffi::CString;

/// What the policy is for one login or command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// The rule's number, counted from 1 in file order; `None`: the global `[policy]`.
    pub rule: Option<usize>,
    pub require: Require,
    /// `None`: every method counts.
    pub methods: Option<Vec<MethodKind>>,
    pub unenrolled: Unenrolled,
    /// Why this rule and not another, for `otpctl policy` and the audit line.
    pub why: String,
    /// A named `[sms.providers.NAME]` / `[email.relays.NAME]`; `None`: `[sms]` / `[email]`.
    pub sms_provider: Option<String>,
    pub email_relay: Option<String>,
    /// How long a second factor spares the next logins from the same place (policy::grace).
    pub grace: Option<std::time::Duration>,
}

impl Effective {
    /// Whether `method` counts for this user.
    pub fn allows(&self, method: MethodKind) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(&method))
    }

    /// `factors` without the methods this policy does not count (a default among them goes).
    pub fn filter(&self, mut factors: Factors) -> Factors {
        factors.totp &= self.allows(MethodKind::Totp);
        if !self.allows(MethodKind::Email) {
            factors.email = None;
        }
        if !self.allows(MethodKind::Sms) {
            factors.sms = None;
        }
        let counted = |via: &Via| match via {
            Via::Email => self.allows(MethodKind::Email),
            Via::Sms => self.allows(MethodKind::Sms),
        };
        factors.unavailable.retain(counted);
        if factors.default.is_some_and(|d| !self.allows(d)) {
            factors.default = None;
        }
        factors
    }

    /// "rule 2" or "the global policy", for log lines and messages.
    pub fn name(&self) -> String {
        match self.rule {
            Some(n) => format!("policy rule {n}"),
            None => "the global policy".to_owned(),
        }
    }
}

/// The groups of a user could not be read (NSS failed): no rule can be chosen safely.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the groups of {user}: {why}")]
pub struct GroupLookupError {
    pub user: String,
    pub why: String,
}

/// The policy for `user` logging in through `service` (`None`: an otpctl command, to which
/// rules limited to services do not apply).
pub async fn applies(
    policy: &PolicyConfig,
    user: &str,
    service: Option<&str>,
) -> Result<Effective, GroupLookupError> {
    let needs_groups = policy
        .rule
        .iter()
        .any(|r| !r.groups.is_empty() && by_name(r, user, service));
    let groups = if needs_groups {
        let owned = user.to_owned();
        tokio::task::spawn_blocking(move || groups_of(&owned))
            .await
            .map_err(|e| GroupLookupError {
                user: user.to_owned(),
                why: e.to_string(),
            })??
    } else {
        Vec::new()
    };
    Ok(first_match(policy, user, service, &groups))
}

/// The first rule matching `user`, `service` and `groups` (the user's groups), or the global
/// policy.
pub fn first_match(
    policy: &PolicyConfig,
    user: &str,
    service: Option<&str>,
    groups: &[String],
) -> Effective {
    for (i, rule) in policy.rule.iter().enumerate() {
        if !by_name(rule, user, service) {
            continue;
        }
        let group = if rule.groups.is_empty() {
            None
        } else {
            match rule.groups.iter().find(|g| groups.contains(g)) {
                Some(g) => Some(g),
                None => continue,
            }
        };
        let mut reasons = Vec::new();
        if !rule.users.is_empty() {
            reasons.push(format!("it names user {user}"));
        }
        if let Some(g) = group {
            reasons.push(format!("{user} is in group {g}"));
        }
        if let (false, Some(s)) = (rule.services.is_empty(), service) {
            reasons.push(format!("it names service {s}"));
        }
        if reasons.is_empty() {
            reasons.push("it applies to everyone".to_owned());
        }
        let earlier = match i {
            0 => String::new(),
            1 => "; rule 1 does not match".to_owned(),
            n => format!("; rules 1 to {n} do not match"),
        };
        return Effective {
            rule: Some(i + 1),
            require: rule.require,
            methods: rule.methods.clone(),
            unenrolled: rule.unenrolled.unwrap_or(policy.unenrolled),
            sms_provider: rule.sms_provider.clone(),
            email_relay: rule.email_relay.clone(),
            grace: rule.grace.or(policy.grace),
            why: format!("rule {} matches: {}{earlier}", i + 1, reasons.join(", ")),
        };
    }
    Effective {
        rule: None,
        require: Require::Always,
        methods: None,
        unenrolled: policy.unenrolled,
        sms_provider: None,
        email_relay: None,
        grace: policy.grace,
        why: match policy.rule.len() {
            0 => "no rules are configured; the global [policy] applies".to_owned(),
            _ => "no rule matches; the global [policy] applies".to_owned(),
        },
    }
}

/// The rule's user and service lists admit this login (groups are checked apart).
fn by_name(rule: &Rule, user: &str, service: Option<&str>) -> bool {
    let user_ok = rule.users.is_empty() || rule.users.iter().any(|u| u == user);
    let service_ok = match service {
        _ if rule.services.is_empty() => true,
        Some(s) => rule.services.iter().any(|x| x == s),
        None => false,
    };
    user_ok && service_ok
}

/// The names of every group of `user` (NSS, blocking). A user without a passwd entry has none.
fn groups_of(user: &str) -> Result<Vec<String>, GroupLookupError> {
    use nix::unistd::{getgrouplist, Group, User};
    let err = |why: String| GroupLookupError {
        user: user.to_owned(),
        why,
    };
    let Some(entry) = User::from_name(user).map_err(|e| err(e.to_string()))? else {
        return Ok(Vec::new());
    };
    let name = CString::new(user).map_err(|e| err(e.to_string()))?;
    let gids = getgrouplist(&name, entry.gid).map_err(|e| err(e.to_string()))?;
    let mut names = Vec::with_capacity(gids.len());
    for gid in gids {
        // A gid without a group entry has no name a rule could use.
        if let Some(group) = Group::from_gid(gid).map_err(|e| err(e.to_string()))? {
            names.push(group.name);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn policy(text: &str) -> PolicyConfig {
        Config::parse(Path::new("t.toml"), text).unwrap().policy
    }

    const RULES: &str = "[policy]\nunenrolled = \"deny\"\n\
        [[policy.rule]]\nusers = [\"svc\"]\nservices = [\"cron\", \"sudo\"]\nrequire = \"never\"\n\
        [[policy.rule]]\ngroups = [\"contractors\", \"temps\"]\nmethods = [\"totp\"]\n\
        unenrolled = \"enroll\"\n\
        [[policy.rule]]\nservices = [\"login\"]\nrequire = \"enrolled\"\n";

    #[test]
    fn the_first_matching_rule_wins_and_says_why() {
        let p = policy(RULES);
        let svc = first_match(&p, "svc", Some("cron"), &[]);
        assert_eq!((svc.rule, svc.require), (Some(1), Require::Never));
        assert_eq!(
            svc.why,
            "rule 1 matches: it names user svc, it names service cron"
        );
        let groups = ["users".to_owned(), "temps".to_owned()];
        let temp = first_match(&p, "bob", Some("sshd"), &groups);
        assert_eq!(temp.rule, Some(2));
        assert!(temp.allows(MethodKind::Totp) && !temp.allows(MethodKind::Sms));
        assert_eq!(temp.unenrolled, Unenrolled::Enroll);
        assert!(temp.why.contains("bob is in group temps"), "{}", temp.why);
        // svc through sshd: rule 1 is for cron and sudo only.
        let svc_ssh = first_match(&p, "svc", Some("sshd"), &[]);
        assert_eq!(svc_ssh.rule, None);
        assert_eq!(svc_ssh.unenrolled, Unenrolled::Deny);
        let console = first_match(&p, "carol", Some("login"), &[]);
        assert_eq!(
            (console.rule, console.require),
            (Some(3), Require::Enrolled)
        );
        assert!(
            console.why.ends_with("rules 1 to 2 do not match"),
            "{}",
            console.why
        );
    }

    #[test]
    fn rules_limited_to_services_do_not_apply_to_commands() {
        let p = policy(RULES);
        assert_eq!(first_match(&p, "svc", None, &[]).rule, None);
        let groups = ["contractors".to_owned()];
        assert_eq!(first_match(&p, "dan", None, &groups).rule, Some(2));
    }

    #[test]
    fn without_rules_everything_counts() {
        let p = policy("");
        let e = first_match(&p, "alice", Some("sshd"), &[]);
        assert_eq!(e.rule, None);
        assert!(e.allows(MethodKind::Sms));
        assert_eq!(e.require, Require::Always);
    }

    #[tokio::test]
    async fn a_user_without_a_passwd_entry_is_in_no_group() {
        let p = policy(RULES);
        let e = applies(&p, "no-such-user-4f1e", Some("sshd"))
            .await
            .unwrap();
        assert_eq!(e.rule, None);
    }

    #[tokio::test]
    async fn root_is_in_group_root() {
        let p = policy("[[policy.rule]]\ngroups = [\"root\"]\nrequire = \"never\"\n");
        let e = applies(&p, "root", Some("sshd")).await.unwrap();
        assert_eq!(e.rule, Some(1));
    }
}
