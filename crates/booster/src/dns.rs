//! DNS for the chosen source: a name is resolved by asking the nameservers *through that
//! uplink* (a UDP socket bound to its interface), so each uplink gets the answers its own
//! network gives, and a dead uplink cannot answer for a live one.
//!
//! `/etc/hosts` is honoured first. A nameserver on loopback (a local caching resolver such as
//! systemd-resolved) is asked unbound: it decides the path itself. With no nameserver known at
//! all, the system resolver (getaddrinfo) answers.

use crate::source::{Source, SourceKind};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::Mutex,
    time::{Duration, Instant},
};
use tokio::net::UdpSocket;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("name not found")]
    NotFound,
    #[error("DNS timed out")]
    Timeout,
    #[error("DNS failed: {0}")]
    Io(#[from] io::Error),
    #[error("DNS server answered {0}")]
    Server(String),
}

/// Answers are cached at most this long, whatever their TTL says.
const MAX_CACHE: Duration = Duration::from_secs(300);
/// Per-query timeout before the next server is tried.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds the cache so a client asking for random names cannot grow it without limit.
const MAX_CACHE_ENTRIES: usize = 4096;

/// (source name, host name).
type CacheKey = (String, String);

pub struct Resolver {
    servers: Vec<SocketAddr>,
    hosts: HashMap<String, Vec<IpAddr>>,
    cache: Mutex<HashMap<CacheKey, (Vec<IpAddr>, Instant)>>,
}

impl Resolver {
    /// Nameservers from config, or from /etc/resolv.conf.
    pub fn new(servers: Option<Vec<SocketAddr>>) -> Resolver {
        let servers = servers.unwrap_or_else(|| {
            std::fs::read_to_string("/etc/resolv.conf")
                .map(|t| parse_resolv_conf(&t))
                .unwrap_or_default()
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 53))
                .collect()
        });
        let hosts = std::fs::read_to_string("/etc/hosts")
            .map(|t| parse_hosts(&t))
            .unwrap_or_default();
        Resolver {
            servers,
            hosts,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Resolves `host` for `source`. IPv6 addresses come first (RFC 8305 interleaves later).
    pub async fn resolve(&self, host: &str, source: &Source) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some(ips) = self.hosts.get(&host) {
            return Ok(ips.clone());
        }
        let key = (source.name.clone(), host.clone());
        let now = Instant::now();
        if let Some((ips, until)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            if *until > now {
                return Ok(ips.clone());
            }
        }
        let iface = match &source.kind {
            SourceKind::Iface { name } => Some(name.as_str()),
            SourceKind::Emulated(_) | SourceKind::Peer { .. } | SourceKind::Bond { .. } => None,
        };
        let (ips, ttl) = if self.servers.is_empty() {
            (system_lookup(&host).await?, MAX_CACHE)
        } else {
            self.query(&host, iface).await?
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHE_ENTRIES {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= MAX_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (ips.clone(), now + ttl.min(MAX_CACHE)));
        Ok(ips)
    }

    /// Asks each nameserver in turn, through `iface` unless the server is on loopback.
    async fn query(&self, host: &str, iface: Option<&str>) -> Result<(Vec<IpAddr>, Duration), DnsError> {
        let name = Name::from_str(&format!("{host}.")).map_err(|_| DnsError::NotFound)?;
        let mut last = DnsError::Timeout;
        for server in &self.servers {
            let iface = if server.ip().is_loopback() { None } else { iface };
            let (a, aaaa) = tokio::join!(
                query_one(*server, iface, &name, RecordType::A),
                query_one(*server, iface, &name, RecordType::AAAA)
            );
            let mut ips = Vec::new();
            let mut ttl = MAX_CACHE;
            let mut not_found = 0;
            for r in [aaaa, a] {
                match r {
                    Ok((v, t)) => {
                        ips.extend(v);
                        ttl = ttl.min(t);
                    }
                    Err(DnsError::NotFound) => not_found += 1,
                    Err(e) => last = e,
                }
            }
            if !ips.is_empty() {
                return Ok((ips, ttl));
            }
            if not_found == 2 {
                return Err(DnsError::NotFound);
            }
        }
        Err(last)
    }
}

async fn query_one(
    server: SocketAddr,
    iface: Option<&str>,
    name: &Name,
    rtype: RecordType,
) -> Result<(Vec<IpAddr>, Duration), DnsError> {
    let domain = if server.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if let Some(iface) = iface {
        crate::dial::bind_to_uplink(&sock, iface, server.is_ipv4())?;
    }
    sock.set_nonblocking(true)?;
    let unspecified: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    sock.bind(&unspecified.into())?;
    let sock = UdpSocket::from_std(sock.into())?;
    sock.connect(server).await?;

    let id: u16 = rand::random();
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name.clone(), rtype));
    let bytes = msg.to_vec().map_err(|e| DnsError::Server(e.to_string()))?;
    sock.send(&bytes).await?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + QUERY_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| DnsError::Timeout)??;
        let Ok(reply) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if reply.id() != id {
            continue; // not ours: keep waiting for the real answer
        }
        match reply.response_code() {
            ResponseCode::NoError => {}
            ResponseCode::NXDomain => return Err(DnsError::NotFound),
            other => return Err(DnsError::Server(other.to_string())),
        }
        let mut ips = Vec::new();
        let mut ttl = MAX_CACHE;
        for rec in reply.answers() {
            match rec.data() {
                RData::A(a) => ips.push(IpAddr::V4(a.0)),
                RData::AAAA(a) => ips.push(IpAddr::V6(a.0)),
                _ => continue,
            }
            ttl = ttl.min(Duration::from_secs(rec.ttl() as u64));
        }
        if ips.is_empty() {
            return Err(DnsError::NotFound);
        }
        return Ok((ips, ttl));
    }
}

async fn system_lookup(host: &str) -> Result<Vec<IpAddr>, DnsError> {
    let addrs = tokio::net::lookup_host((host, 0)).await.map_err(|e| {
        // getaddrinfo reports unknown names as a generic error; treat "not known" as not found.
        let text = e.to_string();
        if text.contains("not known") || text.contains("No address") || text.contains("not found") {
            DnsError::NotFound
        } else {
            DnsError::Io(e)
        }
    })?;
    let mut ips: Vec<IpAddr> = Vec::new();
    for a in addrs {
        if !ips.contains(&a.ip()) {
            ips.push(a.ip());
        }
    }
    if ips.is_empty() {
        return Err(DnsError::NotFound);
    }
    Ok(ips)
}

fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse().ok())
        .collect()
}

fn parse_hosts(text: &str) -> HashMap<String, Vec<IpAddr>> {
    let mut map: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        for name in fields {
            let v = map.entry(name.to_ascii_lowercase()).or_default();
            if !v.contains(&ip) {
                v.push(ip);
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resolv_conf_and_hosts() {
        let r = parse_resolv_conf("# x\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch lan\n");
        assert_eq!(
            r,
            vec!["192.0.2.53".parse::<IpAddr>().unwrap(), "fe80::1".parse().unwrap()]
        );
        let h = parse_hosts("127.0.0.1 localhost box # comment\n::1 localhost\nbad line\n");
        assert_eq!(h["localhost"].len(), 2);
        assert_eq!(h["box"], vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    }
}
