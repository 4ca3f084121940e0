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
}

impl Connection {
    /// Connect within `timeout`, and bound every later read and write by it too.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<Connection> {
        let stream = connect_within(path, timeout)?;
        Ok(Connection {
            stream,
            reader: FrameReader::new(),
            writer: FrameWriter::new(),
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
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    pub fn send(&mut self, req: &Request) -> Result<(), FrameError> {
        self.writer.write(&mut self.stream, req)
    }

    pub fn recv(&mut self) -> Result<Reply, FrameError> {
        self.reader.read(&mut self.stream)
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
    // A zero timeout would mean none at all: at least a microsecond.
    let bound = Some(timeout.max(Duration::from_micros(1)));
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
