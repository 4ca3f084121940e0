//! The embedded store: one JSON file per user under `state_dir/users`, all 0600 in 0700
//! directories. Writes go to a temp file, are fsynced, renamed over the old file, and the
//! directory is fsynced, so a kill -9 at any moment leaves the old record or the new one.
//!
//! Beside `users/`: `lockout/`, one file per user with recent failed answers (written before
//! the "wrong code" reply, removed lazily after a success); `used-steps.json`, the TOTP steps
//! spent at login and the restart guard (written in batches);
//! `running`, which exists while otpd runs, so the next start can tell a crash from a clean stop;
//! and `lock`, held (flock) by the running otpd, so that two daemons never share one state
//! directory (each would keep its own used steps, and a code could be used once on each).
//!
//! TOTP/HOTP secrets are sealed (`seal`) on the way to disk and opened on the way back; a record
//! from before sealing (plain base32) is read as it is and sealed when next written.

use super::seal::{Field, Sealed, Sealer};
use super::{
    LockoutRecord, PreviousRun, SavedSteps, Store, StoreError, TotpKey, UsedStep, UserRecord,
};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub struct FileStore {
    state_dir: PathBuf,
    users_dir: PathBuf,
    lockout_dir: PathBuf,
    /// Held from `begin_run` to `end_run`.
    lock: std::sync::Mutex<Option<Flock<File>>>,
    /// `None` only where no key is configured (unit tests): secrets are then written in the
    /// clear and sealed ones cannot be read.
    sealer: Option<Sealer>,
}

impl FileStore {
    /// otpd's store: secrets sealed under the key from `key_file` (or systemd's credential).
    pub fn open_with_key_file(state_dir: &Path, key_file: &Path) -> Result<FileStore, StoreError> {
        let key = super::key_file::load(key_file)?;
        FileStore::open_sealed(state_dir, Sealer::new(key))
    }

    pub fn open_sealed(state_dir: &Path, sealer: Sealer) -> Result<FileStore, StoreError> {
        let mut store = FileStore::open(state_dir)?;
        store.sealer = Some(sealer);
        Ok(store)
    }

    /// Open (creating if needed) the store under `state_dir`, tighten its modes and, after a
    /// crash and unless another process holds the store, remove the temp files the crash left.
    /// Without a sealer: see `open_sealed` and `open_with_key_file`.
    pub fn open(state_dir: &Path) -> Result<FileStore, StoreError> {
        let users_dir = state_dir.join("users");
        let lockout_dir = state_dir.join("lockout");
        for dir in [state_dir, users_dir.as_path(), lockout_dir.as_path()] {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io(dir, e))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| io(dir, e))?;
        }
        let store = FileStore {
            state_dir: state_dir.to_owned(),
            users_dir,
            lockout_dir,
            lock: std::sync::Mutex::new(None),
            sealer: None,
        };
        store.remove_stale_temp_files(false)?;
        Ok(store)
    }

    /// A write killed between creating its temp file and the rename leaves `NAME.tmpPID.N`. Only
    /// under the lock: a live otpd's temp file may be about to be renamed into place. Only a
    /// run that did not stop cleanly (`running` is there) can have left any, so a clean start
    /// does not read a directory of a million users; `always` is for offline tools.
    pub fn remove_stale_temp_files(&self, always: bool) -> Result<(), StoreError> {
        if !always && !self.marker().exists() {
            return Ok(());
        }
        let held = self
            .lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if !held && self.take_lock().is_err() {
            return Ok(());
        }
        let result = (|| {
            let mut removed = 0usize;
            for dir in [&self.state_dir, &self.users_dir, &self.lockout_dir] {
                let mut any = false;
                for entry in fs::read_dir(dir).map_err(|e| io(dir, e))? {
                    let entry = entry.map_err(|e| io(dir, e))?;
                    let name = entry.file_name();
                    if name.to_str().is_some_and(is_temp_name) {
                        let path = entry.path();
                        match fs::remove_file(&path) {
                            Ok(()) => {
                                any = true;
                                removed += 1;
                            }
                            Err(e) if e.kind() == ErrorKind::NotFound => {}
                            Err(e) => return Err(io(&path, e)),
                        }
                    }
                }
                if any {
                    sync_dir(dir)?;
                }
            }
            if removed > 0 {
                log::info!(
                    "{}: removed {removed} temp file(s) left by an interrupted write",
                    self.state_dir.display()
                );
            }
            Ok(())
        })();
        if !held {
            self.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
        result
    }

    /// Hold the state directory without starting a run (no `running` marker, no used steps):
    /// for offline maintenance such as `otpd rekey`. Released when the store is dropped.
    pub fn lock_offline(&self) -> Result<(), StoreError> {
        self.take_lock()
    }

    /// Open the record's sealed secrets.
    fn open_secrets(&self, user: &str, record: &mut UserRecord) -> Result<(), StoreError> {
        for (field, key) in [
            (Field::Totp, record.totp.as_mut()),
            (Field::PendingTotp, record.pending_totp.as_mut()),
        ] {
            let Some(key) = key else { continue };
            let Some(parsed) = Sealed::parse(key.secret.expose()) else {
                continue; // written before sealing
            };
            let fail = |source| StoreError::Sealed {
                user: user.to_owned(),
                field,
                source,
            };
            let sealed = parsed.map_err(fail)?;
            let sealer = self
                .sealer
                .as_ref()
                .ok_or_else(|| fail(super::seal::SealError::NoKey))?;
            key.secret = sealer.open(user, field, &sealed).map_err(fail)?;
        }
        Ok(())
    }

    /// The record as written: its secrets sealed (when a key is configured).
    fn sealed_copy(&self, user: &str, record: &UserRecord) -> Result<UserRecord, StoreError> {
        let mut disk = record.clone();
        let Some(sealer) = &self.sealer else {
            return Ok(disk);
        };
        let seal = |field, key: &mut TotpKey| -> Result<(), StoreError> {
            let sealed =
                sealer
                    .seal(user, field, &key.secret)
                    .map_err(|source| StoreError::Sealed {
                        user: user.to_owned(),
                        field,
                        source,
                    })?;
            key.secret = otp_proto::Secret::new(sealed.to_text());
            Ok(())
        };
        if let Some(key) = disk.totp.as_mut() {
            seal(Field::Totp, key)?;
        }
        if let Some(key) = disk.pending_totp.as_mut() {
            seal(Field::PendingTotp, key)?;
        }
        Ok(disk)
    }

    fn marker(&self) -> PathBuf {
        self.state_dir.join("running")
    }

    /// Take the state directory for this process, or say who has it.
    fn take_lock(&self) -> Result<(), StoreError> {
        let path = self.state_dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        let held = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            if errno == nix::errno::Errno::EWOULDBLOCK {
                StoreError::InUse(path.clone())
            } else {
                io(&path, errno.into())
            }
        })?;
        *self.lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(held);
        Ok(())
    }

    fn used_steps_path(&self) -> PathBuf {
        self.state_dir.join("used-steps.json")
    }

    /// The saved used steps; `None` when the file is unreadable, which the caller must treat
    /// like a crash (every recent step may have been used). Reads the bare list older versions
    /// wrote, too.
    fn load_used_steps(&self) -> Result<Option<SavedSteps>, StoreError> {
        let path = self.used_steps_path();
        match fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok().or_else(|| {
                let used: Vec<UsedStep> = serde_json::from_slice(&bytes).ok()?;
                Some(SavedSteps {
                    used,
                    guard_from: None,
                })
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Some(SavedSteps::default())),
            Err(e) => Err(io(&path, e)),
        }
    }

    fn path(&self, user: &str) -> Result<PathBuf, StoreError> {
        Ok(self.users_dir.join(format!("{}.json", encode_name(user)?)))
    }
}

impl Store for FileStore {
    fn load(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        let path = self.path(user)?;
        let text = match fs::read_to_string(&path) {
            Ok(t) => zeroize::Zeroizing::new(t),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path, e)),
        };
        let mut record: UserRecord =
            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                path,
                message: e.to_string(),
            })?;
        self.open_secrets(user, &mut record)?;
        Ok(Some(record))
    }

    fn save(&self, user: &str, record: &UserRecord) -> Result<(), StoreError> {
        let path = self.path(user)?;
        let disk = self.sealed_copy(user, record)?;
        let json = zeroize::Zeroizing::new(serde_json::to_vec_pretty(&disk).map_err(|e| {
            StoreError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            }
        })?);
        write_atomically(&path, &json)
    }

    fn remove(&self, user: &str) -> Result<(), StoreError> {
        let path = self.path(user)?;
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.users_dir),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path, e)),
        }
    }

    fn users(&self) -> Result<Vec<String>, StoreError> {
        let mut users = Vec::new();
        for entry in fs::read_dir(&self.users_dir).map_err(|e| io(&self.users_dir, e))? {
            let entry = entry.map_err(|e| io(&self.users_dir, e))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if let Some(user) = decode_name(stem) {
                users.push(user);
            }
        }
        users.sort();
        Ok(users)
    }

    fn begin_run(&self) -> Result<PreviousRun, StoreError> {
        self.take_lock()?;
        let marker = self.marker();
        let crashed = marker.exists();
        let used = self.load_used_steps()?;
        if used.is_none() {
            log::warn!(
                "{}: unreadable; treating the last stop as unclean",
                self.used_steps_path().display()
            );
        }
        write_atomically(&marker, format!("{}\n", std::process::id()).as_bytes())?;
        Ok(PreviousRun {
            unclean: crashed || used.is_none(),
            saved: used.unwrap_or_default(),
        })
    }

    fn end_run(&self) -> Result<(), StoreError> {
        let marker = self.marker();
        let removed = match fs::remove_file(&marker) {
            Ok(()) => sync_dir(&self.state_dir),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&marker, e)),
        };
        self.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
        removed
    }

    fn save_used_steps(&self, saved: &SavedSteps) -> Result<(), StoreError> {
        let path = self.used_steps_path();
        let json = serde_json::to_vec(saved).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomically(&path, &json)
    }

    fn lockouts(&self) -> Result<Vec<(String, LockoutRecord)>, StoreError> {
        let dir = &self.lockout_dir;
        let mut all = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let entry = entry.map_err(|e| io(dir, e))?;
            let name = entry.file_name();
            let Some(user) = (name.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(decode_name)
            else {
                continue;
            };
            let path = entry.path();
            let bytes = fs::read(&path).map_err(|e| io(&path, e))?;
            // A torn or foreign file must not unlock anyone: refuse to start on it.
            let record = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?;
            all.push((user, record));
        }
        Ok(all)
    }

    fn save_lockout(&self, user: &str, record: Option<&LockoutRecord>) -> Result<(), StoreError> {
        let path = self
            .lockout_dir
            .join(format!("{}.json", encode_name(user)?));
        match record {
            Some(record) => {
                let json = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                write_atomically(&path, &json)
            }
            None => match fs::remove_file(&path) {
                Ok(()) => sync_dir(&self.lockout_dir),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io(&path, e)),
            },
        }
    }
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // Unique per write: two writes of one file at once must not share a temp file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("json.tmp{}.{n}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io(path, e));
    }
    sync_dir(dir)
}

/// `write_atomically`'s temp files: `NAME.tmpPID.N` (and `NAME.tmpPID` from earlier versions).
fn is_temp_name(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    name.rsplit_once(".tmp").is_some_and(|(stem, tail)| {
        let (pid, n) = tail.split_once('.').unwrap_or((tail, "0"));
        !stem.is_empty() && digits(pid) && digits(n)
    })
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// File names keep letters, digits, `_`, `-`, `@` and inner dots; every other byte becomes `%XX`,
/// so no user name can climb out of the directory or collide with another.
fn encode_name(user: &str) -> Result<String, StoreError> {
    if user.is_empty() || user.len() > 256 {
        return Err(StoreError::BadName(user.to_owned()));
    }
    let mut out = String::with_capacity(user.len());
    for (i, b) in user.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b"_-@".contains(&b) || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

fn decode_name(stem: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(stem.len());
    let mut rest = stem.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Algorithm;
    use crate::store::TotpKey;
    use otp_proto::Secret;

    fn record(secret: &str) -> UserRecord {
        UserRecord {
            totp: Some(TotpKey {
                secret: Secret::new(secret),
                algorithm: Algorithm::SHA1,
                digits: 6,
                period: 30,
                last_step: Some(7),
                kind: crate::store::KeyKind::Totp,
                window: None,
                created: 1,
            }),
            pending_totp: None,
            email: None,
            phone: None,
            recovery: Vec::new(),
            pending_recovery: Vec::new(),
            pending_at_login: false,
            default_method: None,
        }
    }

    #[test]
    fn a_saved_record_loads_back_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(&dir.path().join("state")).unwrap();
        store.save("alice", &record("JBSWY3DPEHPK3PXP")).unwrap();
        let back = store.load("alice").unwrap().unwrap();
        let key = back.totp.unwrap();
        assert_eq!(key.secret.expose(), "JBSWY3DPEHPK3PXP");
        assert_eq!(key.last_step, Some(7));
        assert_eq!(mode(&dir.path().join("state")), 0o700);
        assert_eq!(mode(&dir.path().join("state/users")), 0o700);
        assert_eq!(mode(&dir.path().join("state/users/alice.json")), 0o600);
    }

    #[test]
    fn an_unknown_user_has_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        assert!(store.load("bob").unwrap().is_none());
    }

    #[test]
    fn a_hostile_name_stays_inside_the_store_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        for name in [
            "../../etc/passwd",
            ".hidden",
            "DOMAIN\\user",
            "user@example.com",
            "a/b",
        ] {
            store.save(name, &record("A")).unwrap();
        }
        let users = store.users().unwrap();
        assert_eq!(users.len(), 5);
        assert!(users.contains(&"../../etc/passwd".to_owned()));
        for entry in fs::read_dir(dir.path().join("users")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(!name.contains('/') && !name.starts_with('.'), "{name}");
        }
        assert!(store.save("", &record("A")).is_err());
    }

    #[test]
    fn a_torn_write_leaves_the_old_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store.save("alice", &record("OLDSECRET")).unwrap();
        // A crash between writing the temp file and the rename leaves a stray temp file.
        fs::write(dir.path().join("users/alice.json.tmp999"), b"{ half").unwrap();
        let key = store.load("alice").unwrap().unwrap().totp.unwrap();
        assert_eq!(key.secret.expose(), "OLDSECRET");
        assert_eq!(store.users().unwrap(), vec!["alice".to_owned()]);
    }

    #[test]
    fn a_corrupt_record_is_an_error_not_an_empty_user() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        fs::write(dir.path().join("users/alice.json"), b"not json").unwrap();
        assert!(matches!(
            store.load("alice"),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn removing_forgets_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store.save("alice", &record("A")).unwrap();
        store.remove("alice").unwrap();
        store.remove("alice").unwrap();
        assert!(store.load("alice").unwrap().is_none());
    }

    fn used(user: &str, step: u64) -> UsedStep {
        UsedStep {
            user: user.into(),
            step,
            period: 30,
        }
    }

    #[test]
    fn a_clean_stop_is_told_from_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let first = store.begin_run().unwrap();
        assert!(!first.unclean, "a new store has no previous run");
        assert_eq!(mode(&dir.path().join("running")), 0o600);
        store
            .save_used_steps(&saved(vec![used("alice", 42)]))
            .unwrap();
        store.end_run().unwrap();
        assert!(!dir.path().join("running").exists());

        let second = store.begin_run().unwrap();
        assert!(!second.unclean);
        assert_eq!(second.saved.used, vec![used("alice", 42)]);
        assert_eq!(mode(&dir.path().join("used-steps.json")), 0o600);
        // No end_run: as if killed (the process, and with it the lock, is gone).
        drop(store);
        let third = FileStore::open(dir.path()).unwrap().begin_run().unwrap();
        assert!(third.unclean);
        assert_eq!(
            third.saved.used,
            vec![used("alice", 42)],
            "what was saved still counts"
        );
    }

    #[test]
    fn two_runs_cannot_share_a_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = FileStore::open(dir.path()).unwrap();
        let second = FileStore::open(dir.path()).unwrap();
        first.begin_run().unwrap();
        assert!(matches!(second.begin_run(), Err(StoreError::InUse(_))));
        first.end_run().unwrap();
        assert!(!second.begin_run().unwrap().unclean);
    }

    #[test]
    fn unreadable_used_steps_count_as_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        fs::write(dir.path().join("used-steps.json"), b"{ torn").unwrap();
        let run = store.begin_run().unwrap();
        assert!(run.unclean);
        assert!(run.saved.used.is_empty());
    }

    fn saved(used: Vec<UsedStep>) -> SavedSteps {
        SavedSteps {
            used,
            guard_from: None,
        }
    }

    #[test]
    fn the_restart_guard_is_saved_with_the_steps_and_old_files_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let with_guard = SavedSteps {
            used: vec![used("alice", 42)],
            guard_from: Some(1_800_000_000),
        };
        store.save_used_steps(&with_guard).unwrap();
        assert_eq!(store.begin_run().unwrap().saved, with_guard);
        store.end_run().unwrap();
        // The bare list an earlier version wrote.
        fs::write(
            dir.path().join("used-steps.json"),
            br#"[{"user":"bob","step":7,"period":30}]"#,
        )
        .unwrap();
        let run = store.begin_run().unwrap();
        assert!(!run.unclean);
        assert_eq!(run.saved, saved(vec![used("bob", 7)]));
    }

    #[test]
    fn lockout_state_is_saved_per_user_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let record = LockoutRecord {
            failures: vec![10, 20],
            locked_until: Some(99),
        };
        store.save_lockout("../alice", Some(&record)).unwrap();
        store
            .save_lockout("bob", Some(&LockoutRecord::default()))
            .unwrap();
        let mut all = store.lockouts().unwrap();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(all[0], ("../alice".to_owned(), record));
        assert_eq!(mode(&dir.path().join("lockout/bob.json")), 0o600);
        store.save_lockout("bob", None).unwrap();
        store.save_lockout("bob", None).unwrap();
        assert_eq!(store.lockouts().unwrap().len(), 1);
        fs::write(dir.path().join("lockout/carol.json"), b"{ torn").unwrap();
        assert!(matches!(store.lockouts(), Err(StoreError::Corrupt { .. })));
    }

    fn sealer(byte: u8) -> Sealer {
        Sealer::new(crate::store::seal::SealingKey::new(
            zeroize::Zeroizing::new([byte; 32]),
        ))
    }

    #[test]
    fn a_sealed_store_holds_no_secret_in_the_clear() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open_sealed(dir.path(), sealer(1)).unwrap();
        let mut rec = record("JBSWY3DPEHPK3PXP");
        rec.pending_totp = record("KRSXG5CTMVRXEZLU").totp;
        store.save("alice", &rec).unwrap();
        let text = fs::read_to_string(dir.path().join("users/alice.json")).unwrap();
        assert!(!text.contains("JBSWY3DPEHPK3PXP") && !text.contains("KRSXG5CTMVRXEZLU"));
        assert_eq!(text.matches("sealed:v1:").count(), 2, "{text}");
        let back = store.load("alice").unwrap().unwrap();
        assert_eq!(back.totp.unwrap().secret.expose(), "JBSWY3DPEHPK3PXP");
        assert_eq!(
            back.pending_totp.unwrap().secret.expose(),
            "KRSXG5CTMVRXEZLU"
        );
    }

    #[test]
    fn a_plaintext_record_is_read_and_sealed_when_next_written() {
        let dir = tempfile::tempdir().unwrap();
        FileStore::open(dir.path())
            .unwrap()
            .save("alice", &record("JBSWY3DPEHPK3PXP"))
            .unwrap();
        let store = FileStore::open_sealed(dir.path(), sealer(1)).unwrap();
        let rec = store.load("alice").unwrap().unwrap();
        assert_eq!(
            rec.totp.as_ref().unwrap().secret.expose(),
            "JBSWY3DPEHPK3PXP"
        );
        store.save("alice", &rec).unwrap();
        let text = fs::read_to_string(dir.path().join("users/alice.json")).unwrap();
        assert!(!text.contains("JBSWY3DPEHPK3PXP"), "{text}");
    }

    #[test]
    fn a_record_the_key_cannot_open_is_an_error_naming_the_user_not_an_empty_user() {
        let dir = tempfile::tempdir().unwrap();
        FileStore::open_sealed(dir.path(), sealer(1))
            .unwrap()
            .save("alice", &record("JBSWY3DPEHPK3PXP"))
            .unwrap();
        for store in [
            FileStore::open_sealed(dir.path(), sealer(2)).unwrap(),
            FileStore::open(dir.path()).unwrap(),
        ] {
            let err = store.load("alice").unwrap_err();
            assert!(matches!(err, StoreError::Sealed { .. }), "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains("\"alice\"")
                    && msg.contains("cannot be decrypted with the configured key"),
                "{msg}"
            );
        }
        // Moved into bob's record, alice's sealed secret does not open either.
        let text = fs::read_to_string(dir.path().join("users/alice.json")).unwrap();
        fs::write(dir.path().join("users/bob.json"), text).unwrap();
        let store = FileStore::open_sealed(dir.path(), sealer(1)).unwrap();
        assert!(store.load("alice").is_ok());
        assert!(matches!(
            store.load("bob"),
            Err(StoreError::Sealed {
                source: crate::store::seal::SealError::Rejected,
                ..
            })
        ));
    }

    #[test]
    fn temp_files_left_by_a_crash_go_at_open_but_never_a_live_runs() {
        let dir = tempfile::tempdir().unwrap();
        let live = FileStore::open(dir.path()).unwrap();
        live.save("alice", &record("A")).unwrap();
        live.begin_run().unwrap();
        let stale = [
            dir.path().join("users/alice.json.tmp4242"),
            dir.path().join("used-steps.json.tmp4242"),
            dir.path().join("lockout/alice.json.tmp4242.7"),
        ];
        for path in &stale {
            fs::write(path, b"{ half").unwrap();
        }
        let keep = dir.path().join("users/alice.json.tmpnotes");
        fs::write(&keep, b"not ours").unwrap();

        // Another process opening while the live run holds the lock must leave them.
        drop(FileStore::open(dir.path()).unwrap());
        assert!(stale.iter().all(|p| p.exists()));

        // The run is gone (killed): the next open removes what it left, and only that.
        drop(live);
        let store = FileStore::open(dir.path()).unwrap();
        assert!(stale.iter().all(|p| !p.exists()));
        assert!(keep.exists());
        assert!(store.load("alice").unwrap().is_some());
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }
}
