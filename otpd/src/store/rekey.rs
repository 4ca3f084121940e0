//! `otpd rekey NEWFILE`: re-seal every secret in the file store under a new key, offline, then
//! make it the configured key. Each record is rewritten atomically on its own; while both keys
//! are given either opens, so an interrupted run is finished by running it again.

use super::key_file::{self, KeyFileError};
use super::seal::Sealer;
use super::{FileStore, Store, StoreError};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RekeyError {
    #[error("{0}")]
    Key(#[from] KeyFileError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{}: otpd is running on this state directory; stop it first (systemctl stop otpd)", .0.display())]
    Running(PathBuf),
}

/// What a re-key did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rekeyed {
    /// Records holding a TOTP/HOTP secret (active or pending), each now sealed under the new key.
    pub resealed: usize,
    /// Whether `key_file` now holds the new key (false when it already did).
    pub installed: bool,
}

/// Re-seal the store at `state_dir` from `key_file`'s key (if there is one: a store written
/// before sealing has none) to `new_key_file`'s, then install the new key at `key_file`.
pub fn rekey(
    state_dir: &Path,
    key_file: &Path,
    new_key_file: &Path,
) -> Result<Rekeyed, RekeyError> {
    let new = key_file::read(new_key_file)?;
    let old = match key_file::read(key_file) {
        Ok(old) => Some(old),
        Err(KeyFileError::Missing(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let installed = old.as_ref().is_none_or(|o| o.id() != new.id());
    let mut sealer = Sealer::new(new.clone());
    if let Some(old) = old {
        sealer = sealer.also_opening(old);
    }
    let store = FileStore::open_sealed(state_dir, sealer)?;
    store.lock_offline().map_err(|e| match e {
        StoreError::InUse(_) => RekeyError::Running(state_dir.to_owned()),
        e => e.into(),
    })?;
    // A killed rekey writes no `running` marker: clear what it may have left.
    store.remove_stale_temp_files(true)?;
    let mut done = Rekeyed {
        resealed: 0,
        installed,
    };
    for user in store.users()? {
        let Some(record) = store.load(&user)? else {
            continue;
        };
        if record.totp.is_some() || record.pending_totp.is_some() {
            store.save(&user, &record)?;
            done.resealed += 1;
        }
    }
    if installed {
        key_file::install(key_file, &new)?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Algorithm;
    use crate::store::{KeyKind, TotpKey, UserRecord};
    use otp_proto::Secret;
    use std::fs;

    fn record(secret: &str) -> UserRecord {
        UserRecord {
            totp: Some(TotpKey {
                secret: Secret::new(secret),
                algorithm: Algorithm::SHA1,
                digits: 6,
                period: 30,
                last_step: None,
                kind: KeyKind::Totp,
                window: None,
                created: 1,
            }),
            ..UserRecord::default()
        }
    }

    fn grep(dir: &Path, needle: &str) -> bool {
        fs::read_dir(dir.join("users")).unwrap().any(|e| {
            fs::read_to_string(e.unwrap().path())
                .unwrap()
                .contains(needle)
        })
    }

    #[test]
    fn an_interrupted_rekey_finishes_when_run_again_and_seals_plaintext_too() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (old_file, new_file) = (dir.path().join("key"), dir.path().join("new"));
        key_file::generate(&old_file).unwrap();
        key_file::generate(&new_file).unwrap();
        let old = key_file::read(&old_file).unwrap();
        let new = key_file::read(&new_file).unwrap();

        // As an interrupted run leaves it: alice under the old key, bob already under the new
        // one, carol still in plaintext from before sealing.
        FileStore::open_sealed(&state, Sealer::new(old.clone()))
            .unwrap()
            .save("alice", &record("AAAAAAAAAAAAAAAA"))
            .unwrap();
        FileStore::open_sealed(&state, Sealer::new(new.clone()))
            .unwrap()
            .save("bob", &record("BBBBBBBBBBBBBBBB"))
            .unwrap();
        FileStore::open(&state)
            .unwrap()
            .save("carol", &record("CCCCCCCCCCCCCCCC"))
            .unwrap();
        assert!(grep(&state, "CCCCCCCCCCCCCCCC"));

        // And a temp file from a killed write (of a rekey: no `running` marker).
        let stale = state.join("users/alice.json.tmp777");
        fs::write(&stale, b"{ half").unwrap();

        let done = rekey(&state, &old_file, &new_file).unwrap();
        assert!(!stale.exists());
        assert_eq!(
            done,
            Rekeyed {
                resealed: 3,
                installed: true
            }
        );
        assert_eq!(key_file::read(&old_file).unwrap().id(), new.id());
        assert!(!grep(&state, "CCCCCCCCCCCCCCCC"));
        assert!(
            !grep(&state, &old.id().to_string()),
            "nothing left under the old key"
        );

        let only_new = FileStore::open_sealed(&state, Sealer::new(new)).unwrap();
        for (user, secret) in [
            ("alice", "AAAAAAAAAAAAAAAA"),
            ("bob", "BBBBBBBBBBBBBBBB"),
            ("carol", "CCCCCCCCCCCCCCCC"),
        ] {
            let key = only_new.load(user).unwrap().unwrap().totp.unwrap();
            assert_eq!(key.secret.expose(), secret);
        }
        drop(only_new);
        // Run again (as after a crash just before the key was installed): nothing breaks.
        let again = rekey(&state, &old_file, &new_file).unwrap();
        assert_eq!(
            again,
            Rekeyed {
                resealed: 3,
                installed: false
            }
        );
    }

    #[test]
    fn a_rekey_refuses_while_the_store_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (old_file, new_file) = (dir.path().join("key"), dir.path().join("new"));
        key_file::generate(&old_file).unwrap();
        key_file::generate(&new_file).unwrap();
        let running = FileStore::open(&state).unwrap();
        running.begin_run().unwrap();
        assert!(matches!(
            rekey(&state, &old_file, &new_file),
            Err(RekeyError::Running(_))
        ));
        assert_ne!(
            key_file::read(&old_file).unwrap().id(),
            key_file::read(&new_file).unwrap().id(),
            "the key was not replaced"
        );
    }
}
