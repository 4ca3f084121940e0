//! User names as the passwd database knows them. PAM_USER is whatever the user typed: "ALICE",
//! "alice " or a Cyrillic "аlice" are not alice, yet each would be a user with nothing enrolled
//! (let in by `nullok`) and with a lockout counter of its own. otpd resolves the typed name
//! through NSS (getpwnam) and keys everything by the canonical name NSS returns; a name with no
//! passwd entry stays as typed and is never let in for having nothing enrolled.
//!
//! A login whose typed name is exactly the name of a stored record skips NSS
//! (`resolve_recorded`): records are only ever stored under the name this module resolved, so
//! NSS would return that same name, and the lookup was a third of otpd's work per login
//! (bench/notes.md). Whether such a name has a passwd entry is asked of NSS only where it
//! decides something (`Name::Recorded`, session::login).

use nix::unistd::User;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an answer from NSS is trusted: long enough that a busy host does not ask per login,
/// short enough that a new or removed account counts at once for practical purposes.
const NAME_TTL: Duration = Duration::from_secs(10);

/// Longest name looked up; anything longer is no account (Linux allows 32 bytes, NSS modules
/// for directories somewhat more).
pub const MAX_NAME: usize = 256;

/// Answers kept at most, so a peer trying many names cannot grow the cache without bound.
const CAPACITY: usize = 4096;

/// A user name after the passwd lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// A passwd entry exists: its `pw_name`, as NSS returns it.
    Known(String),
    /// No passwd entry (or a name that cannot be one): as typed. Only a record enrolled under
    /// exactly this name may let it in.
    Unknown(String),
    /// A record is stored under exactly this name, so it is the key NSS would give; NSS was not
    /// asked whether the name has a passwd entry (resolve it for that).
    Recorded(String),
}

impl Name {
    /// The key records, lockout and quotas use.
    pub fn as_str(&self) -> &str {
        match self {
            Name::Known(n) | Name::Unknown(n) | Name::Recorded(n) => n,
        }
    }

    /// A passwd entry exists (as far as NSS was asked: not for `Recorded`).
    pub fn is_known(&self) -> bool {
        matches!(self, Name::Known(_))
    }
}

/// Typed names resolved through NSS, each remembered for `NAME_TTL`.
#[derive(Default)]
pub struct Names {
    known: Mutex<HashMap<String, (Instant, Name)>>,
}

impl Names {
    pub fn new() -> Names {
        Names::default()
    }

    /// What `typed` names. Empty names, names over `MAX_NAME` bytes and names holding control
    /// characters are `Unknown` without asking NSS. A failed lookup (NSS down, the blocking pool
    /// gone) is `Unknown` too: fail closed, and not remembered.
    pub async fn resolve(&self, typed: &str) -> Name {
        if !plausible(typed) {
            return Name::Unknown(typed.to_owned());
        }
        let now = Instant::now();
        if let Some((at, name)) = self.cache().get(typed) {
            if now.saturating_duration_since(*at) < NAME_TTL {
                return name.clone();
            }
        }
        let owned = typed.to_owned();
        let looked_up = tokio::task::spawn_blocking(move || lookup(&owned)).await;
        let name = match looked_up {
            Ok(Ok(name)) => name,
            Ok(Err(e)) => {
                log::warn!(
                    "user={}: passwd lookup failed ({e}); treated as unknown",
                    crate::logging::field(typed)
                );
                return Name::Unknown(typed.to_owned());
            }
            Err(_) => return Name::Unknown(typed.to_owned()),
        };
        let mut cache = self.cache();
        if cache.len() >= CAPACITY {
            // Made-up names (anyone who reaches a login prompt can type thousands) go first,
            // and never push out the real users: when only fresh real names are left, this
            // one is not remembered.
            cache
                .retain(|_, (at, n)| n.is_known() && now.saturating_duration_since(*at) < NAME_TTL);
        }
        if cache.len() < CAPACITY {
            cache.insert(typed.to_owned(), (now, name.clone()));
        }
        name
    }

    /// `resolve`, but a plausible name with a record stored under exactly it (`recorded`) is
    /// that record's key without asking NSS (see the module comment).
    pub async fn resolve_recorded(&self, typed: &str, recorded: impl FnOnce(&str) -> bool) -> Name {
        if plausible(typed) && recorded(typed) {
            return Name::Recorded(typed.to_owned());
        }
        self.resolve(typed).await
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Name)>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Could `typed` be an account name at all?
fn plausible(typed: &str) -> bool {
    !typed.is_empty() && typed.len() <= MAX_NAME && !typed.chars().any(char::is_control)
}

/// getpwnam through NSS. Blocking: call from the blocking pool. The canonical name is the
/// entry's own `pw_name`, which a case-insensitive NSS module (LDAP, SSSD) may spell otherwise
/// than the user typed.
fn lookup(typed: &str) -> Result<Name, nix::Error> {
    Ok(match User::from_name(typed)? {
        Some(user) => Name::Known(user.name),
        None => Name::Unknown(typed.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(s: &str) -> Name {
        Name::Unknown(s.to_owned())
    }

    #[tokio::test]
    async fn real_accounts_resolve_to_their_passwd_name() {
        let names = Names::new();
        assert_eq!(names.resolve("root").await, Name::Known("root".into()));
        assert_eq!(names.resolve("nobody").await, Name::Known("nobody".into()));
        assert!(names.resolve("root").await.is_known());
    }

    #[tokio::test]
    async fn spellings_that_are_not_the_account_are_unknown() {
        let names = Names::new();
        for typed in [
            "ROOT",
            "root ",
            " root",
            "\u{440}oot",   // Cyrillic "р"
            "n\u{43e}body", // Cyrillic "о"
            "no-such-user-otpd-test",
        ] {
            assert_eq!(names.resolve(typed).await, unknown(typed), "{typed:?}");
        }
    }

    #[tokio::test]
    async fn a_recorded_name_is_its_own_key_and_nss_is_asked_only_otherwise() {
        let names = Names::new();
        let ghost = "no-such-user-otpd-test";
        let asked = std::cell::Cell::new(0);
        let recorded = |n: &str| {
            asked.set(asked.get() + 1);
            n == ghost || n == "root"
        };
        let name = names.resolve_recorded(ghost, recorded).await;
        assert_eq!(name, Name::Recorded(ghost.into()));
        assert!(!name.is_known(), "NSS was not asked, so not known");
        assert_eq!(
            names.resolve_recorded("root", recorded).await,
            Name::Recorded("root".into())
        );
        // No record under this spelling: NSS decides, as before.
        assert_eq!(
            names.resolve_recorded("ROOT", recorded).await,
            unknown("ROOT")
        );
        assert_eq!(
            names.resolve_recorded("nobody", recorded).await,
            Name::Known("nobody".into())
        );
        // Names that cannot be accounts never reach the record lookup.
        let bad = "ro\not";
        assert_eq!(names.resolve_recorded(bad, recorded).await, unknown(bad));
        assert_eq!(asked.get(), 4);
    }

    #[tokio::test]
    async fn names_that_cannot_be_accounts_are_unknown_without_asking() {
        let names = Names::new();
        let long = "a".repeat(MAX_NAME + 1);
        for typed in ["", "root\n", "root\0", "\x1b[2Jroot", long.as_str()] {
            assert_eq!(names.resolve(typed).await, unknown(typed), "{typed:?}");
        }
        assert!(names.cache().is_empty(), "never looked up, never cached");
    }

    #[tokio::test]
    async fn an_answer_is_remembered_for_a_while() {
        let names = Names::new();
        names.resolve("root").await;
        names.resolve("nobody-otpd-test").await;
        let cache = names.cache();
        assert_eq!(cache["root"].1, Name::Known("root".into()));
        assert_eq!(cache["nobody-otpd-test"].1, unknown("nobody-otpd-test"));
    }

    #[test]
    fn the_key_is_the_canonical_name_or_the_typed_one() {
        assert_eq!(Name::Known("alice".into()).as_str(), "alice");
        assert_eq!(unknown("ALICE").as_str(), "ALICE");
        assert!(!unknown("ALICE").is_known());
    }
}
