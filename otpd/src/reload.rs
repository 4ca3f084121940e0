//! Changes without restart: on SIGHUP (`systemctl reload otpd`) the configuration file is read
//! again. A file `otpd check-config` would accept, and that changes only what can change live,
//! becomes the state of every new connection at once; connections already open (logins in
//! flight) finish under the state they started with. Any other file is refused with the same
//! message `check-config` prints, logged, and the configuration in force stays.

use crate::config::{Config, ConfigError, DEFAULT_PATH};
use crate::state::{ChannelSetupError, State};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// The state new connections get; swapped whole by a reload.
pub struct Live {
    current: RwLock<Arc<State>>,
    /// The file given with `--config`; `None`: the default path, or the built-in defaults
    /// when it does not exist (as at start).
    path: Option<PathBuf>,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A channel of the new file cannot be set up (its secret or CA file).
    #[error("{source_name}: {error}")]
    Channel {
        source_name: String,
        error: ChannelSetupError,
    },
    /// The new file changes keys only a restart applies.
    #[error("{source_name}: {} changed: a restart is needed to apply {}", keys.join(", "), if keys.len() == 1 { "it" } else { "them" })]
    NeedsRestart {
        source_name: String,
        keys: Vec<&'static str>,
    },
}

impl Live {
    pub fn new(state: Arc<State>, path: Option<PathBuf>) -> Live {
        Live {
            current: RwLock::new(state),
            path,
        }
    }

    /// The state a new connection runs under.
    pub fn current(&self) -> Arc<State> {
        // A poisoned lock still holds a whole Arc: a panic cannot leave it half swapped.
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Read the file again and, if it is acceptable, put it in force; returns where it came
    /// from. Blocking (small file reads): call it off the accept path or accept the pause.
    pub fn reload(&self) -> Result<String, ReloadError> {
        let (cfg, source_name, text) = read(&self.path)?;
        let old = self.current();
        let keys = restart_only_changes(&old.cfg, &cfg);
        if !keys.is_empty() {
            return Err(ReloadError::NeedsRestart { source_name, keys });
        }
        let new = old
            .reloaded(cfg)
            .map_err(|error| ReloadError::Channel {
                source_name: source_name.clone(),
                error,
            })?
            .with_source(text.map(|t| (source_name.clone(), t)));
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(new);
        Ok(source_name)
    }

    /// Reload and say how it went in the log (the SIGHUP handler).
    pub fn reload_and_log(&self) {
        log::info!("SIGHUP: reading the configuration again");
        match self.reload() {
            Ok(source) => log::info!("configuration reloaded: {source}; new logins use it"),
            Err(e) => log::error!("reload refused: {e}; the configuration in force stays"),
        }
    }

    pub fn source_of(path: &Option<PathBuf>, cfg: &Config) -> Option<(String, String)> {
        let (again, name, text) = read(path).ok()?;
        (format!("{again:?}") == format!("{cfg:?}")).then_some((name, text?))
    }
}

/// The configuration, where it came from, and the text it was parsed from (`None`: the
/// built-in defaults).
fn read(given: &Option<PathBuf>) -> Result<(Config, String, Option<String>), ConfigError> {
    let path = given.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
    match std::fs::read_to_string(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && given.is_none() => {
            Ok((Config::default(), "built-in defaults".to_owned(), None))
        }
        Err(source) => Err(ConfigError::Read { path, source }),
        Ok(text) => {
            let cfg = Config::parse(&path, &text)?;
            Ok((cfg, path.display().to_string(), Some(text)))
        }
    }
}

/// The text of the file `cfg` was loaded from at start, if it still parses to the same
/// configuration (an edit since then would make `otpctl config`'s origins wrong).
/// SIGHUP as a stream; `None` (logged) when it cannot be installed: otpd then runs without
/// reloads rather than not at all.
pub fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            log::error!("cannot handle SIGHUP ({e}); reloading needs a restart");
            None
        }
    }
}

/// The keys whose values differ and that only a restart can apply: where otpd listens and
/// keeps its state, and what the long-lived parts (accounts, lockouts, challenges) were built
/// with. Compared by their Debug text, which covers every field of each value.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let differ =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let mut keys = Vec::new();
    let pairs: [(&'static str, &dyn std::fmt::Debug, &dyn std::fmt::Debug); 14] = [
        ("socket", &old.socket, &new.socket),
        ("state_dir", &old.state_dir, &new.state_dir),
        ("key_file", &old.key_file, &new.key_file),
        ("[totp]", &old.totp, &new.totp),
        ("[lockout]", &old.lockout, &new.lockout),
        ("[code]", &old.code, &new.code),
        (
            "policy.disable_token_ttl",
            &old.policy.disable_token_ttl,
            &new.policy.disable_token_ttl,
        ),
        ("[users]", &old.users, &new.users),
        ("[audit]", &old.audit, &new.audit),
        ("[metrics]", &old.metrics, &new.metrics),
        ("[directory]", &old.directory, &new.directory),
        ("[hotp]", &old.hotp, &new.hotp),
        ("[store]", &old.store, &new.store),
        (
            "policy.grace_fleet",
            &old.policy.grace_fleet,
            &new.policy.grace_fleet,
        ),
    ];
    for (key, a, b) in pairs {
        if differ(a, b) {
            keys.push(key);
        }
    }
    // The issuer is the one [totp] key read only by the state a reload builds.
    if keys == ["[totp]"] {
        let mut old_totp = old.totp.clone();
        old_totp.issuer = new.totp.issuer.clone();
        if !differ(&old_totp, &new.totp) {
            keys.clear();
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(text: &str) -> Config {
        Config::parse(Path::new("t.toml"), text).unwrap()
    }

    #[test]
    fn policy_and_channels_change_live_the_rest_needs_a_restart() {
        let base = cfg("[policy]\nunenrolled = \"deny\"\n");
        let policy =
            cfg("[policy]\nunenrolled = \"enroll\"\n[[policy.rule]]\nrequire = \"never\"\n");
        assert!(restart_only_changes(&base, &policy).is_empty());
        let issuer = cfg("[totp]\nissuer = \"Example\"\n");
        assert!(restart_only_changes(&base, &issuer).is_empty());
        let moved = cfg("state_dir = \"/elsewhere\"\n[lockout]\nmax_failures = 3\n");
        assert_eq!(
            restart_only_changes(&base, &moved),
            ["state_dir", "[lockout]"]
        );
    }
}
