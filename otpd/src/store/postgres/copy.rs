//! `otpd migrate --from files --to postgres`: a host's enrollments into the fleet database.
//! Users the database already has are skipped (never overwritten: the fleet's copy may be newer),
//! so running it again copies nothing twice.
//!
//! The file store keeps some spent steps outside the records (used-steps.json, written in
//! batches), so a copied TOTP key counts every step up to the next one as spent: a code the
//! user typed on this host moments ago cannot be replayed on another.

use super::PostgresStore;
use crate::store::{FileStore, KeyKind, Store, StoreError};

/// What a copy did, by user name.
#[derive(Debug, Default)]
pub struct Copied {
    pub copied: Vec<String>,
    pub skipped: Vec<String>,
}

pub fn from_files(files: &FileStore, db: &PostgresStore, now: u64) -> Result<Copied, StoreError> {
    let mut done = Copied::default();
    for user in files.users()? {
        let Some(mut record) = files.load(&user)? else {
            continue;
        };
        if db.load(&user)?.is_some() {
            done.skipped.push(user);
            continue;
        }
        if let Some(key) = record.totp.as_mut() {
            if key.kind == KeyKind::Totp && key.period > 0 {
                let next = (now / key.period).saturating_add(1);
                key.last_step = Some(key.last_step.map_or(next, |s| s.max(next)));
            }
        }
        db.save(&user, &record)?;
        done.copied.push(user);
    }
    Ok(done)
}
