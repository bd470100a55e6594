//! Network-namespace primitives for the root-only lab tier.
//!
//! - [`Netns`]: a named namespace (`bt-<id>-<role>`) that is deleted when the guard drops.
//!   Processes still running inside it are killed first, so a panicking test leaves nothing.
//! - [`exec`] / [`ip`]: run a program (usually `ip` or `tc`) inside a namespace.
//! - [`in_netns`] / [`spawn_in_netns`]: run a closure on an OS thread that has `setns`'d into a
//!   namespace. Sockets made there stay in that namespace, whatever thread uses them later.
//! - [`counters`]: an interface's rx/tx byte counters, from `ip -s -j link`.
//! - [`cleanup_stale`]: deletes `bt-*` namespaces left behind by processes that died
//!   (SIGKILL, abort) before their guards ran.
//!
//! Naming: the unique id is `<owner pid in hex>x<random hex>`, so [`cleanup_stale`] can tell
//! from the name alone whether the owner still lives. We shell out to iproute2 on purpose: it
//! is simple, debuggable (`ip netns list` shows the same names) and the lab is not hot.

use std::fs::File;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context, Result};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Every namespace the lab creates starts with this.
pub const PREFIX: &str = "bt-";

/// Where iproute2 keeps the bind mounts of named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// A fresh unique id for namespace names: owner pid and 16 random bits, e.g. `1a2bx3f9a`.
pub fn unique_id() -> String {
    format!("{:x}x{:04x}", std::process::id(), rand::random::<u16>())
}

/// The full namespace name for a role inside a lab id, e.g. `bt-1a2bx3f9a-home`.
pub fn ns_name(id: &str, role: &str) -> String {
    format!("{PREFIX}{id}-{role}")
}

/// Checks that we can build namespaces: root, iproute2, tc and the TUN device.
pub fn check_prereqs() -> Result<()> {
    if !is_root() {
        bail!("the namespace lab needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); run as root");
    }
    for tool in ["ip", "tc"] {
        let ok = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            bail!("`{tool}` (iproute2) is missing or broken; install iproute2");
        }
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        bail!("/dev/net/tun is missing; the delay line needs the tun driver");
    }
    Ok(())
}

/// True when running as root (tests use this to skip elsewhere).
pub fn is_root() -> bool {
    // `Uid:\treal\teffective\tsaved\tfs` (nix's geteuid needs a feature we do not enable).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(2).map(|e| e == "0")
        })
        .unwrap_or(false)
}

/// Runs a command and returns its stdout, or an error carrying the command line and stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip -n NS ARGS...`; runs in the root namespace when `ns` is empty.
pub fn ip(ns: &str, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("ip");
    if !ns.is_empty() {
        cmd.args(["-n", ns]);
    }
    run(cmd.args(args))
}

/// `tc ARGS...` inside namespace `ns` (tc has no `-n` in every version, so `ip netns exec`).
pub fn tc(ns: &str, args: &[&str]) -> Result<String> {
    run(exec(ns, "tc").args(args))
}

/// A command that runs `program` inside namespace `ns` (`ip netns exec NS PROGRAM`).
pub fn exec(ns: &str, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, program]);
    cmd
}

/// The names of all namespaces `ip netns list` knows.
pub fn list() -> Result<Vec<String>> {
    let out = ip("", &["netns", "list"])?;
    // Lines look like `bt-1x2-home (id: 3)` or just `bt-1x2-home`.
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// A named network namespace that is deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` with `lo` up. Fails if it already exists.
    pub fn create(name: &str) -> Result<Netns> {
        ip("", &["netns", "add", name]).with_context(|| format!("creating namespace {name}"))?;
        let ns = Netns { name: name.to_owned() };
        ip(name, &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete(&self.name);
    }
}

/// Kills every process living in namespace `ns` (never ourselves), then deletes it.
/// Best effort: errors are logged, because this runs from `Drop`.
pub fn delete(ns: &str) {
    kill_processes_in(ns);
    if let Err(e) = ip("", &["netns", "delete", ns]) {
        // Already gone is fine (e.g. deleted by cleanup_stale of a sibling).
        if std::path::Path::new(NETNS_DIR).join(ns).exists() {
            tracing::warn!("deleting namespace {ns}: {e:#}");
        }
    }
}

fn kill_processes_in(ns: &str) {
    let Ok(out) = ip("", &["netns", "pids", ns]) else {
        return;
    };
    let me = std::process::id() as i32;
    for pid in out.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        if pid != me {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// The owner pid encoded in a lab namespace name, if the name follows our scheme.
fn owner_pid(name: &str) -> Option<i32> {
    let id = name.strip_prefix(PREFIX)?.split('-').next()?;
    let (pid, rand) = id.split_once('x')?;
    if rand.is_empty() || !rand.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    i32::from_str_radix(pid, 16).ok()
}

fn pid_alive(pid: i32) -> bool {
    match nix::sys::signal::kill(Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        Err(_) => true, // EPERM: exists but not ours; leave it alone.
    }
}

/// Deletes `bt-*` namespaces whose owning process is dead. Names that do not follow the
/// `bt-<pid>x<rand>-<role>` scheme are left alone. Returns the names it deleted.
pub fn cleanup_stale() -> Result<Vec<String>> {
    let mut deleted = Vec::new();
    for name in list()? {
        match owner_pid(&name) {
            Some(pid) if !pid_alive(pid) => {
                delete(&name);
                deleted.push(name);
            }
            _ => {}
        }
    }
    Ok(deleted)
}

fn enter(ns: &str) -> Result<()> {
    let path = std::path::Path::new(NETNS_DIR).join(ns);
    let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    nix::sched::setns(&f, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns into namespace {ns}"))?;
    Ok(())
}

/// Runs `f` on a new OS thread that has entered namespace `ns`, and waits for it.
///
/// Sockets, listeners and TUN devices created inside `f` belong to `ns`; they can be returned
/// and used from any thread afterwards. A panic in `f` is returned as an error.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    spawn_in_netns(ns, f)?
        .join()
        .map_err(|p| anyhow!("closure in namespace {ns} panicked: {}", panic_message(&p)))
}

/// Starts `f` on a new OS thread inside namespace `ns` and returns its handle (for servers
/// that run for the life of a test). Returns an error if entering the namespace fails.
pub fn spawn_in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<JoinHandle<T>> {
    let ns_owned = ns.to_owned();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<()>>(1);
    let handle = std::thread::Builder::new()
        .name(format!("netns:{ns}"))
        .spawn(move || {
            if let Err(e) = enter(&ns_owned) {
                let _ = tx.send(Err(e));
                // The caller gets the error from `rx`; unwind without running the panic hook
                // (no noise on stderr), since a `JoinHandle<T>` has no other way out.
                std::panic::resume_unwind(Box::new("could not enter namespace"));
            }
            let _ = tx.send(Ok(()));
            f()
        })
        .context("spawning namespace thread")?;
    match rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => Err(anyhow!("namespace thread for {ns} died before entering it")),
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_owned()
    }
}

/// Writes a sysctl of namespace `ns`, e.g. `("net/ipv4/ip_forward", "1")`.
/// `/proc/sys/net` follows the network namespace of the thread that opens it.
pub fn sysctls(ns: &str, settings: &[(&str, &str)]) -> Result<()> {
    let owned: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    in_netns(ns, move || -> Result<()> {
        for (k, v) in owned {
            let path = format!("/proc/sys/{k}");
            std::fs::write(&path, v.as_bytes()).with_context(|| format!("writing {path}"))?;
        }
        Ok(())
    })?
}

/// An interface's `(rx bytes, tx bytes)` counters inside namespace `ns`.
pub fn counters(ns: &str, iface: &str) -> Result<(u64, u64)> {
    let out = ip(ns, &["-s", "-j", "link", "show", "dev", iface])?;
    parse_counters(&out).with_context(|| format!("parsing counters of {iface} in {ns}"))
}

fn parse_counters(json: &str) -> Result<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(json)?;
    let link = v.get(0).ok_or_else(|| anyhow!("no link in output"))?;
    // Newer iproute2 prints `stats64`, older ones `stats`.
    let stats = link
        .get("stats64")
        .or_else(|| link.get("stats"))
        .ok_or_else(|| anyhow!("no stats in output"))?;
    let get = |dir: &str| {
        stats
            .get(dir)
            .and_then(|d| d.get("bytes"))
            .and_then(|b| b.as_u64())
            .ok_or_else(|| anyhow!("no {dir}.bytes"))
    };
    Ok((get("rx")?, get("tx")?))
}

/// Whether interface `iface` in `ns` is administratively up.
pub fn is_up(ns: &str, iface: &str) -> Result<bool> {
    let out = ip(ns, &["-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let flags = v
        .get(0)
        .and_then(|l| l.get("flags"))
        .and_then(|f| f.as_array())
        .ok_or_else(|| anyhow!("no flags for {iface}"))?;
    Ok(flags.iter().any(|f| f.as_str() == Some("UP")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_only_our_scheme() {
        assert_eq!(owner_pid("bt-1a2bx3f9a-home"), Some(0x1a2b));
        assert_eq!(owner_pid("bt-1a2bx3f9a-r-phone-1-4g"), Some(0x1a2b));
        assert_eq!(owner_pid("bt-foo-home"), None);
        assert_eq!(owner_pid("bt-12x-home"), None);
        assert_eq!(owner_pid("other-1x2-home"), None);
    }

    #[test]
    fn parses_ip_json_counters() {
        let j = r#"[{"ifname":"a","stats64":{"rx":{"bytes":12,"packets":1},"tx":{"bytes":34}}}]"#;
        assert_eq!(parse_counters(j).unwrap(), (12, 34));
    }

    #[test]
    fn unique_ids_carry_our_pid() {
        let id = unique_id();
        assert_eq!(owner_pid(&ns_name(&id, "x")), Some(std::process::id() as i32));
    }
}
