//! One thread writes every event to the sinks, in the order the events were recorded, so a
//! login's reply never waits for the audit file (issue 16: a blocking-pool hop per event cost
//! ~13 % of logins/s at 8 clients). The queue is bounded and a full queue makes `record` wait
//! (back-pressure): a security product loses no audit line to load. Queries and flushes go
//! through the same queue, so they see every event recorded before them (docs/design.md,
//! "Audit trail"). A busy writer takes its events in batches, one every `LINGER`, rather than
//! being woken for each; the price is that a crash (SIGKILL, power loss) can also lose the
//! events recorded during the writer's last `LINGER`, which are still queued.

use super::{AuditError, Filter, Sink};
use otp_proto::AuditEvent;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Events waiting for the writer at most; beyond that, `record` waits.
pub const QUEUE: usize = 4096;
/// After an event, the writer sleeps this long and then takes everything queued meanwhile,
/// until it finds nothing: on a busy daemon the logins' events no longer each wake the thread
/// (a wake-up and a context switch per login, on the login's worker and here; issue 16). An
/// event, query or flush waits at most this much longer; an idle writer blocks, costing nothing.
pub const LINGER: Duration = Duration::from_millis(1);

type Answer = oneshot::Sender<Result<Vec<AuditEvent>, AuditError>>;

enum Job {
    Record(Box<AuditEvent>),
    /// Events matching the filter from the first sink, at most so many.
    Query(Filter, usize, Answer),
    /// Answered once every job queued before it is done.
    Flush(oneshot::Sender<()>),
}

/// The queue into the writer thread. The thread ends when the last `Writer` is dropped, after
/// writing everything queued.
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    pub fn start(sinks: Vec<Arc<dyn Sink>>) -> Result<Writer, AuditError> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("otpd-audit".into())
            .spawn(move || serve(&sinks, queue))
            .map_err(AuditError::Thread)?;
        Ok(Writer { jobs })
    }

    /// Queue `event`; waits only while the queue is full.
    pub async fn record(&self, event: AuditEvent) {
        if self.jobs.send(Job::Record(Box::new(event))).await.is_err() {
            log::error!("audit: {}", AuditError::Stopping);
        }
    }

    pub async fn query(&self, filter: Filter, limit: usize) -> Result<Vec<AuditEvent>, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Query(filter, limit, tx))
            .await
            .map_err(|_| AuditError::Stopping)?;
        rx.await.unwrap_or(Err(AuditError::Stopping))
    }

    /// Wait until every event recorded so far is in the sinks (shutdown).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Job::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The writer thread: block for a job, then, while busy, take what came meanwhile every
/// `LINGER` until a look finds nothing. Ends when every `Writer` is gone and the queue is empty.
fn serve(sinks: &[Arc<dyn Sink>], mut queue: mpsc::Receiver<Job>) {
    while let Some(job) = queue.blocking_recv() {
        run(sinks, job);
        loop {
            std::thread::sleep(LINGER);
            let mut ran = false;
            while let Ok(job) = queue.try_recv() {
                run(sinks, job);
                ran = true;
            }
            if !ran {
                break;
            }
        }
    }
}

fn run(sinks: &[Arc<dyn Sink>], job: Job) {
    match job {
        Job::Record(event) => {
            // Every sink gets the event, whichever fails (a database down keeps the local file).
            for sink in sinks {
                if let Err(e) = sink.record(&event) {
                    log::error!("audit: {e}");
                }
            }
        }
        Job::Query(filter, limit, answer) => {
            let found = match sinks.first() {
                Some(sink) => sink.query(&filter, limit),
                None => Ok(Vec::new()),
            };
            let _ = answer.send(found);
        }
        Job::Flush(done) => {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::audit::{jsonl::JsonlFile, Audit, Filter};
    use crate::config::rules::AuditConfig;
    use otp_proto::{AuditKind, AuditResult};
    use std::sync::Arc;

    #[tokio::test]
    async fn more_events_than_the_queue_holds_are_all_written_in_order_and_a_query_sees_them() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AuditConfig {
            max_file_size: u64::MAX,
            keep: 1,
        };
        let file = Arc::new(JsonlFile::open(dir.path(), &cfg).unwrap());
        let audit = Audit::with_sinks(vec![file.clone()], "h").unwrap();
        let n = super::QUEUE * 2 + 7;
        let mut ids = Vec::new();
        for _ in 0..n {
            let e = audit.event(AuditKind::Login, AuditResult::Allowed, "alice", 0);
            ids.push(e.id.clone());
            audit.record(e).await;
        }
        // Queued behind every event above: the newest must be there.
        let newest = audit.query(Filter::default(), 1).await.unwrap();
        assert_eq!(newest[0].id, ids[n - 1]);
        audit.flush().await;
        let all = crate::audit::Sink::query(&*file, &Filter::default(), usize::MAX).unwrap();
        let written: Vec<_> = all.into_iter().rev().map(|e| e.id).collect();
        assert_eq!(written, ids);
    }

    /// Keeps, for each event, how many times its writer thread had slept by then.
    #[derive(Default)]
    struct Sleeps(std::sync::Mutex<Vec<u64>>);

    impl crate::audit::Sink for Sleeps {
        fn record(&self, _: &otp_proto::AuditEvent) -> Result<(), crate::audit::AuditError> {
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            let switches = status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse().ok())
                .unwrap();
            self.0.lock().unwrap().push(switches);
            Ok(())
        }
        fn query(
            &self,
            _: &Filter,
            _: usize,
        ) -> Result<Vec<otp_proto::AuditEvent>, crate::audit::AuditError> {
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn events_closer_than_the_linger_do_not_each_wake_the_writer() {
        let sleeps = Arc::new(Sleeps::default());
        let audit = Audit::with_sinks(vec![sleeps.clone()], "h").unwrap();
        let linger = super::LINGER.as_micros() as u64;
        // Lingering, the writer sleeps at most once per LINGER of the stream, and once more
        // waiting for its first event. Woken per event, it would sleep about once per event.
        // The stream goes on until that bound is a quarter of its events (a loaded machine
        // paces it more slowly, so it takes more events to tell).
        let began = std::time::Instant::now();
        let bound = || began.elapsed().as_micros() as u64 / linger + 2;
        let mut n = 0u64;
        while n < 300 || (n < 20_000 && bound() * 4 > n) {
            // A busy daemon's pace: a login every 50 µs or so, well inside LINGER.
            let next = std::time::Instant::now() + std::time::Duration::from_micros(50);
            while std::time::Instant::now() < next {
                std::hint::spin_loop();
            }
            audit
                .record(audit.event(AuditKind::Login, AuditResult::Allowed, "alice", 0))
                .await;
            n += 1;
        }
        audit.flush().await;
        let bound = bound();
        let seen = sleeps.0.lock().unwrap().clone();
        assert_eq!(seen.len() as u64, n);
        let slept = seen[seen.len() - 1] - seen[0];
        assert!(
            slept <= bound,
            "{slept} sleeps for {n} events, at most {bound} expected"
        );
        assert!(
            bound * 2 < n,
            "too slow a pace to tell: {n} events, bound {bound}"
        );
    }
}
