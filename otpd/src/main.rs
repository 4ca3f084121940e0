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
        Cmd::Migrate { from, to } => fleet::migrate(cli.config, from.zip(to)),
        Cmd::Run => {
            // First, before any thread starts (the logger starts one): every thread then
            // inherits SIGTERM and SIGINT blocked, and only the sigwait thread takes them.
            let shutdown = shutdown_signal();
            otpd::logging::init(level);
            match shutdown {
                Ok(shutdown) => run(cli.config, shutdown),
                Err(e) => {
                    log::error!("{e}");
                    ExitCode::FAILURE
                }
            }
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
            otpd::state::State::channels(&cfg).map_err(|e| format!("{source}: {e}"))?;
            otpd::state::State::named_channels(&cfg).map_err(|e| format!("{source}: {e}"))?;
            // The daemon refuses to start without a usable sealing key: so does the check.
            otpd::store::key_file::load(&cfg.key_file)
                .map_err(|e| format!("{source}: key_file: {e}"))?;
            if let Some(directory) = &cfg.directory {
                check_directory(directory).map_err(|e| format!("{source}: {e}"))?;
            }
            // Duo's keys and signature, by one /auth/v2/check.
            if let Some(duo) = &cfg.duo {
                println!(
                    "{}",
                    otpd::channel::duo::check_now(duo).map_err(|e| format!("{source}: {e}"))?
                );
            }
            let store = fleet::check(&cfg).map_err(|e| format!("{source}: [store] {e}"))?;
            Ok((cfg, source, store))
        });
    match checked {
        Ok((cfg, source, store)) => {
            println!("{source}: ok (socket {}, {store})", cfg.socket.display(),);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("otpd: {e}");
            ExitCode::from(2)
        }
    }
}

/// `[directory]`: its files are read as the daemon reads them (an error fails the check), and
/// whether it answers now is said (a directory down now does not stop the daemon either).
fn check_directory(cfg: &otpd::config::directory::DirectoryConfig) -> Result<(), String> {
    let directory = otpd::directory::Directory::new(cfg).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    match runtime.block_on(directory.probe()) {
        Ok(()) => println!(
            "directory {} (base {}): answers",
            directory.url, directory.base
        ),
        Err(e) => println!(
            "directory {} (base {}): does not answer now: {e}",
            directory.url, directory.base
        ),
    }
    Ok(())
}

/// `otpd migrate` and check-config's report of the fleet database.
mod fleet {
    use super::load;
    use otpd::cli::otpd::StoreKind;
    use otpd::config::Config;
    use otpd::store::postgres::{copy, migrations, PostgresStore};
    use otpd::store::FileStore;
    use std::path::PathBuf;
    use std::process::ExitCode;

    /// What check-config says of the store: the state directory, or the database reached and
    /// its schema version (an error unless it is the one this otpd knows).
    pub fn check(cfg: &Config) -> Result<String, String> {
        if !cfg.store.is_postgres() {
            return Ok(format!("state_dir {}", cfg.state_dir.display()));
        }
        let store = PostgresStore::connect(cfg).map_err(|e| e.to_string())?;
        let version = store.schema_version().map_err(|e| e.to_string())?;
        migrations::check(version).map_err(|e| e.to_string())?;
        Ok(format!("database reached, schema version {version}"))
    }

    pub fn migrate(config: Option<PathBuf>, copy: Option<(StoreKind, StoreKind)>) -> ExitCode {
        let cfg = match load(config) {
            Ok((cfg, _)) => cfg,
            Err(e) => {
                eprintln!("otpd: {e}");
                return ExitCode::from(2);
            }
        };
        if !cfg.store.is_postgres() {
            eprintln!("otpd: migrate needs [store] backend = \"postgres\" and its url");
            return ExitCode::from(2);
        }
        let result = match copy {
            None => schema(&cfg),
            Some((StoreKind::Files, StoreKind::Postgres)) => from_files(&cfg),
            Some(_) => Err("only --from files --to postgres is supported".into()),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("otpd: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn schema(cfg: &Config) -> Result<(), String> {
        let store = PostgresStore::connect(cfg).map_err(|e| e.to_string())?;
        let (before, after) = store.migrate().map_err(|e| e.to_string())?;
        if before == after {
            println!("schema version {after}: up to date");
        } else {
            println!("schema version {before} -> {after}");
        }
        Ok(())
    }

    fn from_files(cfg: &Config) -> Result<(), String> {
        let files = FileStore::open_with_key_file(&cfg.state_dir, &cfg.key_file)
            .map_err(|e| e.to_string())?;
        let db = PostgresStore::open(cfg).map_err(|e| e.to_string())?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let done = copy::from_files(&files, &db, now, cfg.totp.skew).map_err(|e| e.to_string())?;
        for user in &done.copied {
            println!("copied: {user}");
        }
        for user in &done.skipped {
            println!("skipped (already in the database): {user}");
        }
        println!(
            "{} copied, {} skipped",
            done.copied.len(),
            done.skipped.len()
        );
        Ok(())
    }
}

fn run(
    path: Option<PathBuf>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> ExitCode {
    harden();
    let (cfg, source) = match load(path.clone()) {
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
    // The accept loop is a task on a worker, not `block_on` on the main thread: a connection it
    // spawns lands in that worker's own queue and is served there, without waking another
    // thread first (issue 16: futex calls per login, BENCHMARKS.md).
    let result = runtime.block_on(async {
        match tokio::spawn(otpd::server::run(cfg, path, shutdown)).await {
            Ok(served) => served.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the server task ended abnormally: {e}")),
        }
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

/// Resolves on SIGTERM (systemd) or SIGINT (a terminal).
///
/// SIGTERM must end otpd within 2 s whatever it is doing, even with every runtime worker stuck
/// in a long computation, so the signals are not left to the runtime: they are blocked in
/// every thread (the runtime's inherit the mask) and taken by a plain thread in sigwait(3),
/// which wakes the accept loop (a task on a runtime worker, see `run`) and then is the
/// backstop: if the clean stop (server.rs: drop connections, save used codes) has not ended
/// the process after `STOP_WITHIN`, it exits. Exiting there leaves `state_dir/running`, so
/// the next start treats recent codes as used.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    const STOP_WITHIN: std::time::Duration = std::time::Duration::from_millis(1500);
    // SAFETY: sigset_t is plain old data, filled by sigemptyset/sigaddset before use;
    // pthread_sigmask changes only this thread's mask (and so that of threads it starts).
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(format!(
                "cannot handle signals: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        set
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut signal: libc::c_int = 0;
            // SAFETY: `set` is a valid signal set and `signal` a valid out-parameter.
            while unsafe { libc::sigwait(&set, &mut signal) } != 0 {}
            let _ = tx.send(());
            std::thread::sleep(STOP_WITHIN);
            log::error!(
                "could not stop cleanly within {} ms of the signal; exiting now",
                STOP_WITHIN.as_millis()
            );
            log::logger().flush();
            // _exit: no atexit handlers or destructors, which may wait on a stuck thread.
            // SAFETY: ends the process at once; nothing runs after it.
            unsafe { libc::_exit(1) };
        })
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    Ok(async move {
        let _ = rx.await;
    })
}
