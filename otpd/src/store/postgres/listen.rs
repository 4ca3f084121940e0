//! Caching without staleness: every host LISTENs on `CHANNEL`, and every write of a record
//! (enrollment, disable, reset, a spent recovery code) NOTIFYs it in the same transaction, so
//! other hosts drop their cached copy as soon as the change commits. When the listener's
//! connection is lost, changes may be missed: everything cached is dropped then and again once
//! it is back (retried every second), so the database coming back needs no restart. A cleared
//! lockout is told on `UNLOCKS`, so an unlock on one host also lifts the lock other hosts
//! counted themselves.

use super::connect::Connect;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::AsyncMessage;

/// What another host changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    User(String),
    /// A user's failures and lock were cleared (an unlock, a reset, a right code after
    /// failures): this host's own count of them goes too (policy::lockout).
    Unlocked(String),
    /// Unknown: notifications may have been missed.
    Everything,
}

const RETRY: Duration = Duration::from_secs(1);

/// Listen until the runtime stops, reconnecting after every loss.
pub async fn run(connect: Connect, on_change: Arc<dyn Fn(Changed) + Send + Sync>) {
    let mut was_down = false;
    loop {
        match connect.connect_one().await {
            Ok((client, mut conn)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    while let Some(message) = std::future::poll_fn(|cx| conn.poll_message(cx)).await
                    {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                let change = if n.channel() == super::UNLOCKS {
                                    Changed::Unlocked(n.payload().to_owned())
                                } else {
                                    Changed::User(n.payload().to_owned())
                                };
                                let _ = tx.send(change);
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                });
                let listening = client
                    .batch_execute(&format!(
                        "LISTEN {}; LISTEN {}",
                        super::CHANNEL,
                        super::UNLOCKS
                    ))
                    .await;
                if let Err(e) = listening {
                    log::warn!("fleet listener: {}", super::connect::db_error(e));
                    driver.abort();
                } else {
                    // Whatever changed while nobody listened is unknown.
                    on_change(Changed::Everything);
                    if was_down {
                        log::info!("fleet listener: the database is back; cache dropped");
                    }
                    log::info!("fleet listener: listening for changes from other hosts");
                    while let Some(change) = rx.recv().await {
                        // Records and locks change rarely (enrollments, disables, recovery
                        // codes, unlocks; a TOTP login writes none), so this is worth a line.
                        match &change {
                            Changed::User(user) => log::info!(
                                "fleet listener: user={} changed; cached record dropped",
                                crate::logging::field(user)
                            ),
                            Changed::Unlocked(user) => log::info!(
                                "fleet listener: user={} unlocked; local failures cleared",
                                crate::logging::field(user)
                            ),
                            Changed::Everything => {}
                        }
                        on_change(change);
                    }
                    on_change(Changed::Everything);
                    log::warn!("fleet listener: lost the database; cached records dropped");
                    was_down = true;
                }
                drop(client);
            }
            Err(e) => {
                if !was_down {
                    log::warn!("fleet listener: cannot connect: {e}");
                    was_down = true;
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}
