//! Every OS-specific and unsafe socket call lives here: binding to a device, `TCP_INFO`,
//! `TCP_NOTSENT_LOWAT`, `IP_BIND_ADDRESS_NO_PORT`, the fd limit, and reading interfaces and
//! routes. The rest of the crate denies `unsafe`.
#![allow(unsafe_code)]

use socket2::Socket;
use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    net::IpAddr,
    os::fd::{AsRawFd, RawFd},
};

/// Binds a socket to an interface with `SO_BINDTODEVICE`, so that its packets leave through
/// that interface whatever the routing table says.
pub fn bind_device(socket: &Socket, iface: &str) -> io::Result<()> {
    socket.bind_device(Some(iface.as_bytes()))
}

fn setsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed correctly.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Keeps at most `bytes` of not-yet-sent data in the kernel send queue, so the sender's
/// decisions stay fresh (used by bond paths; harmless elsewhere).
pub fn set_notsent_lowat(fd: &impl AsRawFd, bytes: u32) -> io::Result<()> {
    setsockopt_int(
        fd.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_NOTSENT_LOWAT,
        bytes as libc::c_int,
    )
}

/// Lets `bind()` to a source address defer the port choice to `connect()`, so many outbound
/// sockets can share one source address without exhausting ephemeral ports.
pub fn set_bind_address_no_port(socket: &Socket) -> io::Result<()> {
    setsockopt_int(socket.as_raw_fd(), libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)
}

/// The parts of `struct tcp_info` booster uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// Smoothed RTT in microseconds.
    pub rtt_us: u32,
    pub rtt_var_us: u32,
    pub snd_cwnd: u32,
    pub total_retrans: u32,
    /// Segments sent, retransmissions included.
    pub segs_out: u32,
    /// Payload bytes received in order and acked (duplicates not counted); 0 before Linux 4.1.
    pub bytes_received: u64,
    /// Payload bytes sent, retransmissions included; 0 before Linux 4.19.
    pub bytes_sent: u64,
    /// Payload bytes the peer acked; 0 before Linux 4.1.
    pub bytes_acked: u64,
}

/// Reads `TCP_INFO` from a connected TCP socket.
pub fn tcp_info(fd: &impl AsRawFd) -> io::Result<TcpInfo> {
    // SAFETY: tcp_info is plain old data; the kernel writes at most `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpInfo {
        rtt_us: info.tcpi_rtt,
        rtt_var_us: info.tcpi_rttvar,
        snd_cwnd: info.tcpi_snd_cwnd,
        total_retrans: info.tcpi_total_retrans,
        segs_out: info.tcpi_segs_out,
        bytes_received: info.tcpi_bytes_received,
        bytes_sent: info.tcpi_bytes_sent,
        bytes_acked: info.tcpi_bytes_acked,
    })
}

/// Raises the soft open-file limit to the hard limit (a proxy needs two fds per connection).
/// Returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer for getrlimit/setrlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// One network interface as the OS reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub up: bool,
    pub running: bool,
    pub loopback: bool,
    pub addrs: Vec<IpAddr>,
    /// Has a default route (IPv4 or IPv6) through it, in any table the kernel shows in /proc.
    pub default_route: bool,
}

/// Lists interfaces with their flags, addresses and whether a default route goes through them.
pub fn interfaces() -> io::Result<Vec<Interface>> {
    use nix::net::if_::InterfaceFlags;
    let mut map: BTreeMap<String, Interface> = BTreeMap::new();
    let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    for ifa in addrs {
        let entry = map.entry(ifa.interface_name.clone()).or_insert_with(|| Interface {
            name: ifa.interface_name.clone(),
            ..Default::default()
        });
        entry.up |= ifa.flags.contains(InterfaceFlags::IFF_UP);
        entry.running |= ifa.flags.contains(InterfaceFlags::IFF_RUNNING);
        entry.loopback |= ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK);
        if let Some(addr) = ifa.address {
            if let Some(v4) = addr.as_sockaddr_in() {
                entry.addrs.push(IpAddr::V4(v4.ip()));
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                let ip = v6.ip();
                // Link-local addresses cannot reach the Internet.
                if ip.segments()[0] & 0xffc0 != 0xfe80 {
                    entry.addrs.push(IpAddr::V6(ip));
                }
            }
        }
    }
    let routed = default_route_ifaces();
    for (name, i) in map.iter_mut() {
        i.default_route = routed.contains(name);
    }
    Ok(map.into_values().collect())
}

/// Names of interfaces with a default route, from /proc/net/route and /proc/net/ipv6_route.
pub fn default_route_ifaces() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Ok(text) = std::fs::read_to_string("/proc/net/route") {
        // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 8 && f[1] == "00000000" && f[7] == "00000000" {
                out.insert(f[0].to_string());
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/ipv6_route") {
        // dest dest_len src src_len nexthop metric refcnt use flags iface
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 10 && f[0] == "00000000000000000000000000000000" && f[1] == "00" && f[9] != "lo" {
                out.insert(f[9].to_string());
            }
        }
    }
    out
}

/// The interface's operational state from sysfs (`up`, `down`, `unknown`, ...), if it exists.
pub fn operstate(iface: &str) -> Option<String> {
    if iface.contains('/') || iface.contains("..") {
        return None;
    }
    std::fs::read_to_string(format!("/sys/class/net/{iface}/operstate"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// A kernel pipe used as the buffer of a zero-copy `splice` transfer between two sockets.
pub struct Pipe {
    pub read: std::os::fd::OwnedFd,
    pub write: std::os::fd::OwnedFd,
}

/// Pipe capacity asked for: 256 KiB moves bulk data in few system calls. The kernel may grant
/// less (unprivileged limit); that only costs more calls.
const PIPE_SIZE: libc::c_int = 256 * 1024;

/// Creates a non-blocking pipe for [`splice`].
pub fn pipe() -> io::Result<Pipe> {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors we now own.
    let (read, write) = unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    // SAFETY: plain fcntl on a descriptor we own; failure is harmless.
    unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
    Ok(Pipe { read, write })
}

/// Moves up to `len` bytes from `from` to `to` inside the kernel, without blocking. One side
/// must be a pipe. Returns 0 at end of stream.
pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: null offsets mean "current position"; the kernel validates the descriptors.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The destination a connection had before a netfilter `redirect` sent it to us
/// (`SO_ORIGINAL_DST`, and `IP6T_SO_ORIGINAL_DST` for IPv6: both are option 80).
pub fn original_dst(fd: &impl AsRawFd, v6: bool) -> io::Result<std::net::SocketAddr> {
    const SO_ORIGINAL_DST: libc::c_int = 80;
    // SAFETY: sockaddr_storage is plain old data, large enough for either family; the kernel
    // writes at most `len` bytes and tells how many.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let level = if v6 { libc::SOL_IPV6 } else { libc::SOL_IP };
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            SO_ORIGINAL_DST,
            &mut storage as *mut libc::sockaddr_storage as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(&storage as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Ok(std::net::SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(&storage as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(std::net::SocketAddr::new(ip.into(), u16::from_be(sin6.sin6_port)))
        }
        other => Err(io::Error::other(format!("original destination of family {other}"))),
    }
}

/// The allocator's view of the heap, for telling a leak (bytes in use keep growing) from memory
/// the allocator keeps for reuse (RSS grows in steps while the bytes in use stay level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heap {
    /// Bytes handed out by `malloc` and not yet freed, mmapped chunks included.
    pub in_use: u64,
    /// Bytes the allocator holds from the OS (in use plus free chunks it keeps). Pages handed
    /// back by [`trim_heap`] from inside an arena still count here; RSS drops, this does not.
    pub held: u64,
}

/// glibc's `mallinfo2`; `None` with another C library or a glibc older than 2.33 (looked up at
/// run time, so the binary still starts there). It walks the arenas under their locks: cheap
/// enough for an API call or a scrape, not for a hot path.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn heap() -> Option<Heap> {
    type MallInfo2 = unsafe extern "C" fn() -> libc::mallinfo2;
    static MALLINFO2: std::sync::OnceLock<Option<MallInfo2>> = std::sync::OnceLock::new();
    let mallinfo2 = (*MALLINFO2.get_or_init(|| {
        // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches the objects already loaded.
        let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mallinfo2".as_ptr()) };
        // SAFETY: glibc's mallinfo2 takes nothing and returns the struct by value.
        (!f.is_null()).then(|| unsafe { std::mem::transmute::<*mut libc::c_void, MallInfo2>(f) })
    }))?;
    // SAFETY: see above; it only reads the allocator's statistics.
    let m = unsafe { mallinfo2() };
    Some(Heap {
        in_use: (m.uordblks + m.hblkhd) as u64,
        held: (m.arena + m.hblkhd) as u64,
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn heap() -> Option<Heap> {
    None
}

/// Gives the free memory glibc keeps in its arenas back to the OS (`malloc_trim(0)`: the top
/// of each heap and whole free pages inside it). It holds each arena's lock while it walks
/// it, so call it when the node is quiet. Does nothing with another C library.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory no allocation uses.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed() {
        let all = interfaces().unwrap();
        let lo = all.iter().find(|i| i.loopback).expect("a loopback interface");
        assert!(lo.up);
        assert!(lo.addrs.iter().any(|a| a.is_loopback()));
    }

    #[test]
    fn tcp_info_reads_a_connected_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let info = tcp_info(&c).unwrap();
        assert!(info.snd_cwnd > 0);
        set_notsent_lowat(&c, 16 * 1024).unwrap();
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn heap_counts_a_live_allocation() {
        let before = heap().unwrap();
        let block = vec![1u8; 64 << 20];
        let during = heap().unwrap();
        assert!(
            during.in_use >= before.in_use + (32 << 20),
            "{before:?} then {during:?}"
        );
        assert!(during.held >= during.in_use);
        drop(std::hint::black_box(block));
        assert!(heap().unwrap().in_use + (32 << 20) <= during.in_use);
    }

    #[test]
    fn binding_to_a_missing_device_fails() {
        let s = Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        assert!(bind_device(&s, "bt-nonexistent0").is_err());
    }
}
