//! The embedded store's audit sink: `state_dir/audit.jsonl`, one JSON object per line, mode
//! 0600. Each event is one `write(2)` on a file opened with O_APPEND, so lines never interleave;
//! a line torn by a crash mid-write (SIGKILL, power loss) is ended with a newline at the next
//! start, and readers skip every line that does not parse. When the file would grow past
//! `[audit] max_file_size` it becomes `audit.jsonl.1` (the older ones shift up to `keep`, the
//! oldest is removed) and a new file starts.

use super::{AuditError, Filter, Sink};
use crate::config::rules::AuditConfig;
use otp_proto::AuditEvent;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const FILE_NAME: &str = "audit.jsonl";

pub struct JsonlFile {
    path: PathBuf,
    max_size: u64,
    keep: u32,
    /// The open file and its size; one writer at a time, so rotation never races an append.
    current: Mutex<(File, u64)>,
}

impl JsonlFile {
    /// Open (or create) the file in `dir`, ending a torn last line.
    pub fn open(dir: &Path, cfg: &AuditConfig) -> Result<JsonlFile, AuditError> {
        let path = dir.join(FILE_NAME);
        // With the fleet store nothing else makes state_dir: the trail's own copy needs it.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)
            .map_err(|source| AuditError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        let mut file = open_append(&path)?;
        let err = |source| AuditError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut size = file.metadata().map_err(err)?.len();
        if size > 0 {
            let mut last = [0u8; 1];
            let mut reader = File::open(&path).map_err(err)?;
            reader.seek(SeekFrom::Start(size - 1)).map_err(err)?;
            reader.read_exact(&mut last).map_err(err)?;
            if last[0] != b'\n' {
                log::warn!(
                    "{}: the last line was torn (a crash mid-write); it is skipped",
                    path.display()
                );
                file.write_all(b"\n").map_err(err)?;
                size += 1;
            }
        }
        Ok(JsonlFile {
            path,
            max_size: cfg.max_file_size,
            keep: cfg.keep,
            current: Mutex::new((file, size)),
        })
    }

    fn err(&self, source: std::io::Error) -> AuditError {
        AuditError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// `audit.jsonl.N`.
    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Shift the rotated files up one, the current one to `.1`, and start a new one.
    fn rotate(&self, current: &mut (File, u64)) -> Result<(), AuditError> {
        for n in (1..self.keep).rev() {
            match std::fs::rename(self.rotated(n), self.rotated(n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(self.err(e)),
                _ => {}
            }
        }
        std::fs::rename(&self.path, self.rotated(1)).map_err(|e| self.err(e))?;
        *current = (open_append(&self.path)?, 0);
        Ok(())
    }

    /// Every file, newest first: the current one, then `.1`, `.2`...
    fn files(&self) -> impl Iterator<Item = PathBuf> + '_ {
        std::iter::once(self.path.clone()).chain((1..=self.keep).map(|n| self.rotated(n)))
    }
}

impl Sink for JsonlFile {
    fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(event)?;
        line.push(b'\n');
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let len = line.len() as u64;
        if current.1 > 0 && current.1.saturating_add(len) > self.max_size {
            self.rotate(&mut current)?;
        }
        current.0.write_all(&line).map_err(|e| self.err(e))?;
        current.1 = current.1.saturating_add(len);
        Ok(())
    }

    fn query(&self, filter: &Filter, limit: usize) -> Result<Vec<AuditEvent>, AuditError> {
        let mut found = Vec::new();
        for path in self.files() {
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.err(e)),
            };
            let mut reaches_back = false;
            let mut events: Vec<AuditEvent> = BufReader::new(file)
                .split(b'\n')
                .map_while(Result::ok)
                // A torn or damaged line is no event.
                .filter_map(|line| serde_json::from_slice::<AuditEvent>(&line).ok())
                .inspect(|e| reaches_back |= filter.since.is_some_and(|t| e.time < t))
                .filter(|e| filter.keeps(e))
                .collect();
            events.reverse();
            found.extend(events);
            // Older files hold only older events: none can be recent enough.
            if found.len() >= limit || reaches_back {
                break;
            }
        }
        found.truncate(limit);
        Ok(found)
    }
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| AuditError::Io {
            path: path.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Audit;
    use otp_proto::{AuditKind, AuditResult};

    fn small() -> AuditConfig {
        AuditConfig {
            max_file_size: 4096,
            keep: 2,
        }
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_the_next_event_starts_a_line_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::none("h");
        let file = JsonlFile::open(dir.path(), &small()).unwrap();
        let first = audit.event(AuditKind::Login, AuditResult::Allowed, "alice", 0);
        file.record(&first).unwrap();
        drop(file);
        let path = dir.path().join(FILE_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"id\":\"torn").unwrap();
        let file = JsonlFile::open(dir.path(), &small()).unwrap();
        let second = audit.event(AuditKind::Login, AuditResult::Denied, "alice", 0);
        file.record(&second).unwrap();
        let all = file.query(&Filter::default(), 10).unwrap();
        assert_eq!(all, [second, first]);
    }

    #[test]
    fn the_file_rotates_by_size_and_keeps_only_so_many() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::none("h");
        let file = JsonlFile::open(dir.path(), &small()).unwrap();
        for _ in 0..100 {
            let e = audit.event(AuditKind::Login, AuditResult::Allowed, "alice", 0);
            file.record(&e).unwrap();
        }
        assert!(dir.path().join("audit.jsonl.2").exists());
        assert!(!dir.path().join("audit.jsonl.3").exists());
        for name in ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"] {
            let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(len <= 4096, "{name}: {len}");
        }
        let newest = file.query(&Filter::default(), 3).unwrap();
        assert_eq!(newest.len(), 3);
        assert!(newest[0].id.ends_with("-63"), "{}", newest[0].id);
    }
}
