//! The accept loop: binds the socket, identifies each peer (SO_PEERCRED), hands the connection
//! to a session, bounds how many run at once (`peer_limit`), tells systemd how it is
//! (`notify`), and shuts down cleanly and quickly: connections in flight are ended.

use crate::config::Config;
use crate::connection::Connection;
use crate::notify::Systemd;
use crate::peer_limit::{
    IdleLimit, PeerLimit, Slot, TargetLimit, Throttle, Waiting, IDLE_SLOTS, PER_TARGET, PER_UID,
};
use crate::policy::accounts::Accounts;
use crate::session;
use crate::state::State;
use crate::store::StoreError;
use otp_proto::frame::{FrameError, Turn};
use otp_proto::{Refusal, Reply, Request, PROTOCOL_VERSION};
use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Connections that have sent their first request and are being served at once. Connections
/// that have not spoken yet do not count: they have their own budget (`IDLE_SLOTS`), so a flood
/// of idle connections cannot take the slots logins need, and accept never waits for a slot.
/// Sends in flight, each holding a login's slot while it waits, take at most half of them
/// (channel::courier), so a slow relay cannot refuse TOTP logins as busy.
const MAX_CONNECTIONS: usize = 4096;
const _: () = assert!(crate::channel::courier::MAX_IN_FLIGHT * 2 <= MAX_CONNECTIONS);
/// How long a new connection has to send its first request. pam_otp and otpctl send it right
/// after connecting; a short bound keeps idle connections from piling up.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long shutdown waits for the ended connections' tasks, then for the used codes to be
/// saved (the audit writer gets DRAIN_TIMEOUT too): 1.4 s at most, under the 1.5 s after which main.rs exits anyway (SIGTERM must end
/// otpd within 2 s).
const DRAIN_TIMEOUT: Duration = Duration::from_millis(300);
const SAVE_TIMEOUT: Duration = Duration::from_millis(800);
/// How often the TOTP steps spent at login are saved. A crash loses at most this much, and the
/// restart guard covers that (policy::replay).
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// At most one line per this long for each kind of refusal made under load, with a count.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("state directory: {0}")]
    Store(#[from] StoreError),
    /// A configured channel could not be set up.
    #[error(transparent)]
    Channel(#[from] crate::state::ChannelSetupError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("socket {}: {problem}", path.display())]
    Socket {
        path: PathBuf,
        problem: SocketProblem,
    },
}

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketProblem {
    #[error("cannot create its directory: {0}")]
    CreateDir(io::Error),
    #[error("exists and is not a socket")]
    NotASocket,
    #[error("another otpd is already listening there")]
    InUse,
    #[error("cannot remove stale socket: {0}")]
    RemoveStale(io::Error),
    #[error("cannot bind: {0}")]
    Bind(io::Error),
    #[error("cannot open it to local users: {0}")]
    Permissions(io::Error),
}

/// Every cap on connections, shared by the accept loop and the connections' tasks.
struct Limits {
    per_uid: PeerLimit,
    per_target: TargetLimit,
    idle: IdleLimit,
    serving: Arc<Semaphore>,
    uid_refused: Throttle,
    target_refused: Throttle,
    busy_refused: Throttle,
    idle_evicted: Throttle,
    accept_failed: Throttle,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_uid: PeerLimit::default(),
            per_target: TargetLimit::default(),
            idle: IdleLimit::default(),
            serving: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            uid_refused: Throttle::new(REFUSAL_LOG_EVERY),
            target_refused: Throttle::new(REFUSAL_LOG_EVERY),
            busy_refused: Throttle::new(REFUSAL_LOG_EVERY),
            idle_evicted: Throttle::new(REFUSAL_LOG_EVERY),
            accept_failed: Throttle::new(REFUSAL_LOG_EVERY),
        }
    }
}

/// Serve until `shutdown` resolves; SIGHUP reads `config` again (reload.rs; `None`: the
/// default path).
pub async fn run(
    cfg: Config,
    config: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let store = crate::store::open(&cfg)?;
    let accounts = Accounts::new(store, cfg.clone())?;
    // A fleet's events go to its database too, where every host's `attempts` reads them.
    let shared: Option<Arc<dyn crate::audit::Sink>> = match cfg.store.is_postgres() {
        true => Some(Arc::new(crate::store::postgres::audit::AuditTable::open(
            &cfg,
        )?)),
        false => None,
    };
    let audit = Arc::new(crate::audit::Audit::open(
        &cfg,
        &crate::policy::clock::hostname(),
        shared,
    )?);
    let metrics = cfg
        .metrics
        .textfile
        .clone()
        .map(|path| tokio::spawn(crate::metrics::write_periodically(audit.clone(), path)));
    let source = crate::reload::Live::source_of(&config, &cfg);
    let shared = Arc::new(
        State::new(cfg, accounts)?
            .with_audit(audit)
            .with_source(source),
    );
    let listener = match bind(&shared.cfg.socket) {
        Ok(listener) => listener,
        Err(e) => {
            // Nothing was served: this was a clean stop, not a crash.
            let _ = shared.accounts.close().await;
            return Err(e);
        }
    };
    let flusher = tokio::spawn(flush_periodically(shared.clone()));
    let live = Arc::new(crate::reload::Live::new(shared.clone(), config));
    let mut hangups = crate::reload::hangups();
    log::info!("listening on {}", shared.cfg.socket.display());
    let systemd = Systemd::from_env().map(Arc::new);
    let watchdog = systemd.clone().map(|s| {
        s.send("READY=1");
        tokio::spawn(watchdog(s))
    });
    let limits = Arc::new(Limits::default());
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(()) = async { hangups.as_mut()?.recv().await } => live.reload_and_log(),
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // The uid's slot is taken here, in accept order, not in the task: a
                    // connection accepted later can never overtake one accepted earlier.
                    let Some((uid, slot)) = admit(&stream, &limits) else {
                        continue;
                    };
                    let waiting = wait_for_request(&limits);
                    // The configuration in force now, for the whole connection.
                    let (shared, limits) = (live.current(), limits.clone());
                    // Lines the peer causes count toward its uid's log budget (logging).
                    // Boxed: the session's future is kilobytes, and spawning it by value
                    // copied it several times per connection (issue 16, BENCHMARKS.md).
                    connections.spawn(Box::pin(crate::logging::for_peer(uid, async move {
                        serve(stream, uid, waiting, &limits, &shared).await;
                        drop(slot);
                    })));
                }
                Err(e) => {
                    // Out of descriptors (EMFILE) returns at once, again and again: back off
                    // a little instead of spinning, and say so once in a while.
                    if let Some(n) = limits.accept_failed.hit() {
                        log::warn!("accept: {e} ({n} failures since the last line)");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    log::info!("shutting down");
    if let Some(s) = &systemd {
        s.send("STOPPING=1");
    }
    drop(listener);
    let _ = std::fs::remove_file(&shared.cfg.socket);
    // Logins in flight end now: their connections drop, and their PAM modules deny.
    if !connections.is_empty() {
        log::info!("ending {} connections in progress", connections.len());
    }
    connections.abort_all();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    flusher.abort();
    // Every event queued for the audit writer is in the file before otpd exits.
    if tokio::time::timeout(DRAIN_TIMEOUT, shared.audit.flush())
        .await
        .is_err()
    {
        log::error!(
            "audit: the writer did not finish within {} ms",
            DRAIN_TIMEOUT.as_millis()
        );
    }
    if let Some(m) = metrics {
        m.abort();
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    match tokio::time::timeout(SAVE_TIMEOUT, shared.accounts.close()).await {
        Ok(Ok(())) => log::info!("used codes saved; stopped cleanly"),
        Ok(Err(e)) => log::error!(
            "cannot save used codes ({e}); the next start will treat recent codes as used"
        ),
        Err(_) => log::error!(
            "saving used codes took over {} ms; the next start will treat recent codes as used",
            SAVE_TIMEOUT.as_millis()
        ),
    }
    Ok(())
}

/// `WATCHDOG=1` every half watchdog period. This runs as a task on the runtime's workers, so a
/// runtime whose workers are all stuck stops pinging, and systemd restarts otpd.
async fn watchdog(systemd: Arc<Systemd>) {
    let Some(every) = Systemd::watchdog_every() else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        systemd.send("WATCHDOG=1");
    }
}

/// Save the steps spent at login every `FLUSH_EVERY`; a failure is logged and retried.
async fn flush_periodically(shared: Arc<State>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = shared.accounts.flush().await {
            log::error!("cannot save used codes: {e}");
        }
    }
}

/// Who is calling (SO_PEERCRED), and a slot among that uid's connections; `None` drops it.
fn admit(stream: &UnixStream, limits: &Limits) -> Option<(u32, Slot<u32>)> {
    let Ok(cred) = stream.peer_cred() else {
        log::warn!("connection without peer credentials dropped");
        return None;
    };
    let uid = cred.uid();
    let Some(slot) = limits.per_uid.acquire(uid) else {
        if let Some(n) = limits.uid_refused.hit() {
            // One line per 10 s for every uid together: the count is of all refusals, the
            // uid is the one refused just now.
            log::warn!(
                "uid={uid}: more than {PER_UID} connections open; refused {n} (counted, all uids)"
            );
        }
        return None;
    };
    Some((uid, slot))
}

/// A place among the connections that have not spoken yet; the oldest is dropped when full.
fn wait_for_request(limits: &Limits) -> Waiting {
    let (waiting, evicted) = limits.idle.join();
    if evicted {
        if let Some(n) = limits.idle_evicted.hit() {
            log::warn!(
                "more than {IDLE_SLOTS} connections have sent nothing; dropped the oldest \
                 ({n} since the last line)"
            );
        }
    }
    waiting
}

async fn serve(
    stream: UnixStream,
    uid: u32,
    mut waiting: Waiting,
    limits: &Limits,
    shared: &State,
) {
    let mut conn = Connection::new(stream);
    let first = tokio::select! {
        first = conn.read(FIRST_REQUEST_TIMEOUT) => first,
        _ = &mut waiting.evicted => match conn.request_already_sent() {
            Some(first) => first,
            None => {
                log::debug!("uid={uid}: idle connection dropped for a newer one");
                return;
            }
        }
    };
    drop(waiting);
    let Ok(_serving) = limits.serving.clone().try_acquire_owned() else {
        if let Some(n) = limits.busy_refused.hit() {
            log::warn!(
                "all {MAX_CONNECTIONS} connection slots are busy; refused {n} requests \
                 (counted since the last line)"
            );
        }
        let _ = conn.write(Reply::Refused(Refusal::Busy)).await;
        return;
    };
    let Some(caller) = shared.callers.identify(uid).await else {
        return;
    };
    let result = match first {
        Ok(Request::Begin(login)) => {
            // Root runs every PAM login on the host, so its cap is per user being logged in.
            // Keyed by the canonical name, so "ALICE" and "alice " share alice's places.
            let accounts = &shared.accounts;
            let target = shared
                .names
                .resolve_recorded(&login.user, |u| accounts.has_record(u))
                .await;
            let _target = if uid == 0 {
                match limits.per_target.acquire(target.as_str()) {
                    Some(slot) => Some(slot),
                    None => {
                        if let Some(n) = limits.target_refused.hit() {
                            log::warn!(
                                "uid=0: more than {PER_TARGET} logins at once for user={}; \
                                 refused {n} logins (counted since the last line, all users)",
                                crate::logging::field(target.as_str())
                            );
                        }
                        let _ = conn.write(Reply::Refused(Refusal::Busy)).await;
                        return;
                    }
                }
            } else {
                None
            };
            // Boxed, as is the command below: the two sessions are kilobytes each and the
            // future of `serve` would otherwise hold room for both (issue 16, BENCHMARKS.md).
            Box::pin(session::login::run(
                &mut conn, &caller, shared, login, target,
            ))
            .await
        }
        Ok(Request::Command(command)) => {
            let reply = Box::pin(session::command::run(&caller, shared, command)).await;
            conn.write(reply).await
        }
        Ok(answer @ Request::Answer(_)) => Err(FrameError::unexpected(Turn::Opening, &answer)),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        refuse(&mut conn, uid, e).await;
    }
}

/// Tell the peer what was wrong with its frames when that is useful, then drop it.
async fn refuse(conn: &mut Connection, uid: u32, e: FrameError) {
    let refusal = match &e {
        FrameError::Version(got) => Refusal::VersionMismatch {
            got: *got,
            supported: PROTOCOL_VERSION,
        },
        FrameError::Malformed(m) => Refusal::BadRequest(m.clone()),
        FrameError::TooLarge(_) | FrameError::TooShort(_) | FrameError::Unexpected { .. } => {
            Refusal::BadRequest(e.to_string())
        }
        FrameError::Closed | FrameError::TimedOut | FrameError::Io(_) => {
            log::debug!("uid={uid}: connection ended: {e}");
            return;
        }
    };
    log::warn!("uid={uid}: bad request: {e}");
    let _ = conn.write(Reply::Refused(refusal)).await;
}

/// Bind the socket, refusing to steal it from a running daemon, and open it to every local user:
/// SO_PEERCRED, not file modes, decides what each may do.
fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let err = |problem| ServerError::Socket {
        path: path.to_owned(),
        problem,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| err(SocketProblem::CreateDir(e)))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(err(SocketProblem::NotASocket));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err(SocketProblem::InUse));
        }
        std::fs::remove_file(path).map_err(|e| err(SocketProblem::RemoveStale(e)))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| err(SocketProblem::Bind(e)))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| err(SocketProblem::Permissions(e)))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use otp_proto::frame::{read_frame, write_frame, FrameError};
    use otp_proto::Reply;
    use std::io::Write;
    use std::os::unix::net::UnixStream as Client;

    /// A connection whose idle place a newer one has just taken, before its task has run:
    /// the limits (one idle place), otpd's end, the client's end and the evicted ticket.
    fn evicted(client_sends: impl FnOnce(&mut Client)) -> (Limits, UnixStream, Client, Waiting) {
        let limits = Limits {
            idle: IdleLimit::new(1),
            ..Limits::default()
        };
        let (server, mut client) = Client::pair().unwrap();
        client_sends(&mut client);
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        server.set_nonblocking(true).unwrap();
        let server = UnixStream::from_std(server).unwrap();
        let waiting = wait_for_request(&limits);
        let (newer, evicted) = limits.idle.join();
        assert!(evicted);
        // The newer one leaves again; the eviction stands.
        drop(newer);
        (limits, server, client, waiting)
    }

    /// When connections arrive faster than their tasks run (a thousand clients reconnecting at
    /// once), a newer one can evict an older one whose `Begin` is already in the socket but not
    /// yet read. That one has spoken: it must be served, not dropped as idle.
    #[tokio::test]
    async fn a_connection_whose_request_has_arrived_is_not_dropped_as_idle() {
        let world = crate::session::testing::world(|_| {});
        let login = crate::session::testing::sshd("alice");
        let (limits, server, mut client, waiting) =
            evicted(|c| write_frame(c, &Request::Begin(login)).unwrap());
        let client_side = tokio::task::spawn_blocking(move || read_frame::<Reply>(&mut client));
        let (_, first_reply) = tokio::join!(
            serve(server, 0, waiting, &limits, &world.state),
            client_side
        );
        let first_reply = first_reply.unwrap();
        assert!(
            !matches!(first_reply, Err(FrameError::Closed)),
            "the login was dropped as idle"
        );
        assert!(first_reply.is_ok(), "{first_reply:?}");
    }

    /// A connection that has sent nothing, or only part of a request, is still dropped for a
    /// newer one.
    #[tokio::test]
    async fn a_connection_without_a_whole_request_is_still_dropped_for_a_newer_one() {
        let world = crate::session::testing::world(|_| {});
        let nothing = |_: &mut Client| {};
        let a_header_alone = |c: &mut Client| c.write_all(&100u32.to_be_bytes()).unwrap();
        for sends in [&nothing as &dyn Fn(&mut Client), &a_header_alone] {
            let (limits, server, mut client, waiting) = evicted(sends);
            serve(server, 0, waiting, &limits, &world.state).await;
            // Closed, or reset when the part it sent was left unread: no reply either way.
            let after = read_frame::<Reply>(&mut client);
            assert!(
                !matches!(after, Ok(_) | Err(FrameError::TimedOut)),
                "{after:?}"
            );
        }
    }
}
