//! SMS providers on loopback: helpers/sms_provider.py speaks Twilio's, Vonage's or a custom
//! gateway's API, checks every request as the provider documents it, and reports each message
//! (or why it rejected a request) on stdout, so tests wait for events.

use crate::ca::TestCa;
use crate::inbox::{dead_port, Arrived, Facts, Inbox};
use otp_proto::Via;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// What the provider saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An accepted message.
    Received { to: String, body: String },
    /// A request that did not follow the provider's API.
    Rejected(String),
}

pub struct SmsProvider {
    child: Child,
    pub port: u16,
    tls: bool,
    events: mpsc::Receiver<Event>,
}

impl SmsProvider {
    /// Start `sms_provider.py ARGS` (HTTPS with `ca`'s server certificate when given).
    pub fn start(args: &[&str], ca: Option<&TestCa>) -> SmsProvider {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("helpers/sms_provider.py");
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(script).args(args);
        if let Some(ca) = ca {
            cmd.arg("--cert").arg(&ca.cert).arg("--key").arg(&ca.key);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the SMS provider");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("READY ") {
                    let _ = ready_tx.send(port.parse::<u16>().unwrap_or(0));
                } else if let Some(json) = line.strip_prefix("RECEIVED ") {
                    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
                    let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                    let _ = tx.send(Event::Received {
                        to: field("to"),
                        body: field("body"),
                    });
                } else if let Some(why) = line.strip_prefix("REJECTED ") {
                    let _ = tx.send(Event::Rejected(why.to_owned()));
                }
            }
        });
        let port = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("SMS provider did not start");
        SmsProvider {
            child,
            port,
            tls: ca.is_some(),
            events,
        }
    }

    /// `http(s)://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The next event, waiting up to 30 s.
    pub fn next_event(&self) -> Event {
        self.events
            .recv_timeout(Duration::from_secs(30))
            .expect("the provider saw no request")
    }

    /// The next accepted message as (to, body); a rejected request fails the test with why.
    pub fn next_message(&self) -> (String, String) {
        match self.next_event() {
            Event::Received { to, body } => (to, body),
            Event::Rejected(why) => panic!("the provider rejected the request: {why}"),
        }
    }

    /// Did the provider see anything no test has taken yet?
    pub fn has_event(&self) -> bool {
        self.events.try_recv().is_ok()
    }
}

impl Drop for SmsProvider {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The code in the default body: "Your login code for HOST is CODE. It is valid for ...".
pub fn code_in(body: &str) -> String {
    find_code(body).unwrap_or_else(|| panic!("no code in {body:?}"))
}

fn find_code(body: &str) -> Option<String> {
    body.split(" is ")
        .nth(1)
        .and_then(|rest| rest.split('.').next())
        .map(str::to_owned)
}

/// `[sms.twilio]` sending to `base_url`, the auth token read from `token_file`.
pub fn twilio_section(base_url: &str, token_file: &Path) -> String {
    format!(
        "[sms.twilio]\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\n\
         auth_token_file = {token_file:?}\nfrom = \"+15005550006\"\nbase_url = \"{base_url}\"\n"
    )
}

/// The number the shared stories give the test user, and how otpd shows it.
pub const PHONE: &str = "+12025554567";
pub const MASKED: &str = "+1******4567";

/// A Twilio-speaking provider and the token file otpd reads: the SMS side of the shared
/// sent-code stories.
pub struct TwilioInbox {
    pub provider: SmsProvider,
    secrets: tempfile::TempDir,
}

impl TwilioInbox {
    fn section(&self, base_url: &str) -> String {
        format!(
            "[sms]\nprovider = \"twilio\"\n{}",
            twilio_section(base_url, &self.secrets.path().join("twilio"))
        )
    }
}

impl Inbox for TwilioInbox {
    fn open() -> TwilioInbox {
        let secrets = tempfile::tempdir().expect("tempdir");
        let token = secrets.path().join("twilio");
        std::fs::write(&token, "twilio-token\n").expect("token file");
        // otpd refuses a secret file others may read.
        let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&token, private).expect("chmod token file");
        TwilioInbox {
            provider: SmsProvider::start(&["--provider", "twilio"], None),
            secrets,
        }
    }

    fn config(&self) -> String {
        self.section(&self.provider.url())
    }

    fn config_to_nowhere(&self) -> String {
        self.section(&format!("http://127.0.0.1:{}", dead_port()))
    }

    fn facts(&self) -> Facts {
        Facts {
            via: Via::Sms,
            user_key: "phone",
            destination: PHONE,
            masked: MASKED,
            enroll: ["enroll", "sms", "--phone"],
            other: ("+447700900123", "+4*******0123"),
            invalid: ("555-1234", "E.164"),
            status: ("sms", "sms_number"),
            hears_of_changes: false,
        }
    }

    fn next(&self) -> Arrived {
        let (to, body) = self.provider.next_message();
        let code = find_code(&body);
        Arrived::new(to, Via::Sms, body, code)
    }

    fn nothing_arrived(&self) -> bool {
        !self.provider.has_event()
    }
}
