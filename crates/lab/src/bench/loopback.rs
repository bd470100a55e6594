//! Loopback measurements of the proxy data path itself: throughput direct vs through a node,
//! added connect latency, and memory per idle connection. They run in a fresh namespace that
//! has only `lo`, so nothing else on the host shares the ports (and its drop kills every
//! process left in it).

use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::procs;

/// A listener that accepts connections and holds them open until cleared.
pub struct Holder {
    pub addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<AtomicUsize>,
    handle: Option<JoinHandle<()>>,
}

impl Holder {
    /// Binds `addr` inside namespace `ns` and starts accepting.
    pub fn start(ns: &str, addr: SocketAddrV4) -> Result<Holder> {
        let l = crate::netns::in_netns(ns, move || TcpListener::bind(addr))??;
        l.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (s, h, a) = (stop.clone(), held.clone(), accepted.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        h.lock().unwrap_or_else(|p| p.into_inner()).push(c);
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Holder {
            addr,
            stop,
            held,
            accepted,
            handle: Some(handle),
        })
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every held connection.
    pub fn clear(&self) {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.clear();
    }
}

/// A SOCKS5 CONNECT (no auth) to `target` through `proxy`; returns once the reply arrived.
pub fn socks_connect(proxy: SocketAddr, target: SocketAddrV4) -> Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&proxy, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(&[5, 1, 0])?;
    let mut m = [0u8; 2];
    s.read_exact(&mut m).context("reading the SOCKS5 method reply")?;
    if m != [5, 0] {
        bail!("proxy refused no-auth: {m:?}");
    }
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&target.ip().octets());
    req.extend_from_slice(&target.port().to_be_bytes());
    s.write_all(&req)?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).context("reading the SOCKS5 reply")?;
    if head[0] != 5 || head[1] != 0 {
        bail!("SOCKS5 CONNECT failed with reply code {}", head[1]);
    }
    let rest = match head[3] {
        1 => 6,
        4 => 18,
        3 => {
            let mut l = [0u8; 1];
            s.read_exact(&mut l)?;
            usize::from(l[0]) + 2
        }
        t => bail!("bad address type {t} in the SOCKS5 reply"),
    };
    let mut addr = vec![0u8; rest];
    s.read_exact(&mut addr)?;
    s.set_read_timeout(None)?;
    Ok(s)
}

/// Connect latency: `n` pairs (direct TCP connect, SOCKS5 CONNECT through the proxy), after
/// `warm` unrecorded pairs. Returns microseconds `(direct, through proxy)` per pair.
pub fn connect_latency(
    ns: &str,
    proxy: SocketAddr,
    target: SocketAddrV4,
    warm: usize,
    n: usize,
) -> Result<Vec<(f64, f64)>> {
    crate::netns::in_netns(ns, move || -> Result<Vec<(f64, f64)>> {
        let mut out = Vec::with_capacity(n);
        for i in 0..warm + n {
            let t = Instant::now();
            let d = TcpStream::connect(target)?;
            let direct = t.elapsed();
            drop(d);
            let t = Instant::now();
            let p = socks_connect(proxy, target)?;
            let proxied = t.elapsed();
            drop(p);
            if i >= warm {
                out.push((direct.as_secs_f64() * 1e6, proxied.as_secs_f64() * 1e6));
            }
        }
        Ok(out)
    })?
}

/// Opens `n` proxied connections to `target` from namespace `ns` and returns them (open).
pub fn open_many(ns: &str, proxy: SocketAddr, target: SocketAddrV4, n: usize) -> Result<Vec<TcpStream>> {
    crate::netns::in_netns(ns, move || -> Result<Vec<TcpStream>> {
        let mut v = Vec::with_capacity(n);
        let t = Instant::now();
        for i in 0..n {
            if i % 500 == 0 {
                procs::check_interrupt()?;
                if t.elapsed() > Duration::from_secs(120) {
                    bail!("opening {n} connections took over 120 s (got {i})");
                }
            }
            v.push(socks_connect(proxy, target).with_context(|| format!("connection #{}", i + 1))?);
        }
        Ok(v)
    })?
}

/// Waits until `holder` has accepted `n` connections in total (at most `timeout`).
pub fn wait_accepted(holder: &Holder, n: usize, timeout: Duration) -> Result<()> {
    let end = Instant::now() + timeout;
    while holder.accepted() < n {
        if Instant::now() > end {
            return Err(anyhow!("the holder accepted {} of {n} connections", holder.accepted()));
        }
        procs::sleep(Duration::from_millis(20))?;
    }
    Ok(())
}

/// Percentile (0..=100) of a sample, nearest rank.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[3.0], 50.0), 3.0);
    }
}
