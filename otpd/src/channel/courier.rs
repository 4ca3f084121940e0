//! The courier: every channel's deliveries run on one thread of their own, at a lower CPU
//! priority than the login workers, so that a storm of slow sends (a relay taking a second per
//! message, a thousand codes in flight) does not queue TOTP logins behind its SMTP and HTTP
//! work (docs/design.md, "Channels"; BENCHMARKS.md section 3). It also bounds the sends in
//! flight: each holds a login's connection slot while it waits, and a slow channel must not be
//! able to hold them all.

use super::{Channel, CodeMessage, Delivery, DeliveryError, MessageKind};
use otp_proto::Secret;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Sends in flight at once, all channels together: half of otpd's connection slots
/// (server.rs asserts it), so a slow channel leaves the other half to every other login.
pub const MAX_IN_FLIGHT: usize = 2048;
/// How much higher the courier thread's nice value is than the workers'. Sends wait on the
/// network almost all the time, so even a CPU-bound host leaves them enough; the login
/// workers come first when both can run.
const NICE: i32 = 10;

/// The thread deliveries run on, and the places for sends in flight.
pub struct Courier {
    runtime: Option<Runtime>,
    in_flight: Arc<Semaphore>,
    cap: usize,
}

impl Courier {
    /// The daemon's courier, started at its first use; `None` if its thread cannot be started
    /// (logged once), and channels then deliver on the login workers as before.
    pub fn shared() -> Option<Arc<Courier>> {
        static SHARED: OnceLock<Option<Arc<Courier>>> = OnceLock::new();
        SHARED
            .get_or_init(|| match Courier::new(MAX_IN_FLIGHT) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    log::error!("cannot start the courier thread; delivering on the workers: {e}");
                    None
                }
            })
            .clone()
    }

    /// A courier with room for `cap` sends at once.
    pub fn new(cap: usize) -> std::io::Result<Courier> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otpd-courier")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        Ok(Courier {
            runtime: Some(runtime),
            in_flight: Arc::new(Semaphore::new(cap)),
            cap,
        })
    }

    /// `channel`, delivering through this courier.
    pub fn wrap(self: &Arc<Self>, channel: Box<dyn Channel>) -> Box<dyn Channel> {
        Box::new(Couriered {
            inner: Arc::from(channel),
            courier: self.clone(),
        })
    }

    /// `channel` through the daemon's courier, or as it is if there is none.
    pub fn wrap_shared(channel: Box<dyn Channel>) -> Box<dyn Channel> {
        match Courier::shared() {
            Some(courier) => courier.wrap(channel),
            None => channel,
        }
    }
}

impl Drop for Courier {
    /// A runtime may not be dropped on another runtime's thread (tests drop couriers there).
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The calling thread's nice value; a thread's own cannot fail to be read.
fn own_nice() -> i32 {
    // SAFETY: getpriority of the calling thread (who = 0).
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

/// Threads of one process each have their own nice value on Linux (setpriority(2)), so this
/// lowers the courier's thread only, by `NICE` from where otpd was started (an otpd started
/// niced keeps its courier below it, and never asks to be raised). Failing (a seccomp filter)
/// leaves it at the workers'.
fn lower_priority() {
    let lowered = (own_nice() + NICE).min(19);
    // SAFETY: setpriority on the calling thread (who = 0) with a plain integer.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, lowered) } != 0 {
        log::warn!(
            "cannot lower the courier thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A channel whose deliveries the courier makes.
struct Couriered {
    inner: Arc<dyn Channel>,
    courier: Arc<Courier>,
}

impl Channel for Couriered {
    fn deliver<'a>(&'a self, to: &'a str, msg: &'a CodeMessage<'a>) -> Delivery<'a> {
        Box::pin(async move {
            let courier = &self.courier;
            let (Some(runtime), Ok(place)) = (
                courier.runtime.as_ref(),
                courier.in_flight.clone().try_acquire_owned(),
            ) else {
                return Err(DeliveryError::Busy(courier.cap));
            };
            let (inner, to, letter) = (self.inner.clone(), to.to_owned(), Letter::from(msg));
            let mut task = Abandoned(runtime.spawn(async move {
                let _place = place;
                inner.deliver(&to, &letter.message()).await
            }));
            (&mut task.0).await.unwrap_or_else(|e| {
                Err(DeliveryError::Failed(format!(
                    "the delivery ended abnormally: {e}"
                )))
            })
        })
    }
}

/// A send whose login went away (its connection closed, its session dropped) is stopped, as it
/// would be on the login's own task, and gives its place back.
struct Abandoned<T>(JoinHandle<T>);

impl<T> Drop for Abandoned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A `CodeMessage` that owns its parts, to travel to the courier thread.
struct Letter {
    kind: MessageKind,
    user: String,
    code: Secret,
    id: String,
    validity: Duration,
    host: String,
    change: String,
}

impl Letter {
    fn from(msg: &CodeMessage) -> Letter {
        Letter {
            kind: msg.kind,
            user: msg.user.to_owned(),
            code: msg.code.clone(),
            id: msg.id.to_owned(),
            validity: msg.validity,
            host: msg.host.to_owned(),
            change: msg.change.to_owned(),
        }
    }

    fn message(&self) -> CodeMessage<'_> {
        CodeMessage {
            kind: self.kind,
            user: &self.user,
            code: &self.code,
            id: &self.id,
            validity: self.validity,
            host: &self.host,
            change: &self.change,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::sync::Notify;

    /// Records where and with what each delivery ran; holds it until `release` while `hold`.
    #[derive(Default)]
    struct Probe {
        seen: Mutex<Vec<(String, i32, String, String)>>,
        hold: bool,
        release: Notify,
        dropped: Arc<std::sync::atomic::AtomicUsize>,
    }

    struct CountsDrop(Arc<std::sync::atomic::AtomicUsize>);
    impl Drop for CountsDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Channel for Arc<Probe> {
        fn deliver<'a>(&'a self, to: &'a str, msg: &'a CodeMessage<'a>) -> Delivery<'a> {
            Box::pin(async move {
                let _counted = CountsDrop(self.dropped.clone());
                let thread = std::thread::current().name().unwrap_or("").to_owned();
                let nice = own_nice();
                self.seen.lock().unwrap().push((
                    thread,
                    nice,
                    to.to_owned(),
                    msg.code.expose().to_owned(),
                ));
                if self.hold {
                    self.release.notified().await;
                }
                Ok(())
            })
        }
    }

    /// Wait (up to 10 s, then fail) until `done` holds; the courier works on its own thread.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while !done() {
                tokio::task::yield_now().await;
            }
        });
        waited.await.unwrap_or_else(|_| panic!("never: {what}"));
    }

    fn message<'a>(code: &'a Secret) -> CodeMessage<'a> {
        CodeMessage {
            kind: MessageKind::Code,
            user: "alice",
            code,
            id: "c1",
            validity: Duration::from_secs(300),
            host: "host",
            change: "",
        }
    }

    #[tokio::test]
    async fn a_delivery_runs_on_the_courier_thread_below_the_workers_priority() {
        let workers = own_nice();
        let probe = Arc::new(Probe::default());
        let courier = Arc::new(Courier::new(4).unwrap());
        let channel = courier.wrap(Box::new(probe.clone()));
        let code = Secret::new("123456");
        channel
            .deliver("a@example.com", &message(&code))
            .await
            .unwrap();
        let seen = probe.seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![(
                "otpd-courier".to_owned(),
                (workers + NICE).min(19),
                "a@example.com".to_owned(),
                "123456".to_owned()
            )]
        );
        assert_eq!(own_nice(), workers, "the caller's thread is left as it was");
    }

    #[tokio::test]
    async fn sends_beyond_the_cap_are_refused_and_an_abandoned_one_gives_its_place_back() {
        let probe = Arc::new(Probe {
            hold: true,
            ..Probe::default()
        });
        let courier = Arc::new(Courier::new(2).unwrap());
        let channel: Arc<dyn Channel> = Arc::from(courier.wrap(Box::new(probe.clone())));
        let code = Secret::new("123456");
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let channel = channel.clone();
                tokio::spawn(async move {
                    let code = Secret::new("123456");
                    channel.deliver("a@example.com", &message(&code)).await
                })
            })
            .collect();
        until("two sends under way", || {
            probe.seen.lock().unwrap().len() == 2
        })
        .await;
        let refused = channel.deliver("b@example.com", &message(&code)).await;
        assert!(
            matches!(refused, Err(DeliveryError::Busy(2))),
            "{refused:?}"
        );
        // The logins waiting on the two sends go away: their sends stop and free their places.
        for w in &waiting {
            w.abort();
        }
        for w in waiting {
            let _ = w.await;
        }
        until("both sends stopped", || {
            probe.dropped.load(std::sync::atomic::Ordering::SeqCst) == 2
        })
        .await;
        until("both places back", || {
            courier.in_flight.available_permits() == 2
        })
        .await;
        let again = tokio::spawn({
            let channel = channel.clone();
            async move {
                let code = Secret::new("654321");
                channel.deliver("c@example.com", &message(&code)).await
            }
        });
        until("the third send under way", || {
            probe.seen.lock().unwrap().len() == 3
        })
        .await;
        probe.release.notify_one();
        again.await.unwrap().unwrap();
    }
}
