//! otpd with 10k, 100k and 1M enrolled users: start-up time (spawn to `listening on`), RSS, and
//! the latency of TOTP logins of users picked across the whole store.
//!
//! `scalebench --otpd PATH --dir DIR --sizes 10000,100000,1000000 --samples 2000 --out FILE.json`

use otp_bench::{arg, list_arg, otp_login, otpd_config, write_json, write_otpd_users, Otpd, Stats};
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let otpd: PathBuf = arg("--otpd", PathBuf::from("otpd"));
    let dir: PathBuf = arg("--dir", PathBuf::from("/tmp/otp-scalebench"));
    let samples: usize = arg("--samples", 2000);
    let out: String = arg("--out", "scale.json".to_owned());
    let sizes = list_arg("--sizes", "10000,100000,1000000");
    std::fs::create_dir_all(&dir).expect("dir");
    let (cfg, socket) = otpd_config(&dir, "");
    let prefix = "s";
    let mut have = 0;
    let mut used = std::collections::HashSet::new();
    let mut points = Vec::new();
    for &n in &sizes {
        let t0 = Instant::now();
        write_otpd_users(&dir.join("state"), prefix, have, n, false);
        let write_s = t0.elapsed().as_secs_f64();
        have = n;
        let daemon = Otpd::start(&otpd, &cfg, &socket);
        let rss_start = daemon.rss_kib();
        // Users spread over the whole store (a multiplicative stride), each used once.
        let mut st = Stats::default();
        let mut fails = 0;
        let mut k = 0usize;
        while st.us.len() < samples {
            k += 1;
            let i = (k.wrapping_mul(2_654_435_761)) % n;
            if !used.insert(i) {
                continue;
            }
            let s = Instant::now();
            if !otp_login(&socket, prefix, i) {
                fails += 1;
            }
            st.us.push(s.elapsed().as_micros() as u64);
        }
        let rss = daemon.rss_kib();
        let startup_ms = daemon.startup.as_secs_f64() * 1e3;
        drop(daemon);
        eprintln!(
            "scalebench {n:>8} users (written in {write_s:.1}s): start-up {startup_ms:.1}ms, RSS {:.1} MB at start, {:.1} MB after {samples} logins; p50 {:.0}us p99 {:.0}us, failed {fails}",
            rss_start as f64 / 1024.0, rss as f64 / 1024.0, st.pct(50.0), st.pct(99.0)
        );
        points.push(serde_json::json!({
            "users": n, "startup_ms": startup_ms, "rss_start_kib": rss_start, "rss_kib": rss,
            "samples": samples, "p50_us": st.pct(50.0), "p99_us": st.pct(99.0), "failed": fails,
            "write_seconds": write_s,
        }));
    }
    write_json(
        std::path::Path::new(&out),
        &serde_json::json!({"points": points}),
    );
}
