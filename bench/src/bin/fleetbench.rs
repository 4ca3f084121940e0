//! Fleets (issue 12): TOTP logins over otpd's socket with the file store, then with 1, 2 and 4
//! otpd hosts on one PostgreSQL (on the same machine: the network is loopback), one client per
//! host; and the database round trips per login, from the server's own count of statements
//! (pg_stat_statements, top level: each statement otpd sends is one round trip), with the
//! audit rows (written after the reply, by the audit thread) counted apart.
//!
//! `fleetbench --otpd PATH --dir DIR --store FILE --psql CMD --users N --duration SECS
//!  --hosts 1,2,4 --out FILE.json`
//!
//! FILE holds the `[store]` section; CMD runs SQL given as its last argument against the
//! database (for the transaction counts). Users are enrolled in a file store and copied with
//! `otpd migrate --from files --to postgres`, as an admin would.

use otp_bench::{
    arg, list_arg, otpd_config, totp_now, user, write_json, write_otpd_users, Otpd, Stats,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PREFIX: &str = "f";

fn main() {
    let otpd: PathBuf = arg("--otpd", PathBuf::from("otpd"));
    let dir: PathBuf = arg("--dir", PathBuf::from("/tmp/otp-fleetbench"));
    let store_file: PathBuf = arg("--store", PathBuf::from("store.toml"));
    let psql: String = arg("--psql", "psql".to_owned());
    let users: usize = arg("--users", 20_000);
    let secs: f64 = arg("--duration", 3.0);
    let hosts = list_arg("--hosts", "1,2,4");
    let out: String = arg("--out", "fleet.json".to_owned());
    let store = std::fs::read_to_string(&store_file).expect("--store file");
    std::fs::create_dir_all(&dir).expect("dir");

    // The file store: the baseline, at one client.
    let files = dir.join("files");
    std::fs::create_dir_all(&files).expect("dir");
    write_otpd_users(&files.join("state"), PREFIX, 0, users, false);
    let (cfg, socket) = otpd_config(&files, "");
    let baseline = {
        let d = Otpd::start(&otpd, &cfg, &socket);
        let next = Arc::new(AtomicUsize::new(0));
        run(
            std::slice::from_ref(&socket),
            &next,
            users,
            secs,
            d.pid(),
            "files, 1 host",
        )
    };

    // The fleet's users: enrolled in a file store, copied into the database.
    let seed = dir.join("seed");
    std::fs::create_dir_all(&seed).expect("dir");
    write_otpd_users(&seed.join("state"), PREFIX, 0, users, false);
    let (seed_cfg, _) = otpd_config(&seed, &store);
    let key = seed.join("key");
    otpd_ok(&otpd, &seed_cfg, &["keygen"]);
    otpd_ok(&otpd, &seed_cfg, &["migrate"]);
    let t0 = Instant::now();
    otpd_ok(
        &otpd,
        &seed_cfg,
        &["migrate", "--from", "files", "--to", "postgres"],
    );
    eprintln!(
        "fleetbench: {users} users copied in {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    // The host points stop short of the last 3,000 users: the cached rows' 1,000 each.
    let hosts_limit = users.saturating_sub(3 * CACHED_LOGINS);
    let next = Arc::new(AtomicUsize::new(0));
    let mut points = vec![point(&baseline, None)];
    for &n in &hosts {
        let daemons: Vec<Otpd> = (0..n)
            .map(|h| {
                let d = dir.join(format!("h{n}-{h}"));
                std::fs::create_dir_all(&d).expect("dir");
                let (cfg, _) = otpd_config(&d, &store);
                std::fs::copy(&key, d.join("key")).expect("fleet key");
                Otpd::start(&otpd, &cfg, &d.join("otpd.sock"))
            })
            .collect();
        let sockets: Vec<PathBuf> = (0..n)
            .map(|h| dir.join(format!("h{n}-{h}")).join("otpd.sock"))
            .collect();
        let before = statements(&psql);
        let r = run(
            &sockets,
            &next,
            hosts_limit,
            secs,
            daemons[0].pid(),
            &format!("postgres, {n} host(s)"),
        );
        let used = statements(&psql) - before;
        let (path, audit) = used.per_login(r.logins);
        eprintln!("fleetbench: {path:.2} database round trips per login (first login of each user on its host), {audit:.2} audit rows");
        points.push(point(&r, Some(used)));
    }

    // Cached users, then the same with `commit = "fast"` (the spent step not waiting for the
    // WAL flush; docs/design.md, "The fleet store").
    let cached_next = AtomicUsize::new(hosts_limit);
    let cached = |name: &str, store: &str, label: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).expect("dir");
        let (cfg, socket) = otpd_config(&d, store);
        std::fs::copy(&key, d.join("key")).expect("fleet key");
        let host = Otpd::start(&otpd, &cfg, &socket);
        let p = cached_point(&socket, &cached_next, users, &psql, label);
        drop(host);
        p
    };
    points.push(cached("warm", &store, "postgres, cached user"));
    let fast = format!("{store}commit = \"fast\"\n");
    points.push(cached(
        "warm-fast",
        &fast,
        "postgres, cached user, commit = fast",
    ));
    let offline = format!("{store}offline = \"cached\"\n");
    points.push(cached(
        "warm-offline",
        &offline,
        "postgres, cached user, offline = cached",
    ));
    write_json(Path::new(&out), &serde_json::json!({ "points": points }));
}

/// Logins per cached row.
const CACHED_LOGINS: usize = 1000;

/// Up to 1,000 users no earlier point logged in (none left: an empty row, not a wrap-around),
/// each warmed on the host first (`otpctl status` reads the record), then one login each with
/// the right code.
fn cached_point(
    socket: &Path,
    next: &AtomicUsize,
    users: usize,
    psql: &str,
    label: &str,
) -> serde_json::Value {
    let from = next.fetch_add(CACHED_LOGINS, Ordering::Relaxed).min(users);
    let warm = from.saturating_add(CACHED_LOGINS).min(users);
    for i in from..warm {
        status(socket, i);
    }
    let before = statements(psql);
    let mut st = Stats::default();
    for i in from..warm {
        let s = Instant::now();
        login(socket, i, &totp_now(i));
        st.us.push(s.elapsed().as_micros() as u64);
    }
    let logins = warm - from;
    let (path, audit) = (statements(psql) - before).per_login(logins);
    eprintln!(
        "fleetbench {label}, 1 host: {logins} logins p50 {:.0}us p99 {:.0}us, {path:.2} round trips per login, {audit:.2} audit rows",
        st.pct(50.0),
        st.pct(99.0)
    );
    serde_json::json!({
        "store": label, "hosts": 1, "logins": logins,
        "p50_us": st.pct(50.0), "p99_us": st.pct(99.0),
        "round_trips_per_login": path, "audit_rows_per_login": audit,
    })
}

struct Run {
    label: String,
    hosts: usize,
    logins: usize,
    rate: f64,
    st: Stats,
    fails: usize,
}

fn point(r: &Run, used: Option<Statements>) -> serde_json::Value {
    let per = used.map(|u| u.per_login(r.logins));
    serde_json::json!({
        "store": r.label, "hosts": r.hosts, "logins": r.logins, "per_s": r.rate,
        "p50_us": r.st.pct(50.0), "p99_us": r.st.pct(99.0), "failed": r.fails,
        "round_trips_per_login": per.map(|p| p.0),
        "audit_rows_per_login": per.map(|p| p.1),
    })
}

/// One client per socket for `secs`, each login a new user.
fn run(
    sockets: &[PathBuf],
    next: &Arc<AtomicUsize>,
    users: usize,
    secs: f64,
    _pid: u32,
    label: &str,
) -> Run {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs);
    let handles: Vec<_> = sockets
        .iter()
        .map(|socket| {
            let (next, socket) = (next.clone(), socket.clone());
            std::thread::spawn(move || {
                let (mut st, mut fails) = (Stats::default(), 0usize);
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= users {
                        break;
                    }
                    let s = Instant::now();
                    if !login(&socket, i, &totp_now(i)) {
                        fails += 1;
                    }
                    st.us.push(s.elapsed().as_micros() as u64);
                }
                (st, fails)
            })
        })
        .collect();
    let (mut st, mut fails) = (Stats::default(), 0);
    for h in handles {
        let (s, f) = h.join().expect("client");
        st.merge(s);
        fails += f;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let logins = st.us.len();
    let rate = logins as f64 / elapsed;
    eprintln!(
        "fleetbench {label}: {logins} logins in {elapsed:.2}s: {rate:.0}/s p50 {:.0}us p99 {:.0}us, failed {fails}",
        st.pct(50.0),
        st.pct(99.0)
    );
    Run {
        label: label.to_owned(),
        hosts: sockets.len(),
        logins,
        rate,
        st,
        fails,
    }
}

/// One TOTP login of bench user `i` answering `answer`; true if allowed.
fn login(socket: &Path, i: usize, answer: &str) -> bool {
    use otp_proto::client::Connection;
    use otp_proto::{Login, Outcome, Reply, Request, Secret};
    let Ok(mut c) = Connection::connect(socket, Duration::from_secs(10)) else {
        return false;
    };
    let begin = Login {
        user: user(PREFIX, i),
        service: "bench".into(),
        rhost: None,
        tty: None,
        nullok: false,
        forward_pass: None,
    };
    if c.send(&Request::Begin(begin)).is_err() {
        return false;
    }
    loop {
        match c.recv() {
            Ok(Reply::Prompt { .. }) => {
                if c.send(&Request::Answer(Secret::new(answer))).is_err() {
                    return false;
                }
            }
            Ok(Reply::Info { .. }) | Ok(Reply::Error { .. }) => {}
            Ok(Reply::Outcome(o)) => return o == Outcome::Allow,
            _ => return false,
        }
    }
}

/// `otpctl --user U status` over the socket (root may ask for anyone): reads the record.
fn status(socket: &Path, i: usize) {
    use otp_proto::client::Connection;
    use otp_proto::{Command, Request};
    if let Ok(mut c) = Connection::connect(socket, Duration::from_secs(10)) {
        let ask = Command::Status {
            user: Some(user(PREFIX, i)),
        };
        if c.send(&Request::Command(ask)).is_ok() {
            let _ = c.recv();
        }
    }
}

fn otpd_ok(otpd: &Path, cfg: &Path, args: &[&str]) {
    let out = Command::new(otpd)
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .expect("otpd");
    assert!(
        out.status.success() || args == ["keygen"],
        "otpd {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Statements otpd ran in the database so far (pg_stat_statements, top level: each one round
/// trip), not counting the ones asking for this count: those on a login's path, and the audit
/// rows, which the audit writer thread inserts after the reply (docs/design.md, "Audit").
#[derive(Clone, Copy, Default)]
struct Statements {
    path: i64,
    audit: i64,
}

impl Statements {
    /// (round trips, audit rows) per login.
    fn per_login(self, logins: usize) -> (f64, f64) {
        let n = logins.max(1) as f64;
        (self.path as f64 / n, self.audit as f64 / n)
    }
}

impl std::ops::Sub for Statements {
    type Output = Statements;
    fn sub(self, before: Statements) -> Statements {
        Statements {
            path: self.path - before.path,
            audit: self.audit - before.audit,
        }
    }
}

fn statements(psql: &str) -> Statements {
    let sql = "SELECT coalesce(sum(calls) FILTER (WHERE s.query NOT LIKE 'INSERT INTO otpd_audit%'), 0) \
               || ' ' || coalesce(sum(calls) FILTER (WHERE s.query LIKE 'INSERT INTO otpd_audit%'), 0) \
               FROM pg_stat_statements s JOIN pg_database d \
               ON d.oid = s.dbid WHERE d.datname = current_database() \
               AND s.query NOT LIKE '%pg_stat%'";
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{psql} \"$0\""))
        .arg(sql)
        .output()
        .expect("psql");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut n = text
        .lines()
        .next_back()
        .unwrap_or("")
        .split(' ')
        .map(|v| v.trim().parse().unwrap_or(0));
    Statements {
        path: n.next().unwrap_or(0),
        audit: n.next().unwrap_or(0),
    }
}
