//! Isolation: TOTP login latency while ~1,000 email challenges are in flight against an SMTP
//! server that takes 1 s per message, against the same logins without the storm, and against
//! a second otpd the storm does not reach (the control: what the storm's load generator and
//! SMTP server, on the same cores, cost any process here).
//!
//! `stormbench --otpd PATH --dir DIR --emails 1000 --totp-conc 8 --duration SECS --out FILE.json`

use otp_bench::{arg, otp_login, otpd_config, user, write_json, write_otpd_users, Otpd, Stats};
use otp_proto::client::Connection;
use otp_proto::{Login, Reply, Request};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STACK: usize = 128 * 1024;

/// Messages between the end of DATA and our `250`.
static IN_FLIGHT: AtomicI64 = AtomicI64::new(0);
static DELIVERED: AtomicUsize = AtomicUsize::new(0);

/// A minimal SMTP server that accepts everything and takes 1 s per message.
fn smtp_session(s: TcpStream) -> std::io::Result<()> {
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    w.write_all(b"220 bench ESMTP\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => w.write_all(b"250-bench\r\n250 8BITMIME\r\n")?,
            "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => w.write_all(b"250 ok\r\n")?,
            "DATA" => {
                w.write_all(b"354 go on\r\n")?;
                loop {
                    line.clear();
                    if r.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                }
                IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_secs(1));
                IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
                DELIVERED.fetch_add(1, Ordering::Relaxed);
                w.write_all(b"250 queued\r\n")?;
            }
            "QUIT" => {
                w.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => w.write_all(b"250 ok\r\n")?,
        }
    }
}

fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max.min(65536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
}

/// TOTP logins at `conc` for `secs`, each a fresh user from `next`.
fn totp_phase(
    socket: &Path,
    next: &Arc<AtomicUsize>,
    users: usize,
    conc: usize,
    secs: f64,
) -> (Stats, usize) {
    let t0 = Instant::now();
    let handles: Vec<_> = (0..conc)
        .map(|_| {
            let (next, socket) = (next.clone(), socket.to_owned());
            std::thread::spawn(move || {
                let (mut st, mut fails) = (Stats::default(), 0);
                while t0.elapsed().as_secs_f64() < secs {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= users {
                        break;
                    }
                    let s = Instant::now();
                    if !otp_login(&socket, "t", i) {
                        fails += 1;
                    }
                    st.us.push(s.elapsed().as_micros() as u64);
                    // Paced like logins, not a flood: the point is latency, not throughput.
                    std::thread::sleep(Duration::from_millis(2));
                }
                (st, fails)
            })
        })
        .collect();
    let (mut st, mut fails) = (Stats::default(), 0);
    for h in handles {
        let (s, f) = h.join().expect("thread");
        st.merge(s);
        fails += f;
    }
    (st, fails)
}

fn main() {
    raise_fd_limit();
    let otpd: PathBuf = arg("--otpd", PathBuf::from("otpd"));
    let dir: PathBuf = arg("--dir", PathBuf::from("/tmp/otp-stormbench"));
    let emails: usize = arg("--emails", 1000);
    let conc: usize = arg("--totp-conc", 8);
    let secs: f64 = arg("--duration", 4.0);
    let out: String = arg("--out", "storm.json".to_owned());
    std::fs::create_dir_all(&dir).expect("dir");
    let totp_users = 40_000;
    let email_users = emails * (secs as usize + 6) + 1000;
    let state = dir.join("state");
    write_otpd_users(&state, "t", 0, totp_users, false);
    write_otpd_users(&state, "e", 0, email_users, true);

    let smtp = TcpListener::bind("127.0.0.1:0").expect("smtp");
    let port = smtp.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in smtp.incoming().flatten() {
            let _ = std::thread::Builder::new()
                .stack_size(STACK)
                .spawn(move || smtp_session(s));
        }
    });
    let extra = format!(
        "\n[code]\nmax_sends_per_hour = 100\nmax_sends_per_destination_per_hour = 100\n\n[email]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfrom = \"Bench <otp@bench.invalid>\"\ntimeout = \"8s\"\n"
    );
    let (cfg, socket) = otpd_config(&dir, &extra);
    let daemon = Otpd::start(&otpd, &cfg, &socket);
    // The control: a second otpd with the same TOTP users that sees none of the storm. Its
    // logins during the storm measure what the storm's load does to any process on this
    // machine (the storm's client threads and the SMTP server's share the same cores).
    let control_dir = dir.join("control");
    std::fs::create_dir_all(&control_dir).expect("control dir");
    write_otpd_users(&control_dir.join("state"), "t", 0, totp_users, false);
    let (control_cfg, control_socket) = otpd_config(&control_dir, "");
    let control = Otpd::start(&otpd, &control_cfg, &control_socket);
    let control_next = Arc::new(AtomicUsize::new(0));
    totp_phase(&control_socket, &control_next, totp_users, 1, 0.3);
    let next = Arc::new(AtomicUsize::new(0));
    totp_phase(&socket, &next, totp_users, 1, 0.3);
    let (base, base_fail) = totp_phase(&socket, &next, totp_users, conc, secs);
    eprintln!(
        "stormbench quiet: {} TOTP logins, p50 {:.0}us p99 {:.0}us, failed {base_fail}",
        base.us.len(),
        base.pct(50.0),
        base.pct(99.0)
    );

    // The storm: `emails` clients, each beginning an email login for a fresh user, waiting for
    // the prompt (after the 1 s delivery) and hanging up, again and again.
    let stop = Arc::new(AtomicBool::new(false));
    let enext = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..emails)
        .map(|_| {
            let (stop, enext, socket, started) =
                (stop.clone(), enext.clone(), socket.clone(), started.clone());
            std::thread::Builder::new()
                .stack_size(STACK)
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let i = enext.fetch_add(1, Ordering::Relaxed);
                        if i >= email_users {
                            break;
                        }
                        let Ok(mut c) = Connection::connect(&socket, Duration::from_secs(20))
                        else {
                            continue;
                        };
                        let login = Login {
                            user: user("e", i),
                            service: "bench".into(),
                            rhost: None,
                            tty: None,
                            nullok: false,
                            forward_pass: None,
                        };
                        started.fetch_add(1, Ordering::Relaxed);
                        if c.send(&Request::Begin(login)).is_ok() {
                            // otpd says "Sending a code to ..." at once and prompts once the
                            // mail is delivered: wait for the prompt, so each client keeps one
                            // email in flight.
                            while let Ok(Reply::Info { .. }) = c.recv() {}
                        }
                    }
                })
                .expect("client")
        })
        .collect();
    // Let the storm build up to its steady state.
    let ramp = Instant::now();
    while IN_FLIGHT.load(Ordering::SeqCst) < (emails as i64 * 9 / 10)
        && ramp.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let delivered0 = DELIVERED.load(Ordering::Relaxed);
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let s = sampler_stop.clone();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            while !s.load(Ordering::Relaxed) {
                v.push(IN_FLIGHT.load(Ordering::SeqCst));
                std::thread::sleep(Duration::from_millis(50));
            }
            v
        })
    };
    let t0 = Instant::now();
    let (storm, storm_fail) = totp_phase(&socket, &next, totp_users, conc, secs);
    let storm_secs = t0.elapsed().as_secs_f64();
    let delivered = DELIVERED.load(Ordering::Relaxed) - delivered0;
    sampler_stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().expect("sampler");
    let (held, held_fail) = totp_phase(&control_socket, &control_next, totp_users, conc, secs);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let rss = daemon.rss_kib();
    drop(daemon);
    drop(control);
    let mean_in_flight = samples.iter().sum::<i64>() as f64 / samples.len().max(1) as f64;
    let min_in_flight = samples.iter().copied().min().unwrap_or(0);
    eprintln!(
        "stormbench storm: {} TOTP logins, p50 {:.0}us p99 {:.0}us, failed {storm_fail}; email in flight mean {mean_in_flight:.0} min {min_in_flight}, {delivered} delivered ({:.0}/s)",
        storm.us.len(), storm.pct(50.0), storm.pct(99.0), delivered as f64 / storm_secs
    );
    eprintln!(
        "stormbench control (an otpd the storm does not reach, during the storm): {} TOTP logins, p50 {:.0}us p99 {:.0}us, failed {held_fail}",
        held.us.len(), held.pct(50.0), held.pct(99.0)
    );
    write_json(
        Path::new(&out),
        &serde_json::json!({
            "emails_target": emails, "totp_concurrency": conc, "seconds": secs,
            "quiet": {"logins": base.us.len(), "p50_us": base.pct(50.0), "p99_us": base.pct(99.0), "failed": base_fail},
            "storm": {"logins": storm.us.len(), "p50_us": storm.pct(50.0), "p99_us": storm.pct(99.0), "failed": storm_fail,
                      "email_in_flight_mean": mean_in_flight, "email_in_flight_min": min_in_flight,
                      "emails_delivered_per_s": delivered as f64 / storm_secs},
            "control": {"logins": held.us.len(), "p50_us": held.pct(50.0), "p99_us": held.pct(99.0), "failed": held_fail},
            "p99_delta_us": storm.pct(99.0) - base.pct(99.0),
            "otpd_rss_kib": rss,
        }),
    );
}
