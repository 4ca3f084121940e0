//! Shared pieces of the benchmark drivers: deterministic per-user secrets and their TOTP codes,
//! latency statistics, enrollment writers for otpd, google-authenticator and pam_oath, and a
//! supervised otpd.
//!
//! Nothing here is a test: the numbers are reported, never asserted.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The name of bench user `i` (`b0000042`): fixed width so every name costs the same.
pub fn user(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:07}")
}

/// A 160-bit secret derived from the user's index (not random: a benchmark, not a deployment).
pub fn secret(i: usize) -> [u8; 20] {
    let mut s = [0u8; 20];
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    for chunk in s.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    s
}

/// RFC 4648 base32 without padding.
pub fn base32(bytes: &[u8]) -> String {
    const A: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buf = (buf << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(A[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(A[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 4226 HOTP, 6 digits, HMAC-SHA1.
pub fn hotp(key: &[u8], counter: u64) -> u32 {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let off = (h[19] & 0xf) as usize;
    let v = u32::from_be_bytes([h[off] & 0x7f, h[off + 1], h[off + 2], h[off + 3]]);
    v % 1_000_000
}

/// The current 30-second TOTP code of bench user `i`.
pub fn totp_now(i: usize) -> String {
    format!("{:06}", hotp(&secret(i), unix_now() / 30))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The otpd record of bench user `i` (the store's JSON format).
pub fn otpd_record(i: usize, email: Option<&str>) -> String {
    let email = match email {
        Some(e) => format!("\"{e}\""),
        None => "null".into(),
    };
    let totp = if email == "null" {
        format!(
            "{{\"secret\":\"{}\",\"algorithm\":\"SHA1\",\"digits\":6,\"period\":30,\"last_step\":null,\"created\":0}}",
            base32(&secret(i))
        )
    } else {
        "null".into()
    };
    format!("{{\"totp\":{totp},\"pending_totp\":null,\"email\":{email},\"phone\":null}}")
}

/// Write otpd records for users `from..to` into `state_dir/users` (0600 files, 0700 dirs), as
/// `otpctl enroll` + `verify` would leave them, without fsync: a bulk load.
pub fn write_otpd_users(state_dir: &Path, prefix: &str, from: usize, to: usize, email: bool) {
    let dir = state_dir.join("users");
    std::fs::create_dir_all(&dir).expect("users dir");
    for d in [state_dir, dir.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    for i in from..to {
        let name = user(prefix, i);
        let addr = format!("{name}@bench.invalid");
        let rec = otpd_record(i, email.then_some(addr.as_str()));
        write_private(&dir.join(format!("{name}.json")), rec.as_bytes());
    }
}

/// google-authenticator's `~/.google_authenticator`, one per user, DISALLOW_REUSE and
/// RATE_LIMIT on, as `google-authenticator -t -d -r 3 -R 30` writes it.
pub fn write_ga_users(dir: &Path, prefix: &str, from: usize, to: usize) {
    std::fs::create_dir_all(dir).expect("ga dir");
    for i in from..to {
        let text = format!(
            "{}\n\" RATE_LIMIT 3 30\n\" WINDOW_SIZE 3\n\" DISALLOW_REUSE\n\" TOTP_AUTH\n",
            base32(&secret(i))
        );
        let path = dir.join(user(prefix, i));
        std::fs::write(&path, text).expect("ga file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    }
}

/// pam_oath's users file: `HOTP/T30 user - hexsecret` per line.
pub fn write_oath_users(file: &Path, prefix: &str, from: usize, to: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(file).expect("oath file"));
    for i in from..to {
        writeln!(out, "HOTP/T30\t{}\t-\t{}", user(prefix, i), hex(&secret(i))).expect("write");
    }
    out.flush().expect("flush");
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn write_private(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("user file");
    f.write_all(bytes).expect("write");
}

/// Latencies in microseconds.
#[derive(Default, Clone)]
pub struct Stats {
    pub us: Vec<u64>,
}

impl Stats {
    pub fn pct(&self, p: f64) -> f64 {
        if self.us.is_empty() {
            return 0.0;
        }
        let mut v = self.us.clone();
        v.sort_unstable();
        let idx = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
        v[idx.min(v.len() - 1)] as f64
    }
    pub fn merge(&mut self, o: Stats) {
        self.us.extend(o.us);
    }
}

/// An otpd child process on a configuration of ours, killed (SIGTERM, then waited) on drop.
pub struct Otpd {
    pub child: Child,
    pub socket: PathBuf,
    /// From spawn to the `listening on` line.
    pub startup: Duration,
}

impl Otpd {
    /// Start `otpd --config CONFIG` and wait for `listening on`; its later stderr is drained.
    pub fn start(otpd: &Path, config: &Path, socket: &Path) -> Otpd {
        // The sealing key; on a restart keygen finds it and (harmlessly) refuses to replace it.
        let _ = Command::new(otpd)
            .arg("--config")
            .arg(config)
            .arg("keygen")
            .output();
        let t0 = Instant::now();
        let mut child = Command::new(otpd)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn otpd");
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        loop {
            line.clear();
            if err.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("otpd exited before listening");
            }
            if line.contains("listening on") {
                break;
            }
        }
        let startup = t0.elapsed();
        // Keep draining so that otpd never blocks on a full pipe (its audit lines go there too).
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            while err.read_until(b'\n', &mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        Otpd {
            child,
            socket: socket.to_owned(),
            startup,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// utime + stime of the daemon, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Otpd {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

pub fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command: state is field 3; utime 14, stime 15.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(11) + get(12)) / tick
}

/// An otpd configuration for the benches.
pub fn otpd_config(dir: &Path, extra: &str) -> (PathBuf, PathBuf) {
    let socket = dir.join("otpd.sock");
    let state = dir.join("state");
    let cfg = dir.join("otpd.toml");
    let key = dir.join("key");
    std::fs::write(
        &cfg,
        format!(
            "socket = \"{}\"\nstate_dir = \"{}\"\nkey_file = \"{}\"\n\n[totp]\nskew = 1\n\n[lockout]\nmax_failures = 5\n{extra}",
            socket.display(),
            state.display(),
            key.display()
        ),
    )
    .expect("config");
    (cfg, socket)
}

/// One TOTP login of bench user `i` over otpd's socket; true if allowed.
pub fn otp_login(socket: &Path, prefix: &str, i: usize) -> bool {
    match otp_login_why(socket, prefix, i) {
        Ok(()) => true,
        Err(why) => {
            if std::env::var_os("BENCH_WHY").is_some() {
                eprintln!("login {prefix}{i} failed: {why}");
            }
            false
        }
    }
}

/// One TOTP login of bench user `i`; why it was not allowed, if it was not.
fn otp_login_why(socket: &Path, prefix: &str, i: usize) -> Result<(), String> {
    use otp_proto::client::Connection;
    use otp_proto::{Login, Outcome, Reply, Request, Secret};
    let mut c = Connection::connect(socket, Duration::from_secs(10))
        .map_err(|e| format!("connect: {e}"))?;
    let login = Login {
        user: user(prefix, i),
        service: "bench".into(),
        rhost: None,
        tty: None,
        nullok: false,
        forward_pass: None,
    };
    c.send(&Request::Begin(login))
        .map_err(|e| format!("send Begin: {e}"))?;
    loop {
        match c.recv() {
            Ok(Reply::Prompt { .. }) => c
                .send(&Request::Answer(Secret::new(totp_now(i))))
                .map_err(|e| format!("send Answer: {e}"))?,
            Ok(Reply::Info { .. }) | Ok(Reply::Error { .. }) => {}
            Ok(Reply::Outcome(Outcome::Allow)) => return Ok(()),
            Ok(other) => return Err(format!("{other:?}")),
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
}

/// Write `value` as pretty JSON to `path`.
pub fn write_json(path: &Path, value: &serde_json::Value) {
    std::fs::write(path, serde_json::to_string_pretty(value).expect("json")).expect("results");
}

/// `--name value` from the command line, or the default.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A comma-separated list argument.
pub fn list_arg(name: &str, default: &str) -> Vec<usize> {
    arg::<String>(name, default.to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4226_vectors() {
        let key = b"12345678901234567890";
        assert_eq!(hotp(key, 0), 755224);
        assert_eq!(hotp(key, 9), 520489);
    }

    #[test]
    fn base32_of_rfc4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }
}
