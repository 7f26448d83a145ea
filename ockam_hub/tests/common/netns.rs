//! A network namespace joined to this one by a veth pair: a second host on
//! the same machine, whose link can be set down (a partition: nothing
//! passes, no FIN, no RST). Needs root and `ip` (iproute2).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A namespace and its veth pair, deleted when dropped.
pub struct Netns {
    /// The namespace's name (for `ip netns exec`).
    pub name: String,
    /// The veth end in this (the test's) namespace.
    host_if: String,
    /// This namespace's address on the pair.
    pub host_ip: String,
    /// The other namespace's address on the pair.
    pub peer_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// A new namespace and veth pair; `None` (after saying why) where this
    /// machine cannot make one (not root, no iproute2), unless `CI=true` or
    /// `OCKAM_NETNS_REQUIRED=1`: there that is a failure, not a skip.
    pub fn create() -> Option<Netns> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let name = format!("ockam-test-{pid}-{n}");
        // Interface names are at most 15 bytes.
        let host_if = format!("okh{}x{n}", pid % 1_000_000);
        let peer_if = format!("okp{}x{n}", pid % 1_000_000);
        let subnet = format!("10.{}.{}", 200 + pid % 50, n % 64 * 4);
        let ns = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: format!("{subnet}.1"),
            peer_ip: format!("{subnet}.2"),
        };
        let made = ip(&["netns", "add", &name])
            .and_then(|_| {
                ip(&[
                    "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
                ])
            })
            .and_then(|_| ip(&["link", "set", &peer_if, "netns", &name]))
            .and_then(|_| {
                ip(&[
                    "addr",
                    "add",
                    &format!("{}/30", ns.host_ip),
                    "dev",
                    &host_if,
                ])
            })
            .and_then(|_| ip(&["link", "set", &host_if, "up"]))
            .and_then(|_| {
                ip(&[
                    "-n",
                    &name,
                    "addr",
                    "add",
                    &format!("{}/30", ns.peer_ip),
                    "dev",
                    &peer_if,
                ])
            })
            .and_then(|_| ip(&["-n", &name, "link", "set", &peer_if, "up"]))
            .and_then(|_| ip(&["-n", &name, "link", "set", "lo", "up"]));
        match made {
            Ok(()) => Some(ns),
            Err(why) => {
                drop(ns);
                let required = std::env::var("CI").is_ok_and(|v| v == "true")
                    || std::env::var("OCKAM_NETNS_REQUIRED").is_ok_and(|v| v == "1");
                if required {
                    panic!("cannot make a network namespace (CI needs one: run as root with iproute2): {why}");
                }
                eprintln!("SKIPPED: cannot make a network namespace here ({why}); CI=true makes this a failure");
                None
            }
        }
    }

    /// Sets the link between the namespaces up or down (down: a partition).
    pub fn link(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]).unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth end in it, and so the pair.
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}
