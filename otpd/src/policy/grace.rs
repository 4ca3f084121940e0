//! The grace period (`[policy] grace`, or a policy rule's `grace`): after a second factor for
//! user U from remote host R through service S, logins of U from R through S skip the code for
//! a while. The period is the login's rule's (read per login, so a reload changes it).
//!
//! Only what root's PAM stack says counts: sshd and login run as root and set PAM_RHOST from
//! the connection, while a local user running their own PAM program can set PAM_RHOST to
//! anything, so a login relayed by any other uid neither gets grace nor grants it. An empty
//! rhost (a console, sudo, su) gets none unless `grace_local`. Grace lives in memory on this
//! host: a restart forgets it, which only asks for a code again (fail closed). With
//! `grace_fleet` it is also kept in the fleet database, so grace given on one host holds on
//! every host, and forgetting it there ends it everywhere. Any failed code and `otpctl
//! unlock`, `reset` and `disable` forget the user's grace.

use super::clock::unix_now;
use crate::store::Store;
use otp_proto::Login;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Users with grace at once; past it, expired grace is swept and, if still full, no new grace
/// is granted (the next login asks for a code).
const MAX_USERS: usize = 65_536;
/// (rhost, service) pairs kept per user; the oldest goes first.
const MAX_PER_USER: usize = 16;

/// Who has grace, from where, until when (see the module comment).
pub struct Grace {
    /// The fleet store, when `grace_fleet` shares grace across hosts.
    fleet: Option<Arc<dyn Store>>,
    granted: Mutex<HashMap<String, Vec<Granted>>>,
}

/// What the login's policy says of grace: how long (`None`: none), and whether logins without
/// a remote host get it (`grace_local`).
#[derive(Debug, Clone, Copy, Default)]
pub struct GraceRule {
    pub period: Option<Duration>,
    pub local: bool,
}

/// One grace: from this rhost through this service, until then.
struct Granted {
    rhost: String,
    service: String,
    until: Instant,
}

impl Grace {
    /// `fleet`: the store to share grace through (`grace_fleet`), else this host's alone.
    pub fn new(fleet: Option<Arc<dyn Store>>) -> Grace {
        Grace {
            fleet,
            granted: Mutex::default(),
        }
    }

    /// May this login skip the code? Only for a login root relays, from where and through
    /// what a second factor was given within the period.
    pub fn admits(&self, peer_uid: u32, login: &Login, rule: GraceRule) -> bool {
        // Shared grace lives in the database alone: a failed code on any host ends it at once.
        let Some(fleet) = self.shared() else {
            return self.admits_at(peer_uid, login, rule, Instant::now());
        };
        let Some(rhost) = self.rhost(peer_uid, login, rule) else {
            return false;
        };
        // Unreachable or failing: no grace (a code is asked), never an error for the login.
        match fleet.grace_admits(&login.user, rhost, &login.service, unix_now()) {
            Ok(admitted) => admitted,
            Err(e) => {
                log::warn!("grace: the fleet database cannot say ({e}); asking for a code");
                false
            }
        }
    }

    /// The login gave a second factor: grant grace for its (user, rhost, service), if the
    /// policy has a period and root relayed it.
    pub fn grant(&self, peer_uid: u32, login: &Login, rule: GraceRule) {
        let Some(fleet) = self.shared() else {
            return self.grant_at(peer_uid, login, rule, Instant::now());
        };
        let (Some(rhost), Some(period)) = (self.rhost(peer_uid, login, rule), rule.period) else {
            return;
        };
        let until = unix_now().saturating_add(period.as_secs());
        if let Err(e) = fleet.grace_grant(&login.user, rhost, &login.service, until) {
            log::warn!("grace: not granted, the fleet database cannot keep it ({e})");
        }
    }

    /// Forget every grace of `user` (a failed code, unlock, reset, disable), on every host of
    /// a fleet that shares it.
    pub fn forget(&self, user: &str) {
        self.table().remove(user);
        if let Some(fleet) = self.shared() {
            if let Err(e) = fleet.grace_forget(user) {
                log::error!("grace: user={user}: the fleet's grace could not be ended ({e})");
            }
        }
    }

    fn shared(&self) -> Option<&dyn crate::store::Fleet> {
        self.fleet.as_deref().and_then(|store| store.fleet())
    }

    /// The rhost grace is keyed on, if this login may have grace at all.
    fn rhost<'a>(&self, peer_uid: u32, login: &'a Login, rule: GraceRule) -> Option<&'a str> {
        // A one-prompt login (forward_pass) typed its code into the password: it is judged, so
        // the password part can be split off and handed back; grace would swallow both.
        if rule.period.is_none() || peer_uid != 0 || login.forward_pass.is_some() {
            return None;
        }
        match login.rhost.as_deref().unwrap_or("") {
            "" if !rule.local => None,
            rhost => Some(rhost),
        }
    }

    fn admits_at(&self, peer_uid: u32, login: &Login, rule: GraceRule, now: Instant) -> bool {
        let Some(rhost) = self.rhost(peer_uid, login, rule) else {
            return false;
        };
        self.table().get(&login.user).is_some_and(|all| {
            all.iter()
                .any(|g| g.rhost == rhost && g.service == login.service && now < g.until)
        })
    }

    fn grant_at(&self, peer_uid: u32, login: &Login, rule: GraceRule, now: Instant) {
        let (Some(rhost), Some(period)) = (self.rhost(peer_uid, login, rule), rule.period) else {
            return;
        };
        let Some(until) = now.checked_add(period) else {
            return;
        };
        let mut table = self.table();
        if table.len() >= MAX_USERS && !table.contains_key(&login.user) {
            table.retain(|_, all| {
                all.retain(|g| now < g.until);
                !all.is_empty()
            });
            if table.len() >= MAX_USERS {
                log::warn!(
                    "grace: {MAX_USERS} users have grace; granting no more until some expire"
                );
                return;
            }
        }
        let all = table.entry(login.user.clone()).or_default();
        all.retain(|g| now < g.until && !(g.rhost == rhost && g.service == login.service));
        if all.len() >= MAX_PER_USER {
            all.remove(0);
        }
        all.push(Granted {
            rhost: rhost.to_owned(),
            service: login.service.clone(),
            until,
        });
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, Vec<Granted>>> {
        // A panic elsewhere while holding the lock leaves a table that is still consistent.
        self.granted.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host's grace (no fleet) under one policy.
    struct G {
        g: Grace,
        r: GraceRule,
    }

    impl G {
        fn admits_at(&self, uid: u32, login: &Login, now: Instant) -> bool {
            self.g.admits_at(uid, login, self.r, now)
        }
        fn grant_at(&self, uid: u32, login: &Login, now: Instant) {
            self.g.grant_at(uid, login, self.r, now)
        }
        fn forget(&self, user: &str) {
            self.g.forget(user)
        }
    }

    fn grace(period: Option<u64>, local: bool) -> G {
        G {
            g: Grace::new(None),
            r: GraceRule {
                period: period.map(Duration::from_secs),
                local,
            },
        }
    }

    fn login(user: &str, rhost: Option<&str>, service: &str) -> Login {
        Login {
            user: user.into(),
            service: service.into(),
            rhost: rhost.map(Into::into),
            tty: None,
            nullok: false,
            forward_pass: None,
        }
    }

    #[test]
    fn a_one_prompt_login_is_never_graced() {
        let g = grace(Some(3600), false);
        let now = Instant::now();
        let interactive = login("alice", Some("192.0.2.7"), "openvpn");
        g.grant_at(0, &interactive, now);
        assert!(g.admits_at(0, &interactive, now));
        let one_prompt = Login {
            forward_pass: Some(otp_proto::Secret::new("hunter2123456")),
            ..interactive
        };
        assert!(
            !g.admits_at(0, &one_prompt, now),
            "its code must be judged and split off"
        );
    }

    #[test]
    fn grace_holds_for_the_same_user_rhost_and_service_within_the_period() {
        let g = grace(Some(3600), false);
        let now = Instant::now();
        let from_r = login("alice", Some("192.0.2.7"), "sshd");
        assert!(!g.admits_at(0, &from_r, now), "nothing granted yet");
        g.grant_at(0, &from_r, now);
        assert!(g.admits_at(0, &from_r, now + Duration::from_secs(3599)));
        assert!(!g.admits_at(0, &from_r, now + Duration::from_secs(3600)));
        assert!(!g.admits_at(0, &login("alice", Some("192.0.2.8"), "sshd"), now));
        assert!(!g.admits_at(0, &login("alice", Some("192.0.2.7"), "login"), now));
        assert!(!g.admits_at(0, &login("bob", Some("192.0.2.7"), "sshd"), now));
    }

    #[test]
    fn a_login_another_uid_relays_neither_gets_nor_grants_grace() {
        let g = grace(Some(3600), true);
        let now = Instant::now();
        let from_r = login("alice", Some("192.0.2.7"), "sshd");
        g.grant_at(1000, &from_r, now);
        assert!(
            !g.admits_at(0, &from_r, now),
            "a user's own PAM program grants nothing"
        );
        g.grant_at(0, &from_r, now);
        assert!(
            !g.admits_at(1000, &from_r, now),
            "nor gets what root's stack granted"
        );
    }

    #[test]
    fn an_empty_rhost_has_grace_only_with_grace_local() {
        let now = Instant::now();
        for rhost in [None, Some("")] {
            let local = login("alice", rhost, "sudo");
            let g = grace(Some(3600), false);
            g.grant_at(0, &local, now);
            assert!(!g.admits_at(0, &local, now));
            let g = grace(Some(3600), true);
            g.grant_at(0, &local, now);
            assert!(g.admits_at(0, &local, now));
        }
    }

    #[test]
    fn without_a_period_there_is_no_grace() {
        let g = grace(None, true);
        let from_r = login("alice", Some("192.0.2.7"), "sshd");
        g.grant_at(0, &from_r, Instant::now());
        assert!(!g.admits_at(0, &from_r, Instant::now()));
    }

    #[test]
    fn forgetting_a_user_ends_their_grace_from_everywhere_and_only_theirs() {
        let g = grace(Some(3600), false);
        let now = Instant::now();
        let (a1, a2) = (
            login("alice", Some("192.0.2.7"), "sshd"),
            login("alice", Some("192.0.2.8"), "sshd"),
        );
        let b = login("bob", Some("192.0.2.7"), "sshd");
        for l in [&a1, &a2, &b] {
            g.grant_at(0, l, now);
        }
        g.forget("alice");
        assert!(!g.admits_at(0, &a1, now) && !g.admits_at(0, &a2, now));
        assert!(g.admits_at(0, &b, now));
    }

    #[test]
    fn a_user_keeps_at_most_sixteen_places_the_oldest_going_first() {
        let g = grace(Some(3600), false);
        let now = Instant::now();
        let from = |i: usize| login("alice", Some(&format!("192.0.2.{i}")), "sshd");
        for i in 0..=MAX_PER_USER {
            g.grant_at(0, &from(i), now);
        }
        assert!(!g.admits_at(0, &from(0), now));
        assert!((1..=MAX_PER_USER).all(|i| g.admits_at(0, &from(i), now)));
    }
}
