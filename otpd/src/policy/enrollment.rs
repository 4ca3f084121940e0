//! Adding a factor: a new pending TOTP or HOTP key with the recovery codes that take effect with it, an
//! imported authenticator setup, a new set of recovery codes, a confirmed address or number.
//! Every new factor is stored before the call returns; the code that confirms a pending key is
//! checked in `keys`, like every other code.

use super::clock::unix_now;
use super::hotp;
use super::keys::Keys;
use super::records::{Change, Records};
use super::recovery;
use super::totp;
use crate::config::{Algorithm, TotpConfig};
use crate::store::{KeyKind, StoreError, TotpKey, UserRecord};
use otp_proto::{ImportedKey, Secret, Via};
use std::sync::Arc;

pub struct Enrollment {
    records: Arc<Records>,
    keys: Arc<Keys>,
    totp: TotpConfig,
}

impl Enrollment {
    pub fn new(records: Arc<Records>, keys: Arc<Keys>, totp: TotpConfig) -> Enrollment {
        Enrollment {
            records,
            keys,
            totp,
        }
    }

    /// Store a new pending TOTP key (replacing any earlier pending one) with a new set of
    /// recovery codes that takes effect with it; return both to show once. `at_login`: made by
    /// first-login enrollment, the only pending key a login may show again.
    pub async fn enroll_totp(
        &self,
        user: &str,
        at_login: bool,
    ) -> Result<(TotpKey, Vec<Secret>), EnrollError> {
        let key = totp::new_key(&self.totp, unix_now()).map_err(|_| EnrollError::Random)?;
        self.store_pending(user, key, at_login).await
    }

    /// Store a new pending HOTP key (policy::hotp: the vendor's secret or a new one, the
    /// counter of the token's next code) with a new set of recovery codes, as `enroll_totp`;
    /// the token's first code confirms it.
    pub async fn enroll_hotp(
        &self,
        user: &str,
        secret: Option<&Secret>,
        counter: u64,
        digits: u8,
    ) -> Result<(TotpKey, Vec<Secret>), EnrollError> {
        let key = hotp::new_key(secret, counter, digits, unix_now())?;
        self.store_pending(user, key, false).await
    }

    async fn store_pending(
        &self,
        user: &str,
        key: TotpKey,
        at_login: bool,
    ) -> Result<(TotpKey, Vec<Secret>), EnrollError> {
        let (codes, hashes) = tokio::task::spawn_blocking(recovery::new_set)
            .await
            .map_err(|_| EnrollError::Random)?;
        let pending = key.clone();
        self.records
            .update(user, move |record| {
                let record = record.get_or_insert_with(UserRecord::default);
                record.pending_totp = Some(pending);
                record.pending_at_login = at_login;
                record.pending_recovery = hashes;
                Change::Changed(())
            })
            .await?;
        Ok((key, codes))
    }

    /// The pending TOTP key that first-login enrollment made, if one is waiting for its first
    /// code. A pending key made with `otpctl enroll` is never shown at a login: whoever passes
    /// the first factor would see the user's new key.
    pub fn pending_from_login(&self, user: &str) -> Result<Option<TotpKey>, StoreError> {
        Ok(self
            .records
            .load(user)?
            .filter(|r| r.pending_at_login)
            .and_then(|r| r.pending_totp))
    }

    /// Replace the user's recovery codes with a new set and return it to show once.
    pub async fn new_recovery_codes(&self, user: &str) -> Result<Vec<Secret>, EnrollError> {
        let (codes, hashes) = tokio::task::spawn_blocking(recovery::new_set)
            .await
            .map_err(|_| EnrollError::Random)?;
        self.records
            .update(user, move |record| {
                record.get_or_insert_with(UserRecord::default).recovery = hashes;
                Change::Changed(())
            })
            .await?;
        Ok(codes)
    }

    /// Make a confirmed address or number the user's email or SMS method.
    pub async fn set_destination(
        &self,
        user: &str,
        via: Via,
        destination: &str,
    ) -> Result<(), StoreError> {
        let destination = destination.to_owned();
        self.records
            .update(user, move |record| {
                let record = record.get_or_insert_with(UserRecord::default);
                match via {
                    Via::Email => record.email = Some(destination),
                    Via::Sms => record.phone = Some(destination),
                }
                Change::Changed(())
            })
            .await
    }

    /// Make an existing authenticator setup the user's active key (and its scratch codes their
    /// recovery codes), checked first so a bad file cannot lock the user out.
    pub async fn import(&self, user: &str, imported: ImportedKey) -> Result<(), ImportRefused> {
        // Bounded work: a peer may send any ImportedKey frame, not only what otpctl parsed.
        crate::import::check_imported(&imported)
            .map_err(|e| ImportRefused::Invalid(e.to_string()))?;
        let algorithm = match imported.algorithm.as_str() {
            "SHA1" => Algorithm::SHA1,
            "SHA256" => Algorithm::SHA256,
            "SHA512" => Algorithm::SHA512,
            other => return Err(ImportRefused::Invalid(format!("unknown algorithm {other}"))),
        };
        let key = TotpKey {
            secret: imported.secret,
            algorithm,
            digits: imported.digits,
            period: imported.period,
            last_step: imported.hotp_counter.and_then(|next| next.checked_sub(1)),
            kind: if imported.hotp_counter.is_some() {
                KeyKind::Hotp
            } else {
                KeyKind::Totp
            },
            window: imported.window,
            created: unix_now(),
        };
        if !totp::usable(&key) {
            return Err(ImportRefused::Invalid(
                "the secret is not base32, or digits/period are out of range".into(),
            ));
        }
        let codes = imported.recovery_codes;
        let hashes = tokio::task::spawn_blocking(move || recovery::hash_existing(&codes))
            .await
            .map_err(|_| ImportRefused::Store(StoreError::Stopping))?;
        let spent = self.keys.last_spent(user, &key);
        self.records
            .update(user, move |record| {
                let record = record.get_or_insert_with(UserRecord::default);
                let mut key = key;
                // The same secret again (a re-import) is the same key: its used steps and its
                // age (which the restart guard goes by) stay, or a used code would work again.
                if let Some(old) = record.totp.as_ref().filter(|old| old.secret == key.secret) {
                    key.created = old.created;
                    key.last_step = key.last_step.max(old.last_step).max(spent);
                }
                record.totp = Some(key);
                record.clear_pending();
                if !hashes.is_empty() {
                    record.recovery = hashes;
                }
                Change::Changed(())
            })
            .await
            .map_err(ImportRefused::Store)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportRefused {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("the OS random number generator failed")]
    Random,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HOTP key asked for is refused (secret, digits or counter).
    #[error(transparent)]
    Hotp(#[from] super::hotp::HotpRefused),
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::policy::accounts::Accounts;
    use crate::store::{FileStore, Store};
    use otp_proto::{ImportedKey, Secret};
    use std::sync::Arc;

    /// A pending key, its recovery set and where it was made go together: an import or a
    /// disable that drops the key leaves none of the rest behind.
    #[tokio::test]
    async fn dropping_a_pending_key_forgets_its_recovery_set_and_origin_too() {
        let dir = tempfile::tempdir().unwrap();
        let a = Accounts::new(
            Arc::new(FileStore::open(dir.path()).unwrap()),
            Config::default(),
        )
        .unwrap();
        let stored = || {
            FileStore::open(dir.path())
                .unwrap()
                .load("alice")
                .unwrap()
                .unwrap()
        };
        a.enrollment.enroll_totp("alice", true).await.unwrap();
        assert!(stored().pending_at_login && !stored().pending_recovery.is_empty());
        let key = ImportedKey {
            secret: Secret::new("JBSWY3DPEHPK3PXPJBSWY3DP"),
            algorithm: "SHA1".into(),
            digits: 6,
            period: 30,
            hotp_counter: None,
            window: None,
            recovery_codes: Vec::new(),
        };
        a.enrollment.import("alice", key).await.unwrap();
        let record = stored();
        assert!(record.pending_totp.is_none());
        assert!(record.pending_recovery.is_empty());
        assert!(!record.pending_at_login);
        assert!(a.enrollment.pending_from_login("alice").unwrap().is_none());
    }
}
