//! In-process PAM throughput: N client processes (forked), each looping pam_start / pam_authenticate / pam_end
//! through the real libpam (run it under pam_wrapper), every login for a distinct user whose
//! current TOTP code the conversation computes in-process.
//!
//! `pambench --stack NAME --service SVC --users N --prefix P --duration SECS --conc 1,2,8,64
//!  --out FILE.json [--wrap 1] [--start S] [--stop-after N]` (`--wrap 1`: reuse users, for stacks without codes;
//!  `--start S`: begin at user S, so that runs against one store never reuse a user;
//!  `--stop-after N`: end after N logins, for counts per login).

use otp_bench::{arg, list_arg, totp_now, user, write_json, Stats};
use std::ffi::{c_int, c_void, CString};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pam_otp::ffi::app::{pam_authenticate, pam_end, pam_start};
use pam_otp::ffi::{PamConv, PamMessage, PamResponse, PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON};

/// Answers every prompt with the current code of the user whose index `appdata` points at.
unsafe extern "C" fn conversation(
    n: c_int,
    msgs: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    let n = n as usize;
    let index = unsafe { *(appdata as *const usize) };
    let replies =
        unsafe { libc::calloc(n, std::mem::size_of::<PamResponse>()) } as *mut PamResponse;
    for i in 0..n {
        let msg = unsafe { &**msgs.add(i) };
        if msg.msg_style == PAM_PROMPT_ECHO_OFF || msg.msg_style == PAM_PROMPT_ECHO_ON {
            let code = CString::new(totp_now(index)).expect("code");
            unsafe { (*replies.add(i)).resp = libc::strdup(code.as_ptr()) };
        }
    }
    unsafe { *resp = replies };
    0
}

fn login(service: &CString, name: &CString, index: usize) -> bool {
    let mut idx = index;
    let conv = PamConv {
        conv: Some(conversation),
        appdata_ptr: &mut idx as *mut usize as *mut c_void,
    };
    let mut pamh: *mut c_void = ptr::null_mut();
    unsafe {
        if pam_start(service.as_ptr(), name.as_ptr(), &conv, &mut pamh) != 0 {
            return false;
        }
        let rc = pam_authenticate(pamh, 0);
        pam_end(pamh, rc);
        rc == 0
    }
}

fn main() {
    let stack: String = arg("--stack", "stack".to_owned());
    let service = CString::new(arg("--service", "bench".to_owned())).expect("service");
    let users: usize = arg("--users", 1000);
    let prefix: String = arg("--prefix", "b".to_owned());
    let secs: f64 = arg("--duration", 3.0);
    let wrap = arg("--wrap", 0) == 1;
    let out: String = arg("--out", format!("{stack}.json"));
    let concs = list_arg("--conc", "1,2,8,64");
    let start: usize = arg("--start", 0);
    let stop_after: usize = arg("--stop-after", usize::MAX);

    let warm = AtomicUsize::new(start);
    let next = &warm;
    // Warm-up: load the modules, touch the files once.
    for _ in 0..20 {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let name = CString::new(user(&prefix, i % users)).expect("name");
        login(&service, &name, i % users);
    }
    // The counter every client process takes users from, in shared memory.
    let shared = unsafe {
        libc::mmap(
            ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(shared != libc::MAP_FAILED, "mmap");
    let next = unsafe { &*(shared as *const AtomicUsize) };
    next.store(warm.load(Ordering::Relaxed), Ordering::SeqCst);
    let scratch = std::env::temp_dir().join(format!("pambench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch");
    let mut points = Vec::new();
    for &conc in &concs {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs_f64(secs);
        // One process per client, as sshd forks one per login: libpam and modules keep
        // per-process state (pam_oath's fcntl lock on its users file is per process).
        let mut kids = Vec::new();
        for k in 0..conc {
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork");
            if pid == 0 {
                let (mut st, mut fails) = (Stats::default(), 0usize);
                while Instant::now() < deadline {
                    let mut i = next.fetch_add(1, Ordering::Relaxed);
                    if i.saturating_sub(start + 20) >= stop_after {
                        break;
                    }
                    if i >= users {
                        if !wrap {
                            break;
                        }
                        i %= users;
                    }
                    let name = CString::new(user(&prefix, i)).expect("name");
                    let s = Instant::now();
                    // Only successful logins count toward auth/s and the percentiles.
                    if login(&service, &name, i) {
                        st.us.push(s.elapsed().as_micros() as u64);
                    } else {
                        fails += 1;
                    }
                }
                let text: Vec<String> = st.us.iter().map(|v| v.to_string()).collect();
                let body = format!("{fails}\n{}\n", text.join("\n"));
                let _ = std::fs::write(scratch.join(format!("{k}")), body);
                // exit, not _exit: pam_wrapper removes its per-process dir in a destructor.
                unsafe { libc::exit(0) };
            }
            kids.push(pid);
        }
        for pid in kids {
            let mut status = 0;
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let (mut st, mut fails) = (Stats::default(), 0);
        for k in 0..conc {
            let text = std::fs::read_to_string(scratch.join(format!("{k}"))).unwrap_or_default();
            let mut lines = text.lines();
            fails += lines
                .next()
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(0);
            st.us.extend(lines.filter_map(|l| l.parse::<u64>().ok()));
        }
        let n = st.us.len();
        let rate = n as f64 / elapsed;
        eprintln!(
            "pambench {stack:>8} c={conc:<3} {n:>7} logins in {elapsed:.2}s: {rate:>9.0}/s p50 {:>8.0}us p99 {:>8.0}us failed {fails}",
            st.pct(50.0),
            st.pct(99.0)
        );
        points.push(serde_json::json!({
            "concurrency": conc, "logins": n, "seconds": elapsed, "auth_per_s": rate,
            "p50_us": st.pct(50.0), "p99_us": st.pct(99.0), "failed": fails, "ok": n,
        }));
    }
    let _ = std::fs::remove_dir_all(&scratch);
    write_json(
        std::path::Path::new(&out),
        &serde_json::json!({"stack": stack, "users": users, "points": points}),
    );
}
