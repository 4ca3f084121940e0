//! A cap on connections per uid, so one local user holding connections open (each may wait
//! minutes for an answer) cannot use up the daemon's slots and lock everyone else out of
//! logging in. Root (sshd, login, sudo run PAM as root) is not capped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Open connections one non-root uid may hold.
pub const PER_UID: usize = 16;

#[derive(Clone, Default)]
pub struct PeerLimit {
    open: Arc<Mutex<HashMap<u32, usize>>>,
}

/// Holds one slot for a uid until dropped.
pub struct Slot {
    limit: PeerLimit,
    uid: u32,
}

impl PeerLimit {
    /// A slot for `uid`, or `None` when it already holds `PER_UID` connections.
    pub fn acquire(&self, uid: u32) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(uid).or_default();
        if uid != 0 && *count >= PER_UID {
            return None;
        }
        *count += 1;
        Some(Slot {
            limit: self.clone(),
            uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limit.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.uid) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_sixteen_slots_and_gets_them_back() {
        let limit = PeerLimit::default();
        let held: Vec<Slot> = (0..PER_UID).map(|_| limit.acquire(1000).unwrap()).collect();
        assert!(limit.acquire(1000).is_none());
        assert!(
            limit.acquire(1001).is_some(),
            "other users are not affected"
        );
        drop(held);
        assert!(limit.acquire(1000).is_some());
    }

    #[test]
    fn root_is_not_capped() {
        let limit = PeerLimit::default();
        let held: Vec<Slot> = (0..PER_UID * 4)
            .map(|_| limit.acquire(0).unwrap())
            .collect();
        assert_eq!(held.len(), PER_UID * 4);
    }
}
