//! The kernel's floor for a login's shape on this machine: a connect and two round trips of
//! small frames over a Unix socket, to a server process that does nothing else (one thread,
//! blocking `accept`, `read`, `write`). Whatever otpd adds to a login is above this line; it
//! is what a daemon doing any work cannot be expected to go under here (BENCHMARKS.md, "Where a login's time
//! goes").
//!
//! `floorbench --dir DIR --logins N --conc 1,8 --out FILE.json` (N logins per concurrency; one
//! server thread takes the connections in turn, as a single-threaded daemon would)

use otp_bench::{arg, cpu_seconds, list_arg, write_json, Stats};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Instant;

/// About the sizes of a login's frames: Begin, Prompt, Answer, Outcome.
const REQUEST: usize = 64;
const REPLY: usize = 40;

fn main() {
    let dir: PathBuf = arg("--dir", PathBuf::from("/tmp/otp-floorbench"));
    let logins: usize = arg("--logins", 20_000);
    let concs = list_arg("--conc", "1,8");
    let out: String = arg("--out", "floor.json".to_owned());
    std::fs::create_dir_all(&dir).expect("dir");
    let socket = dir.join("floor.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).expect("bind");
    // SAFETY: no other thread runs yet; the child only serves until it is killed.
    let server = unsafe { libc::fork() };
    if server == 0 {
        serve(&listener);
    }
    drop(listener);
    for _ in 0..100 {
        login(&socket);
    }
    let mut points = Vec::new();
    for &conc in &concs {
        let cpu0 = cpu_seconds(server as u32);
        let t0 = Instant::now();
        let clients: Vec<_> = (0..conc)
            .map(|_| {
                let socket = socket.clone();
                std::thread::spawn(move || {
                    let mut st = Stats::default();
                    for _ in 0..logins / conc {
                        let s = Instant::now();
                        login(&socket);
                        st.us.push(s.elapsed().as_micros() as u64);
                    }
                    st
                })
            })
            .collect();
        let mut st = Stats::default();
        for c in clients {
            st.merge(c.join().expect("client"));
        }
        let secs = t0.elapsed().as_secs_f64();
        let n = st.us.len();
        let cpu_us = (cpu_seconds(server as u32) - cpu0) * 1e6 / n as f64;
        let (p50, p99) = (st.pct(50.0), st.pct(99.0));
        println!(
            "floorbench c={conc:<3} {n} logins (connect + 2 round trips) in {secs:.2}s: {:.0}/s p50 {p50:.0}us p99 {p99:.0}us, server CPU {cpu_us:.1}us/login",
            n as f64 / secs
        );
        points.push(serde_json::json!({
            "concurrency": conc, "logins": n, "per_s": n as f64 / secs, "p50_us": p50,
            "p99_us": p99, "server_cpu_us": cpu_us,
        }));
    }
    // SAFETY: our own child.
    unsafe {
        libc::kill(server, libc::SIGKILL);
        libc::waitpid(server, std::ptr::null_mut(), 0);
    }
    let _ = std::fs::remove_file(&socket);
    write_json(
        std::path::Path::new(&out),
        &serde_json::json!({ "points": points }),
    );
}

/// The cheapest daemon: for each connection, answer two requests and hang up.
fn serve(listener: &UnixListener) -> ! {
    let mut buf = [0u8; REQUEST];
    let reply = [7u8; REPLY];
    loop {
        let Ok((mut s, _)) = listener.accept() else {
            continue;
        };
        for _ in 0..2 {
            if s.read_exact(&mut buf).is_err() || s.write_all(&reply).is_err() {
                break;
            }
        }
    }
}

/// One login's shape, as pam_otp does it: connect, then twice a write and a `poll` for the
/// reply before reading it.
fn login(socket: &std::path::Path) {
    let mut s = UnixStream::connect(socket).expect("connect");
    let request = [1u8; REQUEST];
    let mut reply = [0u8; REPLY];
    for _ in 0..2 {
        s.write_all(&request).expect("write");
        let mut fd = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut fd, 1, -1) };
        s.read_exact(&mut reply).expect("read");
    }
}
