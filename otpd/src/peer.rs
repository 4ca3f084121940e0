//! Who is on the other end of a connection (SO_PEERCRED), and what they may do.
//!
//! Root may authenticate anyone and manage anyone. Members of `admin_group` may manage anyone but
//! root (an admin must not be able to drop root's second factor). Everybody else may
//! authenticate (a screen locker runs as the user) and manage only themselves.

use nix::unistd::{Gid, Group, Uid, User};
use otp_proto::Refusal;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a uid's name and admin membership are trusted before NSS is asked again: long
/// enough that a busy host does not ask per login, short enough that removing someone from
/// `admin_group` takes effect at once for practical purposes.
const IDENTITY_TTL: Duration = Duration::from_secs(10);

/// Peers by uid, each looked up at most once per `IDENTITY_TTL`.
pub struct Callers {
    admin_group: Option<String>,
    known: Mutex<HashMap<u32, (Instant, Caller)>>,
}

impl Callers {
    pub fn new(admin_group: Option<String>) -> Callers {
        Callers {
            admin_group,
            known: Mutex::default(),
        }
    }

    /// The caller behind `uid`; `None` only if the blocking pool is gone (shutting down).
    pub async fn identify(&self, uid: u32) -> Option<Caller> {
        let now = Instant::now();
        if let Some((at, caller)) = self.known().get(&uid) {
            if now.duration_since(*at) < IDENTITY_TTL {
                return Some(caller.clone());
            }
        }
        let group = self.admin_group.clone();
        let caller = tokio::task::spawn_blocking(move || Caller::identify(uid, group.as_deref()))
            .await
            .ok()?;
        let mut known = self.known();
        known.retain(|_, (at, _)| now.duration_since(*at) < IDENTITY_TTL);
        known.insert(uid, (now, caller.clone()));
        Some(caller)
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (Instant, Caller)>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone)]
pub struct Caller {
    pub uid: u32,
    /// The passwd name of `uid`; `None` for a uid without an entry, which may act for nobody.
    pub name: Option<String>,
    /// Root, or a member of `admin_group`.
    pub admin: bool,
}

impl Caller {
    /// Resolve a peer uid through NSS. Blocking: call from the blocking pool.
    pub fn identify(uid: u32, admin_group: Option<&str>) -> Caller {
        let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
        let admin = uid == 0
            || match (admin_group, &user) {
                (Some(group), Some(user)) => in_group(group, &user.name, user.gid),
                _ => false,
            };
        Caller {
            uid,
            name: user.map(|u| u.name),
            admin,
        }
    }

    /// May this caller run a login for `user`? Root, or the user itself.
    pub fn may_authenticate(&self, user: &str) -> bool {
        self.uid == 0 || self.is(user)
    }

    /// The user a management command is about: the named one (admins, or oneself), or the caller.
    pub fn target(&self, user: Option<String>) -> Result<String, Refusal> {
        match user {
            Some(u) if self.is(&u) => Ok(u),
            Some(u) if self.admin && (self.uid == 0 || !is_superuser(&u)) => Ok(u),
            Some(_) => Err(Refusal::Forbidden),
            None => self.name.clone().ok_or(Refusal::Forbidden),
        }
    }

    /// Admin-only commands.
    pub fn require_admin(&self) -> Result<(), Refusal> {
        if self.admin {
            Ok(())
        } else {
            Err(Refusal::Forbidden)
        }
    }

    fn is(&self, user: &str) -> bool {
        self.name.as_deref() == Some(user)
    }
}

/// Is `name` uid 0 (root, or another name for it)?
fn is_superuser(name: &str) -> bool {
    name == "root" || matches!(User::from_name(name), Ok(Some(u)) if u.uid.is_root())
}

fn in_group(group: &str, user: &str, primary: Gid) -> bool {
    match Group::from_name(group) {
        Ok(Some(g)) => g.gid == primary || g.mem.iter().any(|m| m == user),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, name: &str, admin: bool) -> Caller {
        Caller {
            uid,
            name: Some(name.into()),
            admin,
        }
    }

    #[test]
    fn a_user_may_authenticate_and_manage_only_itself() {
        let alice = caller(1000, "alice", false);
        assert!(alice.may_authenticate("alice"));
        assert!(!alice.may_authenticate("bob"));
        assert_eq!(alice.target(None).unwrap(), "alice");
        assert_eq!(alice.target(Some("alice".into())).unwrap(), "alice");
        assert_eq!(alice.target(Some("bob".into())), Err(Refusal::Forbidden));
        assert_eq!(alice.require_admin(), Err(Refusal::Forbidden));
    }

    #[test]
    fn root_may_do_anything() {
        let root = Caller::identify(0, None);
        assert!(root.admin);
        assert!(root.may_authenticate("bob"));
        assert_eq!(root.target(Some("bob".into())).unwrap(), "bob");
    }

    #[test]
    fn an_admin_manages_others_but_cannot_log_in_as_them() {
        let admin = caller(1001, "carol", true);
        assert!(!admin.may_authenticate("bob"));
        assert_eq!(admin.target(Some("bob".into())).unwrap(), "bob");
        assert!(admin.require_admin().is_ok());
    }

    #[test]
    fn only_root_manages_root() {
        let admin = caller(1001, "carol", true);
        assert_eq!(admin.target(Some("root".into())), Err(Refusal::Forbidden));
        let root = Caller::identify(0, None);
        assert_eq!(root.target(Some("root".into())).unwrap(), "root");
    }

    #[tokio::test]
    async fn a_caller_is_looked_up_once_and_remembered() {
        let callers = Callers::new(None);
        let first = callers.identify(0).await.unwrap();
        assert_eq!(first.name.as_deref(), Some("root"));
        assert!(callers.known().contains_key(&0));
        let again = callers.identify(0).await.unwrap();
        assert_eq!(again.name, first.name);
        assert!(again.admin);
    }

    #[test]
    fn a_uid_without_a_name_acts_for_nobody() {
        let ghost = Caller {
            uid: 4_000_000_000,
            name: None,
            admin: false,
        };
        assert!(!ghost.may_authenticate("ghost"));
        assert_eq!(ghost.target(None), Err(Refusal::Forbidden));
    }
}
