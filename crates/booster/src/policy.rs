//! Policies: user rules about which source may carry which destination.
//!
//! Every rule matches destinations by hostname *and* by IP: hostname patterns are checked before
//! DNS, and address patterns again after the chosen source resolved the name, so a request by
//! hostname cannot slip past an address rule (a bug of the original booster).
//!
//! | kind      | with `uplink`                                        | without `uplink`             |
//! |-----------|------------------------------------------------------|------------------------------|
//! | `block`   | the uplink never carries `hosts` (all, if no hosts)  | `hosts` are refused outright |
//! | `reserve` | the uplink carries only `hosts`                      | invalid                      |
//! | `avoid`   | the uplink carries `hosts` only when nothing else can| invalid                      |
//! | `sticky`  | invalid                                              | `hosts` keep their source for `ttl` |

use crate::units::Dur;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    Block,
    Reserve,
    Avoid,
    Sticky,
}

/// One rule as written in config (`[[policy]]`) or posted to the API.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub kind: PolicyKind,
    pub uplink: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Sticky only: how long a destination keeps its source (default: `sticky_ttl`).
    pub ttl: Option<Dur>,
}

/// A parsed host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `example.com`: that name and every name under it.
    Domain(String),
    /// `*.example.com`: only names under it.
    Subdomains(String),
    /// `10.0.0.0/8`, `2001:db8::/32` or a single address.
    Net { addr: IpAddr, prefix: u8 },
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Pattern, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty host pattern".into());
        }
        if let Some((addr, prefix)) = s.split_once('/') {
            let addr: IpAddr = addr.parse().map_err(|_| format!("bad network `{s}`"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("bad prefix length in `{s}`"))?;
            return Ok(Pattern::Net { addr, prefix });
        }
        if let Ok(addr) = s.parse::<IpAddr>() {
            let prefix = if addr.is_ipv4() { 32 } else { 128 };
            return Ok(Pattern::Net { addr, prefix });
        }
        let (sub, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        {
            return Err(format!("bad host pattern `{s}`"));
        }
        let name = name.to_ascii_lowercase();
        Ok(if sub {
            Pattern::Subdomains(name)
        } else {
            Pattern::Domain(name)
        })
    }

    pub fn matches_name(&self, host: &str) -> bool {
        let under = |suffix: &str| {
            host.len() > suffix.len()
                && host.ends_with(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        };
        match self {
            Pattern::Domain(d) => host == d || under(d),
            Pattern::Subdomains(d) => under(d),
            Pattern::Net { .. } => false,
        }
    }

    pub fn matches_ip(&self, ip: IpAddr) -> bool {
        let Pattern::Net { addr, prefix } = self else {
            return false;
        };
        match (addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX.checked_shl(32 - *prefix as u32).unwrap_or(0);
                u32::from(*a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX.checked_shl(128 - *prefix as u32).unwrap_or(0);
                u128::from(*a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }

    pub fn is_address(&self) -> bool {
        matches!(self, Pattern::Net { .. })
    }
}

impl PolicySpec {
    pub fn validate(&self) -> Result<(), String> {
        for h in &self.hosts {
            Pattern::parse(h)?;
        }
        match (self.kind, &self.uplink) {
            (PolicyKind::Reserve | PolicyKind::Avoid, None) => Err("`reserve` and `avoid` need an `uplink`".into()),
            (PolicyKind::Reserve | PolicyKind::Avoid | PolicyKind::Sticky, _) if self.hosts.is_empty() => {
                Err("this policy needs `hosts`".into())
            }
            (PolicyKind::Block, None) if self.hosts.is_empty() => {
                Err("`block` needs an `uplink`, `hosts`, or both".into())
            }
            (PolicyKind::Sticky, Some(_)) => Err("a sticky policy applies to hosts, not to an uplink".into()),
            _ => Ok(()),
        }
    }
}

/// Where a rule came from: the config file (read-only at runtime) or the control API (kept in
/// the node's database, deletable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyOrigin {
    Config,
    Api,
}

/// A rule with its identity, as the API lists it: `id` is `config-N` for the N-th
/// `[[policy]]` of the config file, and the database row id for rules added through the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyEntry {
    pub id: String,
    pub origin: PolicyOrigin,
    #[serde(flatten)]
    pub spec: PolicySpec,
}

impl PolicyEntry {
    /// The entries for the config file's rules, in order.
    pub fn from_config(specs: &[PolicySpec]) -> Vec<PolicyEntry> {
        specs
            .iter()
            .enumerate()
            .map(|(i, spec)| PolicyEntry {
                id: format!("config-{}", i + 1),
                origin: PolicyOrigin::Config,
                spec: spec.clone(),
            })
            .collect()
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Policy {
    pub entry: PolicyEntry,
    patterns: Vec<Pattern>,
}

/// What the rules say about one source for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Allow,
    /// Use only when nothing allowed is left.
    Avoid,
    Deny,
}

/// The whole rule set, compiled once and swapped atomically when it changes.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    rules: Vec<Policy>,
}

impl Policies {
    /// The config file's rules (ids `config-1`, `config-2`, ...).
    pub fn new(specs: &[PolicySpec]) -> Result<Policies, String> {
        Self::from_entries(PolicyEntry::from_config(specs))
    }

    /// Compiles rules that already carry their ids (config and API rules together).
    pub fn from_entries(entries: Vec<PolicyEntry>) -> Result<Policies, String> {
        let mut rules = Vec::new();
        for entry in entries {
            entry.spec.validate()?;
            let patterns = entry
                .spec
                .hosts
                .iter()
                .map(|h| Pattern::parse(h))
                .collect::<Result<_, _>>()?;
            rules.push(Policy { entry, patterns });
        }
        Ok(Policies { rules })
    }

    pub fn specs(&self) -> Vec<PolicySpec> {
        self.rules.iter().map(|r| r.entry.spec.clone()).collect()
    }

    /// Every rule with its id and origin, in the order they were added.
    pub fn entries(&self) -> Vec<PolicyEntry> {
        self.rules.iter().map(|r| r.entry.clone()).collect()
    }

    fn hits(patterns: &[Pattern], name: Option<&str>, ip: Option<IpAddr>) -> bool {
        patterns
            .iter()
            .any(|p| name.is_some_and(|n| p.matches_name(n)) || ip.is_some_and(|ip| p.matches_ip(ip)))
    }

    /// Is the destination refused outright (a `block` rule without an uplink)?
    pub fn refused(&self, name: Option<&str>, ip: Option<IpAddr>) -> bool {
        self.rules.iter().any(|r| {
            r.entry.spec.kind == PolicyKind::Block && r.entry.spec.uplink.is_none() && Self::hits(&r.patterns, name, ip)
        })
    }

    /// The verdict for `source` and a destination known by `name` and/or `ip`.
    ///
    /// Before DNS only the name is known: address rules then cannot decide, and the verdict is
    /// provisional (`Allow` unless a name rule says otherwise). [`Policies::address_verdict`]
    /// completes it once the source resolved the name.
    pub fn verdict(&self, source: &str, name: Option<&str>, ip: Option<IpAddr>) -> Verdict {
        let uplink_of = |s: &str| s.rsplit('/').next().map(str::to_owned);
        let mut verdict = Verdict::Allow;
        for r in &self.rules {
            let Some(up) = &r.entry.spec.uplink else { continue };
            if up != source && uplink_of(source).as_deref() != Some(up.as_str()) {
                continue;
            }
            let hit = Self::hits(&r.patterns, name, ip);
            let only_addresses = r.patterns.iter().all(Pattern::is_address);
            let v = match r.entry.spec.kind {
                PolicyKind::Block if r.patterns.is_empty() || hit => Verdict::Deny,
                PolicyKind::Avoid if hit => Verdict::Avoid,
                // A reserved uplink refuses everything else; with only address patterns and no
                // address known yet, wait for DNS.
                PolicyKind::Reserve if !(hit || ip.is_none() && only_addresses) => Verdict::Deny,
                _ => Verdict::Allow,
            };
            verdict = verdict.max(v);
        }
        verdict
    }

    /// The verdict once `ip` is known, for a destination that was also asked for by `name`.
    pub fn address_verdict(&self, source: &str, name: Option<&str>, ip: IpAddr) -> Verdict {
        self.verdict(source, name, Some(ip))
    }

    /// May `source` carry a connection to `ip`, asked for by `name` (if any)? Checked once the
    /// address is known: a destination refused by address, or an uplink denied for it, cannot
    /// be reached by asking for a name instead.
    pub fn permits(&self, source: &str, name: Option<&str>, ip: IpAddr) -> bool {
        !self.refused(name, Some(ip)) && self.address_verdict(source, name, ip) != Verdict::Deny
    }

    /// The stickiness window for a destination, if a sticky rule covers it.
    pub fn sticky(&self, name: Option<&str>, ip: Option<IpAddr>) -> Option<Option<std::time::Duration>> {
        self.rules
            .iter()
            .find(|r| r.entry.spec.kind == PolicyKind::Sticky && Self::hits(&r.patterns, name, ip))
            .map(|r| r.entry.spec.ttl.map(|d| d.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: PolicyKind, uplink: Option<&str>, hosts: &[&str]) -> PolicySpec {
        PolicySpec {
            kind,
            uplink: uplink.map(str::to_owned),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ttl: None,
        }
    }

    #[test]
    fn patterns() {
        let d = Pattern::parse("Example.com").unwrap();
        assert!(d.matches_name("example.com"));
        assert!(d.matches_name("www.example.com"));
        assert!(!d.matches_name("badexample.com"));
        let s = Pattern::parse("*.example.com").unwrap();
        assert!(!s.matches_name("example.com"));
        assert!(s.matches_name("a.b.example.com"));
        let n = Pattern::parse("10.0.0.0/8").unwrap();
        assert!(n.matches_ip("10.9.8.7".parse().unwrap()));
        assert!(!n.matches_ip("11.0.0.1".parse().unwrap()));
        assert!(Pattern::parse("::/0")
            .unwrap()
            .matches_ip("2001:db8::1".parse().unwrap()));
        assert!(Pattern::parse("10.0.0.0/33").is_err());
        assert!(Pattern::parse("bad host!").is_err());
    }

    #[test]
    fn hostname_and_address_rules_both_apply() {
        let p = Policies::new(&[
            spec(PolicyKind::Avoid, Some("wwan0"), &["video.example"]),
            spec(PolicyKind::Block, Some("wwan0"), &["192.0.2.0/24"]),
        ])
        .unwrap();
        assert_eq!(p.verdict("wwan0", Some("video.example"), None), Verdict::Avoid);
        assert_eq!(p.verdict("eth0", Some("video.example"), None), Verdict::Allow);
        // By name only, the address rule cannot decide yet...
        assert_eq!(p.verdict("wwan0", Some("other.example"), None), Verdict::Allow);
        // ...but once the name resolved into the blocked network, it is denied.
        let ip = "192.0.2.7".parse().unwrap();
        assert_eq!(p.address_verdict("wwan0", Some("other.example"), ip), Verdict::Deny);
    }

    #[test]
    fn reserve_and_block() {
        let p = Policies::new(&[
            spec(PolicyKind::Reserve, Some("usb0"), &["backup.example"]),
            spec(PolicyKind::Block, Some("eth1"), &[]),
            spec(PolicyKind::Block, None, &["ads.example"]),
        ])
        .unwrap();
        assert_eq!(p.verdict("usb0", Some("backup.example"), None), Verdict::Allow);
        assert_eq!(p.verdict("usb0", Some("news.example"), None), Verdict::Deny);
        assert_eq!(p.verdict("eth1", Some("news.example"), None), Verdict::Deny);
        assert_eq!(p.verdict("phone-1/usb0", Some("news.example"), None), Verdict::Deny);
        assert!(p.refused(Some("x.ads.example"), None));
        assert!(!p.refused(Some("news.example"), None));
    }

    #[test]
    fn invalid_rules_are_refused() {
        assert!(Policies::new(&[spec(PolicyKind::Avoid, None, &["x"])]).is_err());
        assert!(Policies::new(&[spec(PolicyKind::Reserve, Some("a"), &[])]).is_err());
        assert!(Policies::new(&[spec(PolicyKind::Block, None, &[])]).is_err());
    }
}
