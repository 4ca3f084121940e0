//! otpd alone: TOTP verifications per second over its socket at several concurrencies, and the
//! daemon's CPU per verification (utime + stime from /proc/PID/stat, before and after).
//!
//! `daemonbench --otpd PATH --dir DIR --users N --duration SECS --conc 1,2,8,64 --out FILE.json`

use otp_bench::{arg, list_arg, otp_login, otpd_config, write_json, write_otpd_users, Otpd, Stats};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let otpd: PathBuf = arg("--otpd", PathBuf::from("otpd"));
    let dir: PathBuf = arg("--dir", PathBuf::from("/tmp/otp-daemonbench"));
    let users: usize = arg("--users", 200_000);
    let secs: f64 = arg("--duration", 3.0);
    let out: String = arg("--out", "daemon.json".to_owned());
    let concs = list_arg("--conc", "1,2,8,64");
    std::fs::create_dir_all(&dir).expect("dir");
    let prefix = "d";
    // `--socket S --pid P`: drive a daemon someone else started (for profiling it).
    let external: Option<PathBuf> = std::env::args()
        .any(|a| a == "--socket")
        .then(|| arg("--socket", PathBuf::new()));
    let (daemon, socket, pid) = match external {
        Some(s) => (None, s, arg("--pid", 0u32)),
        None => {
            write_otpd_users(&dir.join("state"), prefix, 0, users, false);
            let (cfg, socket) = otpd_config(&dir, "");
            let d = Otpd::start(&otpd, &cfg, &socket);
            let pid = d.pid();
            (Some(d), socket, pid)
        }
    };
    let next = Arc::new(AtomicUsize::new(0));
    for _ in 0..20 {
        otp_login(&socket, prefix, next.fetch_add(1, Ordering::Relaxed));
    }
    let mut points = Vec::new();
    for &conc in &concs {
        let stop = Arc::new(AtomicBool::new(false));
        let cpu0 = otp_bench::cpu_seconds(pid);
        let t0 = Instant::now();
        let handles: Vec<_> = (0..conc)
            .map(|_| {
                let (next, stop, socket) = (next.clone(), stop.clone(), socket.clone());
                std::thread::spawn(move || {
                    let (mut st, mut fails) = (Stats::default(), 0usize);
                    let deadline = t0 + Duration::from_secs_f64(secs);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= users {
                            stop.store(true, Ordering::Relaxed);
                            break;
                        }
                        let s = Instant::now();
                        if !otp_login(&socket, prefix, i) {
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
            let (s, f) = h.join().expect("thread");
            st.merge(s);
            fails += f;
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = otp_bench::cpu_seconds(pid) - cpu0;
        let n = st.us.len();
        let rate = n as f64 / elapsed;
        let cpu_us = if n > 0 { cpu * 1e6 / n as f64 } else { 0.0 };
        eprintln!(
            "daemonbench c={conc:<3} {n:>7} verifications in {elapsed:.2}s: {rate:>9.0}/s p50 {:>7.0}us p99 {:>7.0}us, otpd CPU {cpu_us:.1}us/verification ({:.2} cores), failed {fails}",
            st.pct(50.0), st.pct(99.0), cpu / elapsed
        );
        points.push(serde_json::json!({
            "concurrency": conc, "verifications": n, "seconds": elapsed, "per_s": rate,
            "p50_us": st.pct(50.0), "p99_us": st.pct(99.0), "otpd_cpu_us_per_verification": cpu_us,
            "otpd_cores_busy": cpu / elapsed, "failed": fails,
        }));
    }
    let rss = daemon.as_ref().map(|d| d.rss_kib()).unwrap_or(0);
    drop(daemon);
    write_json(
        std::path::Path::new(&out),
        &serde_json::json!({"users": users, "otpd_rss_kib": rss, "points": points}),
    );
}
