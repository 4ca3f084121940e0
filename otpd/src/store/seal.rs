//! Secrets sealed at rest: XChaCha20-Poly1305 under a 256-bit key, with the user and the field as
//! associated data, so a sealed value opens only where it was sealed. Knows nothing of any store:
//! the file store applies it today, a shared (PostgreSQL) store can apply it the same way.
//!
//! A sealed value is text, `sealed:v1:KEYID:NONCE:CIPHERTEXT` (lowercase hex), so it sits where
//! the base32 secret used to, and a record written before sealing (plain base32, which never
//! holds `:`) is still told apart and read.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use otp_proto::Secret;
use sha2::{Digest, Sha256};
use std::fmt;
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const PREFIX: &str = "sealed:v1:";

/// Which secret of a record a sealed value belongs to; part of the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Totp,
    PendingTotp,
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Totp => "totp",
            Field::PendingTotp => "pending_totp",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names a key without revealing it: the first 8 bytes of SHA-256 over a label and the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::hex::encode(&self.0))
    }
}

/// A 256-bit sealing key; wiped from memory when dropped (every copy), never printed.
#[derive(Clone)]
pub struct SealingKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: KeyId,
}

impl SealingKey {
    pub fn new(bytes: Zeroizing<[u8; KEY_LEN]>) -> SealingKey {
        let digest = Sha256::new()
            .chain_update(b"otpd sealing key id\0")
            .chain_update(bytes.as_slice())
            .finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        SealingKey {
            bytes,
            id: KeyId(id),
        }
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<SealingKey, SealError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(bytes.as_mut_slice()).map_err(|_| SealError::Random)?;
        Ok(SealingKey::new(bytes))
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&(*self.bytes).into())
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealingKey(<redacted>)")
    }
}

/// One sealed secret, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    key_id: KeyId,
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

impl Sealed {
    /// The stored text form.
    pub fn to_text(&self) -> String {
        format!(
            "{PREFIX}{}:{}:{}",
            self.key_id,
            crate::hex::encode(&self.nonce),
            crate::hex::encode(&self.ciphertext)
        )
    }

    /// `None` for text that is not a sealed value at all (a plaintext secret from before
    /// sealing); an error for one that claims to be sealed but is malformed.
    pub fn parse(text: &str) -> Option<Result<Sealed, SealError>> {
        let rest = text.strip_prefix(PREFIX)?;
        Some(Sealed::parse_fields(rest).ok_or(SealError::Malformed))
    }

    fn parse_fields(rest: &str) -> Option<Sealed> {
        let mut parts = rest.split(':');
        let (id, nonce, ciphertext) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let key_id = KeyId(crate::hex::decode(id)?.as_slice().try_into().ok()?);
        let nonce = crate::hex::decode(nonce)?.as_slice().try_into().ok()?;
        let ciphertext = crate::hex::decode(ciphertext)?.to_vec();
        if ciphertext.len() < TAG_LEN {
            return None;
        }
        Some(Sealed {
            key_id,
            nonce,
            ciphertext,
        })
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("it was sealed under key {0}, which is not the configured key")]
    UnknownKey(KeyId),
    #[error("it fails authentication (tampered, or sealed for another user or field)")]
    Rejected,
    #[error("the sealed value is malformed")]
    Malformed,
    #[error("it is sealed, but no key is configured")]
    NoKey,
    #[error("the random source failed")]
    Random,
}

/// Seals with one key and opens with it or with older keys given for a re-key.
#[derive(Debug)]
pub struct Sealer {
    current: SealingKey,
    older: Vec<SealingKey>,
}

impl Sealer {
    pub fn new(current: SealingKey) -> Sealer {
        Sealer {
            current,
            older: Vec::new(),
        }
    }

    /// Also open values sealed under `older` (while `otpd rekey` moves them to the current key).
    pub fn also_opening(mut self, older: SealingKey) -> Sealer {
        if older.id != self.current.id {
            self.older.push(older);
        }
        self
    }

    /// The key new seals are made with.
    pub fn key_id(&self) -> KeyId {
        self.current.id
    }

    pub fn seal(&self, user: &str, field: Field, secret: &Secret) -> Result<Sealed, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| SealError::Random)?;
        let aad = associated_data(user, field);
        let ciphertext = self
            .current
            .cipher()
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Rejected)?;
        Ok(Sealed {
            key_id: self.current.id,
            nonce,
            ciphertext,
        })
    }

    pub fn open(&self, user: &str, field: Field, sealed: &Sealed) -> Result<Secret, SealError> {
        let key = std::iter::once(&self.current)
            .chain(&self.older)
            .find(|k| k.id == sealed.key_id)
            .ok_or(SealError::UnknownKey(sealed.key_id))?;
        let aad = associated_data(user, field);
        let plain = Zeroizing::new(
            key.cipher()
                .decrypt(
                    &sealed.nonce.into(),
                    Payload {
                        msg: &sealed.ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| SealError::Rejected)?,
        );
        let text = std::str::from_utf8(&plain).map_err(|_| SealError::Malformed)?;
        Ok(Secret::new(text))
    }
}

/// Versioned and unambiguous: the field comes from a fixed set without NUL, the rest is the user.
fn associated_data(user: &str, field: Field) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + user.len());
    aad.extend_from_slice(b"otpd seal v1\0");
    aad.extend_from_slice(field.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(user.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SealingKey {
        SealingKey::new(Zeroizing::new([byte; KEY_LEN]))
    }

    const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

    #[test]
    fn a_sealed_secret_opens_for_its_user_and_field_and_hides_the_secret() {
        let sealer = Sealer::new(key(1));
        let sealed = sealer
            .seal("alice", Field::Totp, &Secret::new(SECRET))
            .unwrap();
        let text = sealed.to_text();
        assert!(!text.contains(SECRET) && !text.contains(&SECRET.to_lowercase()));
        let parsed = Sealed::parse(&text).unwrap().unwrap();
        let back = sealer.open("alice", Field::Totp, &parsed).unwrap();
        assert_eq!(back.expose(), SECRET);
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let sealer = Sealer::new(key(1));
        let a = sealer
            .seal("alice", Field::Totp, &Secret::new(SECRET))
            .unwrap();
        let b = sealer
            .seal("alice", Field::Totp, &Secret::new(SECRET))
            .unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.to_text(), b.to_text());
    }

    #[test]
    fn a_sealed_secret_cannot_move_to_another_user_or_field() {
        let sealer = Sealer::new(key(1));
        let sealed = sealer
            .seal("alice", Field::Totp, &Secret::new(SECRET))
            .unwrap();
        assert_eq!(
            sealer.open("bob", Field::Totp, &sealed).unwrap_err(),
            SealError::Rejected
        );
        assert_eq!(
            sealer
                .open("alice", Field::PendingTotp, &sealed)
                .unwrap_err(),
            SealError::Rejected
        );
    }

    #[test]
    fn a_tampered_value_is_rejected() {
        let sealer = Sealer::new(key(1));
        let mut sealed = sealer
            .seal("alice", Field::Totp, &Secret::new(SECRET))
            .unwrap();
        sealed.ciphertext[0] ^= 1;
        assert_eq!(
            sealer.open("alice", Field::Totp, &sealed).unwrap_err(),
            SealError::Rejected
        );
    }

    #[test]
    fn another_key_is_named_not_guessed() {
        let sealed = Sealer::new(key(1))
            .seal("alice", Field::Totp, &Secret::new(SECRET))
            .unwrap();
        let other = Sealer::new(key(2));
        assert_eq!(
            other.open("alice", Field::Totp, &sealed).unwrap_err(),
            SealError::UnknownKey(key(1).id())
        );
        // While re-keying, both keys open; new seals use the new one.
        let both = Sealer::new(key(2)).also_opening(key(1));
        assert_eq!(
            both.open("alice", Field::Totp, &sealed).unwrap().expose(),
            SECRET
        );
        let resealed = both
            .seal("alice", Field::Totp, &Secret::new(SECRET))
            .unwrap();
        assert_eq!(resealed.key_id(), key(2).id());
    }

    #[test]
    fn plaintext_is_not_mistaken_for_a_sealed_value_and_junk_is_malformed() {
        assert!(Sealed::parse(SECRET).is_none());
        for junk in [
            "sealed:v1:",
            "sealed:v1:00:00:00",
            "sealed:v1:zz:zz:zz",
            "sealed:v1:0011223344556677:00:00:00",
        ] {
            assert_eq!(
                Sealed::parse(junk),
                Some(Err(SealError::Malformed)),
                "{junk}"
            );
        }
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let k = key(0xab);
        let shown = format!("{k:?} {:?}", Sealer::new(key(0xab)));
        assert!(
            !shown.contains("ab, ab") && !shown.contains("171"),
            "{shown}"
        );
        assert_ne!(k.id(), key(0xac).id());
    }
}
