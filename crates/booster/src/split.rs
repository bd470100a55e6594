//! Transparent splitting: a large plain-HTTP `GET` through the HTTP proxy (or inside a SOCKS5
//! tunnel to port 80, see [`crate::http_proxy::serve_tunnel`]) is fetched by byte ranges over
//! every usable source at once and delivered to the client in order, as the one `200` it asked
//! for.
//!
//! 1. [`plan`]: is the request eligible (config, `GET` without a body, no `Range`/`If-Range` of
//!    the client's, no credentials unless allowed, no pinned source, two or more sources)?
//! 2. The proxy adds `Range: bytes=0-(FIRST_PIECE-1)` to the request it forwards; that answer is
//!    the probe. [`decide`]: a `206` for a big enough entity with a strong validator is split; a
//!    `206` that already holds the whole entity is forwarded as a `200`; any other `206` (or a
//!    `416`) is dropped and the request is sent again without the range; every other answer
//!    (`200` from a server ignoring ranges, 3xx, 4xx, 5xx) is forwarded as it is.
//! 3. [`run`]: a `200` head derived from the `206`, the probe's body straight from the proxy's
//!    connection, then the rest from [`fetch::fetch_rest`] (the range engine of `booster get`,
//!    with `If-Range`) through a bounded reorder buffer. A failure after the head cuts the
//!    client off: a truncated body, never a wrong one.

use crate::{
    config::Tier,
    dial::Metered,
    fetch::{self, Connector, NodeConnector},
    http_proxy::{forward_body, write_head},
    policy::Verdict,
    proxy::Ctx,
    source::Source,
    state::Node,
    target::Target,
};
use proto::http::{BodyFraming, Header, ProxyTarget, RequestHead, ResponseHead};
use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Instant,
};
use tokio::net::TcpStream;

/// Bytes asked for by the probe (the proxy's own ranged request). A `206` for an entity between
/// this and `min_size` is dropped and asked for again without a range, so it stays small.
pub const FIRST_PIECE: u64 = 1 << 20;
/// Chunks in flight between the range engine and the client writer (each up to 128 KiB).
/// A burst: more than [`BURST_CONNECTIONS`] client connections accepted within this window.
const BURST_WINDOW: std::time::Duration = std::time::Duration::from_millis(500);
const BURST_CONNECTIONS: usize = 3;
const CHANNEL: usize = 64;

/// Request headers the range requests never copy from the client's: set by the engine itself,
/// about this hop, about the client's own range, or conditions that would turn a range into a
/// `304`/`412`.
const NOT_COPIED: &[&str] = &[
    "host",
    "user-agent",
    "accept",
    "accept-encoding",
    "range",
    "if-range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
    crate::http_proxy::PIN_HEADER,
];

/// An eligible request: where the rest would come from.
pub struct Plan {
    url: String,
    headers: Vec<(String, String)>,
    sources: Vec<Arc<Source>>,
    /// Where the range requests connect, when not the URL's host (a SOCKS tunnel's target).
    via: Option<Target>,
    /// Holds one of the node's split slots while the plan lives.
    _slot: Slot,
}

/// Splits planned or running at once. Splitting pays off when the links have room: with many
/// transfers already running, connection-level balancing keeps every link busy by itself, and
/// splitting each of them too only adds requests and puts slow-link tails on every one of them
/// (measured on `skewed`: 12 parallel downloads fell from 99% to 83% of the link sum).
pub const MAX_SPLITS: u64 = 1;

/// A split slot; released on drop.
pub struct Slot(Arc<Node>);

impl Slot {
    fn take(node: &Arc<Node>) -> Option<Slot> {
        use std::sync::atomic::Ordering::SeqCst;
        node.splits_active
            .fetch_update(SeqCst, SeqCst, |n| (n < MAX_SPLITS).then_some(n + 1))
            .ok()
            .map(|_| Slot(node.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.splits_active.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// What may be done for an eligible request.
pub enum Chance {
    /// Split it now: the request goes out with the probe's `Range`.
    Split(Plan),
    /// Not now (a burst of new connections, busy links, the split slot taken): forward it
    /// whole, and let an uplink that goes idle fetch its end ([`crate::steal`]).
    Steal(Steal),
}

/// What a tail steal of a request forwarded whole needs to fetch ranges of its answer.
pub struct Steal {
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    /// Where the request goes (the URL's host, or `via`): its sources are ranked for this.
    pub(crate) dest: Target,
    pub(crate) via: Option<Target>,
}

/// The split of an eligible request, or its steal when it may not be split now. `origin` is the request as forwarded
/// (origin form); `pinned`: the client named a source. `target` names the URL (and the `Host`
/// of the range requests); `via`, when given, is where every connection goes instead (the
/// destination of a SOCKS tunnel, whose `Host` header may name something else).
#[allow(clippy::too_many_arguments)]
pub fn plan(
    ctx: &Ctx,
    head: &RequestHead,
    target: &ProxyTarget,
    origin: &RequestHead,
    framing: BodyFraming,
    pinned: bool,
    via: Option<&Target>,
) -> Option<Chance> {
    let cfg = &ctx.node.config.split;
    if !cfg.enabled || pinned || head.method != "GET" || framing != BodyFraming::None {
        return None;
    }
    let ProxyTarget::Absolute {
        host,
        port,
        origin_form,
    } = target
    else {
        return None;
    };
    let has = |name: &str| head.header(name).is_some();
    if has("range") || has("if-range") || has("upgrade") {
        return None;
    }
    if !cfg.credentials && (has("authorization") || has("cookie")) {
        return None;
    }
    let dest = via.cloned().unwrap_or_else(|| Target::new(host, *port));
    // A bonded destination already uses every path.
    if ctx.node.bonds.as_ref().is_some_and(|b| b.mode_for(&dest).is_some()) {
        return None;
    }
    let sources = sources(&ctx.node, &dest, ctx)?;
    let url = format!("http://{}{origin_form}", target.host_header());
    let headers = origin
        .headers
        .iter()
        .filter(|h| !NOT_COPIED.iter().any(|n| h.name.eq_ignore_ascii_case(n)))
        .filter_map(|h| Some((h.name.clone(), String::from_utf8(h.value.clone()).ok()?)))
        .collect();
    // Only when the links have room: no other split running, and fewer connections open on
    // these sources than two each. Nor in a burst of new connections (a client starting many
    // downloads at once): they will fill the links without help, and a split among them would
    // overload them. Such a request may still have its end stolen by a link that goes idle.
    let busy: u64 = sources
        .iter()
        .map(|s| s.open.load(Relaxed) + s.connecting.load(Relaxed))
        .sum();
    let slot = (busy < 2 * sources.len() as u64
        && ctx.node.recent_accepts(Instant::now(), BURST_WINDOW) <= BURST_CONNECTIONS)
        .then(|| Slot::take(&ctx.node))
        .flatten();
    let Some(slot) = slot else {
        return Some(Chance::Steal(Steal {
            url,
            headers,
            dest,
            via: via.cloned(),
        }));
    };
    Some(Chance::Split(Plan {
        url,
        headers,
        sources,
        via: via.cloned(),
        _slot: slot,
    }))
}

/// The sources a split may use: those the balancer would (policies allow them, usable now), in
/// the best one's tier. `None` when fewer than two, or when the destination is sticky.
pub(crate) fn sources(node: &Node, target: &Target, ctx: &Ctx) -> Option<Vec<Arc<Source>>> {
    let policies = node.policies();
    if policies.sticky(target.domain(), target.ip()).is_some() {
        return None;
    }
    let ranked = crate::balancer::rank(node, target, ctx.scorer.as_ref(), Instant::now()).ok()?;
    let tier = |s: &Source| if s.over_cap() { Tier::Backup } else { s.tier };
    let top = tier(ranked.first()?);
    let picked: Vec<_> = ranked
        .into_iter()
        .filter(|s| tier(s) == top && policies.verdict(&s.name, target.domain(), target.ip()) == Verdict::Allow)
        .collect();
    (picked.len() >= 2).then_some(picked)
}

/// The `Range` header the proxy adds to an eligible request.
pub fn probe_range() -> Header {
    Header {
        name: "Range".into(),
        value: format!("bytes=0-{}", FIRST_PIECE - 1).into_bytes(),
    }
}

/// What to do with the answer to a request sent with [`probe_range`].
pub enum Decision {
    /// Split: the answer's body is `[0, first)` of an entity of `size` bytes.
    Split { first: u64, size: u64, validator: String },
    /// A `206` holding the whole entity: forward it as a `200` (see [`as_full`]).
    Whole,
    /// Drop the answer (and its connection) and send the request again without the range.
    Retry,
    /// Forward the answer as it is.
    Forward,
}

pub fn decide(ctx: &Ctx, resp: &ResponseHead, rframing: BodyFraming) -> Decision {
    let cfg = &ctx.node.config.split;
    match resp.status {
        206 => {}
        416 => return Decision::Retry,
        _ => return Decision::Forward,
    }
    let Some((0, last, size)) = fetch::content_range(resp) else {
        return Decision::Retry;
    };
    let first = last + 1;
    if first != FIRST_PIECE.min(size) {
        return Decision::Retry;
    }
    if first == size {
        return Decision::Whole;
    }
    match splittable(cfg, resp, size) {
        // The probe's body goes out verbatim under our Content-Length: it must not be chunked.
        Some(validator) if rframing == BodyFraming::Length(first) => Decision::Split { first, size, validator },
        _ => Decision::Retry,
    }
}

/// The `If-Range` validator of an entity of `size` bytes whose answer `resp` may be fetched by
/// ranges: big enough, of an allowed type, not encoded, with a strong validator.
pub(crate) fn splittable(cfg: &crate::config::Split, resp: &ResponseHead, size: u64) -> Option<String> {
    let text = |name| {
        resp.header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(|s| s.trim().to_string())
    };
    let mime_ok = match &cfg.mime {
        None => true,
        Some(prefixes) => text("content-type")
            .map(|t| t.to_ascii_lowercase())
            .is_some_and(|t| prefixes.iter().any(|p| t.starts_with(p.as_str()))),
    };
    // An encoded representation may differ between the client's Accept-Encoding and the
    // engine's `identity`: only identity bodies are split.
    let identity = text("content-encoding").is_none_or(|e| e.is_empty() || e.eq_ignore_ascii_case("identity"));
    let validator = fetch::validator(text("etag").as_deref(), text("last-modified").as_deref())?;
    (size >= cfg.min_size && mime_ok && identity).then_some(validator)
}

/// A `206` holding a whole entity as the `200` the client asked for.
pub fn as_full(resp: &ResponseHead) -> ResponseHead {
    let mut r = resp.clone();
    r.status = 200;
    r.reason = "OK".into();
    r.headers.retain(|h| !h.name.eq_ignore_ascii_case("content-range"));
    r
}

/// Serves a split response: the `200` head, the probe's body from `up`, then the rest over every
/// source of the plan. `Err` once the head went out means the client must be cut off.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    ctx: &Ctx,
    plan: Plan,
    client: &mut TcpStream,
    up: &mut Metered,
    rbuf: &mut Vec<u8>,
    resp: &ResponseHead,
    rframing: BodyFraming,
    client_keep: bool,
    (first, size, validator): (u64, u64, String),
) -> Result<(), String> {
    let started = Instant::now();
    ctx.node.splits_total.fetch_add(1, Relaxed);
    let mut head = as_full(resp);
    head.headers.retain(|h| !h.name.eq_ignore_ascii_case("content-length"));
    head.headers.push(Header {
        name: "Content-Length".into(),
        value: size.to_string().into_bytes(),
    });
    write_head(client, &head, Some(client_keep))
        .await
        .map_err(|e| format!("writing the head: {e}"))?;
    let names: Vec<String> = plan.sources.iter().map(|s| s.name.clone()).collect();
    let connector: Arc<dyn Connector> =
        Arc::new(NodeConnector::with_sources(ctx.node.clone(), plan.sources).via(plan.via));
    let stop = ctx.kill.child_token();
    let opts = fetch::Options {
        stop: stop.clone(),
        notify: Arc::new(|m| tracing::debug!("split: {m}")),
        ..fetch::Options::default()
    };
    let stats = opts.stats.clone();
    let rest = fetch::Rest {
        url: plan.url.clone(),
        headers: plan.headers,
        start: first,
        size,
        validator,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL);
    let idle = ctx.node.config.idle_timeout;
    let engine = async {
        let r = fetch::fetch_rest(rest, connector, opts, tx).await;
        if r.is_err() {
            stop.cancel();
        }
        r
    };
    let deliver = async {
        // The probe's own body first; meanwhile the engine already fetches the rest (up to its
        // window and the channel).
        let r = async {
            forward_body(up, rbuf, &mut *client, rframing, idle)
                .await
                .map_err(|e| format!("the first piece: {e}"))?;
            tokio::select! {
                r = fetch::write_ordered(rx, &mut *client, first) => r.map_err(|e| format!("writing to the client: {e}")),
                // Keep the engine's error, not a short count.
                _ = stop.cancelled() => Err(String::new()),
            }
        }
        .await;
        if r.is_err() {
            stop.cancel();
        }
        r
    };
    let (er, dr) = tokio::join!(engine, deliver);
    let reached = match (er, dr) {
        (_, Err(e)) if !e.is_empty() => return Err(e),
        (Err(e), _) => return Err(format!("the range fetch: {e}")),
        (Ok(()), Err(_)) => return Err("stopped".into()),
        (Ok(()), Ok(n)) => n,
    };
    if reached != size {
        return Err(format!("only {reached} of {size} bytes"));
    }
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    let per: Vec<String> = stats
        .per_source()
        .iter()
        .map(|(n, b)| format!("{n}={b}"))
        .chain(std::iter::once(format!("{}(probe)={first}", up.source().name)))
        .collect();
    tracing::debug!(
        url = %plan.url,
        size,
        sources = names.len(),
        bytes = %per.join(" "),
        mbyte_per_s = format!("{:.2}", size as f64 / secs / 1e6),
        "split download done"
    );
    Ok(())
}
