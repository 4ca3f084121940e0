//! `otpd`: run the daemon in the foreground, check a configuration file, or make and change
//! the key that seals stored secrets (keygen, rekey).

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
        Cmd::Keygen { key_file } => keygen(cli.config, key_file),
        Cmd::Rekey { new_key_file } => rekey(cli.config, &new_key_file),
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

fn check_config(path: Option<PathBuf>) -> ExitCode {
    let checked = load(path)
        .map_err(|e| e.to_string())
        .and_then(|(cfg, source)| {
            // Channels read their secret and CA files when built: build them to check those too.
            match &cfg.email {
                Some(email) => otpd::channel::email::EmailChannel::new(email)
                    .map(|_| (cfg, source.clone()))
                    .map_err(|e| format!("{source}: {e}")),
                None => Ok((cfg, source)),
            }
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

/// `otpd keygen`: a new key at `--key-file` or the configured `key_file`.
fn keygen(config: Option<PathBuf>, key_file: Option<PathBuf>) -> ExitCode {
    let path = match key_file {
        Some(p) => p,
        None => match load(config) {
            Ok((cfg, _)) => cfg.key_file,
            Err(e) => {
                eprintln!("otpd: {e}");
                return ExitCode::from(2);
            }
        },
    };
    match otpd::store::key_file::generate(&path) {
        Ok(()) => {
            println!(
                "{}: new sealing key (0600); back it up: without it no enrollment can be read",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("otpd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `otpd rekey NEWFILE`, on the configured state directory and key file.
fn rekey(config: Option<PathBuf>, new_key_file: &std::path::Path) -> ExitCode {
    let cfg = match load(config) {
        Ok((cfg, _)) => cfg,
        Err(e) => {
            eprintln!("otpd: {e}");
            return ExitCode::from(2);
        }
    };
    match otpd::store::rekey::rekey(&cfg.state_dir, &cfg.key_file, new_key_file) {
        Ok(done) => {
            println!(
                "{}: {} record(s) re-sealed under the key from {}",
                cfg.state_dir.display(),
                done.resealed,
                new_key_file.display()
            );
            if done.installed {
                println!(
                    "{}: now holds the new key; {} may be deleted",
                    cfg.key_file.display(),
                    new_key_file.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("otpd: {e}");
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
