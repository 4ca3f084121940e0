//! The audit trail: every login and every change an otpctl command makes becomes one
//! structured event (`otp_proto::AuditEvent`: who, what, how it ended and why, never a code,
//! secret, token, full address or number). Events go to every `Sink` (the JSON-lines file under
//! `state_dir` here; a database table is one more implementation) and into the counts behind
//! `otpctl stats` and the metrics file. The syslog line of each event stays where it was
//! (session/login.rs, session/command.rs), so logs read as before.

pub mod counts;
pub mod jsonl;
pub mod writer;

use crate::config::Config;
use counts::Counts;
use otp_proto::{AttemptQuery, AuditEvent, AuditKind, AuditResult, StatsReport};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Events one query returns at most, whatever it asks.
pub const MAX_LIMIT: u32 = 1000;
/// Events a query returns when it does not say.
pub const DEFAULT_LIMIT: u32 = 50;

/// A place events are kept.
pub trait Sink: Send + Sync {
    /// Keep one event (blocking I/O: called on the writer thread, writer.rs).
    fn record(&self, event: &AuditEvent) -> Result<(), AuditError>;
    /// Events matching `query`, newest first, at most `limit` (blocking; the writer thread).
    fn query(&self, query: &Filter, limit: usize) -> Result<Vec<AuditEvent>, AuditError>;
}

/// What a query keeps, with the caller's rights already applied (`user` forced for users).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub user: Option<String>,
    /// Only events at or after this Unix time.
    pub since: Option<u64>,
    pub result: Option<AuditResult>,
    pub id: Option<String>,
}

impl Filter {
    pub fn from_query(q: &AttemptQuery, now: u64) -> Filter {
        Filter {
            user: q.user.clone(),
            since: q.since_secs.map(|s| now.saturating_sub(s)),
            result: q.result,
            id: None,
        }
    }

    pub fn keeps(&self, e: &AuditEvent) -> bool {
        self.user.as_ref().is_none_or(|u| *u == e.user)
            && self.since.is_none_or(|t| e.time >= t)
            && self.result.is_none_or(|r| r == e.result)
            && self.id.as_ref().is_none_or(|id| *id == e.id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("audit event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the audit writer is gone (shutting down)")]
    Stopping,
    #[error("cannot start the audit writer thread: {0}")]
    Thread(std::io::Error),
    /// The fleet database's audit table (store::postgres::audit).
    #[error("audit table: {0}")]
    Database(String),
}

/// The trail: its sinks and counts, shared by every state (reloads keep it).
pub struct Audit {
    /// The sinks' writer thread; `None` without sinks.
    writer: Option<writer::Writer>,
    counts: Counts,
    host: String,
    /// Makes ids unique within one second of one run; the random part across runs.
    next: AtomicU64,
    run: String,
}

impl Audit {
    /// No sink: counts only (tests, and `check-config`).
    pub fn none(host: &str) -> Audit {
        Audit::with_writer(None, host)
    }

    /// The JSON-lines file under `state_dir`, its last day of events counted (blocking: call
    /// before serving).
    /// The trail of this host: `shared` first when the store is a fleet's (queries read it, so
    /// `otpctl attempts` shows every host's events), then state_dir's own file.
    pub fn open(
        cfg: &Config,
        host: &str,
        shared: Option<Arc<dyn Sink>>,
    ) -> Result<Audit, AuditError> {
        let file = Arc::new(jsonl::JsonlFile::open(&cfg.state_dir, &cfg.audit)?);
        let sinks = shared
            .into_iter()
            .chain([file.clone() as Arc<dyn Sink>])
            .collect();
        let audit = Audit::with_sinks(sinks, host)?;
        let now = crate::audit::now();
        let day = Filter {
            since: Some(now.saturating_sub(counts::DAY)),
            ..Filter::default()
        };
        for e in file.query(&day, usize::MAX)? {
            audit.counts.add(&e);
        }
        Ok(audit)
    }

    pub fn with_sinks(sinks: Vec<Arc<dyn Sink>>, host: &str) -> Result<Audit, AuditError> {
        let writer = match sinks.is_empty() {
            true => None,
            false => Some(writer::Writer::start(sinks)?),
        };
        Ok(Audit::with_writer(writer, host))
    }

    fn with_writer(writer: Option<writer::Writer>, host: &str) -> Audit {
        let mut random = [0u8; 4];
        let run = match getrandom::fill(&mut random) {
            Ok(()) => random.iter().map(|b| format!("{b:02x}")).collect(),
            Err(_) => format!("{:08x}", std::process::id()),
        };
        Audit {
            writer,
            counts: Counts::default(),
            host: host.to_owned(),
            next: AtomicU64::new(0),
            run,
        }
    }

    /// A new event with its id, time and host; the caller fills in the rest.
    pub fn event(
        &self,
        kind: AuditKind,
        result: AuditResult,
        user: &str,
        caller_uid: u32,
    ) -> AuditEvent {
        let time = now();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        AuditEvent {
            id: format!("{time:x}-{}-{n:x}", self.run),
            time,
            host: self.host.clone(),
            kind,
            result,
            service: None,
            user: user.to_owned(),
            caller_uid,
            actor: None,
            rhost: None,
            tty: None,
            method: None,
            challenge: None,
            rule: None,
            reason: String::new(),
        }
    }

    /// Keep `event` in every sink, in order, off the caller's path (writer.rs): this waits only
    /// while the writer's queue is full. A sink that fails is logged; the login or command it
    /// records is not undone for it.
    pub async fn record(&self, event: AuditEvent) {
        self.counts.add(&event);
        if let Some(writer) = &self.writer {
            writer.record(event).await;
        }
    }

    /// Events matching `filter`, newest first, from the first sink (the store's). Queued behind
    /// the events recorded before it, so it sees them.
    pub async fn query(&self, filter: Filter, limit: u32) -> Result<Vec<AuditEvent>, AuditError> {
        match &self.writer {
            Some(writer) => writer.query(filter, limit.min(MAX_LIMIT) as usize).await,
            None => Ok(Vec::new()),
        }
    }

    /// Wait until every event recorded so far is written (shutdown: the file is complete).
    pub async fn flush(&self) {
        if let Some(writer) = &self.writer {
            writer.flush().await;
        }
    }

    /// Counts per kind, result and method for the last hour and day.
    pub fn stats(&self) -> StatsReport {
        self.counts.report(now())
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
