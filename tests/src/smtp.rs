//! A real SMTP server on loopback (Debian's python3-aiosmtpd, driven by helpers/smtp_server.py).
//! The server reports each stored message on stdout, so tests wait for mail as an event.

pub use crate::ca::TestCa;

use crate::inbox::{dead_port, Arrived, Facts, Inbox};
use otp_proto::Via;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// True when aiosmtpd is installed; otherwise prints why the test skips.
pub fn available() -> bool {
    crate::skip::require(
        Path::new("/usr/lib/python3/dist-packages/aiosmtpd").exists(),
        "aiosmtpd missing (apt-get install python3-aiosmtpd)",
    )
}

/// How the server behaves.
#[derive(Clone, Default)]
pub struct SmtpOptions {
    /// "none", "starttls" or "tls".
    pub tls: &'static str,
    /// Require AUTH with these credentials.
    pub auth: Option<(&'static str, &'static str)>,
    /// Seconds before answering DATA.
    pub delay: u32,
    /// Refuse every recipient.
    pub reject: bool,
}

pub struct SmtpServer {
    child: Child,
    pub port: u16,
    deliveries: mpsc::Receiver<PathBuf>,
    _maildir: tempfile::TempDir,
}

impl SmtpServer {
    pub fn start(opts: SmtpOptions, ca: Option<&TestCa>) -> SmtpServer {
        let maildir = tempfile::Builder::new()
            .prefix("mail")
            .tempdir()
            .expect("tempdir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("helpers/smtp_server.py");
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(script)
            .arg("--maildir")
            .arg(maildir.path())
            .args([
                "--tls",
                if opts.tls.is_empty() {
                    "none"
                } else {
                    opts.tls
                },
            ])
            .args(["--delay", &opts.delay.to_string()]);
        if let Some(ca) = ca {
            cmd.arg("--cert").arg(&ca.cert).arg("--key").arg(&ca.key);
        }
        if let Some((user, password)) = opts.auth {
            cmd.args(["--user", user, "--password", password]);
        }
        if opts.reject {
            cmd.arg("--reject");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the SMTP server");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (tx, deliveries) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("READY ") {
                    let _ = ready_tx.send(port.parse::<u16>().unwrap_or(0));
                } else if let Some(path) = line.strip_prefix("DELIVERED ") {
                    let _ = tx.send(PathBuf::from(path));
                }
            }
        });
        let port = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("SMTP server did not start");
        SmtpServer {
            child,
            port,
            deliveries,
            _maildir: maildir,
        }
    }

    /// The next delivered message, waiting up to 30 s.
    pub fn next_mail(&self) -> Mail {
        let path = self
            .deliveries
            .recv_timeout(Duration::from_secs(30))
            .expect("no mail was delivered");
        Mail {
            raw: std::fs::read_to_string(path).expect("read mail"),
        }
    }

    /// Has a message been delivered that no test has taken yet?
    pub fn has_mail(&self) -> bool {
        self.deliveries.try_recv().is_ok()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// `[email]` pointing at `port` on 127.0.0.1, plus `extra` keys.
pub fn email_section(port: u16, tls: &str, extra: &str) -> String {
    format!(
        "[email]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"{tls}\"\nfrom = \"Login codes <otp@example.com>\"\n{extra}\n"
    )
}

/// One delivered message.
pub struct Mail {
    pub raw: String,
}

impl Mail {
    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_lowercase());
        self.raw
            .lines()
            .take_while(|l| !l.is_empty())
            .find(|l| l.to_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_owned())
    }

    pub fn body(&self) -> String {
        let body = self
            .raw
            .split_once("\r\n\r\n")
            .or_else(|| self.raw.split_once("\n\n"));
        // Undo quoted-printable soft line breaks and the escapes lettre may use.
        body.map(|(_, b)| {
            b.replace("=\r\n", "")
                .replace("=\n", "")
                .replace("=3D", "=")
        })
        .unwrap_or_default()
    }

    /// The code: the default template puts it alone on an indented line.
    pub fn code(&self) -> String {
        self.find_code()
            .unwrap_or_else(|| panic!("no code in mail:\n{}", self.raw))
    }

    fn find_code(&self) -> Option<String> {
        self.body()
            .lines()
            .find(|l| l.starts_with("    ") && !l.trim().is_empty())
            .map(|l| l.trim().to_owned())
    }
}

/// The address the shared stories give the test user.
pub const ADDRESS: &str = "me@example.com";

impl Inbox for SmtpServer {
    fn open() -> SmtpServer {
        SmtpServer::start(SmtpOptions::default(), None)
    }

    fn config(&self) -> String {
        email_section(self.port, "none", "")
    }

    fn config_to_nowhere(&self) -> String {
        email_section(dead_port(), "none", "")
    }

    fn facts(&self) -> Facts {
        Facts {
            via: Via::Email,
            user_key: "email",
            destination: ADDRESS,
            masked: "m***@e***.com",
            enroll: ["enroll", "email", "--email"],
            other: ("new@example.org", "n***@e***.org"),
            invalid: ("not-an-address", "invalid address"),
            status: ("email", "email_address"),
            hears_of_changes: true,
        }
    }

    fn next(&self) -> Arrived {
        let mail = self.next_mail();
        Arrived::new(
            mail.header("To").unwrap_or_default(),
            Via::Email,
            format!(
                "{}\n{}",
                mail.header("Subject").unwrap_or_default(),
                mail.body()
            ),
            mail.find_code(),
        )
    }

    fn nothing_arrived(&self) -> bool {
        !self.has_mail()
    }
}
