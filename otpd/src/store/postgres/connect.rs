//! How a host reaches the database: `[store] url` (libpq syntax, several hosts for HA), the
//! password from `password_file`, and TLS with rustls against `ca_file`, which verifies the
//! certificate chain and the server's name against the host in `url` (libpq's verify-full).
//!
//! tokio-postgres itself knows only sslmode disable/prefer/require, so `sslmode` is read here:
//! with `ca_file`, TLS is required and fully verified whatever sslmode says but `disable`;
//! without it, an sslmode asking for TLS is refused (a certificate nobody checks proves
//! nothing) and the connection is plain (for a database on a trusted link or a Unix socket).

use crate::config::store::StoreConfig;
use crate::store::StoreError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::SslMode;

/// How long one connection attempt (per host) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection idle this long is probed (TCP keepalive), so one to a server that vanished
/// (its link dead: nothing answers, nothing resets) is found dead while idle, not by a login.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
/// Between probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Probes unanswered before the connection is closed (where TCP_USER_TIMEOUT is missing).
const KEEPALIVE_RETRIES: u32 = 3;
/// Data (a statement, a probe) unacknowledged this long closes the connection (Linux's
/// TCP_USER_TIMEOUT): a call gives up after as long (`OP_TIMEOUT`), and the connection then
/// says it is closed, so the pool drops it instead of handing it out again.
const USER_TIMEOUT: Duration = super::OP_TIMEOUT;
/// Longest password file read.
const MAX_PASSWORD: u64 = 4096;

#[derive(Clone)]
pub struct Connect {
    pub pg: tokio_postgres::Config,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Connect {
    pub fn from_config(cfg: &StoreConfig) -> Result<Connect, StoreError> {
        let url = cfg
            .url
            .as_deref()
            .ok_or_else(|| StoreError::Config("url: missing".into()))?;
        let (url, sslmode) = take_sslmode(url);
        let mut pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Config(format!("url: {e}")))?;
        if let Some(path) = &cfg.password_file {
            pg.password(read_password(path)?.as_bytes());
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        dead_peer_detection(&mut pg);
        pg.application_name("otpd");
        let wants_tls = !matches!(sslmode.as_deref(), None | Some("disable") | Some("prefer"));
        let tls = match (&cfg.ca_file, sslmode.as_deref()) {
            (Some(_), Some("disable")) => {
                return Err(StoreError::Config(
                    "url: sslmode=disable with ca_file: remove one".into(),
                ))
            }
            (Some(ca), _) => {
                pg.ssl_mode(SslMode::Require);
                Some(Arc::new(client_config(ca)?))
            }
            (None, _) if wants_tls => {
                return Err(StoreError::Config(format!(
                    "url: sslmode={} needs ca_file (the CA that signed the database's certificate)",
                    sslmode.unwrap_or_default()
                )))
            }
            (None, _) => {
                pg.ssl_mode(SslMode::Disable);
                None
            }
        };
        Ok(Connect { pg, tls })
    }

    /// Sessions that do not wait for the WAL flush at commit (the audit table's): a crash of
    /// the database server may lose its last fraction of a second of them (the host's own
    /// audit file and syslog keep every line), and their flushes no longer queue in front of
    /// the logins' spent steps, which still wait for theirs (docs/design.md, "The fleet store").
    pub fn without_commit_wait(mut self) -> Connect {
        let options = match self.pg.get_options() {
            Some(given) => format!("{given} -c synchronous_commit=off"),
            None => "-c synchronous_commit=off".to_owned(),
        };
        self.pg.options(&options);
        self
    }

    /// A pool of at most `size` connections; each waits at most a few seconds for one.
    pub fn pool(&self, size: usize) -> Result<deadpool_postgres::Pool, StoreError> {
        let manager_cfg = deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        };
        let manager = match &self.tls {
            Some(tls) => deadpool_postgres::Manager::from_config(
                self.pg.clone(),
                tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone()),
                manager_cfg,
            ),
            None => deadpool_postgres::Manager::from_config(
                self.pg.clone(),
                tokio_postgres::NoTls,
                manager_cfg,
            ),
        };
        let wait = Some(Duration::from_secs(3));
        deadpool_postgres::Pool::builder(manager)
            .max_size(size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(wait)
            .create_timeout(wait)
            .recycle_timeout(wait)
            .build()
            .map_err(|e| StoreError::Config(format!("pool: {e}")))
    }

    /// One connection of its own (the listener's), with the task that drives it.
    pub async fn connect_one(
        &self,
    ) -> Result<(tokio_postgres::Client, Box<dyn ConnectionDriver>), StoreError> {
        match &self.tls {
            Some(tls) => {
                let make = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
                let (client, conn) = self.pg.connect(make).await.map_err(db_error)?;
                Ok((client, Box::new(conn)))
            }
            None => {
                let (client, conn) = self
                    .pg
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(db_error)?;
                Ok((client, Box::new(conn)))
            }
        }
    }
}

/// A connection whose messages (notifications among them) are polled by its owner.
pub trait ConnectionDriver: Send {
    fn poll_message(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>>>;
}

impl<S, T> ConnectionDriver for tokio_postgres::Connection<S, T>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    fn poll_message(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>>> {
        tokio_postgres::Connection::poll_message(self, cx)
    }
}

/// TCP keepalives and a user timeout, where the url sets none (`keepalives=0` there keeps
/// them off), so a connection to a server that vanished is closed within seconds, idle or
/// not, instead of hanging for as long as TCP retransmits (many minutes).
fn dead_peer_detection(pg: &mut tokio_postgres::Config) {
    if pg.get_tcp_user_timeout().is_none() {
        pg.tcp_user_timeout(USER_TIMEOUT);
    }
    if !pg.get_keepalives() {
        return;
    }
    // tokio-postgres's own default (2 hours) means the url did not say.
    if pg.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        pg.keepalives_idle(KEEPALIVE_IDLE);
    }
    if pg.get_keepalives_interval().is_none() {
        pg.keepalives_interval(KEEPALIVE_INTERVAL);
    }
    if pg.get_keepalives_retries().is_none() {
        pg.keepalives_retries(KEEPALIVE_RETRIES);
    }
}

/// The url without `sslmode`, and its value.
fn take_sslmode(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut mode = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some(("sslmode", value)) => {
                mode = Some(value.to_owned());
                false
            }
            _ => true,
        })
        .collect();
    if kept.is_empty() {
        (base.to_owned(), mode)
    } else {
        (format!("{base}?{}", kept.join("&")), mode)
    }
}

/// The password file: one line, readable by its owner only.
fn read_password(path: &Path) -> Result<zeroize::Zeroizing<String>, StoreError> {
    let fail = |why: String| StoreError::Config(format!("password_file {}: {why}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        return Err(fail(format!(
            "owned by uid {}: must belong to root or otpd's user",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(fail(format!(
            "mode {:o}: group and others must have no access (chmod 600)",
            meta.mode() & 0o777
        )));
    }
    if meta.len() > MAX_PASSWORD {
        return Err(fail("too long".into()));
    }
    let text =
        zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?);
    let line = text.trim_end_matches(['\n', '\r']);
    if line.is_empty() || line.contains('\n') {
        return Err(fail("must hold one line, the password".into()));
    }
    Ok(zeroize::Zeroizing::new(line.to_owned()))
}

/// rustls over the CA file (ring, like the channels), verifying chain and name.
fn client_config(ca: &Path) -> Result<rustls::ClientConfig, StoreError> {
    let fail = |why: String| StoreError::Config(format!("ca_file {}: {why}", ca.display()));
    let pem = std::fs::read(ca).map_err(|e| fail(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| fail(format!("not PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| fail(format!("not a CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(fail("holds no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A database error said fully: the server's own message (a wrong password, a missing grant),
/// or why it could not be reached, with the cause (a certificate not valid for the name).
pub fn db_error(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        return StoreError::Database(format!("{} ({})", db.message(), db.code().code()));
    }
    StoreError::Unreachable(crate::logging::error_chain(&e))
}

/// Was the pooled connection `m` made before `instant` (a call that found its server gone
/// began)? Then it goes to that server too, or did (`PostgresStore::call` retires it).
pub fn made_before(m: deadpool_postgres::Metrics, instant: std::time::Instant) -> bool {
    m.created < instant
}

pub fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db_error(e),
        deadpool_postgres::PoolError::Timeout(_) => {
            StoreError::Unreachable("no connection within 3 s".into())
        }
        other => StoreError::Unreachable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_of_the_url() {
        let (url, mode) = take_sslmode(
            "postgresql://otpd@db1,db2/otp?target_session_attrs=read-write&sslmode=verify-full",
        );
        assert_eq!(
            url,
            "postgresql://otpd@db1,db2/otp?target_session_attrs=read-write"
        );
        assert_eq!(mode.as_deref(), Some("verify-full"));
        let parsed: tokio_postgres::Config = url.parse().unwrap();
        assert_eq!(parsed.get_hosts().len(), 2);
    }

    #[test]
    fn a_dead_peer_is_detected_within_seconds_unless_the_url_says_otherwise() {
        let connect = |url: &str| {
            let cfg = StoreConfig {
                url: Some(url.into()),
                ..StoreConfig::default()
            };
            Connect::from_config(&cfg).map(|c| c.pg).unwrap()
        };
        let pg = connect("postgresql://otpd@db1,db2/otp?target_session_attrs=read-write");
        assert_eq!(pg.get_tcp_user_timeout(), Some(&USER_TIMEOUT));
        assert!(pg.get_keepalives());
        assert_eq!(pg.get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(pg.get_keepalives_interval(), Some(KEEPALIVE_INTERVAL));
        assert_eq!(pg.get_keepalives_retries(), Some(KEEPALIVE_RETRIES));
        let pg = connect(
            "postgresql://otpd@db1/otp?keepalives_idle=60&keepalives_interval=10\
             &keepalives_retries=9&tcp_user_timeout=30",
        );
        assert_eq!(pg.get_tcp_user_timeout(), Some(&Duration::from_secs(30)));
        assert_eq!(pg.get_keepalives_idle(), Duration::from_secs(60));
        assert_eq!(pg.get_keepalives_interval(), Some(Duration::from_secs(10)));
        assert_eq!(pg.get_keepalives_retries(), Some(9));
        let pg = connect("postgresql://otpd@db1/otp?keepalives=0");
        assert!(!pg.get_keepalives());
        assert_eq!(pg.get_keepalives_idle(), Duration::from_secs(2 * 60 * 60));
    }

    #[test]
    fn connections_made_before_a_failed_call_began_are_retired_and_later_ones_kept() {
        let began = std::time::Instant::now();
        let at = |created| deadpool_postgres::Metrics {
            created,
            recycled: None,
            recycle_count: 0,
        };
        assert!(made_before(at(began - Duration::from_millis(1)), began));
        assert!(!made_before(at(began), began));
        assert!(!made_before(at(began + Duration::from_millis(1)), began));
    }

    #[test]
    fn verify_full_without_a_ca_file_is_refused() {
        let cfg = StoreConfig {
            url: Some("postgresql://otpd@db1/otp?sslmode=verify-full".into()),
            ..StoreConfig::default()
        };
        let e = Connect::from_config(&cfg).err().unwrap().to_string();
        assert!(e.contains("needs ca_file"), "{e}");
    }
}
