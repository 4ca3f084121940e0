//! The fleet's word on an answer (docs/design.md, "The fleet store"). With a store shared by
//! several hosts, a host's own checks (its lockout reservation, its replay memory, the key and
//! the codes) still run first, and then the database decides, in one statement under the
//! user's row lock: a right TOTP/HOTP code spends its step there (`last_step < step`, else it
//! was replayed on another host), a wrong one is counted, and past `max_failures` every answer
//! is "locked" whatever it was. So the verdict an attacker sees is decided fleet-wide, and no
//! more than `max_failures` answers are judged per window across all hosts.
//!
//! One round trip per answer; none at all with the file store.

use super::accounts::Accounts;
use super::clock::unix_now;
use super::proof::{How, Proof};
use crate::store::{FleetAnswer, FleetRules, FleetVerdict, StoreError};
use std::time::Duration;

/// The verdict after the fleet's decision (`checked` unchanged without a fleet, or when it
/// needs none: nothing checked, a restart guard, an expired code, a local lock).
pub fn decide(
    accounts: &Accounts,
    user: &str,
    checked: Result<Proof, StoreError>,
) -> Result<Proof, StoreError> {
    let proof = checked?;
    let Some(store) = accounts.fleet_store() else {
        return Ok(proof);
    };
    let Some(fleet) = store.fleet() else {
        return Ok(proof);
    };
    let ask = match &proof {
        Proof::Allowed(How::App) => accounts.keys.fleet_spend(user)?,
        // A recovery code was spent in the database already (policy::recovery); a sent code
        // is this host's own; a confirmed pending key starts with its step stored.
        Proof::Allowed(_) => FleetAnswer::Success,
        // The first code of an HOTP resync counts as a failure until the second is right, on
        // every host (policy::hotp).
        Proof::Wrong { .. } | Proof::Replayed | Proof::ResyncNeeded { .. } => FleetAnswer::Failure,
        _ => return Ok(proof),
    };
    let lockout = &accounts.lockout_rules;
    let now = unix_now();
    let rules = FleetRules {
        now,
        window: lockout.window.as_secs(),
        max_failures: lockout.max_failures,
        lock_for: lockout.lock_for.as_secs(),
        skew: accounts.keys.skew(),
    };
    Ok(match fleet.answer(user, ask, &rules)? {
        FleetVerdict::Allowed => proof,
        FleetVerdict::AllowedOffline => Proof::Allowed(How::OfflineCached),
        FleetVerdict::Replayed => Proof::Replayed,
        // A failure counted: the local verdict (wrong, or replayed here) stands.
        FleetVerdict::Wrong => match proof {
            Proof::Wrong { .. } | Proof::Replayed | Proof::ResyncNeeded { .. } => proof,
            _ => Proof::Wrong { alive: false },
        },
        FleetVerdict::Locked { until } => {
            Proof::Locked(Duration::from_secs(until.saturating_sub(now).max(1)))
        }
        FleetVerdict::Guarded { until } => Proof::RestartGuard { until },
    })
}
