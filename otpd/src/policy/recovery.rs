//! Recovery codes: eight single-use codes per user, shown once, for when the phone is lost.
//! Stored only as argon2id hashes with a salt each (slow on purpose: a stolen store does not
//! give them away); checked only after the answer failed as an ordinary code.
//!
//! Checks run on `Checker`, a fixed pool of one thread per core with one argon2 work area each,
//! so however many answers arrive at once, otpd spends at most one core and 8 MiB per thread on
//! them (before: one blocking-pool thread and ~64 MiB of retained heap per concurrent answer),
//! and a check whose asker went away is dropped between two hashes. `RecoveryCodes::spend` ties
//! the pool to the user's record: a code that matched is gone, durably, before it counts.

use super::codes::{new_code, normalize, random};
use super::records::{Change, Records};
use crate::config::Charset;
use crate::hex;
use crate::store::{RecoveryHash, StoreError};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use otp_proto::Secret;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

/// How many codes a set has.
pub const SET_SIZE: usize = 8;
/// Characters per code, shown as two groups of five.
const LENGTH: u8 = 10;

/// argon2id with 8 MiB and 2 passes: ~10 ms a hash here, ~80 ms to check a full set.
const MEMORY_KIB: u32 = 8 * 1024;
const PASSES: u32 = 2;

/// A new set: the codes to show once, and their hashes to keep.
pub fn new_set() -> (Vec<Secret>, Vec<RecoveryHash>) {
    let codes: Vec<Secret> = (0..SET_SIZE)
        .map(|_| {
            let raw = new_code(LENGTH, Charset::Alphanumeric);
            let (a, b) = raw.expose().split_at(5);
            Secret::new(format!("{a}-{b}"))
        })
        .collect();
    let hashes = codes.iter().map(|c| hash_new(c.expose())).collect();
    (codes, hashes)
}

/// Hashes for codes that already exist (google-authenticator's scratch codes, on import).
pub fn hash_existing(codes: &[Secret]) -> Vec<RecoveryHash> {
    codes.iter().map(|c| hash_new(c.expose())).collect()
}

/// What a recovery-code check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryCheck {
    /// The user has no recovery codes: nothing was checked.
    NoCodes,
    Wrong,
    /// It was one; now spent, with this many left.
    Used {
        left: u32,
    },
}

/// The users' recovery codes: checked on the pool, spent in their records.
pub struct RecoveryCodes {
    records: Arc<Records>,
    checker: Checker,
    /// A fleet's shared store spends each code once for every host (`Fleet::spend_recovery`).
    store: Option<Arc<dyn crate::store::Store>>,
}

impl RecoveryCodes {
    pub fn new(records: Arc<Records>) -> RecoveryCodes {
        RecoveryCodes {
            records,
            checker: Checker::new(),
            store: None,
        }
    }

    /// Spend codes in the fleet's store too, when the store is shared.
    pub fn with_store(mut self, store: Arc<dyn crate::store::Store>) -> RecoveryCodes {
        self.store = store.fleet().is_some().then_some(store);
        self
    }

    /// Spend a recovery code: when `code` is one of the user's unused codes, it is gone
    /// (durably) before this returns. Only `proof` calls it, under a lockout reservation.
    /// Dropping the future cancels the check.
    pub async fn spend(&self, user: &str, code: &Secret) -> Result<RecoveryCheck, StoreError> {
        let set = match self.records.load(user)? {
            Some(r) if !r.recovery.is_empty() => r.recovery,
            _ => return Ok(RecoveryCheck::NoCodes),
        };
        let Some(hash) = self.checker.find(code, set).await else {
            return Ok(RecoveryCheck::Wrong);
        };
        let fleet = self.store.clone();
        self.records
            .update(user, move |record| match record.as_mut() {
                Some(r) if r.recovery.contains(&hash) => {
                    // One DELETE … RETURNING for the fleet: a code another host spent (this
                    // host's copy was stale) is refused, and forgotten here too.
                    let spent = match fleet.as_ref().and_then(|s| s.fleet()) {
                        Some(f) => match f.spend_recovery(user, &hash) {
                            Ok(spent) => spent,
                            Err(e) => return Change::Unchanged(Err(e)),
                        },
                        None => true,
                    };
                    r.recovery.retain(|h| *h != hash);
                    if !spent {
                        return Change::Changed(Ok(RecoveryCheck::Wrong));
                    }
                    let left = u32::try_from(r.recovery.len()).unwrap_or(u32::MAX);
                    Change::Changed(Ok(RecoveryCheck::Used { left }))
                }
                // Spent by a concurrent login between the check and the lock.
                _ => Change::Unchanged(Ok(RecoveryCheck::Wrong)),
            })
            .await?
    }
}

/// The stored hash `code` matches, if any. Every hash is computed, match or not, unless
/// `cancelled` says the answer is no longer wanted. Slow: run it on a `Checker`.
fn find_in(
    code: &str,
    set: &[RecoveryHash],
    memory: &mut [Block],
    cancelled: impl Fn() -> bool,
) -> Option<RecoveryHash> {
    let code = normalize(code);
    let mut found = None;
    for h in set {
        if cancelled() {
            return None;
        }
        let (Some(salt), Some(want)) = (hex::decode(&h.salt), hex::decode(&h.hash)) else {
            continue;
        };
        let got = derive(&code, &salt, memory);
        if bool::from(got.ct_eq(want.as_slice())) && found.is_none() {
            found = Some(h.clone());
        }
    }
    found
}

/// One recovery-code check waiting for a thread.
struct Job {
    code: Secret,
    set: Vec<RecoveryHash>,
    reply: oneshot::Sender<Option<RecoveryHash>>,
}

/// The bounded pool recovery codes are checked on (see the module comment).
pub struct Checker {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

impl Checker {
    /// One thread per core (at most 8).
    pub fn new() -> Checker {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("otpd-argon2-{i}"))
                .spawn(move || work(&rx));
            if let Err(e) = spawned {
                log::error!("cannot start a recovery-code thread: {e}");
            }
        }
        Checker {
            jobs: Mutex::new(Some(tx)),
        }
    }

    /// The stored hash `code` matches, if any; `None` too when the pool is gone. Dropping the
    /// returned future cancels the check.
    pub async fn find(&self, code: &Secret, set: Vec<RecoveryHash>) -> Option<RecoveryHash> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            code: code.clone(),
            set,
            reply,
        };
        let sent = match &*self.jobs.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(jobs) => jobs.send(job).is_ok(),
            None => false,
        };
        if !sent {
            return None;
        }
        answer.await.ok().flatten()
    }
}

impl Default for Checker {
    fn default() -> Self {
        Checker::new()
    }
}

fn work(jobs: &Mutex<mpsc::Receiver<Job>>) {
    let mut memory = vec![Block::default(); MEMORY_KIB as usize];
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else {
            return;
        };
        if job.reply.is_closed() {
            continue;
        }
        let found = find_in(job.code.expose(), &job.set, &mut memory, || {
            job.reply.is_closed()
        });
        let _ = job.reply.send(found);
    }
}

fn hash_new(code: &str) -> RecoveryHash {
    let salt = random::<16>();
    let mut memory = vec![Block::default(); MEMORY_KIB as usize];
    RecoveryHash {
        salt: hex::encode(&salt),
        hash: hex::encode(&derive(&normalize(code), &salt, &mut memory)),
    }
}

fn derive(code: &str, salt: &[u8], memory: &mut [Block]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let params = Params::new(MEMORY_KIB, PASSES, 1, Some(32));
    let ok = params.is_ok_and(|p| {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
            .hash_password_into_with_memory(code.as_bytes(), salt, &mut out, &mut *memory)
            .is_ok()
    });
    if !ok {
        // Constant parameters that argon2 accepts; unreachable in practice. An all-zero
        // output never equals a stored hash made from the same code with real parameters.
        out.fill(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(code: &str, set: &[RecoveryHash]) -> Option<RecoveryHash> {
        let mut memory = vec![Block::default(); MEMORY_KIB as usize];
        find_in(code, set, &mut memory, || false)
    }

    #[tokio::test]
    async fn the_pool_checks_and_a_dropped_check_is_abandoned() {
        let checker = Checker::new();
        let (codes, hashes) = new_set();
        let found = checker.find(&codes[5], hashes.clone()).await;
        assert_eq!(found, Some(hashes[5].clone()));
        assert_eq!(
            checker
                .find(&Secret::new("AAAAA-AAAAA"), hashes.clone())
                .await,
            None
        );
        // Many checks started and dropped at once: the pool keeps working afterwards.
        for _ in 0..64 {
            let f = checker.find(&codes[0], hashes.clone());
            drop(f);
        }
        assert!(checker.find(&codes[1], hashes.clone()).await.is_some());
    }

    #[test]
    fn a_set_is_eight_distinct_codes_that_each_match_only_their_own_hash() {
        let (codes, hashes) = new_set();
        assert_eq!(codes.len(), 8);
        assert_eq!(hashes.len(), 8);
        for (i, c) in codes.iter().enumerate() {
            assert_eq!(c.expose().len(), 11, "{:?}", c.expose());
            assert_eq!(find(c.expose(), &hashes), Some(hashes[i].clone()));
        }
        assert_eq!(find("AAAAA-AAAAA", &hashes), None);
    }

    #[test]
    fn codes_match_without_case_dashes_or_spaces() {
        let (codes, hashes) = new_set();
        let typed = codes[3].expose().to_lowercase().replace('-', " ");
        assert_eq!(find(&typed, &hashes), Some(hashes[3].clone()));
    }

    #[test]
    fn imported_scratch_codes_work_and_nothing_is_stored_in_clear() {
        let hashes = hash_existing(&[Secret::new("12345678")]);
        assert!(find("12345678", &hashes).is_some());
        let stored = serde_json::to_string(&hashes).unwrap();
        assert!(!stored.contains("12345678"));
    }
}
