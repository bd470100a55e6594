//! The named lab profiles from `shared/design.md`: one table, reused by the namespace lab,
//! the in-process emulation, the benchmark and `booster demo`.

use std::time::Duration;

/// One emulated uplink: what it delivers in each direction and how long a round trip takes.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkSpec {
    /// Interface-style name, e.g. `adsl`, `4g-a`.
    pub name: &'static str,
    /// Rate in bits per second, the same down and up.
    pub rate_bps: u64,
    /// Round-trip time added by the link (half in each direction).
    pub rtt: Duration,
    /// Extra random delay per packet, up to this much (order is kept).
    pub jitter: Duration,
    /// Probability in 0..1 that a packet is dropped, each direction.
    pub loss: f64,
}

impl LinkSpec {
    const fn new(name: &'static str, mbit: u64, rtt_ms: u64) -> Self {
        LinkSpec {
            name,
            rate_bps: mbit * 1_000_000,
            rtt: Duration::from_millis(rtt_ms),
            jitter: Duration::ZERO,
            loss: 0.0,
        }
    }

    /// Rate in bytes per second.
    pub fn rate_bytes(&self) -> f64 {
        self.rate_bps as f64 / 8.0
    }
}

/// One node of a profile and the uplinks it owns. The first node is always `home`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    pub name: &'static str,
    pub links: Vec<LinkSpec>,
}

/// A named topology.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    pub why: &'static str,
    pub nodes: Vec<NodeSpec>,
    /// LAN rate between nodes in bits per second, when there is more than one node.
    pub lan_rate_bps: Option<u64>,
}

impl Profile {
    /// Every uplink of every node, in order, as `(node, link)`.
    pub fn links(&self) -> impl Iterator<Item = (&NodeSpec, &LinkSpec)> {
        self.nodes.iter().flat_map(|n| n.links.iter().map(move |l| (n, l)))
    }

    /// The sum of the nominal link rates in bytes per second (the measured link sum is what counts).
    pub fn nominal_sum_bytes(&self) -> f64 {
        self.links().map(|(_, l)| l.rate_bytes()).sum()
    }
}

/// Names of all profiles, in the order of the design table.
pub const PROFILE_NAMES: &[&str] = &["home", "peers", "skewed", "lossy"];

/// Looks a profile up by name.
pub fn profile(name: &str) -> Option<Profile> {
    let p = match name {
        "home" => Profile {
            name: "home",
            why: "the seed's story: unequal rates and RTTs",
            nodes: vec![NodeSpec {
                name: "home",
                links: vec![
                    LinkSpec::new("adsl", 4, 30),
                    LinkSpec::new("4g-a", 20, 60),
                    LinkSpec::new("4g-b", 20, 45),
                ],
            }],
            lan_rate_bps: None,
        },
        "peers" => Profile {
            name: "peers",
            why: "the same links, but reached through peer nodes",
            nodes: vec![
                NodeSpec {
                    name: "home",
                    links: vec![LinkSpec::new("adsl", 4, 30)],
                },
                NodeSpec {
                    name: "phone-1",
                    links: vec![LinkSpec::new("4g", 20, 60)],
                },
                NodeSpec {
                    name: "phone-2",
                    links: vec![LinkSpec::new("4g", 20, 45)],
                },
            ],
            lan_rate_bps: Some(300_000_000),
        },
        "skewed" => Profile {
            name: "skewed",
            why: "schedulers that stripe naively get worse than the fast link alone",
            nodes: vec![NodeSpec {
                name: "home",
                links: vec![LinkSpec::new("fiber", 50, 10), LinkSpec::new("sat", 5, 300)],
            }],
            lan_rate_bps: None,
        },
        "lossy" => Profile {
            name: "lossy",
            why: "redundancy and failover under loss",
            nodes: vec![NodeSpec {
                name: "home",
                links: vec![
                    LinkSpec {
                        loss: 0.02,
                        ..LinkSpec::new("4g", 20, 50)
                    },
                    LinkSpec::new("dsl", 10, 20),
                ],
            }],
            lan_rate_bps: None,
        },
        _ => return None,
    };
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_profile_exists_and_home_comes_first() {
        for name in PROFILE_NAMES {
            let p = profile(name).expect(name);
            assert_eq!(p.name, *name);
            assert_eq!(p.nodes[0].name, "home");
            assert!(p.links().count() >= 2);
        }
        assert!(profile("nope").is_none());
    }

    #[test]
    fn home_matches_the_design_table() {
        let p = profile("home").unwrap();
        let rates: Vec<u64> = p.links().map(|(_, l)| l.rate_bps / 1_000_000).collect();
        let rtts: Vec<u128> = p.links().map(|(_, l)| l.rtt.as_millis()).collect();
        assert_eq!(rates, [4, 20, 20]);
        assert_eq!(rtts, [30, 60, 45]);
    }
}
