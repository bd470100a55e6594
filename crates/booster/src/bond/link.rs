//! [`Shared`]: one end of a bond on tokio. It wraps the sans-IO `proto::bond::Link` in a
//! mutex that no one holds across an `.await`, and turns the link's events into wake-ups:
//! path writers, stream readers and writers, and the opener of a stream waiting for its
//! `OpenOk`.
//!
//! The same code runs on the node and on the relay. What differs is who creates paths (the
//! node dials, `path.rs`; the relay accepts, `relay.rs`) and what happens on
//! [`Event::Opened`] and [`Event::Datagram`], which are handed to the [`Handler`].

use futures::task::AtomicWaker;
use proto::bond::{Config, Event, Link, Mode, Role};
use proto::socks5::Address;
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

/// How often the link checks for stalled paths and pings quiet ones.
pub const TICK: Duration = Duration::from_millis(25);

/// What the relay (or the node, for datagrams) does with streams and datagrams the far end
/// starts.
///
/// Both run under the link's lock: they must not call back into the link synchronously
/// (spawn a task for that).
pub trait Handler: Send + Sync + 'static {
    /// Relay: connect `target` for `stream`, then call [`Shared::accept`] or
    /// [`Shared::refuse`].
    fn opened(&self, link: &Arc<Shared>, stream: u32, mode: Mode, target: Address);
    fn datagram(&self, link: &Arc<Shared>, flow: u32, target: Address, payload: Vec<u8>);
}

/// The outcome of an `Open`, for the node's opener.
pub type OpenResult = Result<Address, (u8, String)>;

/// A bonded stream's wake-ups and end state, shared by the link and the stream's handle.
#[derive(Default)]
pub struct StreamSlot {
    pub read: AtomicWaker,
    pub write: AtomicWaker,
    /// The far end reset the stream, or the link gave up on it.
    pub reset: AtomicBool,
}

impl StreamSlot {
    fn wake_all(&self) {
        self.read.wake();
        self.write.wake();
    }
}

pub struct PathSlot {
    pub source: String,
    pub wake: Arc<Notify>,
    pub kill: CancellationToken,
    pub since: Instant,
}

pub struct Inner {
    pub link: Link,
    pub paths: HashMap<u32, PathSlot>,
    streams: HashMap<u32, Arc<StreamSlot>>,
    opens: HashMap<u32, oneshot::Sender<OpenResult>>,
    /// Path ids come from here (node: one per connection attempt).
    next_path: u32,
    /// When the link last had no path at all (`None` while it has one).
    pub pathless_since: Option<Instant>,
}

pub struct Shared {
    inner: Mutex<Inner>,
    handler: Arc<dyn Handler>,
    /// Cancelled when the link is dropped for good.
    pub stop: CancellationToken,
    pub role: Role,
}

impl Shared {
    pub fn new(role: Role, config: Config, handler: Arc<dyn Handler>, stop: CancellationToken) -> Arc<Shared> {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                link: Link::new(role, config),
                paths: HashMap::new(),
                streams: HashMap::new(),
                opens: HashMap::new(),
                next_path: 1,
                pathless_since: Some(Instant::now()),
            }),
            handler,
            stop,
            role,
        });
        tokio::spawn(ticker(Arc::downgrade(&shared), shared.stop.clone()));
        shared
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the link, then delivers the events it caused. `wake_paths` says whether
    /// path writers should look for work again (anything but a fruitless poll).
    pub fn with<T>(self: &Arc<Self>, wake_paths: bool, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.lock();
        let out = f(&mut inner);
        self.dispatch(&mut inner);
        if wake_paths {
            for path in inner.paths.values() {
                path.wake.notify_one();
            }
        }
        out
    }

    fn dispatch(self: &Arc<Self>, inner: &mut Inner) {
        while let Some(event) = inner.link.poll_event() {
            match event {
                Event::Readable(s) => wake(inner, s, |slot| slot.read.wake()),
                Event::Writable(s) => wake(inner, s, |slot| slot.write.wake()),
                Event::Closed(s) => {
                    if let Some(slot) = inner.streams.remove(&s) {
                        slot.wake_all();
                    }
                }
                Event::Reset { stream, reason, .. } => {
                    tracing::debug!(stream, %reason, "bonded stream reset by the far end");
                    if let Some(slot) = inner.streams.remove(&stream) {
                        slot.reset.store(true, Relaxed);
                        slot.wake_all();
                    }
                    if let Some(open) = inner.opens.remove(&stream) {
                        let _ = open.send(Err((1, reason)));
                    }
                }
                Event::OpenOk { stream, bound } => {
                    if let Some(open) = inner.opens.remove(&stream) {
                        let _ = open.send(Ok(bound));
                    }
                }
                Event::OpenErr { stream, code, reason } => {
                    inner.streams.remove(&stream);
                    if let Some(open) = inner.opens.remove(&stream) {
                        let _ = open.send(Err((code, reason)));
                    }
                }
                Event::Opened { stream, mode, target } => {
                    inner.streams.insert(stream, Arc::default());
                    self.handler.opened(self, stream, mode, target);
                }
                Event::Datagram { flow, target, payload } => self.handler.datagram(self, flow, target, payload),
                Event::PathStalled { path, stalled } => {
                    if let Some(slot) = inner.paths.get(&path) {
                        tracing::debug!(path, source = %slot.source, ?stalled, "bond path stalled; copies of its frames go on the others");
                    }
                }
                Event::PathDead { path, stalled } => {
                    if let Some(slot) = inner.paths.remove(&path) {
                        tracing::info!(path, source = %slot.source, ?stalled, "bond path dead; its frames go on the others");
                        slot.kill.cancel();
                    }
                    note_pathless(inner);
                }
            }
        }
    }

    /// A new path id.
    pub fn path_id(self: &Arc<Self>) -> u32 {
        self.with(false, |inner| {
            let id = inner.next_path;
            inner.next_path = inner.next_path.wrapping_add(1).max(1);
            id
        })
    }

    /// Adds a path; returns its wake-up and kill switch for its reader and writer.
    pub fn add_path(
        self: &Arc<Self>,
        id: u32,
        source: &str,
        rate_hint: Option<f64>,
        rtt_hint: Option<Duration>,
    ) -> (Arc<Notify>, CancellationToken) {
        let wake = Arc::new(Notify::new());
        let kill = self.stop.child_token();
        self.with(true, |inner| {
            inner.link.add_path(id, Instant::now(), rate_hint, rtt_hint);
            if let Some(old) = inner.paths.insert(
                id,
                PathSlot {
                    source: source.to_owned(),
                    wake: wake.clone(),
                    kill: kill.clone(),
                    since: Instant::now(),
                },
            ) {
                old.kill.cancel();
            }
            inner.pathless_since = None;
        });
        (wake, kill)
    }

    /// A path's connection ended.
    pub fn remove_path(self: &Arc<Self>, id: u32) {
        self.with(true, |inner| {
            inner.link.remove_path(id);
            if let Some(slot) = inner.paths.remove(&id) {
                slot.kill.cancel();
            }
            note_pathless(inner);
        });
    }

    /// Node: opens a stream; the receiver gets the relay's answer.
    pub fn open(
        self: &Arc<Self>,
        target: Address,
        mode: Mode,
    ) -> (u32, Arc<StreamSlot>, oneshot::Receiver<OpenResult>) {
        let (tx, rx) = oneshot::channel();
        let slot = Arc::new(StreamSlot::default());
        let id = self.with(true, |inner| {
            let id = inner.link.open(target, mode);
            inner.streams.insert(id, slot.clone());
            inner.opens.insert(id, tx);
            id
        });
        (id, slot, rx)
    }

    /// Relay: the stream's slot, created on `Opened`.
    pub fn slot(self: &Arc<Self>, stream: u32) -> Option<Arc<StreamSlot>> {
        self.lock().streams.get(&stream).cloned()
    }

    pub fn accept(self: &Arc<Self>, stream: u32, bound: Address) {
        self.with(true, |inner| inner.link.accept(stream, bound));
    }

    pub fn refuse(self: &Arc<Self>, stream: u32, code: u8, reason: &str) {
        self.with(true, |inner| {
            inner.link.refuse(stream, code, reason);
            inner.streams.remove(&stream);
        });
    }

    /// Aborts a stream from this end.
    pub fn reset(self: &Arc<Self>, stream: u32, reason: &str) {
        self.with(true, |inner| {
            inner.link.reset(stream, 1, reason);
            if let Some(slot) = inner.streams.remove(&stream) {
                slot.reset.store(true, Relaxed);
                slot.wake_all();
            }
            inner.opens.remove(&stream);
        });
    }

    /// Resets every stream (the far end lost the link, or no path came back in time).
    pub fn abort_all(self: &Arc<Self>, reason: &str) {
        self.with(true, |inner| {
            inner.link.abort_all(reason);
            for (_, slot) in inner.streams.drain() {
                slot.reset.store(true, Relaxed);
                slot.wake_all();
            }
            for (_, open) in inner.opens.drain() {
                let _ = open.send(Err((1, reason.to_owned())));
            }
        });
    }

    pub fn send_datagram(self: &Arc<Self>, flow: u32, target: Address, payload: Vec<u8>, mode: Mode) {
        self.with(true, |inner| inner.link.send_datagram(flow, target, payload, mode));
    }

    /// Read-only access for views (API, route choice).
    pub fn view<T>(&self, f: impl FnOnce(&Inner) -> T) -> T {
        f(&self.lock())
    }
}

fn wake(inner: &Inner, stream: u32, f: impl FnOnce(&StreamSlot)) {
    if let Some(slot) = inner.streams.get(&stream) {
        f(slot);
    }
}

fn note_pathless(inner: &mut Inner) {
    if inner.paths.is_empty() && inner.pathless_since.is_none() {
        inner.pathless_since = Some(Instant::now());
    }
}

/// Drives the link's clock: pings and stall detection.
async fn ticker(shared: std::sync::Weak<Shared>, stop: CancellationToken) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        let Some(shared) = shared.upgrade() else { return };
        shared.with(true, |inner| inner.link.on_tick(Instant::now()));
    }
}
