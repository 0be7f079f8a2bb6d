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

/// Whether nftables (`nft`) is installed, for [`Lan::nat`].
pub fn nft_available() -> bool {
    Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn netns_exec(ns: &str, args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .with_context(|| format!("run {} in {ns}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} in {ns} failed: {}",
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
    /// Namespaces behind NATs ([`Lan::nat`]), deleted with the LAN.
    private: Vec<String>,
}

impl Lan {
    /// Makes `hosts` namespaces on one bridge.
    pub fn new(hosts: usize) -> Result<Lan> {
        let prefix = format!("stw{}", std::process::id());
        let lan = Lan {
            prefix,
            hosts: 0,
            private: Vec::new(),
        };
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

    /// Turns host `n` into a home router: a new namespace behind it (its
    /// own network `192.168.<n>.0/24`, the host at [`Lan::private_addr`],
    /// default route through the router) whose traffic the router forwards
    /// and masquerades (nftables) onto the LAN, as a NAT does; unsolicited
    /// connections from the LAN are dropped silently, as home routers do.
    /// Nothing on the LAN can open a connection to the private host; its
    /// own connections out work, and so does a hole punch. Returns the private namespace.
    pub fn nat(&mut self, n: usize) -> Result<String> {
        let router = self.host(n);
        let inside = format!("{}n{n}", self.prefix);
        ip(&["netns", "add", &inside])?;
        self.private.push(inside.clone());
        ip(&["-n", &inside, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", &inside, "link", "add", "eth0", "type", "veth", "peer", "name", "lan0", "netns",
            &router,
        ])?;
        ip(&[
            "-n",
            &inside,
            "addr",
            "add",
            &format!("{}/24", Lan::private_addr(n)),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &inside, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            &inside,
            "route",
            "add",
            "default",
            "via",
            &format!("192.168.{n}.1"),
        ])?;
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("192.168.{n}.1/24"),
            "dev",
            "lan0",
        ])?;
        ip(&["-n", &router, "link", "set", "lan0", "up"])?;
        netns_exec(&router, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
        // Like a home router: unsolicited connections from outside are
        // dropped silently (not answered with a reset), replies pass.
        netns_exec(&router, &["nft", "add", "table", "ip", "filter"])?;
        netns_exec(
            &router,
            &[
                "nft",
                "add chain ip filter input { type filter hook input priority 0 ; policy accept ; }",
            ],
        )?;
        netns_exec(
            &router,
            &[
                "nft",
                "add rule ip filter input iifname eth0 ct state new drop",
            ],
        )?;
        netns_exec(
            &router,
            &[
                "nft",
                "add chain ip filter forward { type filter hook forward priority 0 ; policy accept ; }",
            ],
        )?;
        netns_exec(
            &router,
            &[
                "nft",
                "add rule ip filter forward iifname eth0 ct state new drop",
            ],
        )?;
        netns_exec(&router, &["nft", "add", "table", "ip", "nat"])?;
        netns_exec(
            &router,
            &[
                "nft",
                "add chain ip nat postrouting { type nat hook postrouting priority 100 ; }",
            ],
        )?;
        netns_exec(
            &router,
            &[
                "nft",
                &format!(
                    "add rule ip nat postrouting ip saddr 192.168.{n}.0/24 oifname eth0 masquerade"
                ),
            ],
        )?;
        Ok(inside)
    }

    /// The address of the host behind router `n`'s NAT.
    pub fn private_addr(n: usize) -> String {
        format!("192.168.{n}.2")
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in &self.private {
            let _ = ip(&["netns", "del", ns]);
        }
        for n in 1..=self.hosts {
            let _ = ip(&["netns", "del", &self.host(n)]);
        }
        let _ = ip(&["netns", "del", &self.switch()]);
    }
}
