//! Builds a profile's namespaces and links and hands back a [`Lab`] with cut / blackhole /
//! restore / set_rate, counters and helpers to run things inside the namespaces.
//!
//! Per profile (addresses use `k`, the 1-based index of the uplink in the profile):
//! ```text
//!  node ns (home)                 router ns (r-home-adsl)              internet ns (inet)
//!  adsl 10.k.1.2/24 ──veth── node 10.k.1.1/24   inet 10.k.2.1/24 ──veth── rk-adsl 10.k.2.2/24
//!   tbf (upload)              tbf (download)      │                     lo 10.99.0.1/32 (origin)
//!                                 └─ dl0 (TUN): delay line, both directions
//! ```
//! - In the router, `ip rule iif node|inet lookup 100` sends every transit packet into the
//!   TUN (`table 100: default dev dl0`); what the delay line writes back arrives with
//!   `iif dl0` and is routed by the main table. So each direction crosses it once, RTT/2.
//! - In the node, every uplink has its own default route (`metric 10k`), so binding a socket
//!   to the device (SO_BINDTODEVICE) finds a route; and a source rule
//!   `from 10.k.1.2 lookup 100+k` so binding to the address works too.
//! - `peers` adds a LAN: namespace `lan` with bridge `br0`; each node joins with `lan0`
//!   (10.200.0.n/24), shaped at the LAN rate, no delay line.
//! - [`LabOptions::extra_unnamed_iface`] adds `spare0` (10.250.0.2/24) in `home`, a direct,
//!   unshaped path to the internet namespace with a default route of metric 1000: an interface
//!   booster must never use unless told to.
//! - [`LabOptions::client_behind`] adds namespace `client` behind a node, which becomes its
//!   home router: a veth LAN `lan-cl` (router 10.201.0.1/24) ↔ `eth0` (client 10.201.0.2/24),
//!   the client's default route via the router, and in the router IP forwarding plus a plain
//!   masquerade of the client LAN out of any other interface. Without booster the client's
//!   traffic leaves by the router's own default route (its first uplink, metric 10), as
//!   behind any home router; `booster gateway --lan lan-cl` in the router steers it instead.
//!
//! Rates are TCP goodput: tbf counts Ethernet frames (1514 bytes for a full segment carrying
//! 1448 bytes of payload with timestamps), so the tbf rate is the profile rate × 1514/1448.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::delayline::{self, DelayConfig, DelayControl, DelayLine};
use crate::netns::{self, Netns};
use crate::profile::{LinkSpec, Profile};

/// The origin address in the internet namespace, where servers (origin, relay) listen.
pub const ORIGIN_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

/// Name of the unnamed extra interface in `home` ([`LabOptions::extra_unnamed_iface`]).
pub const SPARE_IFACE: &str = "spare0";

/// Name of each node's LAN interface in the `peers` profile.
pub const LAN_IFACE: &str = "lan0";

/// The router's side of the client LAN ([`LabOptions::client_behind`]), in the router's
/// namespace: what `booster gateway --lan` is given.
pub const CLIENT_LAN_IFACE: &str = "lan-cl";
/// The client's only interface, in the client namespace.
pub const CLIENT_IFACE: &str = "eth0";
/// The router's address on the client LAN.
pub const CLIENT_ROUTER_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
/// The client's address.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
/// The nftables table (in the router namespace) that masquerades the client LAN. Separate
/// from anything booster installs.
const CLIENT_NAT_TABLE: &str = "bt_lab_nat";

/// Name of the delay line's TUN device inside each router namespace.
const TUN_IFACE: &str = "dl0";

/// Routing table the router uses to steer transit packets into the delay line.
const DELAY_TABLE: &str = "100";

/// Full-size Ethernet frame and the TCP payload it carries (MSS 1448 with timestamps).
const FRAME_BYTES: u64 = 1514;
const PAYLOAD_BYTES: u64 = 1448;

/// Optional extras of a lab.
#[derive(Debug, Clone, Default)]
pub struct LabOptions {
    /// Adds `spare0` in `home`: a working route out that booster must never pick by itself.
    pub extra_unnamed_iface: bool,
    /// Adds a `client` namespace on a LAN behind this node (e.g. `Some("home")`), which routes
    /// and masquerades the client's traffic like a home router. Needs `nft` (nftables).
    pub client_behind: Option<&'static str>,
}

/// The client behind a router node ([`LabOptions::client_behind`]).
#[derive(Debug, Clone)]
pub struct Client {
    /// The client's namespace, `bt-<id>-client`.
    pub ns: String,
    /// The node that is its router, and that node's namespace.
    pub router: String,
    pub router_ns: String,
    /// The router's LAN interface ([`CLIENT_LAN_IFACE`]) and address.
    pub router_iface: String,
    pub router_ip: Ipv4Addr,
    /// The client's address ([`CLIENT_IP`]) on [`CLIENT_IFACE`].
    pub ip: Ipv4Addr,
}

/// One uplink of one node, as built.
#[derive(Debug, Clone)]
pub struct Uplink {
    pub node: String,
    pub spec: LinkSpec,
    /// Interface name in the node namespace (the link name, e.g. `adsl`).
    pub iface: String,
    pub node_ns: String,
    /// The router namespace (for `spare0`: the internet namespace).
    pub router_ns: String,
    /// The node's address on this uplink, 10.k.1.2.
    pub addr: Ipv4Addr,
    /// The router's address, 10.k.1.1.
    pub gateway: Ipv4Addr,
}

/// What was done to a link, so `restore` knows what to undo.
#[derive(Debug, Default)]
struct LinkState {
    cut: bool,
    rate_bps: u64,
}

struct Link {
    k: u8,
    delay: Option<DelayLine>,
    control: Option<Arc<DelayControl>>,
    state: Mutex<LinkState>,
}

/// A built topology. Dropping it stops the delay lines, kills processes left inside its
/// namespaces and deletes every namespace.
pub struct Lab {
    id: String,
    nodes: Vec<(String, String)>,
    internet: String,
    lan: Option<String>,
    lan_ips: Vec<(String, Ipv4Addr)>,
    uplinks: Vec<Uplink>,
    links: Vec<Link>,
    spare: Option<Uplink>,
    client: Option<Client>,
    /// Dropped last: deleting a namespace under a running delay line is harmless but noisy.
    namespaces: Vec<Netns>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("id", &self.id)
            .field("uplinks", &self.uplinks)
            .finish_non_exhaustive()
    }
}

/// tbf bucket size in bytes. It must hold at least a couple of full frames, and the kernel
/// refills it from a timer, so it must also cover a few ms at the rate, or a late wakeup on a
/// busy host costs throughput. 2 ms at the rate, at least 10 frames: 4 and 20 Mbit get
/// ~15 KB (bursts of ≤ 6 ms / 1.2 ms at line rate), 300 Mbit gets 75 KB.
fn tbf_burst(rate_bps: u64) -> u64 {
    (rate_bps / 8 / 500).max(10 * FRAME_BYTES)
}

/// tbf queue limit in bytes: one bandwidth-delay product, at least twice the bucket.
///
/// One BDP of buffer lets a single loss-based TCP flow keep the link full through its window
/// cuts (CUBIC needs ~0.4 BDP, Reno 1), while queueing adds at most one base RTT under load;
/// more would only be bufferbloat.
///
/// The floor of two buckets (20 frames, 30 KB, for slow links) has a hard reason: veths carry
/// GSO packets of up to 64 KB, tbf only splits those larger than the bucket, and a packet
/// larger than the whole queue is dropped every time (a 300 Mbit LAN without a TUN hop
/// collapsed to kbit/s that way). It also keeps small-BDP links (4 Mbit/30 ms = 15 KB) from
/// dropping initial windows; the cost is at most 60 ms of queue on the 4 Mbit link.
fn tbf_limit(rate_bps: u64, rtt: Duration) -> u64 {
    let bdp = (rate_bps as f64 / 8.0 * rtt.as_secs_f64()) as u64;
    bdp.max(2 * tbf_burst(rate_bps))
}

/// The tbf rate that makes TCP goodput equal `rate_bps`.
fn tbf_rate(rate_bps: u64) -> u64 {
    rate_bps * FRAME_BYTES / PAYLOAD_BYTES
}

/// Installs or changes the tbf on `iface` in `ns`.
fn shape(ns: &str, iface: &str, rate_bps: u64, rtt: Duration) -> Result<()> {
    let (rate, burst) = (tbf_rate(rate_bps), tbf_burst(rate_bps));
    let limit = tbf_limit(rate_bps, rtt);
    let cmd = format!("qdisc replace dev {iface} root tbf rate {rate}bit burst {burst} limit {limit}");
    netns::tc(ns, &cmd.split_whitespace().collect::<Vec<_>>()).map(drop)
}

/// `ip -n NS …` with the arguments given as one line, split on whitespace (interface and
/// namespace names never contain any). Keeps the topology readable as plain `ip` commands.
fn ip(ns: &str, cmd: &str) -> Result<String> {
    netns::ip(ns, &cmd.split_whitespace().collect::<Vec<_>>())
}

fn net(k: u8, sub: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, k, sub, host)
}

/// Interface names are limited to 15 bytes.
fn ifname(s: String) -> String {
    s.chars().take(15).collect()
}

/// The bridge port of `node`'s LAN veth, in the LAN namespace.
pub fn lan_port(node: &str) -> String {
    ifname(format!("p-{node}"))
}

/// Sysctls every lab namespace gets: no IPv6 (no stray RS/MLD packets in counters or
/// through the delay lines) and no reverse-path filter (the routers' TUN hop is asymmetric).
const BASE_SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv6/conf/all/disable_ipv6", "1"),
    ("net/ipv6/conf/default/disable_ipv6", "1"),
    ("net/ipv4/conf/all/rp_filter", "0"),
    ("net/ipv4/conf/default/rp_filter", "0"),
];

impl Lab {
    /// Builds `profile` with no extras. Needs root, iproute2 and `/dev/net/tun`.
    pub fn build(profile: &Profile) -> Result<Lab> {
        Self::build_with(profile, LabOptions::default())
    }

    /// Builds `profile` with `options`. On error, everything built so far is torn down.
    pub fn build_with(profile: &Profile, options: LabOptions) -> Result<Lab> {
        netns::check_prereqs()?;
        if let Err(e) = netns::cleanup_stale() {
            tracing::warn!("cleaning stale lab namespaces: {e:#}");
        }
        let id = netns::unique_id();
        let mut lab = Lab {
            internet: netns::ns_name(&id, "inet"),
            id,
            nodes: Vec::new(),
            lan: None,
            lan_ips: Vec::new(),
            uplinks: Vec::new(),
            links: Vec::new(),
            spare: None,
            client: None,
            namespaces: Vec::new(),
        };
        lab.build_internet()?;
        for node in &profile.nodes {
            let ns = netns::ns_name(&lab.id, node.name);
            lab.new_ns(&ns)?;
            lab.nodes.push((node.name.to_owned(), ns));
        }
        let mut k = 0u8;
        for (node, link) in profile.links() {
            k = k
                .checked_add(1)
                .filter(|k| *k < 99)
                .ok_or_else(|| anyhow!("too many uplinks"))?;
            lab.build_uplink(k, node.name, link)
                .with_context(|| format!("building uplink {}/{}", node.name, link.name))?;
        }
        if let Some(rate) = profile.lan_rate_bps {
            lab.build_lan(rate).context("building the LAN")?;
        }
        if options.extra_unnamed_iface {
            lab.build_spare().context("building spare0")?;
        }
        if let Some(router) = options.client_behind {
            lab.build_client(router)
                .with_context(|| format!("building the client behind {router}"))?;
        }
        Ok(lab)
    }

    fn new_ns(&mut self, name: &str) -> Result<()> {
        let ns = Netns::create(name)?;
        self.namespaces.push(ns);
        netns::sysctls(name, BASE_SYSCTLS)
    }

    fn build_internet(&mut self) -> Result<()> {
        let inet = self.internet.clone();
        self.new_ns(&inet)?;
        ip(&inet, &format!("addr add {ORIGIN_IP}/32 dev lo"))?;
        Ok(())
    }

    fn build_uplink(&mut self, k: u8, node: &str, spec: &LinkSpec) -> Result<()> {
        let node_ns = self.node_ns(node).to_owned();
        let router = netns::ns_name(&self.id, &format!("r-{node}-{}", spec.name));
        let inet = self.internet.clone();
        let iface = spec.name.to_owned();
        if iface.len() > 15 {
            bail!("link name {iface} is longer than 15 bytes");
        }
        self.new_ns(&router)?;
        let forwarding = [("net/ipv4/ip_forward", "1"), ("net/ipv4/conf/all/send_redirects", "0")];
        netns::sysctls(&router, &forwarding)?;
        let (addr, gateway) = (net(k, 1, 2), net(k, 1, 1));
        let (r_up, i_side) = (net(k, 2, 1), net(k, 2, 2));
        let inet_if = ifname(format!("r{k}-{}", spec.name));

        // Node <-> router.
        ip(
            &node_ns,
            &format!("link add name {iface} type veth peer name node netns {router}"),
        )?;
        ip(&node_ns, &format!("addr add {addr}/24 dev {iface}"))?;
        ip(&node_ns, &format!("link set dev {iface} up"))?;
        ip(&router, &format!("addr add {gateway}/24 dev node"))?;
        ip(&router, "link set dev node up")?;

        // Router <-> internet.
        ip(
            &router,
            &format!("link add name inet type veth peer name {inet_if} netns {inet}"),
        )?;
        ip(&router, &format!("addr add {r_up}/24 dev inet"))?;
        ip(&router, "link set dev inet up")?;
        ip(&inet, &format!("addr add {i_side}/24 dev {inet_if}"))?;
        ip(&inet, &format!("link set dev {inet_if} up"))?;
        ip(&router, &format!("route add default via {i_side} dev inet"))?;
        ip(&inet, &format!("route add 10.{k}.1.0/24 via {r_up}"))?;

        // The delay line, and policy routing of all transit traffic through it.
        let bottleneck = tbf_limit(spec.rate_bps, spec.rtt) as usize;
        let dl = DelayLine::start(
            &router,
            DelayConfig {
                ifname: TUN_IFACE.to_owned(),
                delay: spec.rtt / 2,
                jitter: spec.jitter,
                loss: spec.loss,
                queue_limit: delayline::queue_limit(spec.rate_bps, spec.rtt, bottleneck),
                node_net: (net(k, 1, 0), 24),
            },
        )?;
        let control = dl.control();
        let state = LinkState {
            cut: false,
            rate_bps: spec.rate_bps,
        };
        self.links.push(Link {
            k,
            delay: Some(dl),
            control: Some(control),
            state: Mutex::new(state),
        });
        netns::sysctls(&router, &[("net/ipv4/conf/dl0/rp_filter", "0")])?;
        // The TUN drops (it does not push back) when its ring of `txqueuelen` packets is full,
        // so give the reader thread ~100 ms of slack at 50k packets/s.
        ip(&router, &format!("link set dev {TUN_IFACE} txqueuelen 5000 up"))?;
        ip(
            &router,
            &format!("route add default dev {TUN_IFACE} table {DELAY_TABLE}"),
        )?;
        ip(&router, &format!("rule add pref 100 iif node lookup {DELAY_TABLE}"))?;
        ip(&router, &format!("rule add pref 101 iif inet lookup {DELAY_TABLE}"))?;

        // Rate, both directions: upload on the node's veth, download on the router's.
        shape(&node_ns, &iface, spec.rate_bps, spec.rtt)?;
        shape(&router, "node", spec.rate_bps, spec.rtt)?;

        let up = Uplink {
            node: node.to_owned(),
            spec: spec.clone(),
            iface,
            node_ns,
            router_ns: router,
            addr,
            gateway,
        };
        add_routes(&up, k)?;
        self.uplinks.push(up);
        Ok(())
    }

    fn build_lan(&mut self, rate_bps: u64) -> Result<()> {
        let lan = netns::ns_name(&self.id, "lan");
        self.new_ns(&lan)?;
        self.lan = Some(lan.clone());
        ip(&lan, "link add name br0 type bridge")?;
        ip(&lan, "link set dev br0 up")?;
        // The LAN has no delay line; its RTT is the veths' (well under 1 ms). Size the queue as
        // if it were 1 ms so a 300 Mbit LAN still gets a sensible buffer.
        let rtt = Duration::from_millis(1);
        let nodes = self.nodes.clone();
        for (n, (node, node_ns)) in nodes.iter().enumerate() {
            let n = u8::try_from(n + 1).context("too many nodes")?;
            let addr = Ipv4Addr::new(10, 200, 0, n);
            let port = lan_port(node);
            ip(
                node_ns,
                &format!("link add name {LAN_IFACE} type veth peer name {port} netns {lan}"),
            )?;
            ip(&lan, &format!("link set dev {port} master br0"))?;
            ip(&lan, &format!("link set dev {port} up"))?;
            ip(node_ns, &format!("addr add {addr}/24 dev {LAN_IFACE}"))?;
            ip(node_ns, &format!("link set dev {LAN_IFACE} up"))?;
            shape(node_ns, LAN_IFACE, rate_bps, rtt)?;
            shape(&lan, &port, rate_bps, rtt)?;
            self.lan_ips.push((node.clone(), addr));
        }
        Ok(())
    }

    fn build_spare(&mut self) -> Result<()> {
        let (node, home) = self.nodes.first().cloned().ok_or_else(|| anyhow!("no node"))?;
        let inet = self.internet.clone();
        let (addr, gateway) = (Ipv4Addr::new(10, 250, 0, 2), Ipv4Addr::new(10, 250, 0, 1));
        let peer = "spare-home";
        ip(
            &home,
            &format!("link add name {SPARE_IFACE} type veth peer name {peer} netns {inet}"),
        )?;
        ip(&home, &format!("addr add {addr}/24 dev {SPARE_IFACE}"))?;
        ip(&home, &format!("link set dev {SPARE_IFACE} up"))?;
        ip(&inet, &format!("addr add {gateway}/24 dev {peer}"))?;
        ip(&inet, &format!("link set dev {peer} up"))?;
        let spec = LinkSpec {
            name: SPARE_IFACE,
            rate_bps: 0,
            rtt: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
        };
        let up = Uplink {
            node,
            spec,
            iface: SPARE_IFACE.to_owned(),
            node_ns: home,
            router_ns: inet,
            addr,
            gateway,
        };
        add_routes(&up, SPARE_K)?;
        self.spare = Some(up);
        Ok(())
    }

    fn build_client(&mut self, router: &str) -> Result<()> {
        let router_ns = self
            .nodes
            .iter()
            .find(|(n, _)| n == router)
            .map(|(_, ns)| ns.clone())
            .ok_or_else(|| anyhow!("lab has no node {router:?}"))?;
        let have_nft = std::process::Command::new("nft")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !have_nft {
            bail!("the client LAN masquerades with nftables: install it (apt-get install nftables)");
        }
        let ns = netns::ns_name(&self.id, "client");
        self.new_ns(&ns)?;
        let (lan, r_ip, c_ip) = (CLIENT_LAN_IFACE, CLIENT_ROUTER_IP, CLIENT_IP);
        let c_net = Ipv4Addr::from(u32::from(c_ip) & 0xffff_ff00);
        ip(
            &router_ns,
            &format!("link add name {lan} type veth peer name {CLIENT_IFACE} netns {ns}"),
        )?;
        ip(&router_ns, &format!("addr add {r_ip}/24 dev {lan}"))?;
        ip(&router_ns, &format!("link set dev {lan} up"))?;
        ip(&ns, &format!("addr add {c_ip}/24 dev {CLIENT_IFACE}"))?;
        ip(&ns, &format!("link set dev {CLIENT_IFACE} up"))?;
        ip(&ns, &format!("route add default via {r_ip} dev {CLIENT_IFACE}"))?;
        netns::sysctls(
            &router_ns,
            &[("net/ipv4/ip_forward", "1"), ("net/ipv4/conf/all/send_redirects", "0")],
        )?;
        // A plain home-router NAT: whatever the client sends out of any other interface
        // leaves with that interface's address, so replies find their way back.
        let nat = format!(
            "add table ip {CLIENT_NAT_TABLE}; \
             add chain ip {CLIENT_NAT_TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}; \
             add rule ip {CLIENT_NAT_TABLE} postrouting ip saddr {c_net}/24 oifname != \"{lan}\" masquerade"
        );
        netns::run(netns::exec(&router_ns, "nft").arg(nat)).context("installing the client LAN's masquerade")?;
        self.client = Some(Client {
            ns,
            router: router.to_owned(),
            router_ns,
            router_iface: lan.to_owned(),
            router_ip: r_ip,
            ip: c_ip,
        });
        Ok(())
    }

    /// The lab's unique id (the `<id>` in `bt-<id>-<role>`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The namespace of node `node`, e.g. `bt-3f9ax1b2c-home`. Panics on an unknown node.
    pub fn node_ns(&self, node: &str) -> &str {
        self.nodes
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, ns)| ns.as_str())
            .unwrap_or_else(|| panic!("lab has no node {node:?}"))
    }

    /// Node names, in profile order (`home` first).
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|(n, _)| n.as_str())
    }

    /// The internet namespace, where [`Lab::origin_ip`] lives.
    pub fn internet_ns(&self) -> &str {
        &self.internet
    }

    /// The LAN namespace (bridge), for profiles with a LAN.
    pub fn lan_ns(&self) -> Option<&str> {
        self.lan.as_deref()
    }

    /// 10.99.0.1, on `lo` of the internet namespace.
    pub fn origin_ip(&self) -> Ipv4Addr {
        ORIGIN_IP
    }

    /// A node's address on the LAN (`lan0`), for profiles with a LAN.
    pub fn lan_ip(&self, node: &str) -> Option<Ipv4Addr> {
        self.lan_ips.iter().find(|(n, _)| n == node).map(|(_, ip)| *ip)
    }

    /// Every uplink of every node, in profile order.
    pub fn uplinks(&self) -> &[Uplink] {
        &self.uplinks
    }

    /// One uplink. Panics if the node has no such link.
    pub fn uplink(&self, node: &str, link: &str) -> &Uplink {
        self.find(node, link)
            .map(|(u, _)| u)
            .unwrap_or_else(|_| panic!("lab has no uplink {node}/{link}"))
    }

    /// `spare0` in `home`, when built with [`LabOptions::extra_unnamed_iface`].
    pub fn spare(&self) -> Option<&Uplink> {
        self.spare.as_ref()
    }

    /// The client behind a router node, when built with [`LabOptions::client_behind`].
    pub fn client(&self) -> Option<&Client> {
        self.client.as_ref()
    }

    fn find(&self, node: &str, link: &str) -> Result<(&Uplink, Option<&Link>)> {
        if let Some(i) = self.uplinks.iter().position(|u| u.node == node && u.spec.name == link) {
            return Ok((&self.uplinks[i], self.links.get(i)));
        }
        match &self.spare {
            Some(s) if s.node == node && s.iface == link => Ok((s, None)),
            _ => Err(anyhow!("lab has no uplink {node}/{link}")),
        }
    }

    fn link(&self, node: &str, link: &str) -> Result<(&Uplink, &Link)> {
        match self.find(node, link)? {
            (u, Some(l)) => Ok((u, l)),
            _ => Err(anyhow!("{node}/{link} has no delay line or shaping")),
        }
    }

    /// The delay line's control handle of an uplink (delay, jitter, loss, blackhole, stats).
    pub fn delay_control(&self, node: &str, link: &str) -> Result<Arc<DelayControl>> {
        let (_, l) = self.link(node, link)?;
        l.control
            .clone()
            .ok_or_else(|| anyhow!("{node}/{link} has no delay line"))
    }

    /// Takes the node-side interface down: the kernel drops its routes, sockets bound to it
    /// fail. Undo with [`Lab::restore`].
    pub fn cut(&self, node: &str, link: &str) -> Result<()> {
        let (u, l) = self.find(node, link)?;
        ip(&u.node_ns, &format!("link set dev {} down", u.iface))?;
        if let Some(l) = l {
            l.state.lock().unwrap_or_else(|p| p.into_inner()).cut = true;
        }
        Ok(())
    }

    /// Leaves the interface up but drops every packet in the delay line, both directions.
    pub fn blackhole(&self, node: &str, link: &str) -> Result<()> {
        self.delay_control(node, link)?.blackhole(true);
        Ok(())
    }

    /// Undoes [`Lab::cut`] and [`Lab::blackhole`]: interface up, routes back, packets flow.
    pub fn restore(&self, node: &str, link: &str) -> Result<()> {
        let (u, l) = self.find(node, link)?;
        ip(&u.node_ns, &format!("link set dev {} up", u.iface))?;
        // Taking a device down deletes the routes through it; put ours back.
        add_routes(u, l.map(|l| l.k).unwrap_or(SPARE_K))?;
        if let Some(l) = l {
            l.state.lock().unwrap_or_else(|p| p.into_inner()).cut = false;
            if let Some(c) = &l.control {
                c.blackhole(false);
            }
        }
        Ok(())
    }

    /// Whether [`Lab::cut`] is in effect for this uplink.
    pub fn is_cut(&self, node: &str, link: &str) -> Result<bool> {
        let (_, l) = self.link(node, link)?;
        Ok(l.state.lock().unwrap_or_else(|p| p.into_inner()).cut)
    }

    /// Changes an uplink's rate (both directions) at runtime.
    pub fn set_rate(&self, node: &str, link: &str, rate_bps: u64) -> Result<()> {
        if rate_bps == 0 {
            bail!("rate must be positive; use cut or blackhole to stop a link");
        }
        let (u, l) = self.link(node, link)?;
        shape(&u.node_ns, &u.iface, rate_bps, u.spec.rtt)?;
        shape(&u.router_ns, "node", rate_bps, u.spec.rtt)?;
        if let Some(c) = &l.control {
            let bottleneck = tbf_limit(rate_bps, u.spec.rtt) as usize;
            c.set_queue_limit(delayline::queue_limit(rate_bps, u.spec.rtt, bottleneck));
        }
        l.state.lock().unwrap_or_else(|p| p.into_inner()).rate_bps = rate_bps;
        Ok(())
    }

    /// Current shaped rate of an uplink in bits per second.
    pub fn rate(&self, node: &str, link: &str) -> Result<u64> {
        let (_, l) = self.link(node, link)?;
        Ok(l.state.lock().unwrap_or_else(|p| p.into_inner()).rate_bps)
    }

    /// `(rx bytes, tx bytes)` of the node-side interface of an uplink.
    pub fn counters(&self, node: &str, link: &str) -> Result<(u64, u64)> {
        let (u, _) = self.find(node, link)?;
        netns::counters(&u.node_ns, &u.iface)
    }

    /// `ip netns exec NS PROGRAM`: add args and spawn. Processes still running in the lab's
    /// namespaces when it drops are killed.
    pub fn command(&self, ns: &str, program: &str) -> std::process::Command {
        netns::exec(ns, program)
    }

    /// Runs `f` on a thread inside namespace `ns` and returns its result. Sockets created in
    /// `f` (e.g. a `std::net::TcpListener`) live in `ns`.
    pub fn in_ns<T: Send + 'static>(&self, ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        netns::in_netns(ns, f)
    }

    /// Names of all namespaces of this lab.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespaces.iter().map(|n| n.name())
    }
}

/// Routing-table number of the spare interface's source rule.
const SPARE_K: u8 = 99;

/// The node-side routes of an uplink: a default route with its own metric (for
/// SO_BINDTODEVICE), and a source rule + table (for sockets bound to the address).
/// Idempotent, so `restore` can call it after the kernel flushed them on link down.
fn add_routes(u: &Uplink, k: u8) -> Result<()> {
    let (gw, dev, ns, addr) = (u.gateway, &u.iface, &u.node_ns, u.addr);
    let metric = if k == SPARE_K { 1000 } else { 10 * u32::from(k) };
    let table = 100 + u32::from(k);
    ip(ns, &format!("route replace default via {gw} dev {dev} metric {metric}"))?;
    ip(ns, &format!("route replace default via {gw} dev {dev} table {table}"))?;
    let rules = ip(ns, &format!("rule show from {addr}"))?;
    if !rules.contains(&format!("lookup {table}")) {
        let pref = 1000 + u32::from(k);
        ip(ns, &format!("rule add pref {pref} from {addr} lookup {table}"))?;
    }
    Ok(())
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Stop every delay line first (each takes up to one poll interval), then delete the
        // namespaces; `Netns::drop` kills any process left inside.
        for l in &mut self.links {
            l.delay.take();
        }
        self.namespaces.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_parameters_are_sane() {
        // 4 Mbit / 30 ms: BDP 15 KB, the floor of two buckets wins.
        assert_eq!(tbf_limit(4_000_000, Duration::from_millis(30)), 20 * FRAME_BYTES);
        // Any GSO packet that tbf does not split (≤ one bucket) fits in an empty queue.
        for rate in [1_000_000, 4_000_000, 50_000_000, 300_000_000, 10_000_000_000] {
            assert!(tbf_limit(rate, Duration::ZERO) >= 2 * tbf_burst(rate));
        }
        // 20 Mbit / 60 ms: one BDP = 150 KB.
        assert_eq!(tbf_limit(20_000_000, Duration::from_millis(60)), 150_000);
        assert_eq!(tbf_burst(300_000_000), 75_000);
        assert_eq!(tbf_burst(4_000_000), 10 * FRAME_BYTES);
        assert!(tbf_rate(20_000_000) > 20_000_000);
    }
}
