//! `[directory]`: where email addresses and phone numbers come from besides the users' own
//! (`otpctl enroll`) and `[users.NAME]`: an LDAP directory, read over TLS only (ldaps://, or
//! ldap:// with StartTLS), so neither the bind password nor the addresses cross the network in
//! clear. The client is `otpd/src/directory/`.

use super::{name, plain, up_to_30_days, up_to_5_minutes};
use serde::{de, Deserialize, Deserializer};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    pub kind: DirectoryKind,
    /// `ldaps://host[:port]` (TLS from the start) or `ldap://host[:port]` (StartTLS, required).
    #[serde(deserialize_with = "ldap_url")]
    pub url: String,
    /// Extra CA certificates (PEM) trusted for the server, beside the system roots; owned by
    /// root and not writable by group or others.
    pub ca_file: Option<PathBuf>,
    /// Simple bind as this DN; anonymous without it.
    #[serde(default, deserialize_with = "optional_name")]
    pub bind_dn: Option<String>,
    /// The bind password, in a file owned by root with mode 0600 or 0400.
    pub bind_password_file: Option<PathBuf>,
    /// Where the search starts (subtree), e.g. `ou=people,dc=example,dc=com`.
    #[serde(deserialize_with = "name")]
    pub base: String,
    /// The search filter; `{user}` is the user's passwd name, escaped per RFC 4515 so that
    /// no name can widen the filter.
    #[serde(default = "default_filter", deserialize_with = "filter")]
    pub filter: String,
    #[serde(default = "default_email_attr", deserialize_with = "attribute")]
    pub email_attr: String,
    #[serde(default = "default_phone_attr", deserialize_with = "attribute")]
    pub phone_attr: String,
    /// Bounds one whole lookup: connect, TLS, bind, search (default 3s, at most 5 minutes;
    /// keep it well below pam_otp's `timeout=`).
    #[serde(default = "default_timeout", deserialize_with = "up_to_5_minutes")]
    pub timeout: Duration,
    /// How long a value read from the directory is still used while the directory cannot be
    /// reached (default 1 day, at most 30 days).
    #[serde(default = "default_cache_ttl", deserialize_with = "up_to_30_days")]
    pub cache_ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectoryKind {
    Ldap,
}

impl DirectoryConfig {
    /// What no single key can say: a bind DN needs its password, and the other way round.
    pub(super) fn check(&self) -> Result<(), (Vec<&'static str>, String)> {
        match (&self.bind_dn, &self.bind_password_file) {
            (Some(_), None) => Err((
                vec!["directory", "bind_dn"],
                "needs bind_password_file (the password is never written here)".into(),
            )),
            (None, Some(_)) => Err((
                vec!["directory", "bind_password_file"],
                "needs bind_dn".into(),
            )),
            _ => Ok(()),
        }
    }
}

fn default_filter() -> String {
    "(uid={user})".into()
}

fn default_email_attr() -> String {
    "mail".into()
}

fn default_phone_attr() -> String {
    "mobile".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(24 * 60 * 60)
}

fn optional_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    name(d).map(Some)
}

/// `ldaps://` or `ldap://`, a host, an optional port, nothing else (no DN, no ldapi://).
fn ldap_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = name(d)?;
    let bad = || {
        de::Error::custom(format!(
            "{s:?} is not ldaps://HOST[:PORT] or ldap://HOST[:PORT] (StartTLS)"
        ))
    };
    let url = reqwest::Url::parse(&s).map_err(|_| bad())?;
    let plain_url = matches!(url.scheme(), "ldap" | "ldaps")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.port() != Some(0)
        && matches!(url.path(), "" | "/")
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !plain_url {
        return Err(bad());
    }
    Ok(s)
}

fn filter<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = plain(d)?;
    if !s.contains("{user}") {
        return Err(de::Error::custom("must contain {user}"));
    }
    if ldap3::parse_filter(s.replace("{user}", "x")).is_err() {
        return Err(de::Error::custom(format!(
            "{s:?} is not an LDAP filter like \"(uid={{user}})\""
        )));
    }
    Ok(s)
}

/// An attribute description: a name or OID and options (RFC 4512 §2.5).
fn attribute<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = name(d)?;
    let ok = s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ';'));
    if !ok {
        return Err(de::Error::custom(format!("{s:?} is not an attribute name")));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(section: &str) -> Result<Config, String> {
        Config::parse(Path::new("t.toml"), section).map_err(|e| e.to_string())
    }

    const BASE: &str = "kind = \"ldap\"\nbase = \"ou=people,dc=example,dc=com\"\n";

    #[test]
    fn a_directory_takes_ldaps_or_ldap_with_starttls_and_has_defaults() {
        for url in [
            "ldaps://ldap.example.com",
            "ldap://10.0.0.5:3389",
            "ldaps://[::1]:636/",
        ] {
            let cfg = parse(&format!("[directory]\n{BASE}url = {url:?}\n")).unwrap();
            let d = cfg.directory.unwrap();
            assert_eq!(d.filter, "(uid={user})");
            assert_eq!(
                (d.email_attr.as_str(), d.phone_attr.as_str()),
                ("mail", "mobile")
            );
        }
    }

    #[test]
    fn what_the_directory_cannot_use_is_refused_naming_the_key() {
        for (extra, key, why) in [
            (
                "url = \"ldapi:///run/slapd.sock\"",
                "directory.url",
                "is not ldaps://",
            ),
            (
                "url = \"ldap://h/dc=x??sub\"",
                "directory.url",
                "is not ldaps://",
            ),
            ("url = \"http://h\"", "directory.url", "is not ldaps://"),
            (
                "url = \"ldaps://h\"\nfilter = \"(uid=x)\"",
                "directory.filter",
                "{user}",
            ),
            (
                "url = \"ldaps://h\"\nfilter = \"(uid={user}\"",
                "directory.filter",
                "LDAP filter",
            ),
            (
                "url = \"ldaps://h\"\nemail_attr = \"mail)(x\"",
                "directory.email_attr",
                "attribute",
            ),
            (
                "url = \"ldaps://h\"\nbind_dn = \"cn=otpd\"",
                "directory.bind_dn",
                "password",
            ),
            (
                "url = \"ldaps://h\"\ncache_ttl = \"31d\"",
                "directory.cache_ttl",
                "longer",
            ),
        ] {
            let err = parse(&format!("[directory]\n{BASE}{extra}\n")).unwrap_err();
            assert!(err.contains(key) && err.contains(why), "{extra}: {err}");
        }
    }
}
