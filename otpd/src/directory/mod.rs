//! Addresses and numbers from a directory (`[directory] kind = "ldap"`): the client
//! (`ldap`), the values last read, used while the directory is down (`cache`), and phone
//! numbers made E.164 (`e164`). The directory is trusted: what it holds counts as confirmed.
//! A value that is not an address, or a number that is not E.164, is refused with a log line.
//!
//! Every login asks the directory afresh (so a changed or removed address applies at once);
//! when it cannot answer, the value read within `cache_ttl` is used, and after that the
//! method is unavailable: `policy::factors` says so rather than "not enrolled" (fail closed).

pub mod cache;
pub mod e164;
pub mod ldap;

use crate::config::directory::DirectoryConfig;
use crate::logging::field;
use cache::{Cache, Cached};
use ldap::{DirectoryConfigError, Entry, LdapClient, LookupError};
use std::time::Instant;

/// What the directory holds for a user, checked: an address and an E.164 number, or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contacts {
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// What is known of a user's directory values now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// Read now, or within `cache_ttl`.
    Contacts(Contacts),
    /// Neither: `email`/`phone` say whether the directory may hold one (it did when last
    /// read, or it was never read).
    Unavailable { email: bool, phone: bool },
}

pub struct Directory {
    client: LdapClient,
    cache: Cache,
    /// For check-config and the start-up line.
    pub url: String,
    pub base: String,
}

impl Directory {
    pub fn new(cfg: &DirectoryConfig) -> Result<Directory, DirectoryConfigError> {
        Ok(Directory {
            client: LdapClient::new(cfg)?,
            cache: Cache::new(cfg.cache_ttl),
            url: cfg.url.clone(),
            base: cfg.base.clone(),
        })
    }

    /// Ask the directory for `user`'s values and remember them; a directory that does not
    /// answer leaves what was read before (logged).
    pub async fn refresh(&self, user: &str) {
        match self.client.look_up(user).await {
            Ok(entry) => {
                let contacts = checked(user, entry.unwrap_or_default());
                self.cache.put(user, contacts, Instant::now());
            }
            Err(e) => log::warn!(
                "user={}: directory {} did not answer ({e}); using what was read before, if \
                 within cache_ttl",
                field(user),
                self.url
            ),
        }
    }

    /// What counts for `user` now (after `refresh`).
    pub fn known(&self, user: &str) -> Known {
        match self.cache.get(user, Instant::now()) {
            Cached::Fresh(contacts) => Known::Contacts(contacts),
            Cached::Expired(was) => Known::Unavailable {
                email: was.email.is_some(),
                phone: was.phone.is_some(),
            },
            Cached::Unknown => Known::Unavailable {
                email: true,
                phone: true,
            },
        }
    }

    /// Connect and bind, for `otpd check-config`.
    pub async fn probe(&self) -> Result<(), LookupError> {
        self.client.probe().await
    }
}

/// The first value of each attribute, if it is an address or (made) an E.164 number.
fn checked(user: &str, entry: Entry) -> Contacts {
    let email = entry.email.into_iter().next().filter(|a| {
        let ok = crate::formats::valid_address(a);
        if !ok {
            log::warn!(
                "user={}: the directory's address {} is not an email address; not used",
                field(user),
                field(a)
            );
        }
        ok
    });
    let phone = entry.phone.into_iter().next().and_then(|n| {
        let e164 = e164::normalise(&n);
        if e164.is_none() {
            log::warn!(
                "user={}: the directory's number {} is not an E.164 number (+ and country \
                 code); not used",
                field(user),
                field(&n)
            );
        }
        e164
    });
    Contacts { email, phone }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_address_and_an_e164_number_are_used() {
        let entry = Entry {
            email: vec!["not an address".into()],
            phone: vec!["+1 (202) 555-0123".into(), "+442079460958".into()],
        };
        let c = checked("alice", entry);
        assert_eq!(c.email, None);
        assert_eq!(c.phone.as_deref(), Some("+12025550123"));
        let national = Entry {
            email: vec!["alice@example.com".into()],
            phone: vec!["(202) 555-0123".into()],
        };
        let c = checked("alice", national);
        assert_eq!(c.email.as_deref(), Some("alice@example.com"));
        assert_eq!(c.phone, None);
    }
}
