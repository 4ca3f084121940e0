//! Logging to stderr and, when a syslog socket exists, to syslog (facility authpriv).
//!
//! A fresh machine may have neither /dev/log nor journald: then stderr alone, and start-up goes on.
//! Log lines name users, services and outcomes; codes and secrets are `otp_proto::Secret`, whose
//! formatting prints `<redacted>`, so they cannot reach a log line by accident.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::sync::Mutex;
use syslog::{Facility, Formatter3164, LoggerBackend};

type Syslog = syslog::Logger<LoggerBackend, Formatter3164>;

struct Logger {
    syslog: Option<Mutex<Syslog>>,
}

/// Install the logger once, at start-up. Says on stderr when syslog is unavailable.
pub fn init(level: LevelFilter) {
    let formatter = Formatter3164 {
        facility: Facility::LOG_AUTHPRIV,
        hostname: None,
        process: "otpd".into(),
        pid: std::process::id(),
    };
    let syslog = syslog::unix(formatter).ok().map(Mutex::new);
    let no_syslog = syslog.is_none();
    if log::set_boxed_logger(Box::new(Logger { syslog })).is_ok() {
        log::set_max_level(level);
    }
    if no_syslog {
        log::info!("no syslog socket; logging to stderr only");
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = record.args().to_string();
        let _ = writeln!(
            std::io::stderr().lock(),
            "otpd: {}: {line}",
            record.level().as_str().to_lowercase()
        );
        if let Some(syslog) = &self.syslog {
            if let Ok(mut s) = syslog.lock() {
                // A lost syslog line must never fail a login.
                let _ = match record.level() {
                    Level::Error => s.err(line),
                    Level::Warn => s.warning(line),
                    Level::Info => s.info(line),
                    Level::Debug | Level::Trace => s.debug(line),
                };
            }
        }
    }

    fn flush(&self) {}
}
