//! One lookup in an LDAP directory: connect (ldaps://, or ldap:// then StartTLS, always),
//! bind, search for the user, read two attributes, unbind. A new connection per lookup keeps
//! no state to go stale; `timeout` bounds all of it.

use crate::channel::secret_file::{read_ca, read_secret, SecretFileError};
use crate::config::directory::DirectoryConfig;
use ldap3::{
    ldap_escape, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions, StdStream,
};
use otp_proto::Secret;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A `[directory]` that cannot be used, naming the key to fix.
#[derive(Debug, thiserror::Error)]
#[error("directory.{key}: {message}")]
pub struct DirectoryConfigError {
    key: &'static str,
    message: String,
}

/// Why a lookup gave no answer (the cache is used instead).
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Ldap(#[from] ldap3::LdapError),
    #[error("connect: {0}")]
    Connect(#[from] std::io::Error),
    #[error("the filter matched {0} entries; it must match one at most")]
    Ambiguous(usize),
}

/// The raw values of the two attributes, as the directory holds them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub email: Vec<String>,
    pub phone: Vec<String>,
}

pub struct LdapClient {
    url: String,
    /// `host:port` from `url` (389 for ldap://, 636 for ldaps:// unless named).
    address: String,
    starttls: bool,
    tls: Arc<rustls::ClientConfig>,
    bind: Option<(String, Secret)>,
    base: String,
    filter: String,
    email_attr: String,
    phone_attr: String,
    timeout: Duration,
}

impl LdapClient {
    /// Read the bind password and the CA file, and build the TLS configuration: what the
    /// daemon does at start and `otpd check-config` does too.
    pub fn new(cfg: &DirectoryConfig) -> Result<LdapClient, DirectoryConfigError> {
        let error = |key, message: String| DirectoryConfigError { key, message };
        let file_error = |key| move |e: SecretFileError| error(key, e.to_string());
        let bind = match (&cfg.bind_dn, &cfg.bind_password_file) {
            (Some(dn), Some(file)) => Some((
                dn.clone(),
                read_secret(file).map_err(file_error("bind_password_file"))?,
            )),
            _ => None,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = &cfg.ca_file {
            let pem = read_ca(path).map_err(file_error("ca_file"))?;
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| error("ca_file", format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| error("ca_file", format!("{}: {e}", path.display())))?;
                added += 1;
            }
            if added == 0 {
                let message = format!("{}: no PEM certificate in it", path.display());
                return Err(error("ca_file", message));
            }
        }
        if roots.is_empty() {
            let message = "no CA certificates: none in the system store and no ca_file".into();
            return Err(error("ca_file", message));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| error("url", e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| error("url", e.to_string()))?;
        let starttls = url.scheme() == "ldap";
        let host = url.host_str().unwrap_or_default();
        let port = url.port().unwrap_or(if starttls { 389 } else { 636 });
        Ok(LdapClient {
            address: format!("{host}:{port}"),
            starttls,
            url: cfg.url.clone(),
            tls: Arc::new(tls),
            bind,
            base: cfg.base.clone(),
            filter: cfg.filter.clone(),
            email_attr: cfg.email_attr.clone(),
            phone_attr: cfg.phone_attr.clone(),
            timeout: cfg.timeout,
        })
    }

    /// The user's entry; `None` when no entry matches.
    pub async fn look_up(&self, user: &str) -> Result<Option<Entry>, LookupError> {
        match tokio::time::timeout(self.timeout, self.search(user)).await {
            Ok(found) => found,
            Err(_) => Err(LookupError::Timeout(self.timeout)),
        }
    }

    /// Connect and bind only: `otpd check-config` says whether the directory answers.
    pub async fn probe(&self) -> Result<(), LookupError> {
        let attempt = async {
            let (mut ldap, _driver) = self.connect().await?;
            let _ = ldap.unbind().await;
            Ok(())
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(done) => done,
            Err(_) => Err(LookupError::Timeout(self.timeout)),
        }
    }

    async fn connect(&self) -> Result<(ldap3::Ldap, Driver), LookupError> {
        // Our own socket, to turn Nagle off: otherwise every small LDAP request waits for the
        // server's delayed ACK (about 40 ms a lookup).
        let stream = tokio::net::TcpStream::connect(&self.address).await?;
        stream.set_nodelay(true)?;
        let settings = LdapConnSettings::new()
            .set_conn_timeout(self.timeout)
            .set_starttls(self.starttls)
            .set_config(self.tls.clone())
            .set_std_stream(StdStream::Tcp(stream.into_std()?));
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.url).await?;
        let driver = Driver(tokio::spawn(async move {
            let _ = conn.drive().await;
        }));
        ldap.with_timeout(self.timeout);
        if let Some((dn, password)) = &self.bind {
            ldap.simple_bind(dn, password.expose()).await?.success()?;
        }
        Ok((ldap, driver))
    }

    async fn search(&self, user: &str) -> Result<Option<Entry>, LookupError> {
        let (mut ldap, _driver) = self.connect().await?;
        // RFC 4515: `*`, `(`, `)`, `\` and NUL escaped, so a name cannot widen the filter.
        let filter = self.filter.replace("{user}", &ldap_escape(user));
        let attrs = [self.email_attr.as_str(), self.phone_attr.as_str()];
        let (entries, _) = ldap
            .with_search_options(SearchOptions::new().sizelimit(2))
            .with_timeout(self.timeout)
            .search(&self.base, Scope::Subtree, &filter, attrs)
            .await?
            .success()?;
        let _ = ldap.unbind().await;
        let entry = match entries.len() {
            0 => return Ok(None),
            1 => entries.into_iter().next().map(SearchEntry::construct),
            n => return Err(LookupError::Ambiguous(n)),
        };
        let mut attrs = entry.map(|e| e.attrs).unwrap_or_default();
        Ok(Some(Entry {
            email: take(&mut attrs, &self.email_attr),
            phone: take(&mut attrs, &self.phone_attr),
        }))
    }
}

/// Attribute names are not case-sensitive; servers answer in their own spelling.
fn take(attrs: &mut HashMap<String, Vec<String>>, name: &str) -> Vec<String> {
    let key = attrs.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned();
    key.and_then(|k| attrs.remove(&k)).unwrap_or_default()
}

/// The task that drives one connection, stopped with the lookup however it ends.
struct Driver(tokio::task::JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}
