//! The userspace delay line: this kernel has no netem, so one-way delay, jitter, loss and
//! blackholing are done by a TUN device that a router namespace routes every transit packet
//! into (see [`crate::topology`]). Whatever the delay line writes back into the TUN is routed
//! normally, so each direction crosses it exactly once.
//!
//! Two OS threads per line:
//! - the **reader** blocks (with a short poll timeout, so it notices shutdown) on the TUN fd,
//!   decides loss / blackhole, stamps each packet with its due time and appends it to the
//!   queue of its direction;
//! - the **writer** sleeps until the earliest head is due and writes it back into the TUN.
//!
//! Order is kept per direction: `due = max(previous due, now + delay + random jitter)`, so
//! jitter spreads packets out but never reorders them (reordering would make TCP see loss).
//! Each direction has its own bounded queue (drop-tail over a byte limit), so a download
//! filling its queue cannot starve the upload's ACKs.
//!
//! The runtime knobs live in [`DelayControl`] (an `Arc` of atomics): `set_delay`, `set_loss`,
//! `set_jitter`, `blackhole`. Dropping the [`DelayLine`] stops both threads and closes the TUN,
//! which deletes the device.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::Rng;

/// How long the reader blocks in `poll` before it re-checks the stop flag. This bounds how
/// long dropping a delay line takes; it costs nothing while packets flow.
const POLL_INTERVAL_MS: i32 = 50;

/// Largest packet we read from the TUN. Without `IFF_VNET_HDR` the kernel hands us
/// MTU-sized packets, so 64 KiB is plenty.
const MAX_PACKET: usize = 65_536;

/// Floor for the per-direction queue limit: enough for a few hundred full-size packets, so
/// ACK bursts and initial windows never hit it on slow links.
const MIN_QUEUE_BYTES: usize = 512 * 1024;

/// Real-time priority of the delay line threads. On a busy host (two cores, parallel
/// builds), a normal thread can wait several ms for the CPU after its timer fires, and that
/// lands directly in the emulated RTT. `SCHED_FIFO` wakeups are immediate; the threads only
/// ever block or do a few µs of work per packet, so they cannot starve the host (and the
/// kernel's RT throttling caps them anyway).
pub const REALTIME_PRIORITY: i32 = 20;

/// Best effort: moves the calling thread to `SCHED_FIFO` at `priority`. Measurement threads
/// in tests use it (with a lower priority than the delay line) for the same reason.
pub fn set_thread_realtime(priority: i32) -> std::io::Result<()> {
    sys::set_realtime(priority)
}

fn realtime_or_log() {
    if let Err(e) = sys::set_realtime(REALTIME_PRIORITY) {
        tracing::debug!("delay line stays at normal priority: {e}");
    }
}

/// A direction through the delay line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the node towards the internet.
    Up = 0,
    /// From the internet towards the node.
    Down = 1,
}

/// Per-direction queue limit in bytes for a link of `rate_bps` and round trip `rtt` whose
/// bottleneck queue (the tbf) holds `bottleneck_queue` bytes.
///
/// Why this size: packets sit in the delay line for the one-way delay, so in steady state a
/// direction holds `rate × rtt/2`. Downloads cross the delay line *before* the tbf, so during
/// slow start the sender can push up to a whole congestion window into it at veth speed, and
/// the window can reach about twice the path's capacity (BDP + bottleneck queue) before the
/// loss signal comes back. The delay line must not be the thing that drops (the tbf is the
/// bottleneck we model), so we allow twice that, with a floor; it is still bounded memory.
pub fn queue_limit(rate_bps: u64, rtt: Duration, bottleneck_queue: usize) -> usize {
    let bdp = (rate_bps as f64 / 8.0 * rtt.as_secs_f64()) as usize;
    (2 * (bdp + bottleneck_queue) * 2).max(MIN_QUEUE_BYTES)
}

/// Settings a delay line starts with.
#[derive(Debug, Clone)]
pub struct DelayConfig {
    /// Name of the TUN device to create, e.g. `dl0` (≤ 15 bytes).
    pub ifname: String,
    /// One-way delay in each direction (usually RTT / 2 both ways).
    pub delay: Duration,
    /// Extra random delay per packet, uniform in `0..=jitter` (order is kept).
    pub jitter: Duration,
    /// Probability in 0..1 that a packet is dropped, in each direction.
    pub loss: f64,
    /// Drop-tail limit in bytes for each direction's queue; see [`queue_limit`].
    pub queue_limit: usize,
    /// Packets whose IPv4 destination is inside this network go [`Direction::Down`]
    /// (towards the node); everything else goes [`Direction::Up`].
    pub node_net: (Ipv4Addr, u8),
}

/// Counters of what the delay line did, for tests and debugging.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DelayStats {
    pub passed: u64,
    pub lost: u64,
    pub overflow: u64,
    pub blackholed: u64,
}

/// The runtime control handle: cheap to clone (`Arc`), all knobs take effect for the next
/// packet read.
#[derive(Debug)]
pub struct DelayControl {
    delay_us: [AtomicU64; 2],
    jitter_us: AtomicU64,
    /// Loss probability in parts per billion (atomics have no f64).
    loss_ppb: AtomicU64,
    blackhole: AtomicBool,
    queue_limit: AtomicUsize,
    passed: AtomicU64,
    lost: AtomicU64,
    overflow: AtomicU64,
    blackholed: AtomicU64,
}

fn us(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

impl DelayControl {
    fn new(cfg: &DelayConfig) -> DelayControl {
        let c = DelayControl {
            delay_us: [AtomicU64::new(us(cfg.delay)), AtomicU64::new(us(cfg.delay))],
            jitter_us: AtomicU64::new(us(cfg.jitter)),
            loss_ppb: AtomicU64::new(0),
            blackhole: AtomicBool::new(false),
            queue_limit: AtomicUsize::new(cfg.queue_limit),
            passed: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            overflow: AtomicU64::new(0),
            blackholed: AtomicU64::new(0),
        };
        c.set_loss(cfg.loss);
        c
    }

    /// Sets the one-way delay of both directions (RTT / 2).
    pub fn set_delay(&self, one_way: Duration) {
        for d in &self.delay_us {
            d.store(us(one_way), Ordering::Relaxed);
        }
    }

    /// Sets the one-way delay of one direction.
    pub fn set_direction_delay(&self, dir: Direction, one_way: Duration) {
        self.delay_us[dir as usize].store(us(one_way), Ordering::Relaxed);
    }

    pub fn delay(&self, dir: Direction) -> Duration {
        Duration::from_micros(self.delay_us[dir as usize].load(Ordering::Relaxed))
    }

    pub fn set_jitter(&self, jitter: Duration) {
        self.jitter_us.store(us(jitter), Ordering::Relaxed);
    }

    /// The current jitter: extra random delay per packet, up to this much.
    pub fn jitter(&self) -> Duration {
        Duration::from_micros(self.jitter_us.load(Ordering::Relaxed))
    }

    /// Sets the drop probability per packet and direction, clamped to 0..=1.
    pub fn set_loss(&self, p: f64) {
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        self.loss_ppb.store((p * 1e9) as u64, Ordering::Relaxed);
    }

    pub fn loss(&self) -> f64 {
        self.loss_ppb.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// When on, every packet (including those already queued) is dropped; the interfaces
    /// stay up, so this looks like a path that silently died.
    pub fn blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::Relaxed);
    }

    pub fn is_blackholed(&self) -> bool {
        self.blackhole.load(Ordering::Relaxed)
    }

    /// Sets the per-direction drop-tail limit in bytes.
    pub fn set_queue_limit(&self, bytes: usize) {
        self.queue_limit.store(bytes, Ordering::Relaxed);
    }

    pub fn stats(&self) -> DelayStats {
        DelayStats {
            passed: self.passed.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            overflow: self.overflow.load(Ordering::Relaxed),
            blackholed: self.blackholed.load(Ordering::Relaxed),
        }
    }
}

#[derive(Default)]
struct Queue {
    packets: VecDeque<(Instant, Vec<u8>)>,
    bytes: usize,
    last_due: Option<Instant>,
}

struct Shared {
    queues: Mutex<[Queue; 2]>,
    wake: Condvar,
    stop: AtomicBool,
}

/// A running delay line; stops and removes its TUN device on drop.
pub struct DelayLine {
    ifname: String,
    control: Arc<DelayControl>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for DelayLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayLine")
            .field("ifname", &self.ifname)
            .finish_non_exhaustive()
    }
}

impl DelayLine {
    /// Creates TUN device `cfg.ifname` inside namespace `ns` and starts the threads. The
    /// caller brings the device up and routes into it.
    pub fn start(ns: &str, cfg: DelayConfig) -> Result<DelayLine> {
        let name = cfg.ifname.clone();
        let fd = crate::netns::in_netns(ns, move || sys::open_tun(&name))?
            .with_context(|| format!("creating TUN {} in {ns}", cfg.ifname))?;
        Self::start_on_fd(fd, cfg)
    }

    /// Starts the threads on an already opened TUN fd (`IFF_TUN | IFF_NO_PI`).
    pub fn start_on_fd(fd: OwnedFd, cfg: DelayConfig) -> Result<DelayLine> {
        let control = Arc::new(DelayControl::new(&cfg));
        let shared = Arc::new(Shared {
            queues: Mutex::new([Queue::default(), Queue::default()]),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let reader_file = File::from(fd);
        let writer_file = reader_file.try_clone().context("duplicating the TUN fd")?;
        let mut line = DelayLine {
            ifname: cfg.ifname.clone(),
            control: control.clone(),
            shared: shared.clone(),
            threads: Vec::new(),
        };
        let (c, s, net) = (control.clone(), shared.clone(), cfg.node_net);
        line.threads.push(
            std::thread::Builder::new()
                .name(format!("dl-read:{}", cfg.ifname))
                .spawn(move || {
                    realtime_or_log();
                    read_loop(reader_file, &c, &s, net)
                })
                .context("spawning delay line reader")?,
        );
        let (c, s) = (control, shared);
        line.threads.push(
            std::thread::Builder::new()
                .name(format!("dl-write:{}", cfg.ifname))
                .spawn(move || {
                    realtime_or_log();
                    write_loop(writer_file, &c, &s)
                })
                .context("spawning delay line writer")?,
        );
        Ok(line)
    }

    pub fn control(&self) -> Arc<DelayControl> {
        self.control.clone()
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn classify(packet: &[u8], (net, prefix): (Ipv4Addr, u8)) -> Direction {
    if packet.len() >= 20 && packet[0] >> 4 == 4 {
        let dst = u32::from_be_bytes([packet[16], packet[17], packet[18], packet[19]]);
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix.min(32)))
        };
        if dst & mask == u32::from(net) & mask {
            return Direction::Down;
        }
    }
    Direction::Up
}

fn read_loop(mut tun: File, control: &DelayControl, shared: &Shared, node_net: (Ipv4Addr, u8)) {
    let mut rng = rand::rng();
    let mut buf = vec![0u8; MAX_PACKET];
    while !shared.stop.load(Ordering::Relaxed) {
        match sys::wait_readable(tun.as_fd(), POLL_INTERVAL_MS) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!("delay line poll: {e}");
                return;
            }
        }
        let n = match tun.read(&mut buf) {
            Ok(0) => continue,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("delay line read: {e}");
                return;
            }
        };
        if control.is_blackholed() {
            control.blackholed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let loss = control.loss_ppb.load(Ordering::Relaxed);
        if loss > 0 && rng.random_range(0..1_000_000_000u64) < loss {
            control.lost.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let dir = classify(&buf[..n], node_net);
        let jitter = control.jitter_us.load(Ordering::Relaxed);
        let extra = if jitter > 0 { rng.random_range(0..=jitter) } else { 0 };
        let delay = Duration::from_micros(control.delay_us[dir as usize].load(Ordering::Relaxed) + extra);
        let now = Instant::now();
        let limit = control.queue_limit.load(Ordering::Relaxed);
        let mut queues = shared.queues.lock().unwrap_or_else(|p| p.into_inner());
        let q = &mut queues[dir as usize];
        if q.bytes + n > limit {
            control.overflow.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let due = (now + delay).max(q.last_due.unwrap_or(now));
        q.last_due = Some(due);
        q.bytes += n;
        q.packets.push_back((due, buf[..n].to_vec()));
        drop(queues);
        shared.wake.notify_one();
    }
}

fn write_loop(mut tun: File, control: &DelayControl, shared: &Shared) {
    loop {
        let packet = {
            let mut queues = shared.queues.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                let head = (0..2)
                    .filter_map(|i| queues[i].packets.front().map(|(due, _)| (*due, i)))
                    .min();
                let now = Instant::now();
                match head {
                    None => {
                        queues = shared
                            .wake
                            .wait_timeout(queues, Duration::from_millis(100))
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    Some((due, _)) if due > now => {
                        queues = shared
                            .wake
                            .wait_timeout(queues, due - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    Some((_, i)) => {
                        let (_, p) = queues[i].packets.pop_front().expect("head exists");
                        queues[i].bytes -= p.len();
                        break p;
                    }
                }
            }
        };
        if control.is_blackholed() {
            control.blackholed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // A TUN write takes the whole packet or fails. Errors (e.g. EIO while the device is
        // down) just lose this packet, like a wire would.
        match tun.write_all(&packet) {
            Ok(_) => {
                control.passed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!("delay line write: {e}"),
        }
    }
}

/// The only unsafe code of the lab: the TUN ioctl, `poll` and `sched_setscheduler`.
mod sys {
    use std::fs::OpenOptions;
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

    /// `struct ifreq` as TUNSETIFF reads it: name, flags, and the rest of the union.
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }

    /// Opens `/dev/net/tun` and attaches a new TUN device `name` (layer 3, no packet info
    /// header) in the calling thread's network namespace. The device lives as long as the fd.
    pub fn open_tun(name: &str) -> io::Result<OwnedFd> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"));
        }
        let file = OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: 0,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        req.flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: `file` is an open /dev/net/tun fd and `req` is a live, properly sized
        // `struct ifreq` that the kernel reads (and may update the name of) during the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(file.into())
    }

    /// Puts the calling thread in the `SCHED_FIFO` class at `priority` (1..=99).
    pub fn set_realtime(priority: i32) -> io::Result<()> {
        let param = libc::sched_param {
            sched_priority: priority,
        };
        // SAFETY: pid 0 means the calling thread; `param` is a valid sched_param.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` for `fd` to become readable.
    pub fn wait_readable(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the duration of the call and `fd` is borrowed,
        // so it stays open.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        if rc > 0 && pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
            return Err(io::Error::other("TUN fd error"));
        }
        Ok(rc > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_destination_network() {
        let mut p = [0u8; 20];
        p[0] = 0x45;
        p[16..20].copy_from_slice(&[10, 3, 1, 2]);
        let net = (Ipv4Addr::new(10, 3, 1, 0), 24);
        assert_eq!(classify(&p, net), Direction::Down);
        p[16..20].copy_from_slice(&[10, 99, 0, 1]);
        assert_eq!(classify(&p, net), Direction::Up);
        assert_eq!(classify(&[0x60; 40], net), Direction::Up);
    }

    #[test]
    fn queue_limit_has_a_floor_and_grows_with_bdp() {
        assert_eq!(queue_limit(1_000_000, Duration::from_millis(10), 0), MIN_QUEUE_BYTES);
        let big = queue_limit(50_000_000, Duration::from_millis(300), 1 << 20);
        assert!(big > 4 * (1 << 20));
    }

    #[test]
    fn loss_is_clamped() {
        let cfg = DelayConfig {
            ifname: "x".into(),
            delay: Duration::from_millis(5),
            jitter: Duration::ZERO,
            loss: 2.0,
            queue_limit: 1,
            node_net: (Ipv4Addr::UNSPECIFIED, 0),
        };
        let c = DelayControl::new(&cfg);
        assert_eq!(c.loss(), 1.0);
        c.set_loss(0.02);
        assert!((c.loss() - 0.02).abs() < 1e-9);
    }
}
