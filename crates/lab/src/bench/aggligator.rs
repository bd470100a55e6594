//! The aggligator anchor: `agg-tunnel` from aggligator-util (Rust, userspace aggregation of
//! TCP links into one connection), run side by side with booster's bond on the same lab.
//!
//! The server runs in the internet namespace and forwards its port 80 to the origin; the
//! client runs in home, opens one TCP link per local interface to the server (its default
//! `interface-interface` link filter) and listens on 127.0.0.1:[`LOCAL_PORT`]. curl fetches
//! `http://127.0.0.1:LOCAL_PORT/<file>`: one TCP stream, carried over every uplink.
//!
//! Install: `cargo install aggligator-util --version 0.18.12 --locked` (newer releases need a
//! newer rustc than this machine has). Skipped when `agg-tunnel` is not on PATH.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::procs::{self, Proc};
use crate::netns;
use crate::topology::Lab;

/// The tunnel server's port in the internet namespace.
pub const TUNNEL_PORT: u16 = 5800;
/// Where the client listens in home (forwarded to the origin's port 80).
pub const LOCAL_PORT: u16 = 8080;

/// `agg-tunnel --version`, or why it cannot be used.
pub fn version() -> Result<String, String> {
    if !procs::have("agg-tunnel") {
        return Err("`agg-tunnel` is not installed (cargo install aggligator-util --version 0.18.12 --locked)".into());
    }
    match Command::new("agg-tunnel").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        Ok(o) => Err(format!(
            "`agg-tunnel --version` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("running agg-tunnel: {e}")),
    }
}

/// A running tunnel: server in the internet namespace, client in home.
pub struct Aggligator {
    pub server: Proc,
    pub client: Proc,
    ns: String,
}

impl Aggligator {
    pub fn start(lab: &Lab, work: &Path) -> Result<Aggligator> {
        let inet = lab.internet_ns().to_owned();
        let home = lab.node_ns("home").to_owned();
        let origin = super::net::origin_addr(lab, 80);
        let mut cmd = netns::exec(&inet, "agg-tunnel");
        // `-p TARGET:PORT`: the part before the last colon is the connect string, so an IP
        // target needs its port too.
        cmd.args(["server", "--no-monitor", "--tcp", &TUNNEL_PORT.to_string(), "-p"])
            .arg(format!("{origin}:80"));
        let mut server = Proc::spawn("agg-tunnel server", &mut cmd, Some(&work.join("agg-server.log")))?;
        let listen = super::net::origin_addr(lab, TUNNEL_PORT);
        procs::wait_listening(&inet, listen.into(), &mut server, Duration::from_secs(10))?;

        // The client always listens on [::1] as well as 127.0.0.1, and the lab disables IPv6:
        // enable it on home's loopback only (no uplink sees an IPv6 packet).
        netns::sysctls(&home, &[("net/ipv6/conf/lo/disable_ipv6", "0")])
            .context("enabling IPv6 on home's lo for agg-tunnel's [::1] listener")?;
        let mut cmd = netns::exec(&home, "agg-tunnel");
        cmd.args(["client", "--no-monitor", "-4", "--tcp"])
            .arg(listen.to_string())
            .arg("-p")
            .arg(format!("80:{LOCAL_PORT}"));
        let mut client = Proc::spawn("agg-tunnel client", &mut cmd, Some(&work.join("agg-client.log")))?;
        procs::wait_listening(&home, super::net::lo(LOCAL_PORT), &mut client, Duration::from_secs(10))?;
        Ok(Aggligator {
            server,
            client,
            ns: home,
        })
    }

    /// `curl http://127.0.0.1:LOCAL_PORT<path> -o out/name` in home.
    pub fn curl_cmd(&self, path: &str, out: &Path, name: &str, max_secs: u64) -> Command {
        let mut cmd = procs::curl(&self.ns);
        cmd.arg("--max-time")
            .arg(max_secs.to_string())
            .arg("-o")
            .arg(out.join(name))
            .arg(format!("http://127.0.0.1:{LOCAL_PORT}{path}"));
        cmd
    }

    pub fn log_tails(&self) -> String {
        format!("{}\n{}", self.client.log_tail(), self.server.log_tail())
    }
}
