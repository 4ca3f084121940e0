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
    harden();
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
    let result = runtime.block_on(async {
        // Installed before the socket is bound: a SIGTERM right after start-up must already
        // mean a clean shutdown, not the default (die, leave the socket behind).
        let shutdown = shutdown_signal()?;
        otpd::server::run(cfg, shutdown)
            .await
            .map_err(|e| e.to_string())
    });
    // Work still on the blocking pool (an argon2 check, a send) is abandoned, not awaited.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Keep secrets out of core files and other processes: no core dump (RLIMIT_CORE 0; a frozen
/// or crashing otpd must not write keys to disk), and not dumpable, so that processes of root
/// without CAP_SYS_PTRACE cannot attach or read /proc/PID/mem. The unit sets LimitCORE=0 too
/// and forbids setrlimit(2) (@resources), so a limit already at 0 is left alone.
fn harden() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if getrlimit(Resource::RLIMIT_CORE) != Ok((0, 0)) {
        if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
            log::warn!("cannot turn core dumps off (RLIMIT_CORE): {e}");
        }
    }
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) only changes a flag of this process.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        log::warn!(
            "cannot make otpd undumpable (PR_SET_DUMPABLE): {}",
            std::io::Error::last_os_error()
        );
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
/// SIGTERM must end otpd within 2 s whatever it is doing, so the signal also starts a
/// backstop: a plain thread that exits the process after `STOP_WITHIN` if the clean stop
/// (server.rs: drop connections, save used codes) has not finished. Exiting there leaves
/// `state_dir/running`, so the next start treats recent codes as used.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    const STOP_WITHIN: std::time::Duration = std::time::Duration::from_millis(1900);
    let handler = |kind| signal(kind).map_err(|e| format!("cannot handle signals: {e}"));
    let mut term = handler(SignalKind::terminate())?;
    let mut int = handler(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let backstop = std::thread::Builder::new()
            .name("stop-backstop".into())
            .spawn(|| {
                std::thread::sleep(STOP_WITHIN);
                log::error!(
                    "could not stop cleanly within {} ms; exiting now",
                    STOP_WITHIN.as_millis()
                );
                log::logger().flush();
                std::process::exit(1);
            });
        if let Err(e) = backstop {
            log::warn!("cannot start the shutdown backstop: {e}");
        }
    })
}
