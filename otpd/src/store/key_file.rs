//! The sealing key's file: 64 hex digits (32 random bytes) and a newline, root 0600, written by
//! `otpd keygen` and read by otpd at start. systemd's `LoadCredential=otpd.key:...` takes
//! precedence over `key_file`. A key others could read or replace protects nothing, so such a
//! file is refused, as is one owned by anybody but root or otpd's own user.

use super::seal::{SealError, SealingKey, KEY_LEN};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The credential name the unit passes with `LoadCredential=otpd.key:/etc/otpd/key`.
pub const CREDENTIAL: &str = "otpd.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("no key file at {}; run `otpd keygen`", .0.display())]
    Missing(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: the key file is open to group or others (mode {mode:04o}); run `chmod 600 {}`", path.display(), path.display())]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{}: the key file belongs to uid {owner}, not root or otpd's user; run `chown root {}`", path.display(), path.display())]
    Owner { path: PathBuf, owner: u32 },
    #[error("{}: not a key file (expected 64 hex digits, as `otpd keygen` writes)", .0.display())]
    Format(PathBuf),
    #[error("{}: a key file is already there; it is kept (move it away first to replace it)", .0.display())]
    Exists(PathBuf),
    #[error("cannot make a key: {0}")]
    Random(#[from] SealError),
}

/// Where the key comes from: the systemd credential when there is one, else `key_file`.
pub fn source(key_file: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let credential = Path::new(&dir).join(CREDENTIAL);
        if credential.exists() {
            return credential;
        }
    }
    key_file.to_owned()
}

/// Read and check the key at `path`.
pub fn read(path: &Path) -> Result<SealingKey, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(KeyFileError::Missing(path.to_owned()))
        }
        Err(e) => return Err(io(e)),
    };
    // Checked on the open file, so what is checked is what is read.
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(KeyFileError::Format(path.to_owned()));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.uid() != 0 && meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(KeyFileError::Owner {
            path: path.to_owned(),
            owner: meta.uid(),
        });
    }
    // 64 digits and a newline; anything much longer is not ours.
    let mut text = Zeroizing::new(Vec::with_capacity(128));
    Read::take(&mut file, 128)
        .read_to_end(&mut text)
        .map_err(io)?;
    parse(&text).ok_or_else(|| KeyFileError::Format(path.to_owned()))
}

/// The key for otpd: the credential, else `key_file`.
pub fn load(key_file: &Path) -> Result<SealingKey, KeyFileError> {
    read(&source(key_file))
}

fn parse(text: &[u8]) -> Option<SealingKey> {
    let text = std::str::from_utf8(text).ok()?;
    let digits = text.strip_suffix('\n').unwrap_or(text);
    if digits.len() != 2 * KEY_LEN || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes = crate::hex::decode(digits)?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(bytes.get(..KEY_LEN)?);
    Some(SealingKey::new(key))
}

/// Built in place, so no copy of the key is left behind in freed memory.
fn text(key: &SealingKey) -> Zeroizing<String> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut t = Zeroizing::new(String::with_capacity(2 * KEY_LEN + 1));
    for b in key.bytes() {
        t.push(char::from(DIGITS[usize::from(b >> 4)]));
        t.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    t.push('\n');
    t
}

/// `otpd keygen`: a new random key at `path`, 0600, never over an existing file. The key is
/// written to a temp file and linked into place, so `path` is either absent or complete.
pub fn generate(path: &Path) -> Result<(), KeyFileError> {
    let key = SealingKey::generate()?;
    let tmp = temp_path(path);
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    write_synced(&tmp, &text(&key)).map_err(io)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => sync_parent(path).map_err(io),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            Err(KeyFileError::Exists(path.to_owned()))
        }
        Err(e) => Err(io(e)),
    }
}

/// Put `key` at `path` atomically (temp, fsync, rename), replacing what is there: the last step
/// of `otpd rekey`.
pub fn install(path: &Path, key: &SealingKey) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = temp_path(path);
    let written = write_synced(&tmp, &text(key)).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io(e));
    }
    sync_parent(path).map_err(io)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

fn write_synced(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keygen_writes_a_private_key_once_and_it_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/key");
        generate(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.trim_end().bytes().all(|b| b.is_ascii_hexdigit()));
        let id = read(&path).unwrap().id();

        assert!(matches!(generate(&path), Err(KeyFileError::Exists(_))));
        assert_eq!(fs::read_to_string(&path).unwrap(), text, "kept as it was");
        assert_eq!(read(&path).unwrap().id(), id);
        assert_eq!(fs::read_dir(dir.path().join("etc")).unwrap().count(), 1);
    }

    #[test]
    fn a_key_file_others_can_read_or_write_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        generate(&path).unwrap();
        for mode in [0o640, 0o604, 0o620, 0o602] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = read(&path).unwrap_err();
            assert!(matches!(err, KeyFileError::Exposed { .. }), "{mode:o}");
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("chmod 600 {}", path.display())),
                "{msg}"
            );
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(read(&path).is_ok(), "read-only for the owner is fine");
    }

    #[test]
    fn a_missing_or_malformed_key_file_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let msg = read(&path).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!("no key file at {}; run `otpd keygen`", path.display())
        );
        let signed = "+f".repeat(32);
        for junk in [
            &b""[..],
            b"abc\n",
            &[b'g'; 64],
            &[b'a'; 66],
            signed.as_bytes(),
        ] {
            fs::write(&path, junk).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            assert!(matches!(read(&path), Err(KeyFileError::Format(_))));
        }
    }

    #[test]
    fn install_replaces_the_key_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        generate(&path).unwrap();
        let new = SealingKey::generate().unwrap();
        install(&path, &new).unwrap();
        assert_eq!(read(&path).unwrap().id(), new.id());
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
