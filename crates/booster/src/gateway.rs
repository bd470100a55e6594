//! Transparent mode for a Linux router (`booster gateway --lan IFACE`): every TCP connection
//! a LAN device opens to the outside is steered into the node, with no setting on the device.
//!
//! How: an nftables table of our own, `inet booster_gateway`, with one `nat prerouting` chain
//! that `redirect`s TCP arriving on the LAN interface to the gateway port, except traffic to
//! the router itself, traffic routed back into the LAN, and excluded networks. The node reads
//! each connection's original destination (`SO_ORIGINAL_DST`) and carries it like a SOCKS5
//! CONNECT to that address: the balancer, peers, the bond rules and the splitting of plain
//! HTTP downloads all apply.
//!
//! Only redirected connections are served: a connection that reaches the gateway port
//! directly has no original destination and is closed, so the port is not an open proxy.
//! UDP (DNS included) is not steered: it is routed by the router as before.
//!
//! The rules come off when the gateway exits, on `booster gateway --cleanup`, and (unless
//! `--no-watchdog`) from a small watchdog process that removes them as soon as the gateway
//! process is gone, `kill -9` included, so the LAN never loses its Internet because booster
//! died.

use crate::{
    balancer, logs,
    proxy::Ctx,
    target::{Host, Target},
};
use std::{
    io::Write,
    net::{IpAddr, SocketAddr},
    process::{Command, Stdio},
    time::Duration,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The nftables table booster owns; nothing else in the ruleset is touched.
pub const TABLE: &str = "booster_gateway";
/// Default port redirected connections arrive on.
pub const DEFAULT_PORT: u16 = 4887;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("nftables is not installed (the `nft` command is missing): install the `nftables` package (Debian: apt install nftables; OpenWrt: opkg install nftables)")]
    NoNft,
    #[error("LAN interface `{0}` does not exist (see `ip link`)")]
    NoLan(String),
    #[error("`{0}` is not a valid interface name")]
    BadLan(String),
    #[error("cannot install the gateway rules: {0}")]
    Nft(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What to steer.
#[derive(Debug, Clone)]
pub struct Rules {
    pub lan: String,
    pub port: u16,
    /// Networks left alone (CIDR text, already validated).
    pub exclude: Vec<String>,
    /// Interfaces that lead to the Internet (the uplinks, and those with a default route).
    /// Only destinations the router would route out of one of them are steered, so a second
    /// LAN, a VPN or a DMZ behind the router is left alone. Empty: no such filter.
    pub wan: Vec<String>,
}

impl Rules {
    /// The table, as `nft -f` input. Deleting and re-creating it in one transaction makes
    /// installing idempotent.
    pub fn ruleset(&self) -> String {
        let (v4, v6): (Vec<&String>, Vec<&String>) = self.exclude.iter().partition(|c| !c.contains(':'));
        let set = |items: &[&String]| items.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        let mut chain = format!(
            "    chain prerouting {{\n        type nat hook prerouting priority dstnat; policy accept;\n        \
             iifname != \"{lan}\" return\n        \
             fib daddr type local return\n        \
             fib daddr oifname \"{lan}\" return\n",
            lan = self.lan
        );
        if !self.wan.is_empty() {
            let names: Vec<String> = self.wan.iter().map(|w| format!("\"{w}\"")).collect();
            chain.push_str(&format!(
                "        fib daddr oifname != {{ {} }} return\n",
                names.join(", ")
            ));
        }
        if !v4.is_empty() {
            chain.push_str(&format!("        ip daddr {{ {} }} return\n", set(&v4)));
        }
        if !v6.is_empty() {
            chain.push_str(&format!("        ip6 daddr {{ {} }} return\n", set(&v6)));
        }
        chain.push_str(&format!(
            "        meta l4proto tcp redirect to :{}\n    }}\n",
            self.port
        ));
        format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n{chain}}}\n")
    }

    /// Checks the LAN interface and installs the table.
    pub fn install(&self) -> Result<(), GatewayError> {
        if self.lan.is_empty() || self.lan.contains(['/', '"', ' ']) || self.lan.len() > 15 {
            return Err(GatewayError::BadLan(self.lan.clone()));
        }
        if !std::path::Path::new("/sys/class/net").join(&self.lan).exists() {
            return Err(GatewayError::NoLan(self.lan.clone()));
        }
        nft(&self.ruleset())
    }
}

/// Removes the table. `Ok(false)` when there was none.
pub fn remove() -> Result<bool, GatewayError> {
    match nft(&format!("delete table inet {TABLE}\n")) {
        Ok(()) => Ok(true),
        Err(GatewayError::Nft(e)) if e.contains("No such file") || e.contains("does not exist") => Ok(false),
        Err(e) => Err(e),
    }
}

/// The kernel's handle of the installed table: it changes each time the table is created,
/// so a watchdog that deletes by handle never deletes a newer gateway's table.
pub fn table_handle() -> Result<Option<u64>, GatewayError> {
    let out = Command::new("nft")
        .args(["-a", "list", "table", "inet", TABLE])
        .output()
        .map_err(nft_spawn_error)?;
    if !out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .next()
        .and_then(|l| l.split("# handle ").nth(1))
        .and_then(|h| h.trim().parse().ok()))
}

/// Removes the table created with `handle`; `Ok(false)` when it is gone already (removed,
/// or replaced by a newer gateway's, which stays).
pub fn remove_handle(handle: u64) -> Result<bool, GatewayError> {
    match nft(&format!("delete table inet handle {handle}\n")) {
        Ok(()) => Ok(true),
        Err(GatewayError::Nft(e)) if e.contains("No such file") || e.contains("does not exist") => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the table is installed now.
pub fn installed() -> Result<bool, GatewayError> {
    let out = Command::new("nft")
        .args(["list", "table", "inet", TABLE])
        .output()
        .map_err(nft_spawn_error)?;
    Ok(out.status.success())
}

fn nft(script: &str) -> Result<(), GatewayError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(nft_spawn_error)?;
    child
        .stdin
        .take()
        .expect("stdin was piped")
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(GatewayError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

fn nft_spawn_error(e: std::io::Error) -> GatewayError {
    if e.kind() == std::io::ErrorKind::NotFound {
        GatewayError::NoNft
    } else {
        GatewayError::Io(e)
    }
}

/// Accepts redirected connections until `stop`; each is carried like a SOCKS5 CONNECT to
/// its original destination.
pub async fn serve(listener: TcpListener, ctx: Ctx, stop: CancellationToken, tracker: TaskTracker) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    logs::throttled!(warn, logs::ACCEPTS, error = %e, "gateway accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = ctx.node.admit_client() else {
            continue;
        };
        let ctx = ctx.clone();
        tracker.spawn(async move {
            let conn = ctx.node.conns.register(peer);
            conn.scope(handle(tcp, peer, &ctx)).await;
            drop((conn, admitted));
        });
    }
}

async fn handle(tcp: TcpStream, peer: SocketAddr, ctx: &Ctx) {
    let local = tcp.local_addr().ok();
    let dst = match crate::sys::original_dst(&tcp, local.is_some_and(|a| a.is_ipv6())) {
        Ok(dst) => dst,
        Err(_) => {
            // Not redirected: someone connected to the port itself.
            tracing::debug!(client = %peer, "connection to the gateway port without a redirect; closed");
            return;
        }
    };
    if local.is_some_and(|l| l == dst) {
        return; // would loop into ourselves
    }
    let target = Target {
        host: Host::Ip(dst.ip()),
        port: dst.port(),
    };
    let connected = tokio::select! {
        _ = ctx.kill.cancelled() => return,
        r = balancer::connect(&ctx.node, &target, ctx.scorer.as_ref()) => r,
    };
    let upstream = match connected {
        Ok(u) => u,
        Err(e) => {
            logs::throttled!(info, logs::DIALS, client = %peer, %target, error = %e, "gateway connect failed");
            // A reset tells the device at once, as a refused connection would.
            let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
            return;
        }
    };
    tracing::debug!(client = %peer, %target, source = %upstream.source().name, "gateway connection");
    if let Err(e) = crate::socks::carry(tcp, peer, ctx, target, upstream, Vec::new()).await {
        tracing::debug!(client = %peer, error = %e, "gateway connection ended with an error");
    }
}

/// Binds the gateway port on all IPv4 and IPv6 addresses (two sockets: `SO_ORIGINAL_DST`
/// is per family).
pub fn listeners(port: u16) -> std::io::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for addr in [
        SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port),
        SocketAddr::new(IpAddr::from([0u16; 8]), port),
    ] {
        let domain = if addr.is_ipv4() {
            socket2::Domain::IPV4
        } else {
            socket2::Domain::IPV6
        };
        let sock = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        if addr.is_ipv6() {
            sock.set_only_v6(true)?;
        }
        sock.set_reuse_address(true)?;
        sock.set_nonblocking(true)?;
        match sock.bind(&addr.into()) {
            Ok(()) => {}
            // A host without IPv6 still gets the IPv4 gateway.
            Err(_) if addr.is_ipv6() => continue,
            Err(e) => return Err(e),
        }
        sock.listen(1024)?;
        out.push(TcpListener::from_std(sock.into())?);
    }
    Ok(out)
}

/// The watchdog: a detached copy of booster that removes the rules (the table created with
/// `handle`) once process `pid` is gone. Started by the gateway; exits by itself after
/// cleaning up.
pub fn spawn_watchdog(pid: u32, handle: u64) -> std::io::Result<()> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "gateway",
        "--watch-pid",
        &pid.to_string(),
        "--watch-handle",
        &handle.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    // Its own session: a Ctrl-C or a kill of the gateway's process group spares it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn().map(|_| ())
}

/// Runs the watchdog loop for `pid` (blocking): polls every 200 ms, removes the table
/// `handle` when the process has exited.
pub fn watch(pid: u32, handle: u64) -> Result<(), GatewayError> {
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    while proc_dir.exists() && !is_zombie(pid) {
        std::thread::sleep(Duration::from_millis(200));
    }
    if remove_handle(handle)? {
        eprintln!("booster: gateway process {pid} is gone; its rules were removed");
    }
    Ok(())
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_redirects_lan_tcp_and_leaves_the_rest() {
        let rules = Rules {
            lan: "br-lan".into(),
            port: 4887,
            exclude: vec!["192.0.2.0/24".into(), "2001:db8::/32".into()],
            wan: vec!["eth0".into(), "wwan0".into()],
        };
        let text = rules.ruleset();
        assert!(text.starts_with("table inet booster_gateway {}\ndelete table inet booster_gateway\n"));
        assert!(text.contains("iifname != \"br-lan\" return"));
        assert!(text.contains("fib daddr type local return"));
        assert!(text.contains("fib daddr oifname \"br-lan\" return"));
        assert!(text.contains("fib daddr oifname != { \"eth0\", \"wwan0\" } return"));
        assert!(text.contains("ip daddr { 192.0.2.0/24 } return"));
        assert!(text.contains("ip6 daddr { 2001:db8::/32 } return"));
        assert!(text
            .trim_end()
            .ends_with("meta l4proto tcp redirect to :4887\n    }\n}"));
    }

    #[test]
    fn a_missing_or_bad_lan_is_a_clear_error() {
        let rules = |lan: &str| Rules {
            lan: lan.into(),
            port: 1,
            exclude: vec![],
            wan: vec![],
        };
        assert!(matches!(rules("bt-nope0").install(), Err(GatewayError::NoLan(_))));
        assert!(matches!(rules("a\"b").install(), Err(GatewayError::BadLan(_))));
        assert!(matches!(rules("").install(), Err(GatewayError::BadLan(_))));
    }
}
