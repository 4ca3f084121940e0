//! `otpd`: run the daemon in the foreground, or check a configuration file.

use clap::Parser;
use otpd::cli::otpd::{Cli, Cmd};
use otpd::config::{Config, ConfigError, DEFAULT_PATH};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if cli.debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    match cli.command.unwrap_or(Cmd::Run) {
        Cmd::CheckConfig => check_config(cli.config),
        Cmd::Run => {
            otpd::logging::init(level);
            run(cli.config)
        }
    }
}

fn load(path: Option<PathBuf>) -> Result<(Config, String), ConfigError> {
    match path {
        Some(p) => Config::load(&p).map(|c| (c, p.display().to_string())),
        None => {
            let p = PathBuf::from(DEFAULT_PATH);
            let source = if p.exists() {
                DEFAULT_PATH.to_owned()
            } else {
                "built-in defaults".to_owned()
            };
            Config::load_or_default(&p).map(|c| (c, source))
        }
    }
}

/// Exit 0 only when `run` would start with this file: the file parses and passes every bound,
/// and every channel the daemon builds at start-up (`State::new`: email, SMS, with their secret
/// and CA files) builds here too.
fn check_config(path: Option<PathBuf>) -> ExitCode {
    let checked = load(path)
        .map_err(|e| e.to_string())
        .and_then(|(cfg, source)| {
            build_channels(&cfg)
                .map(|()| (cfg, source.clone()))
                .map_err(|e| format!("{source}: {e}"))
        });
    match checked {
        Ok((cfg, source)) => {
            println!(
                "{source}: ok (socket {}, state_dir {})",
                cfg.socket.display(),
                cfg.state_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("otpd: {e}");
            ExitCode::from(2)
        }
    }
}

/// The channels `State::new` builds, built and dropped: each reads its secret and CA files.
fn build_channels(cfg: &Config) -> Result<(), String> {
    if let Some(email) = &cfg.email {
        otpd::channel::email::EmailChannel::new(email).map_err(|e| e.to_string())?;
    }
    if let Some(sms) = &cfg.sms {
        otpd::channel::sms::SmsChannel::new(sms).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn run(path: Option<PathBuf>) -> ExitCode {
    let (cfg, source) = match load(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(2);
        }
    };
    log::info!("configuration: {source}");
    raise_fd_limit();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            log::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(async {
        // Installed before the socket is bound: a SIGTERM right after start-up must already
        // mean a clean shutdown, not the default (die, leave the socket behind).
        let shutdown = shutdown_signal()?;
        otpd::server::run(cfg, shutdown)
            .await
            .map_err(|e| e.to_string())
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Every login holds a socket and every code being delivered one more (SMTP or HTTPS), so the
/// common soft limit of 1,024 descriptors would cap otpd near 500 sent-code logins at once.
/// Raise the soft limit toward the hard one (the systemd unit sets both with LimitNOFILE).
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    const WANTED: u64 = 16_384;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let target = hard.min(WANTED);
    if soft < target {
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
            log::warn!("cannot raise the open-file limit from {soft} to {target}: {e}");
        }
    }
}

/// Resolves on SIGTERM (systemd) or SIGINT (a terminal); the handlers are in place on return.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let handler = |kind| signal(kind).map_err(|e| format!("cannot handle signals: {e}"));
    let mut term = handler(SignalKind::terminate())?;
    let mut int = handler(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
