//! SOCKS5 UDP ASSOCIATE (RFC 1928 §7): a relay socket per association. Datagrams from the
//! client carry a header naming their destination; each destination is sent through a source
//! the balancer picks (and keeps for that destination), from a UDP socket bound to that
//! source's uplink. Replies come back with the header naming who sent them.
//!
//! Destinations that bond rules select go over the bond instead: to the relay on the path
//! expected first, or, in redundant mode, on every path (the relay drops the copies), and
//! the relay sends them on from its own address. That suits DNS, games, calls and QUIC.
//!
//! The association lives as long as the client's TCP control connection. Fragmented datagrams
//! (FRAG ≠ 0) are dropped, as the RFC allows. Datagrams not bonded use local uplinks only:
//! peers lend streams, not UDP.

use crate::{
    balancer,
    proxy::Ctx,
    socks::{reply, SessionError},
    source::{Source, SourceKind},
    target::{Host, Target},
};
use proto::socks5::{Address, Reply, UdpHeader};
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{atomic::Ordering::Relaxed, Arc},
};
use tokio::{io::AsyncReadExt, net::TcpStream, net::UdpSocket, task::JoinSet};

/// Largest datagram handled (the UDP maximum).
const MAX_DATAGRAM: usize = 65_535;
/// Destinations remembered per association; beyond it the oldest choice is forgotten.
const MAX_DESTINATIONS: usize = 1024;

pub async fn associate(
    mut ctrl: TcpStream,
    peer: SocketAddr,
    requested: Address,
    ctx: &Ctx,
) -> Result<(), SessionError> {
    let local_ip = ctrl.local_addr()?.ip();
    let relay = match UdpSocket::bind(SocketAddr::new(local_ip, 0)).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            reply(
                &mut ctrl,
                Reply::GeneralFailure,
                &Address::Ip(SocketAddr::new(local_ip, 0)),
            )
            .await?;
            return Err(e.into());
        }
    };
    reply(&mut ctrl, Reply::Succeeded, &Address::Ip(relay.local_addr()?)).await?;
    tracing::debug!(client = %peer, relay = %relay.local_addr()?, "UDP association open");

    // The client's UDP address: the IP of its TCP connection, and the port it announced (or the
    // port of its first datagram when it announced 0).
    let mut client: Option<SocketAddr> = match &requested {
        Address::Ip(sa) if sa.port() != 0 && !sa.ip().is_unspecified() => Some(*sa),
        Address::Ip(sa) if sa.port() != 0 => Some(SocketAddr::new(peer.ip(), sa.port())),
        _ => None,
    };
    let mut outbound: HashMap<String, Arc<UdpSocket>> = HashMap::new();
    let mut route: HashMap<Target, Arc<Source>> = HashMap::new();
    let mut receivers = JoinSet::new();
    let mut flows = crate::bond::FlowSet::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut ctrl_byte = [0u8; 1];

    loop {
        let (n, from) = tokio::select! {
            _ = ctx.kill.cancelled() => break,
            r = ctrl.read(&mut ctrl_byte) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => continue, // the control connection carries nothing; ignore stray bytes
            },
            r = relay.recv_from(&mut buf) => r?,
        };
        if from.ip() != peer.ip() || client.is_some_and(|c| c != from) {
            continue; // not our client: drop silently, the relay is not an open UDP proxy
        }
        client.get_or_insert(from);
        let Ok((header, offset)) = UdpHeader::decode(&buf[..n]) else {
            continue;
        };
        if header.frag != 0 {
            continue;
        }
        let target = Target::from(&header.addr);
        if let Some(bonds) = &ctx.node.bonds {
            if let Some(mode) = bonds.mode_for(&target) {
                if ctx.node.policies().refused(target.domain(), target.ip()) {
                    continue;
                }
                let client = client.expect("set above");
                let relay_sock = relay.clone();
                flows.send(bonds, mode, header.addr, &buf[offset..n], |replies| {
                    receivers.spawn(bond_back(replies, relay_sock, client));
                });
                continue;
            }
        }
        let source = match route.get(&target) {
            Some(s) if s.usable(std::time::Instant::now()) => s.clone(),
            _ => {
                let Ok(ranked) = balancer::rank(&ctx.node, &target, ctx.scorer.as_ref(), std::time::Instant::now())
                else {
                    continue;
                };
                // Datagrams leave through a local uplink: the peer channel carries streams only.
                let Some(s) = ranked.into_iter().find(|s| !matches!(s.kind, SourceKind::Peer { .. })) else {
                    continue;
                };
                if route.len() >= MAX_DESTINATIONS {
                    route.clear();
                }
                route.insert(target.clone(), s.clone());
                s
            }
        };
        let dest_ip = match &target.host {
            Host::Ip(ip) => *ip,
            Host::Domain(name) => match ctx.node.dns.resolve(name, &source).await {
                Ok(ips) => match ips.iter().find(|ip| ip.is_ipv4()).or(ips.first()) {
                    Some(ip) => *ip,
                    None => continue,
                },
                Err(_) => continue,
            },
        };
        // Address rules apply to datagrams too, after the name resolved.
        if !ctx.node.policies().permits(&source.name, target.domain(), dest_ip) {
            continue;
        }
        let key = format!("{}/{}", source.name, if dest_ip.is_ipv4() { 4 } else { 6 });
        let sock = match outbound.get(&key) {
            Some(s) => s.clone(),
            None => {
                let Ok(s) = bound_udp(&source, dest_ip).await else {
                    continue;
                };
                let s = Arc::new(s);
                outbound.insert(key, s.clone());
                receivers.spawn(relay_back(
                    s.clone(),
                    relay.clone(),
                    client.expect("set above"),
                    source.clone(),
                ));
                s
            }
        };
        let payload = &buf[offset..n];
        if sock
            .send_to(payload, SocketAddr::new(dest_ip, target.port))
            .await
            .is_ok()
        {
            source.tx.fetch_add(payload.len() as u64, Relaxed);
        }
    }
    receivers.shutdown().await;
    tracing::debug!(client = %peer, "UDP association closed");
    Ok(())
}

/// Datagrams from the network back to the client, each with a header naming its sender.
async fn relay_back(out: Arc<UdpSocket>, relay: Arc<UdpSocket>, client: SocketAddr, source: Arc<Source>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut packet = Vec::with_capacity(MAX_DATAGRAM + 32);
    loop {
        let Ok((n, from)) = out.recv_from(&mut buf).await else {
            return;
        };
        source.rx.fetch_add(n as u64, Relaxed);
        packet.clear();
        UdpHeader {
            frag: 0,
            addr: Address::Ip(from),
        }
        .encode(&mut packet);
        packet.extend_from_slice(&buf[..n]);
        let _ = relay.send_to(&packet, client).await;
    }
}

/// Datagrams that came back over the bond, to the client with a header naming their sender.
async fn bond_back(mut replies: crate::bond::FlowReplies, relay: Arc<UdpSocket>, client: SocketAddr) {
    let mut packet = Vec::with_capacity(MAX_DATAGRAM + 32);
    while let Some((from, payload)) = replies.recv().await {
        packet.clear();
        UdpHeader { frag: 0, addr: from }.encode(&mut packet);
        packet.extend_from_slice(&payload);
        let _ = relay.send_to(&packet, client).await;
    }
}

async fn bound_udp(source: &Source, dest: IpAddr) -> std::io::Result<UdpSocket> {
    let domain = if dest.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if let SourceKind::Iface { name } = &source.kind {
        crate::dial::bind_to_uplink(&sock, name, dest.is_ipv4())?;
    }
    sock.set_nonblocking(true)?;
    let any: SocketAddr = if dest.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    sock.bind(&any.into())?;
    UdpSocket::from_std(sock.into())
}
