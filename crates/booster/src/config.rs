//! Node configuration: parsed (serde, unknown keys refused), then validated, then run.
//!
//! The TOML keys mirror the `booster start` flags; flags override the file. See `docs/config.md`
//! for every key and its default.

use crate::policy::{PolicyKind, PolicySpec};
use crate::units::{ByteSize, Dur, Rate};
use serde::{Deserialize, Serialize};
use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// Priority tier of an uplink. Backup is used only when every primary and secondary source is
/// down or saturated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    #[default]
    Primary,
    Secondary,
    Backup,
}

/// `[[uplink]]`: a named local interface and what the user says about it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// Interface name, e.g. `wlan0`.
    pub name: String,
    #[serde(default)]
    pub tier: Tier,
    /// Monthly data cap; over it the uplink is used only as a backup.
    pub cap: Option<ByteSize>,
    /// Monthly cap on what this uplink lends to peers.
    pub lend_cap: Option<ByteSize>,
    /// Starting capacity estimate, before anything is measured.
    pub capacity: Option<Rate>,
}

/// `[auth]`: SOCKS5 username/password (RFC 1929) and HTTP `Proxy-Authorization: Basic`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub username: String,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
}

/// The file as written. Every field is optional so flags can fill the gaps.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub api: Option<SocketAddr>,
    pub api_token: Option<Secret>,
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub iface: Vec<String>,
    #[serde(default)]
    pub uplink: Vec<UplinkConfig>,
    pub probe_target: Option<String>,
    pub discover: Option<bool>,
    pub probe_interval: Option<Dur>,
    pub discover_interval: Option<Dur>,
    pub connect_timeout: Option<Dur>,
    pub handshake_timeout: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    pub drain_timeout: Option<Dur>,
    pub max_connections: Option<usize>,
    pub connect_attempts: Option<usize>,
    pub sticky_ttl: Option<Dur>,
    pub dns_servers: Option<Vec<String>>,
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub policy: Vec<PolicySpec>,
    /// This node's name on the peer network (default: the host name).
    pub name: Option<String>,
    /// The network secret shared by all nodes of one household.
    pub secret: Option<Secret>,
    pub secret_file: Option<PathBuf>,
    /// Where other nodes reach this one; `"off"` disables the peer port.
    pub peer_listen: Option<String>,
    /// Peers to borrow uplinks from at start (`host` or `host:port`).
    #[serde(default)]
    pub peer: Vec<String>,
    /// Announce and discover nodes on the LAN by mDNS (default true).
    pub mdns: Option<bool>,
    pub lend: Option<LendConfig>,
    pub split: Option<SplitConfig>,
    /// Relays to bond through (`host` or `host:port`, default port 4886).
    #[serde(default)]
    pub relay: Vec<String>,
    /// Which TCP streams are bonded: `all`, `HOST`, `:PORT` or `CIDR`.
    #[serde(default)]
    pub bond: Vec<String>,
    /// Which streams are sent redundantly on every path [default with a relay: :22, :3389,
    /// :5900]; `[]` or `["none"]` for none.
    pub redundant: Option<Vec<String>>,
    pub gateway: Option<GatewaySection>,
}

/// `[gateway]`: transparent mode on a router (`booster gateway`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// The LAN interface whose TCP is steered into booster.
    pub lan: Option<String>,
    /// Port redirected connections arrive on (default 4887).
    pub port: Option<u16>,
    /// Destinations left alone (CIDR or IP).
    pub exclude: Option<Vec<String>>,
    /// Remove the rules when the gateway process dies, even by `kill -9` (default true).
    pub watchdog: Option<bool>,
}

/// Resolved `[gateway]` settings.
#[derive(Debug, Clone, Serialize)]
pub struct Gateway {
    pub lan: Option<String>,
    pub port: u16,
    pub exclude: Vec<String>,
    pub watchdog: bool,
}

/// `[split]`: transparent splitting of large plain-HTTP downloads through the HTTP proxy.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// Split at all (default true).
    pub enabled: Option<bool>,
    /// Only bodies at least this big are split (default 8MB).
    pub min_size: Option<ByteSize>,
    /// `Content-Type` prefixes that may be split, e.g. `"video/"` (default: any).
    pub mime: Option<Vec<String>>,
    /// Split requests carrying `Authorization` or `Cookie` (default false).
    pub credentials: Option<bool>,
}

/// `[lend]`: what this node lends to the peers that borrow its uplinks.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LendConfig {
    /// Lend at all (default true when a secret is set).
    pub enabled: Option<bool>,
    /// Which local uplinks may be lent (default: all).
    pub uplinks: Option<Vec<String>>,
    /// Total rate lent to all borrowers together.
    pub max_rate: Option<Rate>,
    /// Monthly cap on bytes lent, all uplinks together.
    pub cap: Option<ByteSize>,
}

/// Flags of `booster start` that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub api: Option<SocketAddr>,
    pub iface: Vec<String>,
    pub data_dir: Option<PathBuf>,
    pub probe_target: Option<String>,
    pub name: Option<String>,
    pub secret: Option<Secret>,
    pub secret_file: Option<PathBuf>,
    pub peer_listen: Option<String>,
    pub peers: Vec<String>,
    pub no_mdns: bool,
    pub relays: Vec<String>,
    pub bond: Vec<String>,
    pub redundant: Vec<String>,
}

/// Default port of the peer channel.
pub const DEFAULT_PEER_PORT: u16 = 4885;

/// The validated configuration the node runs with.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub listen: SocketAddr,
    pub api: Option<SocketAddr>,
    pub api_token: Option<Secret>,
    pub data_dir: PathBuf,
    /// Named uplinks. Empty means: discover them.
    pub uplinks: Vec<UplinkConfig>,
    /// Where reachability probes connect (`host:port`), or `None` when probing is off.
    pub probe_target: Option<String>,
    /// Discover uplinks when none are named (default true).
    pub discover: bool,
    pub probe_interval: Duration,
    pub discover_interval: Duration,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_connections: usize,
    pub connect_attempts: usize,
    pub sticky_ttl: Duration,
    /// Nameservers (`ip` or `ip:port`); `None` = those of /etc/resolv.conf.
    pub dns_servers: Option<Vec<SocketAddr>>,
    pub auth: Option<Credentials>,
    pub policies: Vec<PolicySpec>,
    pub name: String,
    pub secret: Option<Secret>,
    /// `None` when the peer port is off (no secret, or `peer_listen = "off"`).
    pub peer_listen: Option<SocketAddr>,
    pub peers: Vec<String>,
    pub mdns: bool,
    pub lend: Lend,
    pub split: Split,
    /// Relays as `host:port`.
    pub relays: Vec<String>,
    pub bond: Vec<crate::bond::Rule>,
    pub redundant: Vec<crate::bond::Rule>,
    pub gateway: Gateway,
}

/// Default `[split] min_size`.
pub const DEFAULT_SPLIT_MIN_SIZE: u64 = 8_000_000;

/// Resolved `[split]` settings.
#[derive(Debug, Clone, Serialize)]
pub struct Split {
    pub enabled: bool,
    pub min_size: u64,
    /// Lowercased `Content-Type` prefixes; `None`: any type.
    pub mime: Option<Vec<String>>,
    pub credentials: bool,
}

/// Resolved lending limits.
#[derive(Debug, Clone, Serialize)]
pub struct Lend {
    pub enabled: bool,
    pub uplinks: Option<Vec<String>>,
    /// Bytes per second, all borrowers together.
    pub max_rate: Option<f64>,
    /// Bytes per month, all uplinks together.
    pub cap: Option<u64>,
}

/// `host` or `host:port` of a peer, with the default peer port.
pub fn peer_addr(s: &str) -> Result<String, String> {
    host_port(s, DEFAULT_PEER_PORT)
}

/// `host` or `host:port`, with `default_port` when none is given.
pub fn host_port(s: &str, default_port: u16) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty address".into());
    }
    let with_port = if s.parse::<SocketAddr>().is_ok() {
        s.to_string()
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        SocketAddr::new(ip, default_port).to_string()
    } else if s
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.contains(':') && p.parse::<u16>().is_ok())
    {
        s.to_string()
    } else if !s.contains(':') {
        format!("{s}:{default_port}")
    } else {
        return Err(format!("`{s}` is not host, host:port, ip or ip:port"));
    };
    Ok(with_port)
}

/// The short host name (up to the first dot), made into a valid node name.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let short: String = raw
        .trim()
        .split('.')
        .next()
        .unwrap_or("")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    if short.is_empty() {
        "booster".into()
    } else {
        short
    }
}

/// Node names travel in peer frames and mDNS instance names: 1 to 63 of `[A-Za-z0-9_-]`.
fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 63 && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

/// Resolved proxy credentials.
#[derive(Debug, Clone, Serialize)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// A configuration error, with the file, line and key when it came from the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:1080";
/// Client connections served at once. Each holds two sockets, and two pipes while it moves
/// data; `booster start` lowers this default to fit the open-file limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
pub const DEFAULT_API: &str = "127.0.0.1:4884";
/// Reachability probe target: a well-known anycast resolver's HTTPS port. Any host that accepts
/// TCP works; set `probe_target = "none"` to switch probing off.
pub const DEFAULT_PROBE_TARGET: &str = "1.1.1.1:443";

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text; the error message names line, column and key.
    pub fn parse(text: &str) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    let snippet = text.lines().nth(line - 1).unwrap_or("").trim();
                    format!("line {line}: {msg} (at `{snippet}`)")
                }
                None => msg,
            }
        })
    }
}

fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("booster");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".local/share/booster");
    }
    PathBuf::from("/var/lib/booster")
}

impl Config {
    /// Merges the file with the flags, applies defaults and validates the result.
    pub fn build(file: FileConfig, flags: Overrides) -> Result<Config, ConfigError> {
        let invalid = |s: String| ConfigError::Invalid(s);
        let listen = flags
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("default listen"));
        let api = Some(
            flags
                .api
                .or(file.api)
                .unwrap_or_else(|| DEFAULT_API.parse().expect("default api")),
        );

        let mut uplinks = file.uplink.clone();
        for name in file.iface.iter().chain(flags.iface.iter()) {
            if !uplinks.iter().any(|u| &u.name == name) {
                uplinks.push(UplinkConfig {
                    name: name.clone(),
                    tier: Tier::Primary,
                    cap: None,
                    lend_cap: None,
                    capacity: None,
                });
            }
        }
        // Flags name the uplinks to use: when given, they replace the file's list (keeping the
        // file's settings for the ones named again).
        if !flags.iface.is_empty() {
            uplinks.retain(|u| flags.iface.contains(&u.name));
        }
        for u in &uplinks {
            if u.name.is_empty() || u.name.len() > 15 || u.name.contains(['/', ' ', '\0']) {
                return Err(invalid(format!(
                    "uplink name `{}` is not a valid interface name (1 to 15 characters, no '/' or spaces)",
                    u.name
                )));
            }
        }

        let auth = match file.auth {
            None => None,
            Some(a) => {
                let password = match (a.password, a.password_file) {
                    (Some(p), None) => p,
                    (None, Some(path)) => Secret::new(
                        std::fs::read_to_string(&path)
                            .map_err(|e| invalid(format!("auth.password_file {}: cannot read: {e}", path.display())))?
                            .trim_end_matches(['\n', '\r'])
                            .to_string(),
                    ),
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            "auth: set either `password` or `password_file`, not both".into(),
                        ))
                    }
                    (None, None) => return Err(invalid("auth: `password` or `password_file` is required".into())),
                };
                if a.username.is_empty() || a.username.len() > 255 {
                    return Err(invalid("auth.username must be 1 to 255 bytes".into()));
                }
                if password.expose().is_empty() || password.expose().len() > 255 {
                    return Err(invalid("auth.password must be 1 to 255 bytes".into()));
                }
                Some(Credentials {
                    username: a.username,
                    password,
                })
            }
        };

        if !listen.ip().is_loopback() && auth.is_none() {
            return Err(invalid(format!(
                "listen = {listen} is not a loopback address, and no [auth] is configured: \
                 booster refuses to run an open proxy. Add an [auth] section or listen on 127.0.0.1"
            )));
        }
        if let Some(api) = api {
            if !api.ip().is_loopback() && file.api_token.is_none() {
                return Err(invalid(format!(
                    "api = {api} is not a loopback address, and no api_token is configured"
                )));
            }
        }

        let probe_target = match flags.probe_target.or(file.probe_target) {
            Some(t) if t == "none" => None,
            Some(t) => Some(t),
            None => Some(DEFAULT_PROBE_TARGET.to_string()),
        };
        if let Some(t) = &probe_target {
            crate::target::Target::parse_host_port(t).map_err(|e| invalid(format!("probe_target `{t}`: {e}")))?;
        }

        let dns_servers = match file.dns_servers {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|s| {
                        s.parse::<SocketAddr>()
                            .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                            .map_err(|_| invalid(format!("dns_servers: `{s}` is not an IP address or ip:port")))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };

        let policies = file.policy;
        for (i, p) in policies.iter().enumerate() {
            p.validate()
                .map_err(|e| invalid(format!("policy #{} ({:?}): {e}", i + 1, p.kind)))?;
            if p.kind == PolicyKind::Sticky && p.uplink.is_some() {
                return Err(invalid(format!(
                    "policy #{}: a sticky policy applies to hosts, not to an uplink",
                    i + 1
                )));
            }
        }

        let secret = match (flags.secret.or(file.secret), flags.secret_file.or(file.secret_file)) {
            (Some(_), Some(_)) => return Err(invalid("set either `secret` or `secret_file`, not both".into())),
            (Some(s), None) => Some(s),
            (None, Some(path)) => Some(Secret::new(
                std::fs::read_to_string(&path)
                    .map_err(|e| invalid(format!("secret_file {}: cannot read: {e}", path.display())))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            )),
            (None, None) => None,
        };
        if secret.as_ref().is_some_and(|s| s.expose().len() < 8) {
            return Err(invalid("the network secret must be at least 8 characters".into()));
        }
        let name = flags.name.or(file.name).unwrap_or_else(hostname);
        if !valid_name(&name) {
            return Err(invalid(format!(
                "name `{name}`: use 1 to 63 letters, digits, '-' or '_'"
            )));
        }
        let peer_listen = match flags.peer_listen.or(file.peer_listen).as_deref() {
            Some("off") => None,
            Some(a) => Some(
                a.parse::<SocketAddr>()
                    .map_err(|_| invalid(format!("peer_listen `{a}` is not ip:port or \"off\"")))?,
            ),
            None => Some(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PEER_PORT))),
        };
        // Without a secret nobody can be authenticated, so the peer port stays closed; it also
        // stays closed when this node lends nothing (it only serves borrowers).
        let lends = file.lend.as_ref().and_then(|l| l.enabled).unwrap_or(true);
        let peer_listen = peer_listen.filter(|_| secret.is_some() && lends);
        let peers = file
            .peer
            .iter()
            .chain(flags.peers.iter())
            .map(|p| peer_addr(p).map_err(|e| invalid(format!("peer: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if !peers.is_empty() && secret.is_none() {
            return Err(invalid(
                "peers need the network secret (`secret` or `secret_file`)".into(),
            ));
        }
        let relays = file
            .relay
            .iter()
            .chain(flags.relays.iter())
            .map(|r| host_port(r, crate::bond::DEFAULT_RELAY_PORT).map_err(|e| invalid(format!("relay: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if !relays.is_empty() && secret.is_none() {
            return Err(invalid(
                "relays need the network secret (`secret` or `secret_file`)".into(),
            ));
        }
        let rules = |key: &str, list: Vec<String>| -> Result<Vec<crate::bond::Rule>, ConfigError> {
            list.iter()
                .filter(|r| !r.trim().eq_ignore_ascii_case("none"))
                .map(|r| crate::bond::Rule::parse(r).map_err(|e| invalid(format!("{key}: {e}"))))
                .collect()
        };
        let bond = rules("bond", file.bond.into_iter().chain(flags.bond).collect())?;
        let redundant_list = if !flags.redundant.is_empty() {
            flags.redundant
        } else {
            file.redundant
                .unwrap_or_else(|| crate::bond::DEFAULT_REDUNDANT.map(String::from).to_vec())
        };
        let redundant = if relays.is_empty() {
            Vec::new()
        } else {
            rules("redundant", redundant_list)?
        };
        if !bond.is_empty() && relays.is_empty() {
            return Err(invalid("bond rules need a relay (`relay` or --relay HOST:PORT)".into()));
        }
        let gw = file.gateway.unwrap_or_default();
        let exclude = gw.exclude.unwrap_or_default();
        for cidr in &exclude {
            match crate::policy::Pattern::parse(cidr) {
                Ok(p) if p.is_address() => {}
                _ => {
                    return Err(invalid(format!(
                        "gateway.exclude: `{cidr}` is not a CIDR or an IP address"
                    )))
                }
            }
        }
        let gateway = Gateway {
            lan: gw.lan,
            port: gw.port.unwrap_or(crate::gateway::DEFAULT_PORT),
            exclude,
            watchdog: gw.watchdog.unwrap_or(true),
        };
        let lend_file = file.lend.unwrap_or_default();
        let lend = Lend {
            enabled: lend_file.enabled.unwrap_or(true) && secret.is_some(),
            uplinks: lend_file.uplinks,
            max_rate: lend_file.max_rate.map(|r| r.bytes_per_sec()),
            cap: lend_file.cap.map(|c| c.0),
        };

        let split_file = file.split.unwrap_or_default();
        let split = Split {
            enabled: split_file.enabled.unwrap_or(true),
            min_size: split_file.min_size.map_or(DEFAULT_SPLIT_MIN_SIZE, |b| b.0),
            mime: split_file
                .mime
                .map(|v| v.iter().map(|m| m.trim().to_ascii_lowercase()).collect::<Vec<_>>()),
            credentials: split_file.credentials.unwrap_or(false),
        };
        if split
            .mime
            .as_ref()
            .is_some_and(|v| v.is_empty() || v.iter().any(|m| m.is_empty()))
        {
            return Err(invalid(
                "split.mime: list one or more Content-Type prefixes such as \"video/\", or leave it out".into(),
            ));
        }

        let d = |v: Option<Dur>, default: u64| v.map(|d| d.0).unwrap_or(Duration::from_millis(default));
        let cfg = Config {
            listen,
            api,
            api_token: file.api_token,
            data_dir: flags.data_dir.or(file.data_dir).unwrap_or_else(default_data_dir),
            uplinks,
            probe_target,
            discover: file.discover.unwrap_or(true),
            probe_interval: d(file.probe_interval, 3_000),
            discover_interval: d(file.discover_interval, 2_000),
            connect_timeout: d(file.connect_timeout, 5_000),
            handshake_timeout: d(file.handshake_timeout, 10_000),
            idle_timeout: d(file.idle_timeout, 300_000),
            drain_timeout: d(file.drain_timeout, 5_000),
            max_connections: file.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            connect_attempts: file.connect_attempts.unwrap_or(3),
            sticky_ttl: d(file.sticky_ttl, 600_000),
            dns_servers,
            auth,
            policies,
            name,
            secret,
            peer_listen,
            peers,
            mdns: file.mdns.unwrap_or(true) && !flags.no_mdns,
            lend,
            split,
            relays,
            bond,
            redundant,
            gateway,
        };
        if cfg.max_connections == 0 {
            return Err(invalid("max_connections must be at least 1".into()));
        }
        if cfg.connect_attempts == 0 {
            return Err(invalid("connect_attempts must be at least 1".into()));
        }
        if cfg.connect_timeout.is_zero() || cfg.handshake_timeout.is_zero() || cfg.idle_timeout.is_zero() {
            return Err(invalid(
                "connect_timeout, handshake_timeout and idle_timeout must be above zero".into(),
            ));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let err = FileConfig::parse("listen = \"127.0.0.1:1080\"\nlisten_port = 3\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn bad_unit_is_refused_with_its_line() {
        let text = "[[uplink]]\nname = \"wwan0\"\ncap = \"2 parsecs\"\n";
        let err = FileConfig::parse(text).unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("parsecs"), "{err}");
    }

    #[test]
    fn open_proxy_is_refused() {
        let file = FileConfig::parse("listen = \"0.0.0.0:1080\"\n").unwrap();
        let err = Config::build(file, Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("open proxy"), "{err}");
    }

    #[test]
    fn lan_listen_with_auth_is_fine_and_secret_is_masked() {
        let text = "listen = \"0.0.0.0:1080\"\n[auth]\nusername = \"u\"\npassword = \"hunter2\"\n";
        let cfg = Config::build(FileConfig::parse(text).unwrap(), Overrides::default()).unwrap();
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(cfg.auth.unwrap().password.expose(), "hunter2");
    }

    #[test]
    fn flags_override_the_file() {
        let file = FileConfig::parse("iface = [\"eth0\", \"wlan0\"]\nlisten = \"127.0.0.1:9\"\n").unwrap();
        let flags = Overrides {
            iface: vec!["usb0".into()],
            listen: Some("127.0.0.1:1081".parse().unwrap()),
            ..Default::default()
        };
        let cfg = Config::build(file, flags).unwrap();
        assert_eq!(cfg.listen.port(), 1081);
        let names: Vec<_> = cfg.uplinks.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["usb0"]);
    }

    #[test]
    fn full_example_parses() {
        let text = r#"
listen = "127.0.0.1:1080"
api = "127.0.0.1:4884"
probe_target = "10.99.0.1:80"
connect_timeout = "3s"
sticky_ttl = "10m"
[[uplink]]
name = "wwan0"
tier = "backup"
cap = "2GB"
capacity = "20Mbit"
[[policy]]
kind = "avoid"
uplink = "wwan0"
hosts = ["*.example.com", "10.0.0.0/8"]
"#;
        let cfg = Config::build(FileConfig::parse(text).unwrap(), Overrides::default()).unwrap();
        assert_eq!(cfg.uplinks[0].tier, Tier::Backup);
        assert_eq!(cfg.uplinks[0].cap, Some(ByteSize(2_000_000_000)));
        assert_eq!(cfg.connect_timeout, Duration::from_secs(3));
        assert_eq!(cfg.policies.len(), 1);
    }

    #[test]
    fn split_defaults_and_keys() {
        let cfg = Config::build(FileConfig::default(), Overrides::default()).unwrap();
        assert!(cfg.split.enabled && !cfg.split.credentials && cfg.split.mime.is_none());
        assert_eq!(cfg.split.min_size, DEFAULT_SPLIT_MIN_SIZE);
        let text = "[split]\nenabled = false\nmin_size = \"1MiB\"\nmime = [\"Video/\"]\ncredentials = true\n";
        let cfg = Config::build(FileConfig::parse(text).unwrap(), Overrides::default()).unwrap();
        assert!(!cfg.split.enabled && cfg.split.credentials);
        assert_eq!(cfg.split.min_size, 1 << 20);
        assert_eq!(cfg.split.mime, Some(vec!["video/".to_string()]));
        let err = Config::build(FileConfig::parse("[split]\nmime = []\n").unwrap(), Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("split.mime"), "{err}");
        assert!(FileConfig::parse("[split]\nmin_sise = 3\n").is_err());
    }
}
