//! The accept loop: binds the socket, identifies each peer (SO_PEERCRED), hands the connection
//! to a session, bounds how many run at once, and shuts down cleanly.

use crate::config::Config;
use crate::connection::Connection;
use crate::peer_limit::{PeerLimit, Slot, PER_UID};
use crate::policy::accounts::Accounts;
use crate::session;
use crate::state::State;
use crate::store::{CachedStore, FileStore, StoreError};
use otp_proto::frame::FrameError;
use otp_proto::{Refusal, Reply, Request, PROTOCOL_VERSION};
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 1024;
/// How long a new connection has to send its first request.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for logins in progress.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the TOTP steps spent at login are saved. A crash loses at most this much, and the
/// restart guard covers that (policy::replay).
const FLUSH_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("state directory: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Channel(String),
    #[error("socket {path}: {message}")]
    Socket { path: String, message: String },
}

/// Serve until `shutdown` resolves.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let store = Arc::new(CachedStore::new(FileStore::open_with_key_file(
        &cfg.state_dir,
        &cfg.key_file,
    )?));
    let accounts = Accounts::new(store, cfg.clone())?;
    let shared = Arc::new(State::new(cfg, accounts).map_err(ServerError::Channel)?);
    let listener = match bind(&shared.cfg.socket) {
        Ok(listener) => listener,
        Err(e) => {
            // Nothing was served: this was a clean stop, not a crash.
            let _ = shared.accounts.close().await;
            return Err(e);
        }
    };
    let flusher = tokio::spawn(flush_periodically(shared.clone()));
    log::info!("listening on {}", shared.cfg.socket.display());
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_uid = PeerLimit::default();
    tokio::pin!(shutdown);
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // The uid's slot is taken here, in accept order, not in the task: a
                    // connection accepted later can never overtake one accepted earlier.
                    let Some((uid, slot)) = admit(&stream, &per_uid) else {
                        continue;
                    };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        serve(stream, uid, &shared).await;
                        drop((slot, permit));
                    });
                }
                Err(e) => log::warn!("accept: {e}"),
            },
        }
    }
    log::info!("shutting down");
    let _ = std::fs::remove_file(&shared.cfg.socket);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, limit.acquire_many(MAX_CONNECTIONS as u32)).await;
    flusher.abort();
    match shared.accounts.close().await {
        Ok(()) => log::info!("used codes saved; stopped cleanly"),
        Err(e) => log::error!(
            "cannot save used codes ({e}); the next start will treat recent codes as used"
        ),
    }
    Ok(())
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
fn admit(stream: &UnixStream, limit: &PeerLimit) -> Option<(u32, Slot)> {
    let Ok(cred) = stream.peer_cred() else {
        log::warn!("connection without peer credentials dropped");
        return None;
    };
    let uid = cred.uid();
    let Some(slot) = limit.acquire(uid) else {
        log::warn!("uid={uid}: more than {PER_UID} connections open; refusing another");
        return None;
    };
    Some((uid, slot))
}

async fn serve(stream: UnixStream, uid: u32, shared: &State) {
    let Some(caller) = shared.callers.identify(uid).await else {
        return;
    };
    let mut conn = Connection::new(stream);
    let result = match conn.read(FIRST_REQUEST_TIMEOUT).await {
        Ok(Request::Begin(login)) => session::login::run(&mut conn, &caller, shared, login).await,
        Ok(Request::Command(command)) => {
            let reply = session::command::run(&caller, shared, command).await;
            conn.write(reply).await
        }
        Ok(Request::Answer(_)) => Err(FrameError::Malformed("an answer before any prompt".into())),
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
        FrameError::TooLarge(_) | FrameError::TooShort(_) => Refusal::BadRequest(e.to_string()),
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
    let err = |message: String| ServerError::Socket {
        path: path.display().to_string(),
        message,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| err(format!("cannot create its directory: {e}")))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(err("exists and is not a socket".into()));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err("another otpd is already listening there".into()));
        }
        std::fs::remove_file(path).map_err(|e| err(format!("cannot remove stale socket: {e}")))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| err(e.to_string()))?;
    Ok(listener)
}
