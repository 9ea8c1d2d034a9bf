//! Separate hosts on one machine: Linux network namespaces joined by a bridge.
//!
//! A [`Network`] is a private switch (a namespace holding a bridge) and one namespace per
//! host, each wired to the switch by a veth pair and given its own address in
//! `10.213.7.0/24`. Processes start inside a host with [`Network::command`] (`ip netns exec`);
//! [`Network::set_link`] unplugs a host's cable at the switch, so its packets are dropped and
//! its TCP connections hang rather than fail, as behind a lost link. Nothing is added to the
//! machine's own namespace, and dropping the network kills what runs inside and removes it,
//! also when a test panics; namespaces a killed test run left behind are removed by the next.
//!
//! Making namespaces needs root (CAP_SYS_ADMIN) and `ip` (iproute2): without them
//! [`Network::create`] says why the test skips ([`crate::skip`]: under `CI=true` it fails).

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The first three octets of every network's addresses (each network is private, so they
/// may overlap).
const SUBNET: [u8; 3] = [10, 213, 7];

/// Namespace names start with this, then the owning process id.
const PREFIX: &str = "fruits-t";

/// One host of a [`Network`].
#[derive(Debug, Clone)]
pub struct Host {
    /// The name it was given.
    pub name: String,
    /// Its network namespace.
    pub ns: String,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Its cable's end at the switch.
    port: String,
}

/// A switch and the hosts plugged into it; removed, with every process inside, when dropped.
#[derive(Debug)]
pub struct Network {
    id: String,
    switch: String,
    hosts: Vec<Host>,
}

/// Runs `ip ARGS`; the error names the command and what it printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Kills every process in namespace `ns`, then removes it.
fn remove_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<libc::pid_t>() {
                // SAFETY: kill(2) takes plain integers; `pid` was listed by the kernel as a
                // process inside this test's own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = ip(&["netns", "del", ns]);
}

/// Removes the namespaces of test processes that no longer run (killed before their drop).
fn remove_orphans() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let ns = line.split_whitespace().next().unwrap_or_default();
        let Some(owner) = ns
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !std::path::Path::new("/proc").join(owner).exists() {
            remove_namespace(ns);
        }
    }
}

impl Network {
    /// A switch and one host per name, addresses `10.213.7.2` onwards in order; `None` after
    /// saying why when namespaces cannot be made here.
    pub fn create(names: &[&str]) -> Option<Network> {
        static NETWORKS: AtomicUsize = AtomicUsize::new(0);
        remove_orphans();
        let id = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NETWORKS.fetch_add(1, Ordering::Relaxed)
        );
        let switch = format!("{id}-switch");
        let made = ip(&["netns", "add", &switch])
            .and_then(|()| ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]))
            .and_then(|()| ip(&["-n", &switch, "link", "set", "br0", "up"]));
        if let Err(why) = made {
            remove_namespace(&switch);
            crate::skip(&format!(
                "cannot make network namespaces (root and iproute2 needed): {why}"
            ));
            return None;
        }
        let mut network = Network {
            id,
            switch,
            hosts: Vec::new(),
        };
        for name in names {
            network.add_host(name);
        }
        Some(network)
    }

    /// Plugs a new host into the switch (the next free address) and returns it.
    pub fn add_host(&mut self, name: &str) -> Host {
        let n = self.hosts.len() + 1;
        let host = Host {
            name: name.to_string(),
            ns: format!("{}-{n}", self.id),
            addr: Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], 1 + n as u8),
            port: format!("p{n}"),
        };
        // Registered first, so that a failure below still removes what was made.
        self.hosts.push(host.clone());
        let cidr = format!("{}/24", host.addr);
        let (ns, sw, port) = (host.ns.as_str(), self.switch.as_str(), host.port.as_str());
        let steps: [&[&str]; 6] = [
            &["netns", "add", ns],
            &[
                "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns",
                sw,
            ],
            &["-n", sw, "link", "set", port, "master", "br0", "up"],
            &["-n", ns, "addr", "add", &cidr, "dev", "eth0"],
            &["-n", ns, "link", "set", "eth0", "up"],
            &["-n", ns, "link", "set", "lo", "up"],
        ];
        for step in steps {
            if let Err(e) = ip(step) {
                panic!("plugging in host {name}: {e}");
            }
        }
        host
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in this network"))
    }

    /// `program` to be run on host `name` (through `ip netns exec`, which then becomes it: the
    /// child's pid is the program's).
    pub fn command(&self, name: &str, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host(name).ns])
            .arg(program);
        cmd
    }

    /// Keeps host `name`'s outgoing connections off `ports` (e.g. `"50050-50052"`), as on a
    /// machine whose services bind fixed ports (`net.ipv4.ip_local_reserved_ports`, which each
    /// namespace has its own of): otherwise a connection made before a service binds (an
    /// executor's own, to the scheduler) can take that service's port from the ephemeral range.
    pub fn reserve_ports(&self, name: &str, ports: &str) {
        let set = format!("echo {ports} > /proc/sys/net/ipv4/ip_local_reserved_ports");
        if let Err(e) = ip(&["netns", "exec", &self.host(name).ns, "sh", "-c", &set]) {
            panic!("reserving ports {ports} on host {name}: {e}");
        }
    }

    /// Plugs host `name`'s cable in (`up`) or out at the switch. Out, the host's own side stays
    /// up: what it sends is lost, and its connections hang until their own timeouts.
    pub fn set_link(&self, name: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        let port = &self.host(name).port;
        if let Err(e) = ip(&["-n", &self.switch, "link", "set", port, state]) {
            panic!("setting host {name}'s link {state}: {e}");
        }
    }

    /// Whether a TCP connection from host `from` to `to` succeeds within `patience` (tried
    /// every 50 ms).
    pub fn reachable(&self, from: &str, to: SocketAddrV4, patience: Duration) -> bool {
        let path = format!("/run/netns/{}", self.host(from).ns);
        let until = Instant::now() + patience;
        std::thread::scope(|s| {
            s.spawn(|| {
                // This thread, and only it, moves into the host's network namespace.
                let Ok(file) = std::fs::File::open(&path) else {
                    return false;
                };
                use std::os::fd::AsRawFd;
                // SAFETY: setns(2) takes a file descriptor and a flag; `file` is open for the
                // whole call, and CLONE_NEWNET moves only the calling thread, which ends below.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return false;
                }
                loop {
                    let timeout = Duration::from_millis(500);
                    if std::net::TcpStream::connect_timeout(&SocketAddr::V4(to), timeout).is_ok() {
                        return true;
                    }
                    if Instant::now() >= until {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
            .join()
            .unwrap_or(false)
        })
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for host in &self.hosts {
            remove_namespace(&host.ns);
        }
        remove_namespace(&self.switch);
    }
}
