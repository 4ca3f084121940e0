//! The audit trail: every login and every change an otpctl command makes becomes one
//! structured event (`otp_proto::AuditEvent`: who, what, how it ended and why, never a code,
//! secret, token, full address or number). Events go to every `Sink` (the JSON-lines file under
//! `state_dir` here; a database table is one more implementation) and into the counts behind
//! `otpctl stats` and the metrics file. The syslog line of each event stays where it was
//! (session/login.rs, session/command.rs), so logs read as before.

pub mod counts;
pub mod jsonl;

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
    /// Keep one event (blocking I/O: called on the blocking pool).
    fn record(&self, event: &AuditEvent) -> Result<(), AuditError>;
    /// Events matching `query`, newest first, at most `limit` (blocking).
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
    #[error("the blocking pool is gone (shutting down)")]
    Stopping,
    /// The fleet database's audit table (store::postgres::audit).
    #[error("audit table: {0}")]
    Database(String),
}

/// The trail: its sinks and counts, shared by every state (reloads keep it).
pub struct Audit {
    sinks: Vec<Arc<dyn Sink>>,
    counts: Counts,
    host: String,
    /// Makes ids unique within one second of one run; the random part across runs.
    next: AtomicU64,
    run: String,
}

impl Audit {
    /// No sink: counts only (tests, and `check-config`).
    pub fn none(host: &str) -> Audit {
        Audit::with_sinks(Vec::new(), host)
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
        let audit = Audit::with_sinks(sinks, host);
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

    pub fn with_sinks(sinks: Vec<Arc<dyn Sink>>, host: &str) -> Audit {
        let mut random = [0u8; 4];
        let run = match getrandom::fill(&mut random) {
            Ok(()) => random.iter().map(|b| format!("{b:02x}")).collect(),
            Err(_) => format!("{:08x}", std::process::id()),
        };
        Audit {
            sinks,
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

    /// Keep `event` in every sink. A sink that fails is logged; the login or command it
    /// records is not undone for it.
    pub async fn record(&self, event: AuditEvent) {
        self.counts.add(&event);
        if self.sinks.is_empty() {
            return;
        }
        let sinks = self.sinks.clone();
        let written = tokio::task::spawn_blocking(move || {
            // Every sink gets the event, whichever fails (a database down keeps the local file).
            let results: Vec<_> = sinks.iter().map(|s| s.record(&event)).collect();
            results.into_iter().find_map(Result::err)
        })
        .await;
        match written {
            Ok(None) => {}
            Ok(Some(e)) => log::error!("audit: {e}"),
            Err(_) => log::error!("audit: {}", AuditError::Stopping),
        }
    }

    /// Events matching `filter`, newest first, from the first sink (the store's).
    pub async fn query(&self, filter: Filter, limit: u32) -> Result<Vec<AuditEvent>, AuditError> {
        let Some(sink) = self.sinks.first().cloned() else {
            return Ok(Vec::new());
        };
        let limit = limit.min(MAX_LIMIT) as usize;
        tokio::task::spawn_blocking(move || sink.query(&filter, limit))
            .await
            .unwrap_or(Err(AuditError::Stopping))
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
