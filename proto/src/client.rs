//! The blocking client both `pam_otp` and `otpctl` use: connect within a deadline, then one frame
//! at a time, every read and write bounded by the same timeout. No threads, no runtime: safe to
//! run inside sshd.

use crate::frame::{read_frame, write_frame, FrameError};
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
}

impl Connection {
    /// Connect within `timeout`, and bound every later read and write by it too.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<Connection> {
        let stream = connect_within(path, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Connection { stream })
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
        write_frame(&mut self.stream, req)
    }

    pub fn recv(&mut self) -> Result<Reply, FrameError> {
        read_frame(&mut self.stream)
    }

    /// Send one request and read one reply.
    pub fn call(&mut self, req: &Request) -> Result<Reply, FrameError> {
        self.send(req)?;
        self.recv()
    }
}

/// A blocking `connect(2)` can hang forever when the daemon has stopped accepting and its backlog
/// is full, so connect non-blocking and retry `EAGAIN` until the deadline.
fn connect_within(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let start = Instant::now();
    let deadline = start
        .checked_add(timeout)
        .unwrap_or(start + Duration::from_secs(3600));
    let (addr, addr_len) = sockaddr(path)?;
    loop {
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: `addr` is a valid sockaddr_un of `addr_len` bytes.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_un as *const libc::sockaddr,
                addr_len,
            )
        };
        if rc == 0 {
            let stream = UnixStream::from(fd);
            stream.set_nonblocking(false)?;
            return Ok(stream);
        }
        let err = io::Error::last_os_error();
        let now = Instant::now();
        if err.raw_os_error() != Some(libc::EAGAIN) || now >= deadline {
            return Err(if err.raw_os_error() == Some(libc::EAGAIN) {
                io::Error::new(io::ErrorKind::TimedOut, "otpd is not accepting connections")
            } else {
                err
            });
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
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
