//! Several hosts on one machine: network namespaces joined by a bridge, for
//! tests that need nodes on different addresses (no loopback shortcuts) the
//! way volunteers' machines are. Needs root (`ip netns`, veth, bridge).
//!
//! A [`Lan`] makes one "switch" namespace holding the bridge and one
//! namespace per host with `eth0` at `10.77.0.<n>/24` (n from 1); nothing is
//! added to the caller's own namespace, so traffic stays inside namespaces
//! the test made. Dropping it deletes them all. Names carry the process id,
//! so tests in parallel processes do not collide.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Whether this process can make network namespaces (root and `ip` present).
pub fn available() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    root && Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("run ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Hosts on one bridged /24.
pub struct Lan {
    prefix: String,
    hosts: usize,
}

impl Lan {
    /// Makes `hosts` namespaces on one bridge.
    pub fn new(hosts: usize) -> Result<Lan> {
        let prefix = format!("stw{}", std::process::id());
        let lan = Lan { prefix, hosts: 0 };
        let switch = lan.switch();
        ip(&["netns", "add", &switch])?;
        let mut lan = lan;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for n in 1..=hosts {
            let ns = lan.host(n);
            ip(&["netns", "add", &ns])?;
            lan.hosts = n;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let port = format!("p{n}");
            ip(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
                &switch,
            ])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", Lan::addr(n)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &switch, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &switch, "link", "set", &port, "up"])?;
        }
        Ok(lan)
    }

    fn switch(&self) -> String {
        format!("{}sw", self.prefix)
    }

    /// The namespace of host `n` (1-based).
    pub fn host(&self, n: usize) -> String {
        format!("{}h{n}", self.prefix)
    }

    /// The address of host `n` (1-based).
    pub fn addr(n: usize) -> String {
        format!("10.77.0.{n}")
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for n in 1..=self.hosts {
            let _ = ip(&["netns", "del", &self.host(n)]);
        }
        let _ = ip(&["netns", "del", &self.switch()]);
    }
}
