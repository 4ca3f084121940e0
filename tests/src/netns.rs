//! A network namespace joined to this one by veth pairs, for tests about the network: an otpd
//! "host" runs inside (`Netns::wrap`), reaches a server here over a link, and the test cuts
//! the link (`cut`) to make the server unreachable without stopping it, as a broken switch or
//! a firewall would: packets vanish, nothing answers, nothing refuses. A namespace starts with
//! one link; `add_link` gives it more (a server per link: a primary and its standby, each
//! behind a link of its own). Torn down on drop.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Numbers every namespace and link of this process: names and /30 subnets.
static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Netns {
    name: String,
    /// The link made with the namespace (`cut`, `mend`, `host_ip`).
    first: Link,
    /// This namespace's first link's address on this side (a server here listens on it).
    pub host_ip: String,
}

/// One veth pair between a namespace and this one, on a /30 of its own.
pub struct Link {
    /// The veth end in this namespace.
    outside: String,
    /// This side's address on the link (a server here listens on it).
    pub host_ip: String,
}

/// Is `ip` there and are we root? Otherwise say why and skip.
pub fn available() -> bool {
    crate::skip::require_root() && crate::skip::require_file("/usr/sbin/ip", "iproute2")
}

/// A tag unique among this process's namespaces and links, and its /30: the pid picks the /24
/// (so test processes running side by side differ), the counter the /30 in it.
fn next_tag() -> (String, String, u32) {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    let tag = format!("{:x}{n}", pid % 0x10000);
    let net = format!("10.231.{}", pid % 200 + 20);
    (tag, net, (n % 60) * 4)
}

impl Netns {
    /// A namespace with loopback up and a /30 link to this one.
    pub fn create() -> Netns {
        let (tag, net, fourth) = next_tag();
        let name = format!("otpd-t{tag}");
        ip(&["netns", "add", &name]);
        run_inside(&name, &["link", "set", "lo", "up"]);
        let first = make_link(&name, &tag, &net, fourth);
        Netns {
            name,
            host_ip: first.host_ip.clone(),
            first,
        }
    }

    /// One more link to this namespace, on its own /30 (a route inside to its subnet only).
    pub fn add_link(&self) -> Link {
        let (tag, net, fourth) = next_tag();
        make_link(&self.name, &tag, &net, fourth)
    }

    /// The command prefix that runs a program inside.
    pub fn wrap(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Cut the first link: from inside, the server's address stops answering.
    pub fn cut(&self) {
        self.first.cut();
    }

    /// Mend it.
    pub fn mend(&self) {
        self.first.mend();
    }
}

impl Link {
    /// Cut this link: from inside, the address on this side stops answering (other links
    /// are untouched).
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
        // Deleting the namespace deletes its veth ends, and with them every pair.
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

/// A veth pair from this namespace into `ns`, on the /30 at `net`.`fourth`: this side `.1`,
/// inside `.2`, both up.
fn make_link(ns: &str, tag: &str, net: &str, fourth: u32) -> Link {
    let link = Link {
        outside: format!("vo{tag}h"),
        host_ip: format!("{net}.{}", fourth + 1),
    };
    let inside = format!("vo{tag}n");
    let inner_ip = format!("{net}.{}", fourth + 2);
    ip(&[
        "link",
        "add",
        &link.outside,
        "type",
        "veth",
        "peer",
        "name",
        &inside,
    ]);
    ip(&["link", "set", &inside, "netns", ns]);
    ip(&[
        "addr",
        "add",
        &format!("{}/30", link.host_ip),
        "dev",
        &link.outside,
    ]);
    ip(&["link", "set", &link.outside, "up"]);
    run_inside(
        ns,
        &["addr", "add", &format!("{inner_ip}/30"), "dev", &inside],
    );
    run_inside(ns, &["link", "set", &inside, "up"]);
    link
}

/// `ip ARGS` inside `ns`.
fn run_inside(ns: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns, "ip"];
    all.extend_from_slice(args);
    ip(&all);
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
