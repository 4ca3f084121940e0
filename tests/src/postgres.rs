//! A throwaway PostgreSQL cluster for the fleet tests: Debian's postgresql-15, initdb'd as
//! `nobody` into a temp dir, listening on 127.0.0.1 on a free port with TLS (a CA of its own,
//! whose server certificate names only IP 127.0.0.1, so `localhost` is a name mismatch), and
//! stopped (immediate) and deleted in Drop. The role `otpd` logs in with a password
//! (scram-sha-256) over TCP; the superuser only over the cluster's Unix socket.
//!
//! Tests that do not stop the server share one cluster (`Cluster::shared`, alive while any
//! test holds it), each on a database of its own (`Cluster::database`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

pub const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The password of the `otpd` role.
pub const PASSWORD: &str = "fleet-test-password";

pub struct Cluster {
    dir: tempfile::TempDir,
    pub port: u16,
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// `otpd`'s password, root 0600.
    pub password_file: PathBuf,
    next_db: AtomicU32,
}

static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

/// Is PostgreSQL there, and are we root (initdb runs as nobody)? Otherwise say why and skip.
pub fn available() -> bool {
    crate::skip::require_root()
        && crate::skip::require_file(&format!("{BIN}/initdb"), "postgresql-15")
}

impl Cluster {
    /// The cluster tests share while one holds it.
    pub fn shared() -> Arc<Cluster> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = shared.upgrade() {
            return c;
        }
        let c = Arc::new(Cluster::start());
        *shared = Arc::downgrade(&c);
        c
    }

    /// A cluster of the caller's own (to stop, to break).
    pub fn start() -> Cluster {
        Cluster::start_listening(&[])
    }

    /// A cluster of its own that also listens (and has its certificate) on `more` addresses:
    /// a netns link's end (tests/src/netns.rs).
    pub fn start_listening(more: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("otpd-pg")
            .tempdir()
            .expect("tempdir");
        chown_nobody(dir.path());
        let data = dir.path().join("data");
        let pw = dir.path().join("superuser.pw");
        std::fs::write(&pw, "superuser-only-over-the-socket\n").expect("pw");
        chown_nobody(&pw);
        run_ok(as_nobody("initdb").args([
            "-D",
            path(&data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--pwfile",
            path(&pw),
            "--no-sync",
        ]));
        let ca = make_certs(dir.path(), more);
        let port = free_port();
        let listen: Vec<&str> = std::iter::once("127.0.0.1")
            .chain(more.iter().copied())
            .collect();
        let conf = format!(
            "listen_addresses = '{}'\nport = {port}\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nfsync = off\n\
             max_connections = 200\nwal_level = replica\nmax_wal_senders = 4\n",
            listen.join(","),
            dir.path().display(),
            dir.path().join("server.pem").display(),
            dir.path().join("server.key").display(),
        );
        let mut text = std::fs::read_to_string(data.join("postgresql.conf")).expect("conf");
        text.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), text).expect("conf");
        if !more.is_empty() {
            // A client on a link's far end: any subnet the server is on, over TLS only.
            let mut hba = std::fs::read_to_string(data.join("pg_hba.conf")).expect("hba");
            hba.push_str("hostssl all all samenet scram-sha-256\n");
            std::fs::write(data.join("pg_hba.conf"), hba).expect("hba");
        }
        let password_file = dir.path().join("otpd.password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("password");
        set_mode(&password_file, 0o600);
        let cluster = Cluster {
            ca,
            password_file,
            port,
            dir,
            next_db: AtomicU32::new(0),
        };
        cluster.pg_ctl_start();
        cluster.psql(
            "postgres",
            &format!("CREATE ROLE otpd LOGIN PASSWORD '{PASSWORD}'"),
        );
        cluster
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A fresh database owned by `otpd`; its name.
    pub fn database(&self) -> String {
        let n = self.next_db.fetch_add(1, Ordering::SeqCst);
        let name = format!("fleet{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name} OWNER otpd"));
        name
    }

    /// `[store]` for otpd on `db`: TLS verified against the cluster's CA.
    pub fn store_toml(&self, db: &str) -> String {
        self.store_toml_at("127.0.0.1", db)
    }

    /// The same, reaching the cluster at `ip` (one of `start_listening`'s).
    pub fn store_toml_at(&self, ip: &str, db: &str) -> String {
        self.store_toml_with(&format!(
            "postgresql://otpd@{ip}:{}/{db}?sslmode=verify-full",
            self.port
        ))
    }

    pub fn store_toml_with(&self, url: &str) -> String {
        format!(
            "[store]\nbackend = \"postgres\"\nurl = {url:?}\npassword_file = {:?}\nca_file = {:?}\n",
            self.password_file, self.ca
        )
    }

    /// Run SQL as the superuser (over the Unix socket); stdout.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = run_ok(as_nobody("psql").args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            path(self.dir.path()),
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-c",
            sql,
        ]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Open a transaction as the superuser on `db` and run `sql` in it, left open until
    /// `Held::release` (e.g. a table lock that makes otpd's statements wait, so each holds a
    /// pooled connection meanwhile). Whether `sql` ran is for the caller to poll (`pg_locks`).
    pub fn hold(&self, db: &str, sql: &str) -> Held {
        let mut child = as_nobody("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run psql");
        let stdin = child.stdin.as_mut().expect("psql's stdin");
        writeln!(stdin, "BEGIN;\n{sql};").expect("write to psql");
        stdin.flush().expect("write to psql");
        Held { child }
    }

    /// `pg_dump` of `db`, as text.
    pub fn dump(&self, db: &str) -> String {
        let out = run_ok(as_nobody("pg_dump").args([
            "-h",
            path(self.dir.path()),
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            db,
        ]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A streaming-replication standby of this cluster (`pg_basebackup -R`), on a port of its
    /// own, started; commits on this cluster then wait until the standby applied them
    /// (`synchronous_commit = remote_apply`), so what a login spent is on both.
    pub fn standby(&self) -> Cluster {
        self.standby_listening(&[])
    }

    /// The same, also listening on `more` addresses (a netns link's end), with a certificate
    /// of its own for 127.0.0.1 and them, whose CA is added to this cluster's CA file (`ca`,
    /// the one clients are given), so clients verify either server by its address. It still
    /// replicates over this cluster's Unix socket.
    pub fn standby_listening(&self, more: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("otpd-pg-standby")
            .tempdir()
            .expect("tempdir");
        chown_nobody(dir.path());
        let data = dir.path().join("data");
        run_ok(as_nobody("pg_basebackup").args([
            "-h",
            path(self.dir.path()),
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-D",
            path(&data),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        ]));
        let port = free_port();
        let mut text = std::fs::read_to_string(data.join("postgresql.conf")).expect("conf");
        text.push_str(&format!(
            "port = {port}\nunix_socket_directories = '{}'\n",
            dir.path().display()
        ));
        if !more.is_empty() {
            // Later lines win over the ones copied from this cluster's configuration.
            let ca = make_certs(dir.path(), more);
            let mut trusted = std::fs::read(&self.ca).expect("the CA file");
            trusted.extend(std::fs::read(&ca).expect("the standby's CA"));
            std::fs::write(&self.ca, trusted).expect("the CA file");
            let listen: Vec<&str> = std::iter::once("127.0.0.1")
                .chain(more.iter().copied())
                .collect();
            text.push_str(&format!(
                "listen_addresses = '{}'\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                listen.join(","),
                dir.path().join("server.pem").display(),
                dir.path().join("server.key").display(),
            ));
        }
        std::fs::write(data.join("postgresql.conf"), text).expect("conf");
        let standby = Cluster {
            ca: self.ca.clone(),
            password_file: self.password_file.clone(),
            port,
            dir,
            next_db: AtomicU32::new(0),
        };
        standby.pg_ctl_start();
        self.psql(
            "postgres",
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
        );
        self.psql(
            "postgres",
            "ALTER SYSTEM SET synchronous_commit = 'remote_apply'",
        );
        self.psql("postgres", "SELECT pg_reload_conf()");
        standby
    }

    /// `pg_ctl promote`: a standby becomes a primary (waits until it accepts writes).
    pub fn promote(&self) {
        run_ok(as_nobody("pg_ctl").args(["-D", path(&self.data()), "-w", "promote"]));
    }

    /// Stop the server (immediate: as a crash or a pulled cable looks to otpd).
    pub fn stop(&self) {
        run_ok(as_nobody("pg_ctl").args([
            "-D",
            path(&self.data()),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]));
    }

    /// Start it again on the same data and port.
    pub fn pg_ctl_start(&self) {
        let log = self.dir.path().join("postgres.log");
        run_ok(as_nobody("pg_ctl").args([
            "-D",
            path(&self.data()),
            "-l",
            path(&log),
            "-w",
            "-t",
            "30",
            "start",
        ]));
    }
}

/// A superuser's transaction left open (`Cluster::hold`); rolled back if never released.
pub struct Held {
    child: std::process::Child,
}

impl Held {
    /// Commit, and wait for psql to end.
    pub fn release(mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            writeln!(stdin, "COMMIT;").expect("write to psql");
        }
        let status = self.child.wait().expect("wait for psql");
        assert!(status.success(), "psql holding a transaction: {status}");
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_nobody("pg_ctl")
            .args(["-D", path(&self.data()), "-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn as_nobody(program: &str) -> Command {
    let mut cmd = crate::skip::as_nobody(&Path::new(BIN).join(program));
    cmd.env("LC_ALL", "C").current_dir("/");
    cmd
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[track_caller]
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run a PostgreSQL program");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn chown_nobody(p: &Path) {
    std::os::unix::fs::chown(p, Some(65534), Some(65534)).expect("chown nobody");
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A CA and a server certificate for IP 127.0.0.1 (and `more` addresses) only, so a client
/// naming `localhost` is refused, copied into `dir` with the key readable by nobody alone.
fn make_certs(dir: &Path, more: &[&str]) -> PathBuf {
    let names: Vec<String> = std::iter::once("127.0.0.1")
        .chain(more.iter().copied())
        .map(|ip| format!("IP:{ip}"))
        .collect();
    let ca = crate::ca::TestCa::for_names(&names.join(","));
    for (from, to) in [
        (&ca.ca, "ca.pem"),
        (&ca.cert, "server.pem"),
        (&ca.key, "server.key"),
    ] {
        std::fs::copy(from, dir.join(to)).expect("copy the test certificates");
    }
    for f in ["server.pem", "server.key"] {
        chown_nobody(&dir.join(f));
    }
    set_mode(&dir.join("server.key"), 0o600);
    dir.join("ca.pem")
}
