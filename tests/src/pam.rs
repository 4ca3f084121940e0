//! Real libpam, loaded by our pamclient (or Debian's pamtester) under pam_wrapper, which lets a
//! test use its own PAM service directory without root.

use crate::artifacts;
use crate::daemon::Daemon;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// Where Debian's libpam-wrapper puts its preload library.
pub fn wrapper() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ]
    .iter()
    .map(|d| PathBuf::from(d).join("libpam_wrapper.so"))
    .find(|p| p.exists())
}

/// True when pam_wrapper is installed; otherwise prints why the test skips.
pub fn available() -> bool {
    crate::skip::require(
        wrapper().is_some(),
        "libpam_wrapper.so missing (apt-get install libpam-wrapper)",
    )
}

/// A PAM service of the test's own.
pub struct PamService {
    dir: tempfile::TempDir,
    pub name: String,
    /// PAM_RHOST for every login (pamclient's `PAMCLIENT_RHOST`), as sshd sets it.
    pub rhost: Option<String>,
}

impl PamService {
    /// A service whose auth stack is `stack` (lines of a pam.d file).
    pub fn new(stack: &str) -> PamService {
        let dir = tempfile::Builder::new()
            .prefix("pam-test")
            .tempdir()
            .expect("tempdir");
        let name = "otp-test".to_owned();
        std::fs::write(dir.path().join(&name), format!("{stack}\n")).expect("service file");
        // pam_wrapper warns without an `other` service.
        std::fs::write(dir.path().join("other"), "auth required pam_deny.so\n").expect("other");
        PamService {
            dir,
            name,
            rhost: None,
        }
    }

    /// The service directory pam_wrapper reads.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `auth required pam_otp.so socket=<daemon's> ARGS`.
    pub fn otp(daemon: &Daemon, args: &str) -> PamService {
        PamService::new(&Self::otp_line(daemon, args))
    }

    /// The pam.d line for our module, for building larger stacks.
    pub fn otp_line(daemon: &Daemon, args: &str) -> String {
        format!(
            "auth required {} socket={} {args}",
            artifacts::module().display(),
            daemon.socket.display()
        )
    }

    /// Log `user` in, answering prompts with `answers` in order.
    pub fn login(&self, user: &str, answers: &[&str]) -> PamRun {
        let mut session = self.start(user);
        for a in answers {
            session.send(a);
        }
        session.finish()
    }

    /// Start a login whose prompts the test answers as they come.
    pub fn start(&self, user: &str) -> PamSession<'_> {
        self.start_from(&From::default(), user)
    }

    /// Log `user` in as `from` says (PAM_RHOST, another service name, as `nobody`).
    pub fn login_from(&self, from: &From, user: &str, answers: &[&str]) -> PamRun {
        let mut session = self.start_from(from, user);
        for a in answers {
            session.send(a);
        }
        session.finish()
    }

    /// The same stack under another service name (PAM_SERVICE).
    pub fn add_service(&self, name: &str) {
        std::fs::copy(self.dir.path().join(&self.name), self.dir.path().join(name))
            .expect("copy the service file");
    }

    /// `start`, with PAM_RHOST, the service and the uid taken from `from`.
    pub fn start_from(&self, from: &From, user: &str) -> PamSession<'_> {
        let client = artifacts::pamclient();
        let mut cmd = match from.as_nobody {
            false => self.command(&client),
            true => {
                use std::os::unix::fs::PermissionsExt;
                let open = std::fs::Permissions::from_mode(0o755);
                std::fs::set_permissions(self.dir.path(), open).expect("open the service dir");
                let mut cmd = crate::skip::as_nobody(&client);
                self.preload(&mut cmd);
                cmd
            }
        };
        if let Some(rhost) = from.rhost {
            cmd.env("PAMCLIENT_RHOST", rhost);
        }
        let service = from.service.unwrap_or(&self.name);
        self.spawn(cmd, service, user)
    }

    /// `logins` logins of `user` in one pamclient process, as a long-lived host (a RADIUS or
    /// mail server) runs them, answering prompts with `answers` in order. After each `pam_end`
    /// pamclient says whether our module is still mapped (`MODULE: loaded` / `unloaded`).
    pub fn logins_in_one_process(&self, user: &str, logins: usize, answers: &[&str]) -> PamRun {
        let mut cmd = self.command(&artifacts::pamclient());
        cmd.env("PAMCLIENT_LOGINS", logins.to_string())
            .env("PAMCLIENT_MODULE", artifacts::module());
        let mut session = self.spawn(cmd, &self.name, user);
        for a in answers {
            session.send(a);
        }
        session.finish_all()
    }

    /// Start pamclient (`cmd`, pam_wrapper already set) for `service` and `user`.
    fn spawn(&self, mut cmd: Command, service: &str, user: &str) -> PamSession<'_> {
        let started = WrapperLock::take();
        let mut child = cmd
            .args([service, user])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start pamclient");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        let _ = stdout.read_line(&mut first);
        assert!(
            first.is_empty() || first.trim_end() == STARTED,
            "pamclient's first line: {first:?}"
        );
        drop(started);
        PamSession {
            child,
            stdin,
            stdout,
            lines: Vec::new(),
            _service: self,
        }
    }

    /// A command with pam_wrapper preloaded and pointed at this service directory.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut cmd = Command::new(program);
        self.preload(&mut cmd);
        cmd
    }

    fn preload(&self, cmd: &mut Command) {
        cmd.env("LD_PRELOAD", wrapper().expect("pam_wrapper"))
            .env("PAM_WRAPPER", "1")
            .env("PAM_WRAPPER_SERVICE_DIR", self.dir.path());
        if let Some(rhost) = &self.rhost {
            cmd.env("PAMCLIENT_RHOST", rhost);
        }
    }
}

/// What pamclient prints first, once pam_wrapper has set itself up.
const STARTED: &str = "PAMCLIENT: started";

/// pam_wrapper (1.1.4) picks its /tmp/pam.X directory with lstat and then mkdir, and on EEXIST
/// uses the directory anyway: two PAM programs starting at once can share one and read each
/// other's service files (a login of one test sent to another test's otpd). Held while a PAM
/// program starts until its pam_wrapper is set up, this lock (an flock on /tmp itself, shared
/// by every test process) lets one start at a time.
pub struct WrapperLock {
    _held: std::fs::File,
}

impl WrapperLock {
    pub fn take() -> WrapperLock {
        let tmp = std::fs::File::open("/tmp").expect("open /tmp");
        // SAFETY: a valid open descriptor; flock has no other requirement.
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&tmp), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock /tmp: {}", std::io::Error::last_os_error());
        WrapperLock { _held: tmp }
    }
}

/// Where a login comes from, as the PAM application says it.
#[derive(Default)]
pub struct From<'a> {
    /// PAM_RHOST; unset when `None`.
    pub rhost: Option<&'a str>,
    /// PAM_SERVICE; the service's own name when `None` (see `add_service`).
    pub service: Option<&'a str>,
    /// Run the PAM application as `nobody` (the caller must be root), as a local user runs
    /// their own PAM program.
    pub as_nobody: bool,
}

/// A login in progress. It borrows its service so that the service directory outlives it.
pub struct PamSession<'a> {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    lines: Vec<String>,
    _service: &'a PamService,
}

impl PamSession<'_> {
    /// Read messages until the next prompt and return its text (newlines restored); `None` if
    /// the login ended instead.
    pub fn next_prompt(&mut self) -> Option<String> {
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line).unwrap_or(0) == 0 {
                return None;
            }
            let line = line.trim_end_matches('\n').to_owned();
            self.lines.push(line.clone());
            if line.starts_with("RESULT: ") {
                return None;
            }
            for kind in ["PROMPT_ECHO_OFF: ", "PROMPT_ECHO_ON: "] {
                if let Some(text) = line.strip_prefix(kind) {
                    return Some(text.replace("\\n", "\n"));
                }
            }
        }
    }

    /// Close stdin and read all the client prints until it exits (every login of a
    /// `logins_in_one_process` run; `finish` stops at the first `RESULT:`).
    fn finish_all(mut self) -> PamRun {
        self.stdin = None;
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        self.lines.extend(rest.lines().map(str::to_owned));
        let _ = self.child.wait();
        PamRun::parse(self.lines)
    }

    /// Queue an answer for the next prompt.
    pub fn send(&mut self, answer: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{answer}");
        }
    }

    /// Close the answers and wait for the result.
    pub fn finish(mut self) -> PamRun {
        self.stdin = None;
        while self.next_prompt().is_some() {}
        let _ = self.child.wait();
        PamRun::parse(self.lines)
    }
}

/// What one login printed, and how it ended.
#[derive(Debug)]
pub struct PamRun {
    /// The PAM code pam_authenticate returned.
    pub code: i32,
    /// Every message line (`PROMPT_ECHO_OFF: ...`, `ERROR: ...`), then `RESULT: ...`.
    pub lines: Vec<String>,
}

pub use pam_otp::ffi::{
    PAM_AUTHINFO_UNAVAIL, PAM_AUTH_ERR, PAM_CONV_ERR, PAM_PERM_DENIED, PAM_SERVICE_ERR, PAM_SUCCESS,
};

impl PamRun {
    fn parse(lines: Vec<String>) -> PamRun {
        let code = lines
            .iter()
            .find_map(|l| l.strip_prefix("RESULT: "))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|c| c.parse().ok())
            .unwrap_or(-1);
        PamRun { code, lines }
    }

    pub fn prompts(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|l| {
                l.strip_prefix("PROMPT_ECHO_OFF: ")
                    .or_else(|| l.strip_prefix("PROMPT_ECHO_ON: "))
            })
            .collect()
    }

    pub fn errors(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix("ERROR: "))
            .collect()
    }
}
