//! Challenges: codes the daemon sends (email, SMS) and later checks. Expiry, attempts, resend
//! cooldown, the hourly send quotas and resend invalidation all live here, once, for every
//! channel; a channel only delivers.
//!
//! Quotas count only what a destination agreed to. Login codes and disable tokens go to an
//! address or number its owner confirmed: they count toward the user's quota, the cooldown and
//! the destination's login quota. Enrollment codes (`Purpose::Confirm`) go to a destination
//! nobody has confirmed yet, so anyone may name anyone's address: they have a small budget of
//! their own, per requesting user and per destination, and never touch the login ledgers, so
//! enrolling a victim's address cannot use up the victim's login codes. Destinations are
//! compared by [`destination_key`]: addresses without case, numbers in E.164.
//!
//! Codes are kept only as salted SHA-256 hashes and compared in constant time. Everything runs on
//! the daemon's monotonic clock. Challenges live in memory: a restart voids them, which is safe
//! (the user asks for a new code).

use super::codes::{new_code, normalize, random};
use crate::config::{Charset, CodeConfig};
use crate::store::{FleetRefusal, FleetSend, Store, StoreError};
use otp_proto::{Secret, Via};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// What a code, once given back, proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// The second factor of a login (or of `otpctl verify`).
    Login,
    /// The user controls this address or number; it becomes their email or SMS method.
    Confirm(Via, String),
    /// The owner of the mailbox on file agrees to turn a second factor off (`None`: all).
    Disable(Option<otp_proto::MethodKind>),
}

/// A sent code, as the daemon remembers it.
struct Challenge {
    id: String,
    purpose: Purpose,
    salt: [u8; 16],
    hash: [u8; 32],
    expires: Instant,
    attempts: u32,
}

#[derive(Default)]
struct UserChallenges {
    open: Vec<Challenge>,
    /// Login and disable sends within the last hour, for the quota and the cooldown.
    sends: VecDeque<Instant>,
    /// Enrollment sends this user asked for within the last hour.
    unconfirmed: VecDeque<Instant>,
}

/// Send times within the last hour per destination (by `destination_key`), whoever asked.
#[derive(Default)]
struct Destinations {
    /// Login codes and disable tokens.
    confirmed: HashMap<String, VecDeque<Instant>>,
    /// Enrollment codes.
    unconfirmed: HashMap<String, VecDeque<Instant>>,
}

/// Which ledgers a send was counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ledger {
    /// The user's quota and cooldown, and the destination's login quota.
    Confirmed,
    /// The enrollment budgets of the requesting user and of the destination.
    Unconfirmed,
}

impl Ledger {
    fn of(purpose: &Purpose) -> Ledger {
        match purpose {
            Purpose::Confirm(..) => Ledger::Unconfirmed,
            Purpose::Login | Purpose::Disable(_) => Ledger::Confirmed,
        }
    }
}

/// Why no code may be sent right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendRefusal {
    /// Wait this long before the next send.
    Cooldown(Duration),
    /// `max_sends_per_hour` or `max_sends_per_destination_per_hour` reached.
    Quota,
    /// `max_unconfirmed_sends_per_hour` reached, by the requesting user or for the destination.
    UnconfirmedQuota,
    /// The fleet's database cannot be reached: nothing is sent, since only the database could
    /// count the send and check the code (`[store] offline` covers the app alone).
    Offline,
}

/// A store error while counting a send in the fleet's database: the send is refused either way
/// (fail closed), as offline when the database is unreachable, else as the quota.
fn refusal_for(e: &StoreError) -> SendRefusal {
    match e {
        StoreError::Unreachable(_) => SendRefusal::Offline,
        _ => SendRefusal::Quota,
    }
}

/// A freshly issued code, to hand to a channel.
pub struct Issued {
    pub id: String,
    pub code: Secret,
    /// When and where it was counted as sent, so a failed delivery can be uncounted.
    at: Instant,
    ledger: Ledger,
    /// As counted in a fleet's store, to uncount there too.
    fleet: Option<FleetSend>,
}

/// What the open challenges say of one answer (internal to the policy layer: `proof` turns it
/// into the `Proof` sessions see).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeCheck {
    Accepted {
        id: String,
        purpose: Purpose,
    },
    /// Matches a challenge that has expired.
    Expired,
    /// Wrong; `alive` says whether any challenge can still be answered.
    Wrong {
        alive: bool,
    },
    /// No open challenge for this purpose.
    NoChallenge,
}

pub struct Challenges {
    cfg: CodeConfig,
    /// How long a mailed disable token stays valid (`[policy] disable_token_ttl`).
    disable_ttl: Duration,
    users: Mutex<HashMap<String, UserChallenges>>,
    destinations: Mutex<Destinations>,
    /// When users and destinations with nothing left to remember were last dropped.
    swept: Mutex<Instant>,
    /// A fleet's shared store, which counts sends for every host.
    fleet: Option<Arc<dyn Store>>,
}

/// How often the whole ledger is swept. Sweeping on every send would cost time in proportion
/// to everyone who got a code in the last hour, for every send (measured: 5.5 % of otpd's CPU
/// with ~1,000 codes in flight).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl Challenges {
    pub fn new(cfg: CodeConfig, disable_ttl: Duration) -> Challenges {
        Challenges {
            cfg,
            disable_ttl,
            users: Mutex::new(HashMap::new()),
            destinations: Mutex::default(),
            swept: Mutex::new(Instant::now()),
            fleet: None,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.cfg.ttl
    }

    /// Is there an unexpired challenge for this purpose (a code the user may already have)?
    pub fn has_open(&self, user: &str, purpose: &Purpose, now: Instant) -> bool {
        let mut users = self.lock();
        let Some(u) = users.get_mut(user) else {
            return false;
        };
        u.open.retain(|c| c.expires > now);
        u.open.iter().any(|c| &c.purpose == purpose)
    }

    /// How long until a login code may be sent to this user again (the resend cooldown), if a
    /// send now would be refused for it.
    pub fn cooldown_left(&self, user: &str, now: Instant) -> Option<Duration> {
        let users = self.lock();
        let last = users.get(user)?.sends.back()?;
        self.cfg
            .resend_after
            .checked_sub(now.saturating_duration_since(*last))
            .filter(|left| !left.is_zero())
    }

    /// Issue a new code for `destination` if the quotas of its purpose allow (see the module
    /// doc), counting it as sent. Unless concurrent challenges are on, every earlier open
    /// challenge of the same purpose dies. In a fleet the cooldown and quotas are counted in
    /// the shared store first, for every host (fail closed: a store error refuses the send).
    pub fn issue(
        &self,
        user: &str,
        purpose: Purpose,
        destination: &str,
        now: Instant,
    ) -> Result<Issued, SendRefusal> {
        let Some(store) = &self.fleet else {
            return self.issue_here(user, purpose, destination, now);
        };
        let confirmed = Ledger::of(&purpose) == Ledger::Confirmed;
        let (max_user, max_destination) = if confirmed {
            (
                self.cfg.max_sends_per_hour,
                self.cfg.max_sends_per_destination_per_hour,
            )
        } else {
            let max = self.cfg.max_unconfirmed_sends_per_hour;
            (max, max)
        };
        let send = FleetSend {
            user: user.to_owned(),
            destination: destination_key(destination),
            confirmed,
            at: super::clock::unix_now(),
            resend_after: self.cfg.resend_after.as_secs(),
            max_user,
            max_destination,
        };
        let fleet = store.fleet().ok_or(SendRefusal::Quota)?;
        match fleet.count_send(&send) {
            Ok(None) => {}
            Ok(Some(FleetRefusal::Cooldown(secs))) => {
                return Err(SendRefusal::Cooldown(Duration::from_secs(secs)))
            }
            Ok(Some(FleetRefusal::Quota)) if confirmed => return Err(SendRefusal::Quota),
            Ok(Some(FleetRefusal::Quota)) => return Err(SendRefusal::UnconfirmedQuota),
            Err(e) => {
                log::error!("send quota: {e}");
                return Err(refusal_for(&e));
            }
        }
        let issued = self.issue_here(user, purpose, destination, now);
        match issued {
            Ok(mut issued) => {
                issued.fleet = Some(send);
                Ok(issued)
            }
            Err(refusal) => {
                if let Err(e) = fleet.uncount_send(&send) {
                    log::warn!("send quota: {e}");
                }
                Err(refusal)
            }
        }
    }

    /// Count the send in the shared store too (a fleet's: `Store::fleet`).
    pub fn with_fleet(mut self, store: Option<Arc<dyn Store>>) -> Challenges {
        self.fleet = store.filter(|s| s.fleet().is_some());
        self
    }

    fn issue_here(
        &self,
        user: &str,
        purpose: Purpose,
        destination: &str,
        now: Instant,
    ) -> Result<Issued, SendRefusal> {
        self.sweep(now);
        let mut users = self.lock();
        let mut destinations = self.destinations();
        let u = users.entry(user.to_owned()).or_default();
        let ledger = Ledger::of(&purpose);
        let key = destination_key(destination);
        let (by_user, to) = match ledger {
            Ledger::Confirmed => {
                forget_older_than_an_hour(&mut u.sends, now);
                if let Some(last) = u.sends.back() {
                    let since = now.duration_since(*last);
                    if since < self.cfg.resend_after {
                        return Err(SendRefusal::Cooldown(self.cfg.resend_after - since));
                    }
                }
                let to = destinations.confirmed.entry(key).or_default();
                forget_older_than_an_hour(to, now);
                if u.sends.len() as u32 >= self.cfg.max_sends_per_hour
                    || to.len() as u32 >= self.cfg.max_sends_per_destination_per_hour
                {
                    return Err(SendRefusal::Quota);
                }
                (&mut u.sends, to)
            }
            Ledger::Unconfirmed => {
                forget_older_than_an_hour(&mut u.unconfirmed, now);
                let to = destinations.unconfirmed.entry(key).or_default();
                forget_older_than_an_hour(to, now);
                let max = self.cfg.max_unconfirmed_sends_per_hour;
                if u.unconfirmed.len() as u32 >= max || to.len() as u32 >= max {
                    return Err(SendRefusal::UnconfirmedQuota);
                }
                (&mut u.unconfirmed, to)
            }
        };
        by_user.push_back(now);
        to.push_back(now);
        // A disable token is typed from a mail at leisure: longer-lived, and long enough that
        // its life does not make it guessable.
        let (code, ttl) = match purpose {
            Purpose::Disable(_) => (new_code(12, Charset::Alphanumeric), self.disable_ttl),
            _ => (new_code(self.cfg.length, self.cfg.charset), self.cfg.ttl),
        };
        let id = new_id();
        let salt = random::<16>();
        u.open.retain(|c| c.expires > now);
        if !self.cfg.concurrent_challenges {
            u.open.retain(|c| c.purpose != purpose);
        }
        u.open.push(Challenge {
            hash: hash(&salt, code.expose()),
            id: id.clone(),
            purpose,
            salt,
            expires: now + ttl,
            attempts: 0,
        });
        Ok(Issued {
            id,
            code,
            at: now,
            ledger,
            fleet: None,
        })
    }

    /// Drop users and destinations with no open challenge and no send in the last hour, at most
    /// once per `SWEEP_EVERY`, so memory follows the last hour's traffic.
    fn sweep(&self, now: Instant) {
        {
            let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
            if now.saturating_duration_since(*swept) < SWEEP_EVERY {
                return;
            }
            *swept = now;
        }
        self.lock().retain(|_, u| {
            forget_older_than_an_hour(&mut u.sends, now);
            forget_older_than_an_hour(&mut u.unconfirmed, now);
            u.open.retain(|c| c.expires > now);
            !(u.sends.is_empty() && u.unconfirmed.is_empty() && u.open.is_empty())
        });
        let mut destinations = self.destinations();
        let Destinations {
            confirmed,
            unconfirmed,
        } = &mut *destinations;
        for ledger in [confirmed, unconfirmed] {
            ledger.retain(|_, sends| {
                forget_older_than_an_hour(sends, now);
                !sends.is_empty()
            });
        }
    }

    /// Forget a challenge whose code never left (delivery failed), and uncount its send, so a
    /// broken channel neither blocks another channel with its cooldown nor uses up the quotas.
    pub fn cancel(&self, user: &str, issued: &Issued, destination: &str) {
        if let (Some(send), Some(fleet)) =
            (&issued.fleet, self.fleet.as_ref().and_then(|s| s.fleet()))
        {
            if let Err(e) = fleet.uncount_send(send) {
                log::warn!("send quota: {e}");
            }
        }
        if let Some(u) = self.lock().get_mut(user) {
            u.open.retain(|c| c.id != issued.id);
            match issued.ledger {
                Ledger::Confirmed => uncount(&mut u.sends, issued.at),
                Ledger::Unconfirmed => uncount(&mut u.unconfirmed, issued.at),
            }
        }
        let mut destinations = self.destinations();
        let ledger = match issued.ledger {
            Ledger::Confirmed => &mut destinations.confirmed,
            Ledger::Unconfirmed => &mut destinations.unconfirmed,
        };
        if let Some(sends) = ledger.get_mut(&destination_key(destination)) {
            uncount(sends, issued.at);
        }
    }

    /// Check an answer against the user's open challenges that `accept` admits. A match is used
    /// up; a miss costs every candidate one attempt, and a challenge out of attempts dies.
    pub fn answer(
        &self,
        user: &str,
        code: &str,
        accept: impl Fn(&Purpose) -> bool,
        now: Instant,
    ) -> ChallengeCheck {
        let code = normalize(code);
        let mut users = self.lock();
        let Some(u) = users.get_mut(user) else {
            return ChallengeCheck::NoChallenge;
        };
        let mut matched = None;
        let mut expired_match = false;
        let mut candidates = 0;
        for (i, c) in u.open.iter().enumerate() {
            if !accept(&c.purpose) {
                continue;
            }
            let hit: bool = hash(&c.salt, &code).ct_eq(&c.hash).into();
            let live = c.expires > now;
            candidates += live as usize;
            match (hit, live) {
                (true, true) if matched.is_none() => matched = Some(i),
                (true, false) => expired_match = true,
                _ => {}
            }
        }
        if let Some(i) = matched {
            let c = u.open.remove(i);
            return ChallengeCheck::Accepted {
                id: c.id,
                purpose: c.purpose,
            };
        }
        u.open.retain(|c| c.expires > now);
        if expired_match {
            return ChallengeCheck::Expired;
        }
        if candidates == 0 {
            return ChallengeCheck::NoChallenge;
        }
        let max = self.cfg.max_attempts;
        for c in u.open.iter_mut().filter(|c| accept(&c.purpose)) {
            c.attempts += 1;
        }
        u.open.retain(|c| c.attempts < max);
        ChallengeCheck::Wrong {
            alive: u.open.iter().any(|c| accept(&c.purpose)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UserChallenges>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn destinations(&self) -> std::sync::MutexGuard<'_, Destinations> {
        self.destinations.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The one spelling of a destination the quotas count by: an address without case
/// ("Victim@Example.COM" is victim@example.com), a number in E.164 without spaces, dashes, dots
/// or parentheses and with a leading `00` as `+` ("0044 (20) 7946-0958" is +442079460958).
pub fn destination_key(destination: &str) -> String {
    let d = destination.trim();
    if d.contains('@') {
        return d.to_lowercase();
    }
    let digits: String = d
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '.' | '(' | ')'))
        .collect();
    match digits.strip_prefix("00") {
        Some(rest) => format!("+{rest}"),
        None => digits,
    }
}

fn uncount(sends: &mut VecDeque<Instant>, at: Instant) {
    if let Some(i) = sends.iter().rposition(|t| *t == at) {
        sends.remove(i);
    }
}

fn forget_older_than_an_hour(sends: &mut VecDeque<Instant>, now: Instant) {
    let hour = Duration::from_secs(3600);
    while sends
        .front()
        .is_some_and(|t| now.duration_since(*t) >= hour)
    {
        sends.pop_front();
    }
}

fn hash(salt: &[u8; 16], code: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(code.as_bytes());
    h.finalize().into()
}

/// A short id for logs and `otpctl send`; random so it reveals nothing.
fn new_id() -> String {
    random::<6>().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::codes::ALPHANUMERIC;

    fn challenges(f: impl FnOnce(&mut CodeConfig)) -> Challenges {
        let mut cfg = CodeConfig::default();
        f(&mut cfg);
        Challenges::new(cfg, Duration::from_secs(900))
    }

    const DEST: &str = "alice@example.com";

    fn login(p: &Purpose) -> bool {
        *p == Purpose::Login
    }

    #[test]
    fn the_sweep_forgets_what_the_last_hour_no_longer_needs_and_keeps_the_quotas() {
        let c = challenges(|cfg| cfg.max_sends_per_destination_per_hour = 1);
        let t = Instant::now();
        c.issue("old", Purpose::Login, "old@example.com", t)
            .unwrap();
        let later = t + Duration::from_secs(3000);
        c.issue("recent", Purpose::Login, DEST, later).unwrap();
        // Past the hour of the first send and the sweep interval: only `recent` is left.
        let now = t + Duration::from_secs(3700);
        c.sweep(now);
        assert_eq!(c.lock().len(), 1);
        assert!(c.lock().contains_key("recent"));
        let destinations = c.destinations().confirmed.len();
        assert_eq!(destinations, 1);
        // The destination quota still counts the send the sweep kept.
        assert_eq!(
            c.issue("someone", Purpose::Login, DEST, now).err(),
            Some(SendRefusal::Quota)
        );
        assert!(c
            .issue("old", Purpose::Login, "old@example.com", now)
            .is_ok());
    }

    #[test]
    fn a_sent_code_is_accepted_once() {
        let c = challenges(|_| {});
        let t = Instant::now();
        let issued = c.issue("alice", Purpose::Login, DEST, t).unwrap();
        assert_eq!(issued.code.expose().len(), 6);
        let first = c.answer("alice", issued.code.expose(), login, t);
        assert!(matches!(first, ChallengeCheck::Accepted { ref id, .. } if *id == issued.id));
        assert_eq!(
            c.answer("alice", issued.code.expose(), login, t),
            ChallengeCheck::NoChallenge
        );
    }

    #[test]
    fn a_resend_invalidates_the_previous_code() {
        let c = challenges(|_| {});
        let t = Instant::now();
        let old = c.issue("alice", Purpose::Login, DEST, t).unwrap();
        let t2 = t + Duration::from_secs(31);
        let new = c.issue("alice", Purpose::Login, DEST, t2).unwrap();
        assert!(
            matches!(
                c.answer("alice", old.code.expose(), login, t2),
                ChallengeCheck::Wrong { alive: true }
            ) || old.code == new.code
        );
        assert!(matches!(
            c.answer("alice", new.code.expose(), login, t2),
            ChallengeCheck::Accepted { .. }
        ));
    }

    #[test]
    fn concurrent_challenges_accept_every_open_code_in_any_order() {
        let c = challenges(|cfg| {
            cfg.concurrent_challenges = true;
            cfg.resend_after = Duration::from_secs(1);
        });
        let t = Instant::now();
        let codes: Vec<_> = (0..3)
            .map(|i| {
                c.issue(
                    "alice",
                    Purpose::Login,
                    DEST,
                    t + Duration::from_secs(2 * i),
                )
                .unwrap()
            })
            .collect();
        let t = t + Duration::from_secs(10);
        for i in [1, 2, 0] {
            assert!(matches!(
                c.answer("alice", codes[i].code.expose(), login, t),
                ChallengeCheck::Accepted { .. }
            ));
        }
    }

    #[test]
    fn an_expired_code_says_so() {
        let c = challenges(|cfg| cfg.ttl = Duration::from_secs(60));
        let t = Instant::now();
        let issued = c.issue("alice", Purpose::Login, DEST, t).unwrap();
        let late = t + Duration::from_secs(61);
        assert_eq!(
            c.answer("alice", issued.code.expose(), login, late),
            ChallengeCheck::Expired
        );
    }

    #[test]
    fn max_attempts_kills_the_challenge() {
        let c = challenges(|cfg| cfg.max_attempts = 3);
        let t = Instant::now();
        let issued = c.issue("alice", Purpose::Login, DEST, t).unwrap();
        let wrong = if issued.code.expose() == "000000" {
            "111111"
        } else {
            "000000"
        };
        assert_eq!(
            c.answer("alice", wrong, login, t),
            ChallengeCheck::Wrong { alive: true }
        );
        assert_eq!(
            c.answer("alice", wrong, login, t),
            ChallengeCheck::Wrong { alive: true }
        );
        assert_eq!(
            c.answer("alice", wrong, login, t),
            ChallengeCheck::Wrong { alive: false }
        );
        assert_eq!(
            c.answer("alice", issued.code.expose(), login, t),
            ChallengeCheck::NoChallenge
        );
    }

    #[test]
    fn cooldown_and_hourly_quota_refuse_sends() {
        let c = challenges(|cfg| {
            cfg.resend_after = Duration::from_secs(30);
            cfg.max_sends_per_hour = 2;
        });
        let t = Instant::now();
        c.issue("alice", Purpose::Login, DEST, t).unwrap();
        assert_eq!(
            c.issue("alice", Purpose::Login, DEST, t + Duration::from_secs(10))
                .err(),
            Some(SendRefusal::Cooldown(Duration::from_secs(20)))
        );
        c.issue("alice", Purpose::Login, DEST, t + Duration::from_secs(30))
            .unwrap();
        assert_eq!(
            c.issue("alice", Purpose::Login, DEST, t + Duration::from_secs(60))
                .err(),
            Some(SendRefusal::Quota)
        );
        assert!(c
            .issue("alice", Purpose::Login, DEST, t + Duration::from_secs(3601))
            .is_ok());
        assert!(c.issue("bob", Purpose::Login, DEST, t).is_ok());
    }

    #[test]
    fn one_destination_has_its_own_hourly_quota_whoever_asks() {
        let c = challenges(|cfg| {
            cfg.max_sends_per_destination_per_hour = 2;
            cfg.max_sends_per_hour = 10;
        });
        let t = Instant::now();
        assert!(c.issue("alice", Purpose::Login, "+15550001", t).is_ok());
        assert!(c.issue("bob", Purpose::Login, "+15550001", t).is_ok());
        assert_eq!(
            c.issue("carol", Purpose::Login, "+15550001", t).err(),
            Some(SendRefusal::Quota)
        );
        assert!(c.issue("carol", Purpose::Login, "+15550002", t).is_ok());
    }

    #[test]
    fn a_cancelled_send_neither_cools_down_nor_counts() {
        let c = challenges(|cfg| cfg.max_sends_per_hour = 1);
        let t = Instant::now();
        let failed = c.issue("alice", Purpose::Login, DEST, t).unwrap();
        c.cancel("alice", &failed, DEST);
        let retry = c.issue("alice", Purpose::Login, "+15550001", t).unwrap();
        assert!(matches!(
            c.answer("alice", failed.code.expose(), login, t),
            ChallengeCheck::Wrong { .. } | ChallengeCheck::Accepted { .. }
        ));
        assert_ne!(failed.id, retry.id);
    }

    fn confirm(address: &str) -> Purpose {
        Purpose::Confirm(Via::Email, address.into())
    }

    #[test]
    fn enrolling_someone_elses_address_never_uses_up_their_login_codes() {
        let c = challenges(|cfg| cfg.max_unconfirmed_sends_per_hour = 3);
        let t = Instant::now();
        let spellings = [
            "victim@example.com",
            "VICTIM@example.com",
            "Victim@Example.COM",
            "victim@EXAMPLE.com",
            " victim@example.com",
            "vIcTiM@example.com",
        ];
        let sent = spellings
            .iter()
            .filter(|a| c.issue("mallory", confirm(a), a, t).is_ok())
            .count();
        assert_eq!(sent, 3, "one budget for every spelling");
        assert_eq!(
            c.issue("mallory", confirm(DEST), "VICTIM@EXAMPLE.COM", t)
                .err(),
            Some(SendRefusal::UnconfirmedQuota)
        );
        // The victim's own logins: the full quota, no cooldown from mallory's sends.
        let victim = "victim@example.com";
        for i in 0..5 {
            let at = t + Duration::from_secs(30 * i);
            assert!(c.issue("victim", Purpose::Login, victim, at).is_ok(), "{i}");
        }
    }

    #[test]
    fn an_unconfirmed_destination_has_its_own_budget_whoever_asks() {
        let c = challenges(|cfg| cfg.max_unconfirmed_sends_per_hour = 2);
        let t = Instant::now();
        assert!(c
            .issue("m1", confirm("+1 202 555 0123"), "+1 202 555 0123", t)
            .is_ok());
        assert!(c.issue("m2", confirm("x"), "001-202-555-0123", t).is_ok());
        assert_eq!(
            c.issue("m3", confirm("x"), "+1 (202) 555.0123", t).err(),
            Some(SendRefusal::UnconfirmedQuota)
        );
        assert!(c.issue("m3", confirm("x"), "+12025550199", t).is_ok());
        assert!(c
            .issue(
                "m1",
                confirm("x"),
                "+12025550123",
                t + Duration::from_secs(3600)
            )
            .is_ok());
    }

    #[test]
    fn a_users_own_enrollment_neither_cools_down_nor_counts_toward_logins() {
        let c = challenges(|cfg| {
            cfg.max_sends_per_hour = 1;
            cfg.max_sends_per_destination_per_hour = 1;
        });
        let t = Instant::now();
        c.issue("alice", confirm(DEST), DEST, t).unwrap();
        assert!(c.issue("alice", Purpose::Login, DEST, t).is_ok());
        assert_eq!(
            c.issue("alice", Purpose::Login, DEST, t + Duration::from_secs(60))
                .err(),
            Some(SendRefusal::Quota)
        );
    }

    #[test]
    fn the_login_quota_of_a_destination_ignores_case_and_number_formatting() {
        let c = challenges(|cfg| cfg.max_sends_per_destination_per_hour = 1);
        let t = Instant::now();
        assert!(c
            .issue("alice", Purpose::Login, "Shared@Example.com", t)
            .is_ok());
        assert_eq!(
            c.issue("bob", Purpose::Login, "shared@example.COM", t)
                .err(),
            Some(SendRefusal::Quota)
        );
        assert!(c
            .issue("carol", Purpose::Login, "0044 20 7946 0958", t)
            .is_ok());
        assert_eq!(
            c.issue("dave", Purpose::Login, "+44-20-7946-0958", t).err(),
            Some(SendRefusal::Quota)
        );
    }

    #[test]
    fn a_cancelled_enrollment_send_gives_its_budget_back() {
        let c = challenges(|cfg| cfg.max_unconfirmed_sends_per_hour = 1);
        let t = Instant::now();
        let failed = c
            .issue("alice", confirm(DEST), "Alice@Example.com", t)
            .unwrap();
        c.cancel("alice", &failed, "Alice@Example.com");
        assert!(c.issue("alice", confirm(DEST), DEST, t).is_ok());
        assert_eq!(
            c.issue("bob", confirm(DEST), DEST, t).err(),
            Some(SendRefusal::UnconfirmedQuota)
        );
    }

    #[test]
    fn destinations_are_keyed_without_case_and_in_e164() {
        assert_eq!(destination_key("Victim@Example.COM"), "victim@example.com");
        assert_eq!(destination_key(" a@b.c "), "a@b.c");
        assert_eq!(destination_key("+1 (202) 555-0123"), "+12025550123");
        assert_eq!(destination_key("0012025550123"), "+12025550123");
        assert_eq!(destination_key("+1.202.555.0123"), "+12025550123");
        assert_eq!(destination_key("+12025550123"), "+12025550123");
    }

    #[test]
    fn alphanumeric_codes_avoid_look_alikes_and_ignore_case() {
        let c = challenges(|cfg| {
            cfg.charset = Charset::Alphanumeric;
            cfg.length = 10;
        });
        let t = Instant::now();
        let issued = c.issue("alice", Purpose::Login, DEST, t).unwrap();
        let code = issued.code.expose();
        assert_eq!(code.len(), 10);
        assert!(code.bytes().all(|b| ALPHANUMERIC.contains(&b)), "{code}");
        assert!(!code.contains(['0', 'O', '1', 'I', 'L']));
        let typed = format!(" {}-{} ", &code[..5].to_lowercase(), &code[5..]);
        assert!(matches!(
            c.answer("alice", &typed, login, t),
            ChallengeCheck::Accepted { .. }
        ));
    }

    #[test]
    fn a_confirmation_code_is_not_a_login_code() {
        let c = challenges(|_| {});
        let t = Instant::now();
        let purpose = Purpose::Confirm(Via::Email, "a@example.com".into());
        let issued = c.issue("alice", purpose.clone(), DEST, t).unwrap();
        assert_eq!(
            c.answer("alice", issued.code.expose(), login, t),
            ChallengeCheck::NoChallenge
        );
        assert_eq!(
            c.answer("alice", issued.code.expose(), |_| true, t),
            ChallengeCheck::Accepted {
                id: issued.id,
                purpose
            }
        );
    }
}
