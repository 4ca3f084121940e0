//! A real otpd on a temp directory and config, started and stopped by the test.

use crate::artifacts;
use otp_proto::client::Connection;
use otp_proto::{Login, Reply, Request};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub struct Daemon {
    dir: tempfile::TempDir,
    child: Option<Child>,
    log: Arc<(Mutex<String>, Condvar)>,
    pub config: PathBuf,
    pub socket: PathBuf,
    /// The sealing key (`key_file`), made with `otpd keygen` in the temp dir.
    pub key_file: PathBuf,
    /// Extra environment for otpd (e.g. `CREDENTIALS_DIRECTORY`), from the next (re)start on.
    pub env: Vec<(String, PathBuf)>,
    /// A command otpd runs under (`netns::Netns::wrap`); empty: none.
    pub wrap: Vec<String>,
}

impl Daemon {
    /// Start otpd with `socket`, `state_dir` and `key_file` in a temp dir, plus `extra` TOML
    /// (sections).
    pub fn start(extra: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("otpd-test")
            .tempdir()
            .expect("tempdir");
        let socket = dir.path().join("otpd.sock");
        let config = dir.path().join("otpd.toml");
        let key_file = dir.path().join("key");
        let toml = format!(
            "socket = {:?}\nstate_dir = {:?}\nkey_file = {:?}\n{extra}\n",
            socket,
            dir.path().join("state"),
            key_file
        );
        std::fs::write(&config, toml).expect("write config");
        keygen(&key_file);
        let mut daemon = Daemon {
            dir,
            child: None,
            log: Arc::default(),
            config,
            socket,
            key_file,
            env: Vec::new(),
            wrap: Vec::new(),
        };
        daemon.spawn();
        daemon
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Stop (SIGTERM, wait) and start again on the same state.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// SIGKILL (a crash: nothing saved on the way out) and start again on the same state.
    pub fn restart_after_crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn();
    }

    /// Everything otpd wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.0.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Does otpd's log say `needle`, now or within 10 s? A login's line is written just after
    /// its reply (docs/design.md, "Latency"), and the reader thread may not have taken a line in
    /// yet when the answer reaches the test.
    pub fn logged(&self, needle: &str) -> bool {
        self.logged_since(0, needle)
    }

    /// How much otpd has said so far: a mark for `logged_since` (the log goes on over restarts).
    pub fn log_mark(&self) -> usize {
        self.log().len()
    }

    /// Whether otpd said `needle` after `mark`, waiting as `logged` does.
    pub fn logged_since(&self, mark: usize, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let (lock, ready) = &*self.log;
        let Ok(mut log) = lock.lock() else {
            return false;
        };
        while !log.get(mark..).is_some_and(|l| l.contains(needle)) {
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            log = match ready.wait_timeout(log, deadline - now) {
                Ok((log, _)) => log,
                Err(_) => return false,
            };
        }
        true
    }

    /// Panic with the whole log unless otpd says `needle` (within `logged`'s wait).
    #[track_caller]
    pub fn assert_logged(&self, needle: &str) {
        assert!(
            self.logged(needle),
            "otpd never said {needle:?}:\n{}",
            self.log()
        );
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Run otpctl against this daemon.
    pub fn otpctl(&self, args: &[&str]) -> Output {
        Command::new(artifacts::otpctl())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run otpctl")
    }

    /// Run otpctl against this daemon as `nobody` (root only), to play an unprivileged user.
    /// Opens the daemon's directory to others so the socket is reachable.
    pub fn otpctl_as_nobody(&self, args: &[&str]) -> Output {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.dir(), std::fs::Permissions::from_mode(0o755))
            .expect("open the test dir");
        crate::skip::as_nobody(&artifacts::otpctl())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run otpctl as nobody")
    }

    /// `otpctl --json ARGS`, parsed; panics with the output unless it exits 0.
    pub fn otpctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.otpctl(&all);
        assert!(out.status.success(), "otpctl {args:?}: {}", describe(&out));
        serde_json::from_slice(&out.stdout).expect("otpctl JSON")
    }

    /// Enroll `user` in TOTP and confirm it with oathtool's code for the previous time step
    /// (so that the current and next steps stay free for the test); returns the secret.
    pub fn enroll_totp(&self, user: &str) -> String {
        self.enroll_totp_with(user, &[])
    }

    /// `enroll_totp` for a user who already has a factor, proving it with a current code (one
    /// just mailed, or a recovery code).
    pub fn enroll_totp_proving(&self, user: &str, proof: &str) -> String {
        self.enroll_totp_with(user, &["--code", proof])
    }

    fn enroll_totp_with(&self, user: &str, extra: &[&str]) -> String {
        let mut args = vec!["--user", user, "enroll", "totp"];
        args.extend_from_slice(extra);
        let e = self.otpctl_json(&args);
        let secret = e["secret"].as_str().expect("secret").to_owned();
        self.confirm(user, |t| crate::totp::code(&secret, t - 30));
        secret
    }

    /// `otpctl verify` with `code_at(now)`. The previous step is only within skew while the clock
    /// stays in this step: if it moved on between computing and checking, try once more.
    pub fn confirm(&self, user: &str, code_at: impl Fn(u64) -> String) {
        let first = self.otpctl(&["--user", user, "verify", &code_at(crate::totp::now())]);
        if !first.status.success() {
            let again = self.otpctl(&["--user", user, "verify", &code_at(crate::totp::now())]);
            assert!(
                again.status.success(),
                "otpctl verify: {}",
                describe(&again)
            );
        }
    }

    fn spawn(&mut self) {
        let otpd = artifacts::otpd();
        let mut command = match self.wrap.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&otpd);
                c
            }
            None => Command::new(&otpd),
        };
        let mut child = command
            .arg("--config")
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start otpd");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = log.0.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
                log.1.notify_all();
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains("listening on") => return,
                Ok(_) => {}
                Err(_) => panic!("otpd did not start:\n{}", self.log()),
            }
        }
    }

    /// The running otpd's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// A login of `user` for `service`, spoken on otpd's socket as pam_otp speaks it, that has
    /// sent `Begin` and now holds the code prompt; `None` if otpd answered anything else.
    pub fn at_prompt(&self, user: &str, service: &str) -> Option<Connection> {
        let mut conn = Connection::connect(&self.socket, Duration::from_secs(30)).ok()?;
        let begin = Request::Begin(Login {
            user: user.into(),
            service: service.into(),
            rhost: Some("203.0.113.9".into()),
            tty: None,
            nullok: false,
            forward_pass: None,
        });
        conn.send(&begin).ok()?;
        loop {
            match conn.recv().ok()? {
                Reply::Prompt { .. } => return Some(conn),
                Reply::Info { .. } => {}
                _ => return None,
            }
        }
    }

    /// Hold the running otpd with SIGSTOP until the guard is dropped.
    pub fn pause(&self) -> Paused {
        Paused::new(self.pid().expect("otpd is running") as libc::pid_t)
    }

    /// Peak resident memory of the running otpd (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

/// Answer the code prompt of `conn` (from `Daemon::at_prompt`) and read to the outcome; `None`
/// if otpd asks again or the connection ends first.
pub fn answer(conn: &mut Connection, text: &str) -> Option<otp_proto::Outcome> {
    conn.send(&Request::Answer(otp_proto::Secret::new(text)))
        .ok()?;
    loop {
        match conn.recv().ok()? {
            Reply::Outcome(o) => return Some(o),
            Reply::Prompt { .. } => return None,
            _ => {}
        }
    }
}

/// A process stopped (SIGSTOP) until this is dropped (SIGCONT, also when the test fails: a
/// stopped otpd could not act on the SIGTERM that ends it).
pub struct Paused(libc::pid_t);

impl Paused {
    fn new(pid: libc::pid_t) -> Paused {
        // SAFETY: kill(2) on our own child.
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGSTOP) },
            0,
            "SIGSTOP {pid}"
        );
        let paused = Paused(pid);
        let stat = format!("/proc/{pid}/stat");
        loop {
            let text = std::fs::read_to_string(&stat).unwrap_or_default();
            // The state follows the command name, which is in parentheses.
            match text
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
            {
                Some('T') => return paused,
                Some(_) => std::thread::yield_now(),
                None => panic!("process {pid} is gone"),
            }
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child; no assertion while a failed test unwinds.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `otpd keygen --key-file PATH`; panics unless it succeeds.
pub fn keygen(path: &std::path::Path) {
    let out = Command::new(artifacts::otpd())
        .arg("keygen")
        .arg("--key-file")
        .arg(path)
        .output()
        .expect("run otpd keygen");
    assert!(out.status.success(), "otpd keygen: {}", describe(&out));
}

/// Exit status and both streams, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
