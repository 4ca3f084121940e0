//! Logging to stderr and, when a syslog socket exists, to syslog (facility authpriv).
//!
//! A fresh machine may have neither /dev/log nor journald: then stderr alone, and start-up goes on.
//! Under systemd, stderr is a journal stream (`JOURNAL_STREAM` names its device and inode) and
//! syslog reaches the same journal, so each event would be stored twice: there otpd writes stderr
//! only, each line led by its sd-daemon priority (`<6>`), and the unit's `SyslogFacility=authpriv`
//! files it under authpriv.
//! Log lines name users, services and outcomes; codes and secrets are `otp_proto::Secret`, whose
//! formatting prints `<redacted>`, so they cannot reach a log line by accident.
//!
//! Peers choose much of what is logged (user, service, rhost, tty), so two rules hold for every
//! line, here, in one place:
//! - **No line can be forged.** Every byte that is not printable ASCII is written as `\xNN` and a
//!   backslash that does not start such an escape as `\\`, so a line never holds a newline or a
//!   terminal escape sequence. Values in `key=value` lines go through [`field`], which also quotes
//!   them, so `user="alice rhost=x"` is one field.
//! - **No peer can flood the log.** Lines logged inside a connection's task ([`for_peer`]), or
//!   on a peer's behalf elsewhere ([`for_peer_now`]), are limited per uid by a token bucket; what was dropped is summed up in one line
//!   "uid=N: M log lines suppressed". Root (sshd, login, sudo) is not limited, so no real login's
//!   audit line is lost, and nor are lines logged outside any peer's task.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::collections::HashMap;
use std::fmt::{self, Display, Write as _};
use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use syslog::{Facility, Formatter3164, LoggerBackend};

type Syslog = syslog::Logger<LoggerBackend, Formatter3164>;

/// Lines a uid may log at once before it is limited.
pub const BURST: u32 = 20;
/// Then one line per this interval.
pub const REFILL: Duration = Duration::from_secs(1);
/// During a flood that never pauses, the summary still comes this often.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

tokio::task_local! {
    /// The uid of the peer whose connection this task serves.
    static PEER: u32;
}

/// Run `f` (a connection's task) as serving `uid`: what it logs counts toward that uid's budget.
/// Not an `async fn`: one would hold `f` twice (as its argument and inside the scope), doubling
/// the connection's future, which the accept loop then copies into its box (issue 16,
/// BENCHMARKS.md: 39 KB copied per connection).
pub fn for_peer<F: Future>(uid: u32, f: F) -> impl Future<Output = F::Output> {
    PEER.scope(uid, f)
}

/// Run `f` as on behalf of `uid`, for lines a peer causes outside its connection's task (the
/// accept loop refusing one more connection from a uid).
pub fn for_peer_now<R>(uid: u32, f: impl FnOnce() -> R) -> R {
    PEER.sync_scope(uid, f)
}

/// The peer uid of the current task, if it serves one.
fn current_peer() -> Option<u32> {
    PEER.try_with(|uid| *uid).ok()
}

struct Sink {
    /// Stderr is the journal: lines carry their priority there, and syslog is not used.
    journal: bool,
    syslog: Option<Mutex<Syslog>>,
}

impl Sink {
    fn write(&self, level: Level, line: &str) {
        let line = escape(line);
        let _ = std::io::stderr()
            .lock()
            .write_all(stderr_line(self.journal, level, &line).as_bytes());
        if let Some(syslog) = &self.syslog {
            if let Ok(mut s) = syslog.lock() {
                // A lost syslog line must never fail a login.
                let _ = match level {
                    Level::Error => s.err(line),
                    Level::Warn => s.warning(line),
                    Level::Info => s.info(line),
                    Level::Debug | Level::Trace => s.debug(line),
                };
            }
        }
    }
}

struct Logger {
    sink: Arc<Sink>,
    limiter: Arc<Mutex<Limiter>>,
}

/// One line for stderr: for the journal, its sd-daemon priority and the line (journald adds the
/// name and pid); for a terminal or a file, the name and level in words.
fn stderr_line(journal: bool, level: Level, line: &str) -> String {
    if journal {
        let priority = match level {
            Level::Error => 3,
            Level::Warn => 4,
            Level::Info => 6,
            Level::Debug | Level::Trace => 7,
        };
        format!("<{priority}>{line}\n")
    } else {
        format!("otpd: {}: {line}\n", level.as_str().to_lowercase())
    }
}

/// Is stderr the journal stream that `JOURNAL_STREAM` ("DEVICE:INODE", in decimal) names? The
/// variable alone is not enough: a child of a systemd service inherits it with a redirected
/// stderr, and its lines would then lose their level in words for nothing.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    let Some(named) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(meta) => names_stream(&named, &meta),
        Err(_) => false,
    }
}

/// Does `named` (the value of `JOURNAL_STREAM`) name the file `meta` describes?
fn names_stream(named: &std::ffi::OsStr, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = named.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    dev.parse::<u64>() == Ok(meta.dev()) && ino.parse::<u64>() == Ok(meta.ino())
}

/// Install the logger once, at start-up. Says on stderr when syslog is unavailable.
pub fn init(level: LevelFilter) {
    let journal = stderr_is_journal();
    let syslog = if journal {
        None
    } else {
        let formatter = Formatter3164 {
            facility: Facility::LOG_AUTHPRIV,
            hostname: None,
            process: "otpd".into(),
            pid: std::process::id(),
        };
        syslog::unix(formatter).ok().map(Mutex::new)
    };
    let no_syslog = syslog.is_none() && !journal;
    let sink = Arc::new(Sink { journal, syslog });
    let limiter = Arc::new(Mutex::new(Limiter::default()));
    let logger = Logger {
        sink: sink.clone(),
        limiter: limiter.clone(),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
        // The summary of a flood must come even if the flooding peer never logs again.
        let _ = std::thread::Builder::new()
            .name("log-summaries".into())
            .spawn(move || summarize(&sink, &limiter));
    }
    if no_syslog {
        log::info!("no syslog socket; logging to stderr only");
    }
}

/// Every `REFILL`, write the summaries that are due and forget uids with nothing to remember.
/// (It inherits SIGTERM and SIGINT blocked: main.rs blocks them before the logger starts.)
fn summarize(sink: &Sink, limiter: &Mutex<Limiter>) {
    loop {
        std::thread::sleep(REFILL);
        let due = lock(limiter).due(Instant::now());
        for (uid, dropped) in due {
            sink.write(
                Level::Warn,
                &format!("uid={uid}: {dropped} log lines suppressed"),
            );
        }
    }
}

fn lock(limiter: &Mutex<Limiter>) -> std::sync::MutexGuard<'_, Limiter> {
    limiter.lock().unwrap_or_else(|e| e.into_inner())
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if let Some(uid) = current_peer() {
            if !lock(&self.limiter).admit(uid, Instant::now()) {
                return;
            }
        }
        self.sink.write(record.level(), &record.args().to_string());
    }

    fn flush(&self) {}
}

/// Per-uid token buckets for lines logged on a peer's behalf.
#[derive(Default)]
struct Limiter {
    buckets: HashMap<u32, Bucket>,
}

struct Bucket {
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
    /// Lines dropped since the last summary.
    dropped: u64,
    first_drop: Instant,
    last_drop: Instant,
}

impl Limiter {
    /// May `uid` log a line now? Counts the line as dropped if not.
    fn admit(&mut self, uid: u32, now: Instant) -> bool {
        if uid == 0 {
            return true;
        }
        let b = self.buckets.entry(uid).or_insert(Bucket {
            tokens: f64::from(BURST),
            at: now,
            dropped: 0,
            first_drop: now,
            last_drop: now,
        });
        b.refill(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return true;
        }
        if b.dropped == 0 {
            b.first_drop = now;
        }
        b.dropped = b.dropped.saturating_add(1);
        b.last_drop = now;
        false
    }

    /// The uids whose drops should be summed up now, with how many lines each lost: those that
    /// stopped flooding for a `REFILL` (the bucket is refilling), and those flooding for
    /// `SUMMARY_EVERY`. Buckets that are full and owe no summary are forgotten.
    fn due(&mut self, now: Instant) -> Vec<(u32, u64)> {
        let mut due = Vec::new();
        self.buckets.retain(|uid, b| {
            b.refill(now);
            if b.dropped > 0
                && (now.saturating_duration_since(b.last_drop) >= REFILL
                    || now.saturating_duration_since(b.first_drop) >= SUMMARY_EVERY)
            {
                due.push((*uid, b.dropped));
                b.dropped = 0;
            }
            b.dropped > 0 || b.tokens < f64::from(BURST)
        });
        due.sort_unstable();
        due
    }
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() / REFILL.as_secs_f64();
        self.tokens = (self.tokens + earned).min(f64::from(BURST));
        self.at = now;
    }
}

/// An error with every cause behind it (`a: b: c`), for log lines and messages: the top-level
/// text of reqwest or tokio-postgres hides the cause (a TLS failure, a refused connection). A
/// cause the text already contains is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `line` with every byte that is not printable ASCII as `\xNN` and every backslash that does
/// not start an escape as `\\`. Escapes already made by [`field`] pass unchanged, so a field is
/// not escaped twice. Outside a field, four typed characters `\x0a` stay as typed: text that
/// merely looks like an escape, never a newline.
pub fn escape(line: &str) -> std::borrow::Cow<'_, str> {
    let bytes = line.as_bytes();
    let clean = |b: u8| (0x20..0x7f).contains(&b) && b != b'\\';
    if bytes.iter().all(|&b| clean(b)) {
        return line.into();
    }
    let mut out = String::with_capacity(line.len() + 16);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if clean(b) {
            out.push(b as char);
        } else if b == b'\\' {
            match escape_at(&bytes[i..]) {
                Some(n) => {
                    out.push_str(&line[i..i + n]);
                    i += n;
                    continue;
                }
                None => out.push_str("\\\\"),
            }
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
        i += 1;
    }
    out.into()
}

/// The length of the escape (`\\` or `\xNN`) `s` starts with, if it starts with one.
fn escape_at(s: &[u8]) -> Option<usize> {
    match s {
        [b'\\', b'\\', ..] => Some(2),
        [b'\\', b'x', a, b, ..] if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => Some(4),
        _ => None,
    }
}

/// A value a peer chose, for a `key=value` log line: escaped like every line, and quoted when it
/// holds a space, `=` or `"` (or is empty), logfmt style. Inside quotes `"` is `\x22`, so the
/// quotes always pair up.
pub fn field(s: &str) -> impl Display + '_ {
    Field(s)
}

struct Field<'a>(&'a str);

impl Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let quote = s.is_empty() || s.contains([' ', '=', '"']);
        if quote {
            f.write_char('"')?;
        }
        for c in s.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\x22")?,
                ' '..='~' => f.write_char(c)?,
                _ => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        write!(f, "\\x{b:02x}")?;
                    }
                }
            }
        }
        if quote {
            f.write_char('"')?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line as it reaches stderr and syslog: escaped.
    fn logged(line: &str) -> String {
        escape(line).into_owned()
    }

    #[test]
    fn a_newline_or_escape_sequence_from_a_peer_cannot_start_a_line() {
        let user = "x\notpd: info: sshd: user=root rhost=- tty=- uid=0: allowed (totp)\x1b[2J\r";
        let line = logged(&format!("sshd: user={user} uid=65534: denied"));
        assert!(!line.contains(['\n', '\r', '\x1b']), "{line}");
        assert!(line.contains("x\\x0aotpd: info:"), "{line}");
        assert!(line.contains("\\x1b[2J\\x0d"), "{line}");
        assert_eq!(line.lines().count(), 1);
    }

    #[test]
    fn every_byte_that_is_not_printable_ascii_is_escaped() {
        let line = logged("tab\tdel\x7fnul\0c1\u{85}bidi\u{202e}cyr\u{430}");
        assert_eq!(
            line,
            "tab\\x09del\\x7fnul\\x00c1\\xc2\\x85bidi\\xe2\\x80\\xaecyr\\xd0\\xb0"
        );
        assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)));
        assert_eq!(logged("plain text = fine"), "plain text = fine");
    }

    #[test]
    fn a_lone_backslash_is_doubled_and_escapes_from_fields_pass_once() {
        assert_eq!(logged("a\\b"), "a\\\\b");
        assert_eq!(logged("end\\"), "end\\\\");
        let f = format!("user={}", field("x\ny\\z"));
        assert_eq!(f, "user=x\\x0ay\\\\z");
        assert_eq!(logged(&f), f, "a field is not escaped twice");
    }

    #[test]
    fn a_field_with_spaces_equals_or_quotes_is_one_quoted_field() {
        assert_eq!(field("alice").to_string(), "alice");
        assert_eq!(
            field("alice rhost=x").to_string(),
            "\"alice rhost=x\"",
            "cannot pose as two fields"
        );
        assert_eq!(field("a\"b").to_string(), "\"a\\x22b\"");
        assert_eq!(field("\" rhost=evil").to_string(), "\"\\x22 rhost=evil\"");
        assert_eq!(field("").to_string(), "\"\"");
        assert_eq!(field("\u{430}lice").to_string(), "\\xd0\\xb0lice");
        // A quoted field holds exactly two quote marks, whatever the peer sent.
        let hostile = field("\"\"= \" \\\"").to_string();
        assert_eq!(hostile.matches('"').count(), 2, "{hostile}");
    }

    #[test]
    fn a_uid_gets_a_burst_then_one_line_per_refill_and_a_summary_after_a_pause() {
        let mut l = Limiter::default();
        let t = Instant::now();
        let passed = (0..1000).filter(|_| l.admit(65534, t)).count();
        assert_eq!(passed, BURST as usize);
        assert!(l.due(t).is_empty(), "no summary while flooding");
        let later = t + REFILL;
        assert!(l.admit(65534, later), "one line per refill");
        assert!(!l.admit(65534, later));
        assert!(l.due(later).is_empty());
        let pause = later + REFILL;
        assert_eq!(l.due(pause), vec![(65534, 981)]);
        assert!(l.due(pause).is_empty(), "summed up once");
        // Full again: forgotten.
        assert!(l.due(pause + REFILL * BURST).is_empty());
        assert!(l.buckets.is_empty());
    }

    #[test]
    fn a_flood_that_never_pauses_is_summed_up_every_minute() {
        let mut l = Limiter::default();
        let t = Instant::now();
        let (mut passed, mut summaries) = (0, Vec::new());
        for ms in (0..130_000).step_by(100) {
            let now = t + Duration::from_millis(ms);
            passed += l.admit(1000, now) as u64;
            summaries.extend(l.due(now));
        }
        assert_eq!(summaries.len(), 2, "at 1 min and 2 min: {summaries:?}");
        // 1,300 lines in 130 s: the burst and one per second got through; every other line is
        // in a summary or still owed one.
        assert!(passed <= u64::from(BURST) + 131, "{passed}");
        let summed: u64 = summaries.iter().map(|(_, n)| n).sum();
        assert_eq!(passed + summed + l.buckets[&1000].dropped, 1300);
    }

    #[test]
    fn root_and_other_uids_are_not_limited_by_one_flooder() {
        let mut l = Limiter::default();
        let t = Instant::now();
        for _ in 0..1000 {
            l.admit(65534, t);
        }
        assert!((0..1000).all(|_| l.admit(0, t)), "root is never limited");
        assert!(l.admit(1000, t), "another user has its own bucket");
    }

    #[test]
    fn journal_stream_must_name_stderrs_own_device_and_inode() {
        use std::os::unix::fs::MetadataExt;
        let file = tempfile::tempfile().expect("temp file");
        let meta = file.metadata().expect("metadata");
        let own = format!("{}:{}", meta.dev(), meta.ino());
        assert!(names_stream(own.as_ref(), &meta));
        // Inherited by a child whose stderr went elsewhere: another inode.
        let other = format!("{}:{}", meta.dev(), meta.ino() + 1);
        assert!(!names_stream(other.as_ref(), &meta));
        let other_dev = format!("{}:{}", meta.dev() + 1, meta.ino());
        assert!(!names_stream(other_dev.as_ref(), &meta));
        for junk in [
            "",
            ":",
            "12",
            "a:b",
            &format!("{own}:0"),
            &format!(" {own}"),
        ] {
            assert!(!names_stream(junk.as_ref(), &meta), "{junk:?}");
        }
    }

    #[test]
    fn for_the_journal_a_line_carries_its_priority_not_the_level_in_words() {
        let line = logged("sshd: user=x\nevil uid=1000: denied");
        assert_eq!(
            stderr_line(true, Level::Info, &line),
            "<6>sshd: user=x\\x0aevil uid=1000: denied\n"
        );
        assert_eq!(stderr_line(true, Level::Error, "e"), "<3>e\n");
        assert_eq!(stderr_line(true, Level::Warn, "w"), "<4>w\n");
        assert_eq!(stderr_line(true, Level::Debug, "d"), "<7>d\n");
        assert_eq!(stderr_line(false, Level::Warn, "w"), "otpd: warn: w\n");
        // A peer cannot choose a line's priority: its bytes come after the prefix, and a
        // newline that would start a new, prefixed line is escaped.
        let forged = logged("x\n<0>otpd: emergency");
        assert_eq!(
            stderr_line(true, Level::Info, &forged),
            "<6>x\\x0a<0>otpd: emergency\n"
        );
    }

    /// The accept loop boxes the scoped connection with one copy of the whole future: the scope
    /// must not hold the task twice, as an `async fn` taking it would (issue 16).
    #[test]
    fn the_peer_scope_does_not_hold_its_task_twice() {
        let task = async {
            let kept = [1u8; 4096];
            std::future::ready(()).await;
            kept[0]
        };
        let alone = std::mem::size_of_val(&task);
        let scoped = for_peer(1000, task);
        assert!(
            std::mem::size_of_val(&scoped) < alone + 256,
            "{} bytes for a task of {alone}",
            std::mem::size_of_val(&scoped)
        );
    }

    #[tokio::test]
    async fn only_a_peers_task_knows_its_uid() {
        assert_eq!(current_peer(), None);
        let inside = for_peer(65534, async { current_peer() }).await;
        assert_eq!(inside, Some(65534));
        assert_eq!(current_peer(), None);
        assert_eq!(for_peer_now(1000, current_peer), Some(1000));
        assert_eq!(current_peer(), None);
    }
}
