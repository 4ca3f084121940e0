//! The files channels read at start-up: secrets (`password_file`, `auth_token_file`,
//! `api_secret_file`) and extra CA certificates (`ca_file`). One place decides who may own and
//! read them, so email and SMS cannot drift apart.
//!
//! Rules (checked on the opened file, so a swap between check and read changes nothing):
//! - every file is a regular file owned by root or by otpd's own uid, and not writable by group
//!   or others: whoever can write a CA file can make otpd trust their server;
//! - a secret is also neither readable by group nor by others (mode 0600 or 0400): it is a
//!   password for a mail server or an SMS account that bills per message;
//! - sizes are bounded (a secret 4 KiB, a CA bundle 1 MiB).

use otp_proto::Secret;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest secret file: tokens and passwords are tens of bytes.
pub const MAX_SECRET: u64 = 4 * 1024;
/// Largest CA file: the whole Mozilla bundle is about 220 KiB.
pub const MAX_CA: u64 = 1024 * 1024;

/// Why a secret or CA file is refused, with the fix.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("{}: owned by uid {uid}; it must be owned by root or by otpd's uid {euid}", path.display())]
    Owner { path: PathBuf, uid: u32, euid: u32 },
    #[error("{}: mode {mode:04o} lets {who}; run chmod {fix} on it", path.display())]
    Mode {
        path: PathBuf,
        mode: u32,
        who: &'static str,
        fix: &'static str,
    },
    #[error("{}: larger than {max} bytes", path.display())]
    TooLarge { path: PathBuf, max: u64 },
    #[error("{}: empty", .0.display())]
    Empty(PathBuf),
}

/// A secret without its trailing newline; the file must be private to its owner.
pub fn read_secret(path: &Path) -> Result<Secret, SecretFileError> {
    let bytes = zeroize::Zeroizing::new(read_checked(path, Kind::Secret)?);
    let text = std::str::from_utf8(&bytes).map_err(|_| SecretFileError::Read {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
    })?;
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return Err(SecretFileError::Empty(path.to_owned()));
    }
    Ok(Secret::new(secret))
}

/// PEM certificates; the file may be world-readable but only its owner may change it.
pub fn read_ca(path: &Path) -> Result<Vec<u8>, SecretFileError> {
    read_checked(path, Kind::Ca)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Secret,
    Ca,
}

fn read_checked(path: &Path, kind: Kind) -> Result<Vec<u8>, SecretFileError> {
    let read_error = |source| SecretFileError::Read {
        path: path.to_owned(),
        source,
    };
    // O_NONBLOCK: a FIFO planted at the path must not hang start-up; regular files ignore it.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    if !meta.is_file() {
        return Err(SecretFileError::NotAFile(path.to_owned()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(SecretFileError::Owner {
            path: path.to_owned(),
            uid: meta.uid(),
            euid,
        });
    }
    let mode = meta.mode() & 0o7777;
    let (forbidden, who, fix, max) = match kind {
        Kind::Secret => (0o077, "group or others use it", "0600", MAX_SECRET),
        Kind::Ca => (0o022, "group or others write it", "go-w", MAX_CA),
    };
    if mode & forbidden != 0 {
        return Err(SecretFileError::Mode {
            path: path.to_owned(),
            mode,
            who,
            fix,
        });
    }
    if meta.len() > max {
        return Err(SecretFileError::TooLarge {
            path: path.to_owned(),
            max,
        });
    }
    let mut bytes = Vec::new();
    // The length was checked on this descriptor, but a file can grow: read one byte past the cap.
    file.by_ref()
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > max {
        return Err(SecretFileError::TooLarge {
            path: path.to_owned(),
            max,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_private_secret_is_read_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), "token", "s3cret\n", 0o600);
        assert_eq!(read_secret(&path).unwrap().expose(), "s3cret");
        let path = file(dir.path(), "ro", "s3cret", 0o400);
        assert_eq!(read_secret(&path).unwrap().expose(), "s3cret");
    }

    #[test]
    fn a_secret_others_or_the_group_can_read_or_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o666] {
            let path = file(dir.path(), "token", "s3cret\n", mode);
            let err = read_secret(&path).unwrap_err().to_string();
            assert!(err.contains("chmod 0600"), "{mode:o}: {err}");
            assert!(err.contains(&format!("{mode:04o}")), "{err}");
        }
    }

    #[test]
    fn a_ca_file_may_be_public_but_not_writable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), "ca.pem", "PEM", 0o644);
        assert_eq!(read_ca(&path).unwrap(), b"PEM");
        for mode in [0o664, 0o646] {
            let path = file(dir.path(), "ca.pem", "PEM", mode);
            assert!(read_ca(&path).unwrap_err().to_string().contains("go-w"));
        }
    }

    #[test]
    fn a_file_owned_by_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), "token", "s3cret\n", 0o600);
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let err = read_secret(&path).unwrap_err().to_string();
        assert!(err.contains("owned by uid 65534"), "{err}");
        assert!(read_ca(&path).is_err());
    }

    #[test]
    fn directories_empty_and_huge_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_ca(dir.path()),
            Err(SecretFileError::NotAFile(_))
        ));
        let empty = file(dir.path(), "empty", "\n", 0o600);
        assert!(matches!(
            read_secret(&empty),
            Err(SecretFileError::Empty(_))
        ));
        let huge = file(dir.path(), "huge", &"x".repeat(5000), 0o600);
        assert!(matches!(
            read_secret(&huge),
            Err(SecretFileError::TooLarge { .. })
        ));
        assert!(matches!(
            read_secret(&dir.path().join("absent")),
            Err(SecretFileError::Read { .. })
        ));
    }
}
