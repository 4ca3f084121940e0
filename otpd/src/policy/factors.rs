//! What each user can log in with, from their own record first, an LDAP directory second
//! (`[directory]`, crate::directory) and the static directory (`[users.NAME]`) last; the user's pick among several; turning factors off. The facts go to
//! the session layer, which words them (masking addresses is its job, not this one's).

use super::records::{Change, Records};
use crate::config::UserEntry;
use crate::directory::{Directory, Known};
use crate::store::{KeyKind, StoreError, UserRecord};
use otp_proto::{AppKind, MethodKind, MethodState, Via};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a user can log in with (`MethodKind` names one of them on the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Factors {
    /// The user's own pick among several (`otpctl default`).
    pub default: Option<MethodKind>,
    pub totp: bool,
    /// The address email codes go to.
    pub email: Option<String>,
    /// The number SMS codes go to.
    pub sms: Option<String>,
    /// Ways the directory may hold an address or number for, but cannot say now (down for
    /// longer than `cache_ttl`): the method is unavailable, and the user is not "unenrolled".
    pub unavailable: Vec<Via>,
}

impl Factors {
    pub fn is_empty(&self) -> bool {
        !self.totp && self.email.is_none() && self.sms.is_none() && self.unavailable.is_empty()
    }

    /// Where codes sent `via` go for this user.
    pub fn destination(&self, via: Via) -> Option<&str> {
        match via {
            Via::Email => self.email.as_deref(),
            Via::Sms => self.sms.as_deref(),
        }
    }
}

/// Everything enrolled for one user, as facts (`otpctl status` words them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub factors: Factors,
    /// The authenticator app: active, waiting for its first code, or none.
    pub app: MethodState,
    /// Whether that key (the active one, else the pending one) is time- or counter-based.
    pub app_kind: AppKind,
    pub recovery_codes_left: u32,
}

/// The users' factors (see the module comment).
pub struct Registry {
    records: Arc<Records>,
    directory: BTreeMap<String, UserEntry>,
    /// `[directory]`, when configured.
    ldap: Option<Directory>,
}

impl Registry {
    pub fn new(records: Arc<Records>, directory: BTreeMap<String, UserEntry>) -> Registry {
        Registry {
            records,
            directory,
            ldap: None,
        }
    }

    /// Read addresses and numbers from this directory too (`[directory]`).
    pub fn set_directory(&mut self, directory: Directory) {
        self.ldap = Some(directory);
    }

    /// The configured directory, if any.
    pub fn directory(&self) -> Option<&Directory> {
        self.ldap.as_ref()
    }

    /// Ask the directory afresh for `user` (a no-op without one): call before `factors` at a
    /// login or a command, so a changed address counts at once.
    pub async fn look_up(&self, user: &str) {
        if let Some(ldap) = &self.ldap {
            ldap.refresh(user).await;
        }
    }

    /// The second factors that count at login for this user.
    pub fn factors(&self, user: &str) -> Result<Factors, StoreError> {
        let record = self.records.load_or_default(user)?;
        Ok(self.factors_of(user, &record))
    }

    /// Does the user have a factor that works at login (an active key, an address, a number, or
    /// recovery codes)? Changing factors then needs one of them (`proof::Counts::Change`).
    pub fn has_factor(&self, user: &str) -> Result<bool, StoreError> {
        let record = self.records.load_or_default(user)?;
        Ok(!self.factors_of(user, &record).is_empty() || !record.recovery.is_empty())
    }

    pub fn enrolled(&self, user: &str) -> Result<Enrolled, StoreError> {
        let record = self.records.load_or_default(user)?;
        Ok(Enrolled {
            factors: self.factors_of(user, &record),
            app: match (&record.totp, &record.pending_totp) {
                (Some(_), _) => MethodState::Active,
                (None, Some(_)) => MethodState::Pending,
                (None, None) => MethodState::None,
            },
            app_kind: match record.totp.as_ref().or(record.pending_totp.as_ref()) {
                Some(key) if key.kind == KeyKind::Hotp => AppKind::Hotp,
                _ => AppKind::Totp,
            },
            recovery_codes_left: u32::try_from(record.recovery.len()).unwrap_or(u32::MAX),
        })
    }

    /// Set (or clear) the method offered first.
    pub async fn set_default(
        &self,
        user: &str,
        method: Option<MethodKind>,
    ) -> Result<(), StoreError> {
        self.records
            .update(user, move |record| {
                record
                    .get_or_insert_with(UserRecord::default)
                    .default_method = method;
                Change::Changed(())
            })
            .await
    }

    /// Remove every factor; true if there was one.
    pub async fn disable(&self, user: &str) -> Result<bool, StoreError> {
        self.records
            .update(user, |record| {
                let had = record.as_ref().is_some_and(|r| !r.is_empty());
                *record = None;
                Change::changed_if(had, had)
            })
            .await
    }

    /// Remove one factor; true if it was there. (`None` is `disable`.)
    pub async fn disable_method(
        &self,
        user: &str,
        method: Option<MethodKind>,
    ) -> Result<bool, StoreError> {
        let Some(method) = method else {
            return self.disable(user).await;
        };
        self.records
            .update(user, move |record| {
                let Some(r) = record.as_mut() else {
                    return Change::Unchanged(false);
                };
                let had = match method {
                    MethodKind::Totp => {
                        let had = r.totp.is_some() || r.pending_totp.is_some();
                        r.totp = None;
                        r.clear_pending();
                        had
                    }
                    MethodKind::Email => r.email.take().is_some(),
                    MethodKind::Sms => r.phone.take().is_some(),
                    // Enrolled with Duo, not here: nothing of it is stored to turn off.
                    MethodKind::Duo => false,
                };
                Change::changed_if(had, had)
            })
            .await
    }

    /// The user's own confirmed record first, then the LDAP directory, then the static one.
    /// While the LDAP directory cannot say, a method it may hold is unavailable rather than
    /// taken from `[users.NAME]`.
    fn factors_of(&self, user: &str, record: &UserRecord) -> Factors {
        let directory = self.directory.get(user);
        let mut unavailable = Vec::new();
        let mut pick = |via: Via, own: &Option<String>, ldap: Option<Option<String>>| {
            let fixed = directory.and_then(|d| match via {
                Via::Email => d.email.clone(),
                Via::Sms => d.phone.clone(),
            });
            match (own, ldap) {
                (Some(own), _) => Some(own.clone()),
                (None, Some(Some(found))) => Some(found),
                (None, Some(None)) => {
                    unavailable.push(via);
                    None
                }
                (None, None) => fixed,
            }
        };
        // Some(Some(x)): the directory holds x; Some(None): it cannot say; None: it holds none.
        let (email, phone) = match self.ldap.as_ref().map(|l| l.known(user)) {
            None => (None, None),
            Some(Known::Contacts(c)) => (c.email.map(Some), c.phone.map(Some)),
            Some(Known::Unavailable { email, phone }) => {
                (email.then_some(None), phone.then_some(None))
            }
        };
        Factors {
            default: record.default_method,
            totp: record.totp.is_some(),
            email: pick(Via::Email, &record.email, email),
            sms: pick(Via::Sms, &record.phone, phone),
            unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::policy::accounts::Accounts;
    use crate::policy::keys::{KeyCheck, Target};
    use crate::policy::totp;
    use crate::store::FileStore;
    use otp_proto::Secret;

    fn accounts(dir: &std::path::Path) -> Accounts {
        Accounts::new(Arc::new(FileStore::open(dir).unwrap()), Config::default()).unwrap()
    }

    /// alice with an active key, confirmed with the previous step's code.
    async fn enrolled(a: &Accounts) {
        let (key, _) = a.enrollment.enroll_totp("alice", false).await.unwrap();
        let t = super::super::clock::unix_now() - 30;
        let code = Secret::new(totp::code_at(&key, t).unwrap());
        let v = a.keys.check("alice", &code, Target::PendingOrActive).await;
        assert_eq!(v.unwrap(), KeyCheck::Activated);
    }

    #[tokio::test]
    async fn a_directory_address_is_a_factor_and_a_confirmed_one_overrides_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.users.insert(
            "alice".into(),
            crate::config::UserEntry {
                email: Some("alice@corp.example".into()),
                phone: None,
            },
        );
        let a = Accounts::new(Arc::new(FileStore::open(dir.path()).unwrap()), cfg).unwrap();
        let m = a.registry.factors("alice").unwrap();
        assert_eq!(m.email.as_deref(), Some("alice@corp.example"));
        assert!(!m.totp);
        a.enrollment
            .set_destination("alice", Via::Email, "alice@home.example")
            .await
            .unwrap();
        let m = a.registry.factors("alice").unwrap();
        assert_eq!(m.email.as_deref(), Some("alice@home.example"));
        assert!(a.registry.factors("bob").unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_directory_that_never_answered_leaves_the_user_unavailable_not_unenrolled() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[directory]\nkind = \"ldap\"\nurl = \"ldaps://127.0.0.1:1\"\n\
                    base = \"dc=example\"\ntimeout = \"1s\"\n\
                    [users.alice]\nemail = \"alice@static.example\"\n";
        let cfg = Config::parse(std::path::Path::new("t.toml"), text).unwrap();
        let directory = crate::directory::Directory::new(cfg.directory.as_ref().unwrap());
        let mut a = Accounts::new(Arc::new(FileStore::open(dir.path()).unwrap()), cfg).unwrap();
        a.registry.set_directory(directory.unwrap());
        a.registry.look_up("alice").await;
        let m = a.registry.factors("alice").unwrap();
        assert_eq!(
            m.email, None,
            "not the static address while the directory cannot say"
        );
        assert_eq!(m.unavailable, [Via::Email, Via::Sms]);
        assert!(
            !m.is_empty(),
            "not \"unenrolled\": unenrolled = allow must not let in"
        );
        assert!(
            a.registry.has_factor("alice").unwrap(),
            "changes still need proof"
        );
        a.enrollment
            .set_destination("alice", Via::Email, "alice@home.example")
            .await
            .unwrap();
        let m = a.registry.factors("alice").unwrap();
        assert_eq!(
            m.email.as_deref(),
            Some("alice@home.example"),
            "her own comes first"
        );
        assert_eq!(m.unavailable, [Via::Sms]);
    }

    #[tokio::test]
    async fn disable_forgets_every_factor() {
        let dir = tempfile::tempdir().unwrap();
        let a = accounts(dir.path());
        enrolled(&a).await;
        assert!(a.registry.disable("alice").await.unwrap());
        assert!(!a.registry.disable("alice").await.unwrap());
        assert_eq!(a.registry.enrolled("alice").unwrap().app, MethodState::None);
        assert!(a.users().await.unwrap().is_empty());
    }
}
