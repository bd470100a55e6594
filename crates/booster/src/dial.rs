//! The dial step: open a TCP connection to a target through one source. This is the only place
//! that creates outbound sockets, so binding, timeouts, Happy Eyeballs, socket options and
//! byte accounting live here once, for the proxy, probes and the demo alike.

use crate::{
    dns::DnsError,
    source::{OpenGuard, Source, SourceKind},
    sys,
    target::{Host, Target},
};
use futures::{stream::FuturesUnordered, StreamExt};
use std::{
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Once,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

#[derive(Debug, Clone)]
pub struct DialOpts {
    /// Budget for the whole connect phase (all Happy Eyeballs attempts).
    pub connect_timeout: Duration,
    /// RFC 8305 "Connection Attempt Delay": the next address is tried after this long.
    pub attempt_delay: Duration,
    /// `TCP_NOTSENT_LOWAT`, for senders that want shallow kernel queues.
    pub notsent_lowat: Option<u32>,
    /// A reachability probe: not counted as a connection of the source.
    pub probe: bool,
}

impl Default for DialOpts {
    fn default() -> Self {
        DialOpts {
            connect_timeout: Duration::from_secs(5),
            attempt_delay: Duration::from_millis(250),
            notsent_lowat: None,
            probe: false,
        }
    }
}

/// Why a dial failed, classified once so that failover and every reply code map it in one place.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("connection refused")]
    Refused,
    #[error("network unreachable")]
    NetUnreachable,
    #[error("host unreachable")]
    HostUnreachable,
    #[error("connect timed out")]
    Timeout,
    #[error("name not found")]
    NameNotFound,
    #[error("DNS failed: {0}")]
    Dns(DnsError),
    #[error("cannot bind to uplink {iface}: {err}")]
    BindFailed { iface: String, err: io::Error },
    #[error("not allowed by policy")]
    Policy,
    #[error("no usable source")]
    NoSource,
    /// The node itself ran out of something a connection needs: source ports toward the
    /// target, descriptors, buffers. Not the uplink's fault, and gone when connections close.
    #[error("out of local ports or descriptors: {0}")]
    Exhausted(io::Error),
    #[error("{0}")]
    Io(io::Error),
}

impl DialError {
    fn from_io(e: io::Error) -> DialError {
        match e.raw_os_error() {
            // A reset while connecting (or right after: no peer any more) came from the target,
            // which answered: like a refusal, it says nothing against the uplink.
            Some(libc::ECONNREFUSED) | Some(libc::ECONNRESET) | Some(libc::ENOTCONN) => DialError::Refused,
            Some(libc::ENETUNREACH) | Some(libc::ENETDOWN) => DialError::NetUnreachable,
            Some(libc::EHOSTUNREACH) | Some(libc::EHOSTDOWN) => DialError::HostUnreachable,
            Some(libc::ETIMEDOUT) => DialError::Timeout,
            Some(
                libc::EADDRNOTAVAIL | libc::EADDRINUSE | libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM,
            ) => DialError::Exhausted(e),
            _ => match e.kind() {
                io::ErrorKind::ConnectionRefused => DialError::Refused,
                io::ErrorKind::TimedOut => DialError::Timeout,
                io::ErrorKind::NetworkUnreachable => DialError::NetUnreachable,
                io::ErrorKind::HostUnreachable => DialError::HostUnreachable,
                _ => DialError::Io(e),
            },
        }
    }

    /// The error for a SOCKS5 reply `code` a relay or peer sent back.
    pub fn from_reply(code: u8, reason: String) -> DialError {
        match code {
            2 => DialError::Policy,
            3 => DialError::NetUnreachable,
            4 => DialError::HostUnreachable,
            5 => DialError::Refused,
            6 => DialError::Timeout,
            _ => DialError::Io(io::Error::other(reason)),
        }
    }

    /// Does this failure say something about the source (so it counts against its health and
    /// another source is worth trying), rather than about the target?
    pub fn source_fault(&self) -> bool {
        match self {
            DialError::Refused | DialError::NameNotFound | DialError::Policy | DialError::Exhausted(_) => false,
            DialError::NetUnreachable
            | DialError::HostUnreachable
            | DialError::Timeout
            | DialError::Dns(_)
            | DialError::BindFailed { .. }
            | DialError::NoSource
            | DialError::Io(_) => true,
        }
    }

    /// The SOCKS5 reply code a client hears for this failure (RFC 1928 §6).
    pub fn socks_reply(&self) -> proto::socks5::Reply {
        use proto::socks5::Reply;
        match self {
            DialError::Refused => Reply::ConnectionRefused,
            DialError::NetUnreachable | DialError::NoSource => Reply::NetworkUnreachable,
            DialError::HostUnreachable | DialError::NameNotFound => Reply::HostUnreachable,
            // RFC 1928 has no "timed out"; TTL expired is the closest and tells it apart.
            DialError::Timeout => Reply::TtlExpired,
            DialError::Policy => Reply::NotAllowed,
            DialError::Dns(_) | DialError::BindFailed { .. } | DialError::Io(_) | DialError::Exhausted(_) => {
                Reply::GeneralFailure
            }
        }
    }

    /// The HTTP status a proxy client hears for this failure.
    pub fn http_status(&self) -> u16 {
        match self {
            DialError::Timeout => 504,
            DialError::Policy => 403,
            DialError::NoSource | DialError::Exhausted(_) => 503,
            _ => 502,
        }
    }

    /// How informative the error is when several attempts failed: the client hears the best.
    pub fn rank(&self) -> u8 {
        match self {
            DialError::Refused => 7,
            DialError::NameNotFound => 6,
            DialError::Policy => 5,
            DialError::HostUnreachable => 4,
            DialError::Timeout => 3,
            DialError::NetUnreachable => 2,
            DialError::Dns(_) | DialError::BindFailed { .. } | DialError::Io(_) | DialError::Exhausted(_) => 1,
            DialError::NoSource => 0,
        }
    }
}

/// The byte stream of an upstream connection.
pub enum Upstream {
    Tcp(TcpStream),
    Emu(lab::emulink::EmuStream),
    /// A stream through a peer's uplink (see [`crate::peer::open`]).
    Peer(crate::peer::PeerStream),
    /// A bonded stream through a relay (see [`crate::bond::connect`]).
    Bond(crate::bond::BondStream),
}

/// An upstream connection that counts its bytes against its source and holds the source's
/// open-connection count while it lives.
pub struct Metered {
    inner: Upstream,
    guard: OpenGuard,
    /// The client connection these bytes are for, when dialled from a proxy session.
    conn: Option<Arc<crate::conns::Conn>>,
    pub local_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    /// Time the TCP handshake took.
    pub connect_time: Duration,
    /// Bytes counted so far (read by us, written by us), for the reckoning at close.
    rx_counted: AtomicU64,
    tx_counted: AtomicU64,
}

/// At close, a TCP upstream's usage is squared with the kernel's own count: bytes that arrived
/// and were acked but never read (a download cut short, a connection killed) crossed the
/// metered link all the same, and so did segments sent twice. What the socket says beyond
/// what was counted is added to the source (not to the client connection, which never saw it).
impl Drop for Metered {
    fn drop(&mut self) {
        let Upstream::Tcp(s) = &self.inner else { return };
        let Ok(info) = sys::tcp_info(s) else { return };
        let source = self.guard.source();
        let rx = info.bytes_received.saturating_sub(self.rx_counted.load(Relaxed));
        let tx = info.bytes_sent.saturating_sub(self.tx_counted.load(Relaxed));
        source.rx.fetch_add(rx, Relaxed);
        source.tx.fetch_add(tx, Relaxed);
    }
}

impl Metered {
    /// An upstream made outside `dial` (the bond), tied to the current client connection.
    pub fn new(
        inner: Upstream,
        guard: OpenGuard,
        (local_addr, peer_addr): (SocketAddr, SocketAddr),
        connect_time: Duration,
        target: &Target,
    ) -> Metered {
        Metered {
            inner,
            guard,
            conn: None,
            local_addr,
            peer_addr,
            connect_time,
            rx_counted: AtomicU64::new(0),
            tx_counted: AtomicU64::new(0),
        }
        .for_current_client(target)
    }

    /// Whether this is a bonded stream (never split into ranges: the bond already uses every
    /// path).
    pub fn is_bond(&self) -> bool {
        matches!(self.inner, Upstream::Bond(_))
    }

    pub fn source(&self) -> &Arc<Source> {
        self.guard.source()
    }

    /// Counts bytes received outside `poll_read` (the splice relay): against the source and
    /// the client connection.
    pub fn count_rx(&self, n: u64) {
        self.rx_counted.fetch_add(n, Relaxed);
        self.guard.source().rx.fetch_add(n, Relaxed);
        if let Some(c) = &self.conn {
            c.down.fetch_add(n, Relaxed);
        }
    }

    /// Counts bytes sent outside `poll_write` (the splice relay).
    pub fn count_tx(&self, n: u64) {
        self.tx_counted.fetch_add(n, Relaxed);
        self.guard.source().tx.fetch_add(n, Relaxed);
        if let Some(c) = &self.conn {
            c.up.fetch_add(n, Relaxed);
        }
    }

    /// Ties the connection to the client connection of the running proxy session, if any.
    fn for_current_client(mut self, target: &Target) -> Metered {
        self.conn = crate::conns::current();
        if let Some(c) = &self.conn {
            c.set_route(target, &self.guard.source().name);
        }
        self
    }

    pub fn tcp(&self) -> Option<&TcpStream> {
        match &self.inner {
            Upstream::Tcp(t) => Some(t),
            Upstream::Emu(_) | Upstream::Peer(_) | Upstream::Bond(_) => None,
        }
    }
}

impl AsyncRead for Metered {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = match &mut this.inner {
            Upstream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Upstream::Emu(s) => Pin::new(s).poll_read(cx, buf),
            Upstream::Peer(s) => Pin::new(s).poll_read(cx, buf),
            Upstream::Bond(s) => Pin::new(s).poll_read(cx, buf),
        };
        let n = buf.filled().len() - before;
        if n > 0 {
            this.count_rx(n as u64);
        }
        r
    }
}

impl AsyncWrite for Metered {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = match &mut this.inner {
            Upstream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Upstream::Emu(s) => Pin::new(s).poll_write(cx, buf),
            Upstream::Peer(s) => Pin::new(s).poll_write(cx, buf),
            Upstream::Bond(s) => Pin::new(s).poll_write(cx, buf),
        };
        if let Poll::Ready(Ok(n)) = r {
            this.count_tx(n as u64);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Upstream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Upstream::Emu(s) => Pin::new(s).poll_flush(cx),
            Upstream::Peer(s) => Pin::new(s).poll_flush(cx),
            Upstream::Bond(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Upstream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Upstream::Emu(s) => Pin::new(s).poll_shutdown(cx),
            Upstream::Peer(s) => Pin::new(s).poll_shutdown(cx),
            Upstream::Bond(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Opens a connection to `target` through `source`. Domain names are resolved for that source.
/// `allow` filters the resolved addresses (policies by address); if it removes them all, the
/// dial fails with [`DialError::Policy`].
pub async fn dial(
    node: &crate::state::Node,
    source: &Arc<Source>,
    target: &Target,
    opts: &DialOpts,
    allow: impl Fn(IpAddr) -> bool,
) -> Result<Metered, DialError> {
    let dns = &node.dns;
    if let SourceKind::Peer { addr, uplink, .. } = &source.kind {
        // The peer resolves names and dials; address rules are checked here for address
        // targets, and on the address the peer reports for names.
        if target.ip().is_some_and(|ip| !allow(ip)) {
            return Err(DialError::Policy);
        }
        let started = Instant::now();
        let budget = opts.connect_timeout + crate::peer::HANDSHAKE_TIMEOUT;
        let (stream, bound) = tokio::time::timeout(budget, crate::peer::open(node, addr, uplink, target, &allow))
            .await
            .map_err(|_| DialError::Timeout)??;
        let guard = if opts.probe {
            source.probe_guard()
        } else {
            source.open_guard()
        };
        let peer_addr = SocketAddr::new(target.ip().unwrap_or(IpAddr::from([0, 0, 0, 0])), target.port);
        return Ok(Metered {
            inner: Upstream::Peer(stream),
            guard,
            conn: None,
            local_addr: bound,
            peer_addr,
            connect_time: started.elapsed(),
            rx_counted: AtomicU64::new(0),
            tx_counted: AtomicU64::new(0),
        }
        .for_current_client(target));
    }
    let ips = match &target.host {
        Host::Ip(ip) => vec![*ip],
        Host::Domain(name) => dns.resolve(name, source).await.map_err(|e| match e {
            DnsError::NotFound => DialError::NameNotFound,
            e => DialError::Dns(e),
        })?,
    };
    let ips: Vec<IpAddr> = ips.into_iter().filter(|ip| allow(*ip)).collect();
    if ips.is_empty() {
        return Err(DialError::Policy);
    }
    let addrs: Vec<SocketAddr> = interleave(ips)
        .into_iter()
        .map(|ip| SocketAddr::new(ip, target.port))
        .collect();
    let started = Instant::now();
    let (inner, peer_addr) = tokio::time::timeout(opts.connect_timeout, happy_eyeballs(source, &addrs, opts))
        .await
        .map_err(|_| DialError::Timeout)??;
    let connect_time = started.elapsed();
    let local_addr = match &inner {
        Upstream::Tcp(t) => t.local_addr().map_err(DialError::from_io)?,
        Upstream::Emu(_) | Upstream::Peer(_) | Upstream::Bond(_) => "0.0.0.0:0".parse().expect("literal"),
    };
    Ok(Metered {
        inner,
        guard: if opts.probe {
            source.probe_guard()
        } else {
            source.open_guard()
        },
        conn: None,
        local_addr,
        peer_addr,
        connect_time,
        rx_counted: AtomicU64::new(0),
        tx_counted: AtomicU64::new(0),
    }
    .for_current_client(target))
}

/// RFC 8305 §4: alternate address families, IPv6 first.
fn interleave(ips: Vec<IpAddr>) -> Vec<IpAddr> {
    let (v6, v4): (Vec<IpAddr>, Vec<IpAddr>) = ips.into_iter().partition(|ip| ip.is_ipv6());
    let mut out = Vec::with_capacity(v6.len() + v4.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

/// Starts an attempt per address, each `attempt_delay` after the previous one (or at once when
/// the previous one failed), and keeps the first that connects.
/// The connection, and the address it reached.
async fn happy_eyeballs(
    source: &Source,
    addrs: &[SocketAddr],
    opts: &DialOpts,
) -> Result<(Upstream, SocketAddr), DialError> {
    let mut pending = FuturesUnordered::new();
    let mut next = 0;
    let mut best: Option<DialError> = None;
    loop {
        if next < addrs.len() && pending.is_empty() {
            pending.push(connect_to(source, addrs[next], opts));
            next += 1;
        }
        let delay = tokio::time::sleep(opts.attempt_delay);
        tokio::select! {
            biased;
            Some(r) = pending.next() => match r {
                Ok(s) => return Ok(s),
                Err(e) => {
                    if best.as_ref().is_none_or(|b| e.rank() > b.rank()) {
                        best = Some(e);
                    }
                    if pending.is_empty() && next >= addrs.len() {
                        return Err(best.unwrap_or(DialError::HostUnreachable));
                    }
                }
            },
            _ = delay, if next < addrs.len() => {
                pending.push(connect_to(source, addrs[next], opts));
                next += 1;
            }
        }
    }
}

async fn connect_to(source: &Source, addr: SocketAddr, opts: &DialOpts) -> Result<(Upstream, SocketAddr), DialError> {
    connect_one(source, addr, opts).await.map(|up| (up, addr))
}

async fn connect_one(source: &Source, addr: SocketAddr, opts: &DialOpts) -> Result<Upstream, DialError> {
    match &source.kind {
        SourceKind::Iface { name } => {
            let sock = bound_socket(name, addr)?;
            let stream = sock.connect(addr).await.map_err(DialError::from_io)?;
            stream.set_nodelay(true).map_err(DialError::Io)?;
            if let Some(lowat) = opts.notsent_lowat {
                sys::set_notsent_lowat(&stream, lowat).map_err(DialError::Io)?;
            }
            Ok(Upstream::Tcp(stream))
        }
        SourceKind::Emulated(link) => link.connect(addr).await.map(Upstream::Emu).map_err(DialError::from_io),
        SourceKind::Peer { .. } | SourceKind::Bond { .. } => Err(DialError::Io(io::Error::other(
            "peer and bond sources are not dialled directly",
        ))),
    }
}

/// A TCP socket bound to `iface` (see [`bind_to_uplink`]).
fn bound_socket(iface: &str, addr: SocketAddr) -> Result<tokio::net::TcpSocket, DialError> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    // Non-blocking from the start (`SOCK_NONBLOCK`), not with two `fcntl` calls after.
    let sock = socket2::Socket::new(
        domain,
        socket2::Type::STREAM.nonblocking(),
        Some(socket2::Protocol::TCP),
    )
    .map_err(DialError::from_io)?;
    bind_to_uplink(&sock, iface, addr.is_ipv4()).map_err(|err| DialError::BindFailed {
        iface: iface.to_string(),
        err,
    })?;
    let std: std::net::TcpStream = sock.into();
    Ok(tokio::net::TcpSocket::from_std_stream(std))
}

/// Binds any socket (TCP, UDP, DNS) to an uplink with `SO_BINDTODEVICE`. Where that is not
/// permitted (no CAP_NET_RAW on an old kernel), it binds to the interface's source address
/// instead and warns once: that only works with source policy routing. Any other failure is an
/// error, never a silent fallback to the default route.
pub fn bind_to_uplink(sock: &socket2::Socket, iface: &str, v4: bool) -> io::Result<()> {
    match sys::bind_device(sock, iface) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            let ip = source_address(iface, v4).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    "SO_BINDTODEVICE not permitted and the interface has no address",
                )
            })?;
            static WARN: Once = Once::new();
            WARN.call_once(|| {
                tracing::warn!(
                    "SO_BINDTODEVICE is not permitted here (needs CAP_NET_RAW): binding uplink sockets to their \
                     source address instead. This only steers traffic if source policy routing is set up \
                     (ip rule add from <addr> table <n>); see docs/config.md"
                )
            });
            if sock.r#type()? == socket2::Type::STREAM {
                let _ = sys::set_bind_address_no_port(sock);
            }
            sock.bind(&SocketAddr::new(ip, 0).into())
        }
        Err(e) => Err(e),
    }
}

fn source_address(iface: &str, v4: bool) -> Option<IpAddr> {
    sys::interfaces()
        .ok()?
        .into_iter()
        .find(|i| i.name == iface)?
        .addrs
        .into_iter()
        .find(|a| a.is_ipv4() == v4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_v6_first() {
        let ips: Vec<IpAddr> = ["1.1.1.1", "2.2.2.2", "::1", "::2", "::3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let got: Vec<String> = interleave(ips).iter().map(|i| i.to_string()).collect();
        assert_eq!(got, ["::1", "1.1.1.1", "::2", "2.2.2.2", "::3"]);
    }

    #[test]
    fn io_errors_classify() {
        let e = |c| DialError::from_io(io::Error::from_raw_os_error(c));
        assert!(matches!(e(libc::ECONNREFUSED), DialError::Refused));
        assert!(matches!(e(libc::ENETUNREACH), DialError::NetUnreachable));
        assert!(matches!(e(libc::EHOSTUNREACH), DialError::HostUnreachable));
        assert!(matches!(e(libc::ETIMEDOUT), DialError::Timeout));
        // A target that accepts and resets at once must not count against the uplink.
        assert!(matches!(e(libc::ECONNRESET), DialError::Refused));
        assert!(matches!(e(libc::ENOTCONN), DialError::Refused));
        assert!(!DialError::Refused.source_fault());
        assert!(DialError::Timeout.source_fault());
        // The node out of source ports or descriptors is not the uplink's fault.
        for c in [libc::EADDRNOTAVAIL, libc::EADDRINUSE, libc::EMFILE, libc::ENFILE] {
            assert!(matches!(e(c), DialError::Exhausted(_)), "{c}");
            assert!(!e(c).source_fault(), "{c}");
        }
    }
}
