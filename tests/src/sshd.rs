//! A real sshd on a loopback port with a PAM service of its own (pam_unix, then pam_otp), a
//! throwaway local user, and OpenSSH's client driven through keyboard-interactive. Root only;
//! everything it creates is removed on drop.
//!
//! sshd names its PAM service after the name it was started under, so a symlink
//! `sshd-otptest-N` -> /usr/sbin/sshd reads /etc/pam.d/sshd-otptest-N and leaves the real
//! sshd's stack alone.

use crate::daemon::Daemon;
use crate::pam::PamService;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// True when this machine can run the test; otherwise prints why it skips.
pub fn available() -> bool {
    crate::skip::require_root()
        && crate::skip::require_file("/usr/sbin/sshd", "openssh-server")
        && crate::skip::require_file("/usr/bin/ssh", "openssh-client")
        && crate::skip::require(
            Path::new("/usr/lib/python3/dist-packages/pexpect").exists(),
            "pexpect missing (apt-get install python3-pexpect)",
        )
}

/// A local user with a password, removed with its home on drop.
pub struct TestUser {
    pub name: String,
    pub password: String,
}

impl TestUser {
    pub fn create() -> TestUser {
        let name = format!("otpt{}", unique());
        let password = format!("pw-{}", unique());
        run("useradd", &["-m", "-s", "/bin/sh", &name]);
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd");
        use std::io::Write;
        let _ = writeln!(chpasswd.stdin.take().expect("stdin"), "{name}:{password}");
        assert!(chpasswd.wait().expect("chpasswd").success());
        TestUser { name, password }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").args(["-r", &self.name]).output();
    }
}

pub struct Sshd {
    child: Child,
    pub port: u16,
    pam_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sshd {
    /// Start sshd for `user` with auth = pam_unix + pam_otp (talking to `otpd`).
    pub fn start(otpd: &Daemon, user: &TestUser) -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("sshd-test")
            .tempdir()
            .expect("tempdir");
        let service = format!("sshd-otptest-{}", unique());
        let pam_file = PathBuf::from("/etc/pam.d").join(&service);
        std::fs::write(
            &pam_file,
            format!(
                "auth required pam_unix.so\n{}\naccount required pam_unix.so\n\
                 session required pam_permit.so\npassword required pam_deny.so\n",
                PamService::otp_line(otpd, "")
            ),
        )
        .expect("write the PAM service");
        let key = dir.path().join("host_key");
        run(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                &key.to_string_lossy(),
            ],
        );
        let port = free_port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nUsePAM yes\n\
                 KbdInteractiveAuthentication yes\nPasswordAuthentication no\n\
                 PubkeyAuthentication no\nAuthenticationMethods keyboard-interactive\n\
                 AllowUsers {}\nPermitRootLogin no\nStrictModes no\nLogLevel VERBOSE\n",
                key.display(),
                dir.path().join("sshd.pid").display(),
                user.name
            ),
        )
        .expect("write sshd_config");
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let program = dir.path().join(&service);
        std::os::unix::fs::symlink("/usr/sbin/sshd", &program).expect("symlink sshd");
        let mut child = Command::new(&program)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sshd");
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("sshd: {line}");
                let _ = tx.send(line);
            }
        });
        let sshd = Sshd {
            child,
            port,
            pam_file,
            _dir: dir,
        };
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains("Server listening") => return sshd,
                Ok(_) => {}
                Err(_) => panic!("sshd did not start"),
            }
        }
    }

    /// Log in as `user` with its password and `code`, run `command`; returns (ok, transcript).
    pub fn login(&self, user: &TestUser, code: &str, command: &str) -> (bool, String) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("helpers/ssh_login.py");
        let out = Command::new("/usr/bin/python3")
            .arg(script)
            .args([
                &self.port.to_string(),
                &user.name,
                &user.password,
                code,
                command,
            ])
            .output()
            .expect("run ssh_login.py");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.pam_file);
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Unique across parallel tests and runs: pid and a counter.
fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}
