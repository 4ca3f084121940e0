//! The blocking client both `pam_otp` and `otpctl` use: connect within a deadline, then one frame
//! at a time, every read and write bounded by the same timeout. No threads, no runtime: safe to
//! run inside sshd. A login runs inside sshd's or a screen locker's latency, so the connection
//! costs few syscalls: the timeouts are set once, before `connect`, and a frame is one `write`
//! and usually one `read` into buffers kept for the connection (issue 16, BENCHMARKS.md).

use crate::frame::{FrameError, FrameReader, FrameWriter};
use crate::{Reply, Request};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// One connection to `otpd`.
pub struct Connection {
    stream: UnixStream,
    reader: FrameReader,
    writer: FrameWriter,
    /// The bound on each wait for a reply; `None` waits as long as it takes.
    read_timeout: Option<Duration>,
}

impl Connection {
    /// Connect within `timeout`, and bound every later read and write by it too.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<Connection> {
        let stream = connect_within(path, timeout)?;
        Ok(Connection {
            stream,
            reader: FrameReader::new(),
            writer: FrameWriter::new(),
            read_timeout: Some(at_least_a_microsecond(timeout)),
        })
    }

    /// The uid of the process that owns the other end (SO_PEERCRED, as it was at its `listen`),
    /// so a client can refuse to talk to a daemon that is not who it should be.
    pub fn peer_uid(&self) -> io::Result<u32> {
        // SAFETY: ucred is plain old data; all zeroes is a valid value.
        let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: a valid socket, and `cred`/`len` describe a buffer of the right size.
        let rc = unsafe {
            libc::getsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                &mut cred as *mut libc::ucred as *mut libc::c_void,
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if len as usize != std::mem::size_of::<libc::ucred>() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "SO_PEERCRED returned a short answer",
            ));
        }
        Ok(cred.uid)
    }

    /// Change the bound on reads, e.g. none while a person types at an `otpctl` prompt.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let timeout = timeout.map(at_least_a_microsecond);
        self.stream.set_read_timeout(timeout)?;
        self.read_timeout = timeout;
        Ok(())
    }

    pub fn send(&mut self, req: &Request) -> Result<(), FrameError> {
        self.writer.write(&mut self.stream, req)
    }

    /// The next reply. The wait for it is a `poll` for input, not a blocking `read`: when otpd
    /// reads our request, the kernel wakes whoever sleeps on our socket to say there is room to
    /// write again, and a blocked `read` would wake for nothing (and cost otpd the wake-up),
    /// once per round trip; a `poll` for input sleeps through that (BENCHMARKS.md, issue 16).
    pub fn recv(&mut self) -> Result<Reply, FrameError> {
        if !self.reader.holds_a_frame() {
            self.wait_for_input()?;
        }
        self.reader.read(&mut self.stream)
    }

    /// Sleep until the socket has input (or a hang-up or an error, which the read then reports),
    /// at most the read timeout.
    fn wait_for_input(&self) -> Result<(), FrameError> {
        let deadline = self.read_timeout.map(|t| Instant::now() + t);
        loop {
            let ms = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    // Round up, so a wait never ends before its time.
                    i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
                }
            };
            let mut fd = libc::pollfd {
                fd: self.stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            match unsafe { libc::poll(&mut fd, 1, ms) } {
                0 => return Err(FrameError::TimedOut),
                n if n > 0 => return Ok(()),
                _ => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err.into());
                    }
                }
            }
        }
    }

    /// Send one request and read one reply.
    pub fn call(&mut self, req: &Request) -> Result<Reply, FrameError> {
        self.send(req)?;
        self.recv()
    }
}

/// A blocking `connect(2)` can hang forever when the daemon has stopped accepting and its backlog
/// is full, unless the socket has a send timeout: on a Unix socket, `connect` waits for room in
/// the backlog at most `SO_SNDTIMEO` and then fails with `EAGAIN` (the kernel's
/// `unix_stream_connect`; the test below fills a backlog to show it). So both timeouts are
/// set on the fresh socket, which bounds the connect and every later read and write, and the
/// socket is never switched between non-blocking and blocking: four syscalls in all.
fn connect_within(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let (addr, addr_len) = sockaddr(path)?;
    // SAFETY: plain socket(2); the fd is owned right away.
    let raw = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
    let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(raw) });
    let bound = Some(at_least_a_microsecond(timeout));
    stream.set_write_timeout(bound)?;
    stream.set_read_timeout(bound)?;
    let start = Instant::now();
    let mut shortened = false;
    loop {
        // SAFETY: `addr` is a valid sockaddr_un of `addr_len` bytes.
        let rc = unsafe {
            libc::connect(
                stream.as_raw_fd(),
                &addr as *const libc::sockaddr_un as *const libc::sockaddr,
                addr_len,
            )
        };
        if rc == 0 {
            if shortened {
                stream.set_write_timeout(bound)?;
            }
            return Ok(stream);
        }
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            // A signal cut the wait short before the backlog had room: wait again, for what is
            // left of the timeout (the socket is still unconnected).
            Some(libc::EINTR) if start.elapsed() < timeout => {
                let left = timeout.saturating_sub(start.elapsed());
                stream.set_write_timeout(Some(left.max(Duration::from_micros(1))))?;
                shortened = true;
                continue;
            }
            Some(libc::EAGAIN) | Some(libc::EINTR) => {
                io::Error::new(io::ErrorKind::TimedOut, "otpd is not accepting connections")
            }
            _ => err,
        });
    }
}

/// A zero socket timeout would mean none at all.
fn at_least_a_microsecond(timeout: Duration) -> Duration {
    timeout.max(Duration::from_micros(1))
}

fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path is empty, too long or contains a NUL byte",
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_missing_socket_fails_at_once() {
        let dir = std::env::temp_dir().join(format!("otp-proto-{}", std::process::id()));
        let err = Connection::connect(&dir.join("nope.sock"), Duration::from_secs(5))
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_daemon_that_never_answers_times_out() {
        let dir = tempdir();
        let path = dir.join("silent.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        let mut conn = Connection::connect(&path, Duration::from_millis(200)).unwrap();
        let err = conn
            .call(&Request::Command(crate::Command::Users))
            .unwrap_err();
        assert!(matches!(err, FrameError::TimedOut), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_peer_uid_is_the_listeners() {
        let dir = tempdir();
        let path = dir.join("me.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        let conn = Connection::connect(&path, Duration::from_secs(1)).unwrap();
        // SAFETY: geteuid has no preconditions.
        assert_eq!(conn.peer_uid().unwrap(), unsafe { libc::geteuid() });
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_socket_nobody_listens_on_is_refused() {
        let dir = tempdir();
        let path = dir.join("stale.sock");
        drop(UnixListener::bind(&path).unwrap());
        let err = Connection::connect(&path, Duration::from_secs(1))
            .err()
            .unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_full_backlog_times_out_instead_of_hanging() {
        let dir = tempdir();
        let path = dir.join("full.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // Never accepted: once the backlog is full, a connect can only wait.
        let mut held = Vec::new();
        let err = loop {
            match Connection::connect(&path, Duration::from_millis(50)) {
                Ok(conn) => held.push(conn),
                Err(e) => break e,
            }
            assert!(held.len() < 100_000, "the backlog never filled");
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        drop(listener);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_timeouts_bound_reads_and_writes_after_connect() {
        let dir = tempdir();
        let path = dir.join("t.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        let conn = Connection::connect(&path, Duration::from_millis(1500)).unwrap();
        assert_eq!(
            conn.stream.read_timeout().unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            conn.stream.write_timeout().unwrap(),
            Some(Duration::from_millis(1500))
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The wait for a reply sleeps once. When the daemon reads our request, the kernel wakes
    /// whoever sleeps on our socket to say there is room to write again: a blocking `read`
    /// would wake for nothing and sleep again (two voluntary context switches); the `poll` for
    /// input sleeps through it (one).
    #[test]
    fn waiting_for_a_reply_is_not_woken_when_the_daemon_reads_the_request() {
        use crate::frame::{read_frame, write_frame};
        let dir = tempdir();
        let path = dir.join("quiet.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let client = std::thread::spawn({
            let path = path.clone();
            move || {
                let mut conn = Connection::connect(&path, Duration::from_secs(10)).unwrap();
                conn.send(&Request::Command(crate::Command::Users)).unwrap();
                // SAFETY: gettid has no preconditions.
                tid_tx.send(unsafe { libc::gettid() }).unwrap();
                let before = voluntary_switches();
                let reply = conn.recv().unwrap();
                (reply, voluntary_switches() - before)
            }
        });
        let (mut daemon, _) = listener.accept().unwrap();
        let tid = tid_rx.recv().unwrap();
        wait_until_asleep(tid);
        let _: Request = read_frame(&mut daemon).unwrap();
        // A woken client is runnable at once; let it fall asleep again before the reply.
        wait_until_asleep(tid);
        write_frame(&mut daemon, &Reply::Outcome(crate::Outcome::Allow)).unwrap();
        let (reply, switches) = client.join().unwrap();
        assert!(matches!(reply, Reply::Outcome(crate::Outcome::Allow)));
        assert_eq!(switches, 1, "the client slept more than once for one reply");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// This thread's voluntary context switches so far (`/proc/thread-self/status`).
    fn voluntary_switches() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap()
    }

    /// Watch thread `tid` of this process until the scheduler has it asleep ("S").
    fn wait_until_asleep(tid: libc::pid_t) {
        let stat = format!("/proc/self/task/{tid}/stat");
        loop {
            let text = std::fs::read_to_string(&stat).unwrap();
            // The state follows the command name, which is in parentheses.
            let state = text.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
            if state == Some("S") {
                return;
            }
            std::thread::yield_now();
        }
    }

    #[test]
    fn an_overlong_path_is_refused() {
        let long = "/tmp/".to_string() + &"x".repeat(200);
        let err = Connection::connect(Path::new(&long), Duration::from_secs(1))
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    fn tempdir() -> std::path::PathBuf {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("otp-proto-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
