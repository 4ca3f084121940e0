//! systemd's service notifications (sd_notify(3)), written by hand: one datagram per state to
//! the Unix socket named by `$NOTIFY_SOCKET` (a path, or the abstract namespace when it starts
//! with '@'). `READY=1` once listening (`Type=notify`), `WATCHDOG=1` every half of
//! `$WATCHDOG_USEC` (`WatchdogSec=`), `STOPPING=1` at shutdown. Without `$NOTIFY_SOCKET`
//! nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The notification socket systemd gave us.
pub struct Systemd {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Systemd {
    /// From `$NOTIFY_SOCKET`; `None` when unset (not run by systemd) or unusable (logged).
    pub fn from_env() -> Option<Systemd> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        match Systemd::connect(&name) {
            Ok(systemd) => Some(systemd),
            Err(e) => {
                log::warn!("NOTIFY_SOCKET={name:?}: {e}; not notifying systemd");
                None
            }
        }
    }

    fn connect(name: &std::ffi::OsStr) -> std::io::Result<Systemd> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = name.as_bytes();
        let addr = match bytes.split_first() {
            Some((b'@', abstract_name)) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name)?
            }
            Some((b'/', _)) => SocketAddr::from_pathname(std::path::Path::new(name))?,
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "neither an absolute path nor an abstract name",
                ))
            }
        };
        let socket = UnixDatagram::unbound()?;
        // A stuck receiver must never block a runtime thread: a lost ping is systemd's to judge.
        socket.set_nonblocking(true)?;
        Ok(Systemd { socket, addr })
    }

    /// Send one state line, e.g. `READY=1`. A failure is logged, never fatal.
    pub fn send(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            log::warn!("cannot notify systemd ({state}): {e}");
        }
    }

    /// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3)
    /// advises; `None` when the watchdog is off or meant for another process (`$WATCHDOG_PID`).
    pub fn watchdog_every() -> Option<Duration> {
        if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
            if pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id()) {
                return None;
            }
        }
        let usec = std::env::var("WATCHDOG_USEC").ok()?.parse::<u64>().ok()?;
        Some(Duration::from_micros(usec / 2)).filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(listener: &UnixDatagram) -> String {
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn a_state_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let systemd = Systemd::connect(path.as_os_str()).unwrap();
        systemd.send("READY=1");
        assert_eq!(received(&listener), "READY=1");
    }

    #[test]
    fn a_state_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("otpd-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let systemd = Systemd::connect(format!("@{name}").as_ref()).unwrap();
        systemd.send("STOPPING=1");
        assert_eq!(received(&listener), "STOPPING=1");
    }

    #[test]
    fn a_relative_or_empty_name_is_refused() {
        for bad in ["", "notify", "./x"] {
            assert!(Systemd::connect(bad.as_ref()).is_err(), "{bad:?}");
        }
    }
}
