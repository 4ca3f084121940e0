//! A throwaway OpenLDAP server (Debian's slapd) for the directory tests: a slapd.conf and an
//! mdb database in a temp dir, filled with slapadd, listening on loopback with ldap:// (for
//! StartTLS) and ldaps://, its certificate from a test CA. Killed in Drop.

use crate::ca::TestCa;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const SUFFIX: &str = "dc=example,dc=com";
pub const BASE: &str = "ou=people,dc=example,dc=com";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=com";
const ADMIN_PASSWORD: &str = "ldap-test-secret";

/// True when slapd is installed; otherwise prints why the test skips.
pub fn available() -> bool {
    crate::skip::require_file("/usr/sbin/slapd", "slapd ldap-utils")
}

/// A person in the directory: `uid`, and `mail` and `mobile` when given.
pub struct Person<'a> {
    pub uid: &'a str,
    pub mail: Option<&'a str>,
    pub mobile: Option<&'a str>,
}

pub struct Slapd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub ca: TestCa,
    /// ldap:// (StartTLS) and ldaps:// ports on 127.0.0.1.
    pub ldap_port: u16,
    pub ldaps_port: u16,
}

impl Slapd {
    pub fn start(people: &[Person]) -> Slapd {
        let dir = tempfile::Builder::new()
            .prefix("slapd")
            .tempdir()
            .expect("tempdir");
        let ca = TestCa::new();
        let p = |n: &str| dir.path().join(n);
        std::fs::create_dir(p("db")).expect("db dir");
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             pidfile {pid}\n\
             TLSCACertificateFile {ca}\n\
             TLSCertificateFile {cert}\n\
             TLSCertificateKeyFile {key}\n\
             database mdb\n\
             maxsize 10485760\n\
             suffix \"{SUFFIX}\"\n\
             rootdn \"{ADMIN_DN}\"\n\
             rootpw {ADMIN_PASSWORD}\n\
             directory {db}\n\
             access to * by dn.exact=\"{ADMIN_DN}\" read by * none\n",
            pid = p("slapd.pid").display(),
            ca = ca.ca.display(),
            cert = ca.cert.display(),
            key = ca.key.display(),
            db = p("db").display(),
        );
        std::fs::write(p("slapd.conf"), conf).expect("slapd.conf");
        let mut ldif = format!(
            "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
             dn: {BASE}\nobjectClass: organizationalUnit\nou: people\n\n"
        );
        for person in people {
            ldif.push_str(&format!(
                "dn: uid={uid},{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n",
                uid = person.uid
            ));
            if let Some(mail) = person.mail {
                ldif.push_str(&format!("mail: {mail}\n"));
            }
            if let Some(mobile) = person.mobile {
                ldif.push_str(&format!("mobile: {mobile}\n"));
            }
            ldif.push('\n');
        }
        std::fs::write(p("data.ldif"), ldif).expect("data.ldif");
        let out = Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(p("slapd.conf"))
            .arg("-l")
            .arg(p("data.ldif"))
            .output()
            .expect("run slapadd");
        assert!(
            out.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut slapd = Slapd {
            ldap_port: free_port(),
            ldaps_port: free_port(),
            dir,
            child: None,
            ca,
        };
        slapd.spawn();
        slapd
    }

    fn spawn(&mut self) {
        let urls = format!(
            "ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/",
            self.ldap_port, self.ldaps_port
        );
        // -d: stay in the foreground (a child the test owns) and say when it listens.
        let mut child = Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .args(["-h", &urls, "-d", "256"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start slapd");
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut log = String::new();
            for line in stderr.lines().map_while(Result::ok) {
                log.push_str(&line);
                log.push('\n');
                if line.contains("slapd starting") {
                    let _ = tx.send(Ok(()));
                }
            }
            let _ = tx.send(Err(log));
        });
        self.child = Some(child);
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(log)) => panic!("slapd did not start:\n{log}"),
            Err(_) => panic!("slapd did not say it started within 30 s"),
        }
    }

    /// Kill the server: the directory goes down.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The `[directory]` section for `url`, binding as the admin with a 0600 password file.
    pub fn section(&self, url: &str, extra: &str) -> String {
        let password = self.dir.path().join("bind.password");
        write_private(&password, &format!("{ADMIN_PASSWORD}\n"));
        format!(
            "[directory]\nkind = \"ldap\"\nurl = \"{url}\"\nca_file = {:?}\nbind_dn = \"{ADMIN_DN}\"\n\
             bind_password_file = {:?}\nbase = \"{BASE}\"\ntimeout = \"5s\"\n{extra}\n",
            self.ca.ca, password
        )
    }

    pub fn starttls_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.ldap_port)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("password file");
    f.write_all(text.as_bytes()).expect("write password file");
}

/// A loopback port nobody listens on now (the kernel's pick, released for slapd).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
