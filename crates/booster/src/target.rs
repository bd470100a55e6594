//! Where a client wants to go: an IP address or a domain name, plus a port.

use proto::socks5::Address;
use std::{fmt, net::IpAddr, net::SocketAddr};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    Domain(String),
}

/// A connection target. Domain names are resolved at dial time, for the chosen source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

impl Target {
    pub fn new(host: &str, port: u16) -> Target {
        let trimmed = host.trim_start_matches('[').trim_end_matches(']');
        let host = match trimmed.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Domain(host.to_ascii_lowercase()),
        };
        Target { host, port }
    }

    /// Parses `host:port`, `[v6]:port` or `v4:port`.
    pub fn parse_host_port(s: &str) -> Result<Target, String> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Target::from(sa));
        }
        let (host, port) = s.rsplit_once(':').ok_or("expected host:port")?;
        let port: u16 = port.parse().map_err(|_| format!("bad port `{port}`"))?;
        if host.is_empty() || host.contains(':') {
            return Err("expected host:port".into());
        }
        Ok(Target::new(host, port))
    }

    pub fn domain(&self) -> Option<&str> {
        match &self.host {
            Host::Domain(d) => Some(d),
            Host::Ip(_) => None,
        }
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self.host {
            Host::Ip(ip) => Some(ip),
            Host::Domain(_) => None,
        }
    }

    /// The host as text, for logs and stickiness keys.
    pub fn host_str(&self) -> String {
        match &self.host {
            Host::Ip(ip) => ip.to_string(),
            Host::Domain(d) => d.clone(),
        }
    }
}

impl From<SocketAddr> for Target {
    fn from(sa: SocketAddr) -> Target {
        Target {
            host: Host::Ip(sa.ip()),
            port: sa.port(),
        }
    }
}

impl From<&Address> for Target {
    fn from(a: &Address) -> Target {
        match a {
            Address::Ip(sa) => Target::from(*sa),
            Address::Domain(d, port) => Target::new(d, *port),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Ip(ip) => write!(f, "{ip}:{}", self.port),
            Host::Domain(d) => write!(f, "{d}:{}", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(Target::parse_host_port("1.2.3.4:80").unwrap().to_string(), "1.2.3.4:80");
        assert_eq!(Target::parse_host_port("[::1]:443").unwrap().to_string(), "[::1]:443");
        assert_eq!(
            Target::parse_host_port("Example.COM:8080").unwrap().to_string(),
            "example.com:8080"
        );
        assert!(Target::parse_host_port("example.com").is_err());
        assert!(Target::parse_host_port("example.com:99999").is_err());
        assert!(Target::parse_host_port(":80").is_err());
    }
}
