//! Set-up helpers for `bench/run`:
//!
//! - `benchprep otpd-users STATE_DIR PREFIX FROM TO [email]`: otpd records (TOTP, or email only)
//! - `benchprep ga-users DIR PREFIX FROM TO`: one google-authenticator secret file per user
//! - `benchprep oath-users FILE PREFIX FROM TO`: a pam_oath users file
//! - `benchprep devlog OUT.json`: a syslog receiver on /dev/log (bound only if absent, removed
//!   again on SIGTERM/SIGINT); writes how many lines it drained and whether it owned /dev/log.

use otp_bench::{write_ga_users, write_json, write_oath_users, write_otpd_users};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let num = |i: usize| -> usize { a[i].parse().expect("number") };
    let t0 = Instant::now();
    match a.get(1).map(String::as_str) {
        Some("otpd-users") => write_otpd_users(
            Path::new(&a[2]),
            &a[3],
            num(4),
            num(5),
            a.get(6).is_some_and(|s| s == "email"),
        ),
        Some("ga-users") => write_ga_users(Path::new(&a[2]), &a[3], num(4), num(5)),
        Some("oath-users") => write_oath_users(Path::new(&a[2]), &a[3], num(4), num(5)),
        Some("devlog") => return devlog(Path::new(&a[2])),
        _ => {
            eprintln!("usage: benchprep otpd-users|ga-users|oath-users|devlog ...");
            std::process::exit(2);
        }
    }
    eprintln!(
        "benchprep {}: {} users in {:.2}s",
        a[1],
        num(5) - num(4),
        t0.elapsed().as_secs_f64()
    );
}

fn devlog(out: &Path) {
    let path = Path::new("/dev/log");
    let existed = path.exists();
    let sock = if existed {
        None
    } else {
        Some(UnixDatagram::bind(path).expect("bind /dev/log"))
    };
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let count = Arc::new(AtomicU64::new(0));
    if let Some(sock) = sock.as_ref() {
        let sock = sock.try_clone().expect("clone");
        let count = count.clone();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            loop {
                if sock.recv(&mut buf).is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    println!("ready");
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    write_json(
        out,
        &serde_json::json!({
            "dev_log": if existed { "existed; left alone (its own receiver drained it)" } else { "absent; bound by the bench, drained, removed" },
            "lines_drained": count.load(Ordering::Relaxed),
        }),
    );
}
