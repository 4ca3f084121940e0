//! Duo on loopback: helpers/duo_server.py speaks Duo's Auth API v2 over HTTPS (a test CA) and
//! verifies every request's signature with Duo's own reference client (PyPI duo-client); it
//! reports each request it accepted, or why it refused one, on stdout, so tests wait for events.

use crate::ca::TestCa;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const IKEY: &str = "DIXXXXXXXXXXXXXXXXXX";
pub const SKEY: &str = "duo-secret-key-for-tests";
/// The passcode the server accepts.
pub const PASSCODE: &str = "123456";

/// What the server saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A request whose signature verified: method, path and parameters.
    Request {
        method: String,
        path: String,
        params: serde_json::Value,
    },
    /// A request refused (signature, integration key, Date, parameters), and why.
    Rejected(String),
}

/// True when Duo's reference client is installed for /usr/bin/python3.
pub fn available() -> bool {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import duo_client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    crate::skip::require(
        ok,
        "duo_client missing for /usr/bin/python3 (scripts/setup: pip install duo-client)",
    )
}

pub struct DuoServer {
    child: Child,
    pub port: u16,
    pub ca: TestCa,
    events: mpsc::Receiver<Event>,
}

impl DuoServer {
    /// Start the server with `--behave behave` and `args`.
    pub fn start(behave: &str, args: &[&str]) -> DuoServer {
        let ca = TestCa::new();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("helpers/duo_server.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args(["--behave", behave, "--ikey", IKEY, "--skey", SKEY])
            .args(args)
            .arg("--cert")
            .arg(&ca.cert)
            .arg("--key")
            .arg(&ca.key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Duo server");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("READY ") {
                    let _ = ready_tx.send(port.parse::<u16>().unwrap_or(0));
                } else if let Some(json) = line.strip_prefix("REQUEST ") {
                    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
                    let _ = tx.send(Event::Request {
                        method: v["method"].as_str().unwrap_or_default().to_owned(),
                        path: v["path"].as_str().unwrap_or_default().to_owned(),
                        params: v["params"].clone(),
                    });
                } else if let Some(why) = line.strip_prefix("REJECTED ") {
                    let _ = tx.send(Event::Rejected(why.to_owned()));
                }
            }
        });
        let port = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the Duo server did not start");
        DuoServer {
            child,
            port,
            ca,
            events,
        }
    }

    /// `localhost:PORT`: `api_host` (requests are signed for `localhost`, as duo_client signs
    /// its host without the port; its certificate check matches names, not addresses).
    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// The next event, waiting up to 30 s.
    pub fn next_event(&self) -> Event {
        self.events
            .recv_timeout(Duration::from_secs(30))
            .expect("the Duo server saw no request")
    }

    /// Every event not taken yet, without waiting.
    pub fn events(&self) -> Vec<Event> {
        self.events.try_iter().collect()
    }
}

impl Drop for DuoServer {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The secret key file otpd reads (root, 0600), in a temp dir of its own.
pub struct SecretKey {
    dir: tempfile::TempDir,
}

impl SecretKey {
    pub fn new(skey: &str) -> SecretKey {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("duo.skey");
        std::fs::write(&path, format!("{skey}\n")).expect("write skey");
        let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&path, private).expect("chmod skey");
        SecretKey { dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("duo.skey")
    }
}

/// `[duo]` for `host`, trusting `ca`, with `extra` keys.
pub fn section(host: &str, skey: &SecretKey, ca: &Path, extra: &str) -> String {
    format!(
        "[duo]\napi_host = \"{host}\"\nintegration_key = \"{IKEY}\"\nsecret_key_file = {:?}\n\
         ca_file = {ca:?}\n{extra}\n",
        skey.path()
    )
}
