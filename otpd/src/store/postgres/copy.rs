//! `otpd migrate --from files --to postgres`: a host's enrollments into the fleet database.
//! Users the database already has are skipped (never overwritten: the fleet's copy may be newer),
//! so running it again copies nothing twice.
//!
//! The file store keeps the steps spent at login apart from the records (used-steps.json), so
//! the copy takes them from there: a code typed on this host before the move is refused on
//! every host after it. When the host's last run did not stop cleanly (or its restart guard is
//! still on) those are not known, and every step up to now + `skew` counts as spent, as the
//! restart guard would have it.

use super::PostgresStore;
use crate::store::{FileStore, KeyKind, Store, StoreError};

/// What a copy did, by user name.
#[derive(Debug, Default)]
pub struct Copied {
    pub copied: Vec<String>,
    pub skipped: Vec<String>,
}

pub fn from_files(
    files: &FileStore,
    db: &PostgresStore,
    now: u64,
    skew: u8,
) -> Result<Copied, StoreError> {
    // Takes the state directory's lock (otpd must be stopped) and reads the spent steps.
    let previous = files.begin_run()?;
    let exact = !previous.unclean && previous.saved.guard_from.is_none();
    let copied = copy(files, db, now, skew, exact, &previous.saved.used);
    // An unclean stop stays marked, so the file store's next run still applies its guard.
    if !previous.unclean {
        files.end_run()?;
    }
    copied
}

fn copy(
    files: &FileStore,
    db: &PostgresStore,
    now: u64,
    skew: u8,
    exact: bool,
    used: &[crate::store::UsedStep],
) -> Result<Copied, StoreError> {
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
                let spent = used
                    .iter()
                    .filter(|u| u.user == user && u.period == key.period)
                    .map(|u| u.step)
                    .max();
                let mut last = key.last_step.max(spent);
                if !exact {
                    last = last.max(Some((now / key.period).saturating_add(u64::from(skew))));
                }
                key.last_step = last;
            }
        }
        db.save(&user, &record)?;
        done.copied.push(user);
    }
    Ok(done)
}
