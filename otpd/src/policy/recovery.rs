//! Recovery codes: eight single-use codes per user, shown once, for when the phone is lost.
//! Stored only as argon2id hashes with a salt each (slow on purpose: a stolen store does not
//! give them away); checked only after the answer failed as an ordinary code.

use super::challenge::normalize;
use crate::config::Charset;
use crate::hex;
use argon2::{Algorithm, Argon2, Params, Version};
use otp_proto::Secret;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// How many codes a set has.
pub const SET_SIZE: usize = 8;
/// Characters per code, shown as two groups of five.
const LENGTH: u8 = 10;

/// argon2id with 8 MiB and 2 passes: ~10 ms a hash here, ~80 ms to check a full set.
const MEMORY_KIB: u32 = 8 * 1024;
const PASSES: u32 = 2;

/// One unused recovery code, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryHash {
    /// Hex.
    salt: String,
    /// Hex argon2id output.
    hash: String,
}

/// A new set: the codes to show once, and their hashes to keep.
pub fn new_set() -> (Vec<Secret>, Vec<RecoveryHash>) {
    let codes: Vec<Secret> = (0..SET_SIZE)
        .map(|_| {
            let raw = super::challenge::new_code(LENGTH, Charset::Alphanumeric);
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

/// The stored hash `code` matches, if any. Every hash is computed, match or not. Slow: call it
/// from the blocking pool.
pub fn find(code: &str, set: &[RecoveryHash]) -> Option<RecoveryHash> {
    let code = normalize(code);
    let mut found = None;
    for h in set {
        let (Some(salt), Some(want)) = (hex::decode(&h.salt), hex::decode(&h.hash)) else {
            continue;
        };
        let got = derive(&code, &salt);
        if bool::from(got.ct_eq(want.as_slice())) && found.is_none() {
            found = Some(h.clone());
        }
    }
    found
}

fn hash_new(code: &str) -> RecoveryHash {
    let salt = super::challenge::random::<16>();
    RecoveryHash {
        salt: hex::encode(&salt),
        hash: hex::encode(&derive(&normalize(code), &salt)),
    }
}

fn derive(code: &str, salt: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let params = Params::new(MEMORY_KIB, PASSES, 1, Some(32));
    let ok = params.is_ok_and(|p| {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
            .hash_password_into(code.as_bytes(), salt, &mut out)
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
