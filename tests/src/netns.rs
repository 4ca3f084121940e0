//! A network namespace joined to this one by a veth pair, for tests about the network: an otpd
//! "host" runs inside (`Netns::wrap`), reaches a server here over the link, and the test cuts
//! the link (`cut`) to make the server unreachable without stopping it, as a broken switch or
//! a firewall would: packets vanish, nothing answers, nothing refuses. Torn down on drop.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Netns {
    name: String,
    /// The veth end in this namespace.
    outside: String,
    /// This namespace's address on the link (a server here listens on it).
    pub host_ip: String,
}

/// Is `ip` there and are we root? Otherwise say why and skip.
pub fn available() -> bool {
    crate::skip::require_root() && crate::skip::require_file("/usr/sbin/ip", "iproute2")
}

impl Netns {
    /// A namespace with loopback up and a /30 link to this one.
    pub fn create() -> Netns {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("{:x}{n}", pid % 0x10000);
        // A /30 per namespace: the pid picks the /24 (so test processes running side by side
        // differ), the counter the /30 in it.
        let (third, fourth) = (pid % 200 + 20, (n % 60) * 4);
        let ns = Netns {
            name: format!("otpd-t{tag}"),
            outside: format!("vo{tag}h"),
            host_ip: format!("10.231.{third}.{}", fourth + 1),
        };
        let inside = format!("vo{tag}n");
        let inner_ip = format!("10.231.{third}.{}", fourth + 2);
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.outside,
            "type",
            "veth",
            "peer",
            "name",
            &inside,
        ]);
        ip(&["link", "set", &inside, "netns", &ns.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.outside,
        ]);
        ip(&["link", "set", &ns.outside, "up"]);
        let inner = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inner(&["link", "set", "lo", "up"]);
        inner(&["addr", "add", &format!("{inner_ip}/30"), "dev", &inside]);
        inner(&["link", "set", &inside, "up"]);
        ns
    }

    /// The command prefix that runs a program inside.
    pub fn wrap(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Cut the link: from inside, the server's address stops answering.
    pub fn cut(&self) {
        ip(&["link", "set", &self.outside, "down"]);
    }

    /// Mend it.
    pub fn mend(&self) {
        ip(&["link", "set", &self.outside, "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, and with it the pair.
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
