//! Prometheus metrics on `GET /metrics`, in the OpenMetrics text format (`prometheus-client`).
//!
//! Counters and gauges are not kept here: at every scrape, [`NodeCollector`] reads them from the
//! node's one live state (each source's atomics, the connection registry, the peers). Only
//! distributions need storage of their own, as histograms: the connect latency of client
//! connections ([`NodeMetrics`], in the node) and each source's RTT samples (in the
//! [`crate::source::Source`] itself). Every metric is documented in `docs/api.md`.

use crate::state::Node;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, histogram::Histogram, MetricType},
    registry::{Registry, Unit},
};
use std::{
    fmt,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bucket bounds in seconds for connect latency and RTT: 1 ms to 10 s, roughly ×2 per step,
/// which spans a LAN, a 4G link and a satellite link with a useful resolution for each.
const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0,
];

/// A histogram of durations in seconds, with [`SECONDS_BUCKETS`].
pub fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

/// Distributions the node observes (everything else is read from the live state at scrape).
#[derive(Debug)]
pub struct NodeMetrics {
    /// Time from a client's request to an open upstream connection, or to giving up: DNS,
    /// connect and failover to other sources included.
    connect_ok: Histogram,
    connect_failed: Histogram,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics {
            connect_ok: seconds_histogram(),
            connect_failed: seconds_histogram(),
        }
    }
}

impl NodeMetrics {
    pub fn observe_connect(&self, took: Duration, ok: bool) {
        let h = if ok { &self.connect_ok } else { &self.connect_failed };
        h.observe(took.as_secs_f64());
    }
}

/// Encodes every metric of `node` in the OpenMetrics text format.
pub fn encode(node: &Arc<Node>) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(NodeCollector(node.clone())));
    let mut out = String::with_capacity(8 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// Reads the node's live state at scrape time.
pub struct NodeCollector(pub Arc<Node>);

impl fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeCollector")
    }
}

type Labels = Vec<(&'static str, String)>;

/// Writes one metric family: its descriptor, then one sample (or histogram) per label set.
fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    ty: MetricType,
    rows: Vec<(Labels, M)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit.as_ref(), ty)?;
    for (labels, metric) in rows {
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes one metric without labels.
fn single<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    m: M,
) -> fmt::Result {
    let ty = m.metric_type();
    m.encode(enc.encode_descriptor(name, help, unit.as_ref(), ty)?)
}

fn source(name: &str) -> Labels {
    vec![("source", name.to_string())]
}

fn with(mut labels: Labels, key: &'static str, value: &str) -> Labels {
    labels.push((key, value.to_string()));
    labels
}

fn bytes_per_second() -> Option<Unit> {
    Some(Unit::Other("bytes_per_second".into()))
}

impl Collector for NodeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let node = &self.0;
        self.sources(&mut enc)?;
        self.clients(&mut enc)?;
        let c = &node.metrics;
        family(
            &mut enc,
            "booster_connect_duration",
            "Time from a client's request to an open upstream connection (result=ok) or to giving up (result=error), DNS and failover included.",
            Some(Unit::Seconds),
            MetricType::Histogram,
            vec![
                (vec![("result", "ok".to_string())], c.connect_ok.clone()),
                (vec![("result", "error".to_string())], c.connect_failed.clone()),
            ],
        )?;
        let mut states: Vec<(String, i64)> = ["connecting", "up", "down"]
            .iter()
            .map(|s| (s.to_string(), 0))
            .collect();
        for p in crate::peer::list(node) {
            if let Some(slot) = states.iter_mut().find(|(s, _)| s == p.state) {
                slot.1 += 1;
            }
        }
        family(
            &mut enc,
            "booster_peers",
            "Peers this node borrows from, by the state of their link.",
            None,
            MetricType::Gauge,
            states
                .into_iter()
                .map(|(s, n)| (vec![("state", s)], ConstGauge::new(n)))
                .collect(),
        )?;
        single(
            &mut enc,
            "booster_split_downloads",
            "Plain-HTTP downloads through the proxy split by ranges over every source.",
            None,
            ConstCounter::new(node.splits_total.load(Relaxed)),
        )?;
        let steals = &node.steals;
        family(
            &mut enc,
            "booster_tail_steals",
            "Ends of downloads forwarded whole fetched over an idle source: the stolen end finished the body (finished), the original connection did first (outrun), or the range fetch failed (failed).",
            None,
            MetricType::Counter,
            [("finished", &steals.finished), ("outrun", &steals.outrun), ("failed", &steals.failed)]
                .into_iter()
                .map(|(o, n)| (vec![("outcome", o.to_string())], ConstCounter::new(n.load(Relaxed))))
                .collect(),
        )?;
        single(
            &mut enc,
            "booster_tasks",
            "Tasks alive on the node's runtime.",
            None,
            ConstGauge::new(crate::api::alive_tasks() as i64),
        )?;
        if let Some(heap) = crate::sys::heap() {
            single(
                &mut enc,
                "booster_heap",
                "Heap bytes allocated and not freed (glibc's count; absent with other C libraries).",
                Some(Unit::Bytes),
                ConstGauge::new(heap.in_use as i64),
            )?;
            single(
                &mut enc,
                "booster_heap_held",
                "Heap bytes the allocator holds from the OS: in use plus free chunks kept for reuse (pages trimmed from inside its arenas still count).",
                Some(Unit::Bytes),
                ConstGauge::new(heap.held as i64),
            )?;
        }
        single(
            &mut enc,
            "booster_uptime",
            "Time since the node started.",
            Some(Unit::Seconds),
            ConstGauge::new(node.started.elapsed().as_secs_f64()),
        )
    }
}

impl NodeCollector {
    fn sources(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let sources = self.0.sources();
        let views: Vec<_> = sources.iter().map(|s| s.view()).collect();
        let per = |f: &dyn Fn(&crate::source::SourceView) -> Vec<(Labels, f64)>| -> Vec<(Labels, f64)> {
            views.iter().flat_map(f).collect()
        };
        let counter = |rows: Vec<(Labels, f64)>| {
            rows.into_iter()
                .map(|(l, v)| (l, ConstCounter::new(v as u64)))
                .collect::<Vec<_>>()
        };
        let gauge = |rows: Vec<(Labels, f64)>| {
            rows.into_iter()
                .map(|(l, v)| (l, ConstGauge::new(v)))
                .collect::<Vec<_>>()
        };
        // Counts and byte sizes are whole numbers: encode them as such.
        let int_gauge = |rows: Vec<(Labels, f64)>| {
            rows.into_iter()
                .map(|(l, v)| (l, ConstGauge::new(v as i64)))
                .collect::<Vec<_>>()
        };
        family(
            enc,
            "booster_source",
            "Bytes through a source since the node started: rx received from the network, tx sent to it.",
            Some(Unit::Bytes),
            MetricType::Counter,
            counter(per(&|v| {
                vec![
                    (with(source(&v.name), "direction", "rx"), v.rx_bytes as f64),
                    (with(source(&v.name), "direction", "tx"), v.tx_bytes as f64),
                ]
            })),
        )?;
        family(
            enc,
            "booster_source_connections",
            "Upstream connections opened through a source since the node started (probes included).",
            None,
            MetricType::Counter,
            counter(per(&|v| vec![(source(&v.name), v.conns_total as f64)])),
        )?;
        family(
            enc,
            "booster_source_connect_failures",
            "Failed connects and probes that were the source's fault.",
            None,
            MetricType::Counter,
            counter(per(&|v| vec![(source(&v.name), v.connect_failures as f64)])),
        )?;
        family(
            enc,
            "booster_source_open_connections",
            "Upstream connections open through a source now.",
            None,
            MetricType::Gauge,
            int_gauge(per(&|v| vec![(source(&v.name), v.open as f64)])),
        )?;
        family(
            enc,
            "booster_source_capacity",
            "Estimated capacity of a source (the larger direction).",
            bytes_per_second(),
            MetricType::Gauge,
            gauge(per(&|v| vec![(source(&v.name), v.capacity)])),
        )?;
        family(
            enc,
            "booster_source_throughput",
            "Throughput of a source, smoothed over about 1 s.",
            bytes_per_second(),
            MetricType::Gauge,
            gauge(per(&|v| {
                vec![
                    (with(source(&v.name), "direction", "rx"), v.rate_rx),
                    (with(source(&v.name), "direction", "tx"), v.rate_tx),
                ]
            })),
        )?;
        family(
            enc,
            "booster_source_usable",
            "1 if the balancer would give the source a new connection now, else 0.",
            None,
            MetricType::Gauge,
            int_gauge(per(&|v| vec![(source(&v.name), f64::from(u8::from(v.usable)))])),
        )?;
        family(
            enc,
            "booster_source_month",
            "Bytes through a source this calendar month (UTC), received and sent, earlier runs included.",
            Some(Unit::Bytes),
            MetricType::Gauge,
            int_gauge(per(&|v| vec![(source(&v.name), v.month_bytes as f64)])),
        )?;
        family(
            enc,
            "booster_source_cap",
            "The monthly cap of a source (only sources that have one).",
            Some(Unit::Bytes),
            MetricType::Gauge,
            int_gauge(per(&|v| {
                v.cap_bytes.map(|c| (source(&v.name), c as f64)).into_iter().collect()
            })),
        )?;
        family(
            enc,
            "booster_source_rtt",
            "Connect times (TCP handshake) through a source, probes included: the samples behind rtt_ms.",
            Some(Unit::Seconds),
            MetricType::Histogram,
            sources
                .iter()
                .map(|s| (source(&s.name), s.rtt_seconds.clone()))
                .collect(),
        )
    }

    fn clients(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let node = &self.0;
        single(
            enc,
            "booster_client_connections",
            "Client connections accepted on the proxy port since the node started.",
            None,
            ConstCounter::new(node.clients_total.load(Relaxed)),
        )?;
        single(
            enc,
            "booster_client_connections_refused",
            "Client connections refused because max_connections were open.",
            None,
            ConstCounter::new(node.clients_refused.load(Relaxed)),
        )?;
        single(
            enc,
            "booster_client_connections_open",
            "Client connections open on the proxy port now.",
            None,
            ConstGauge::new(node.conns.open() as i64),
        )?;
        let lent: Vec<(Labels, ConstCounter<u64>)> = {
            let map = node.lent.lock().unwrap_or_else(|e| e.into_inner());
            let mut rows: Vec<_> = map
                .iter()
                .flat_map(|(uplink, s)| {
                    [
                        (
                            vec![("uplink", uplink.clone()), ("direction", "rx".into())],
                            ConstCounter::new(s.rx.load(Relaxed)),
                        ),
                        (
                            vec![("uplink", uplink.clone()), ("direction", "tx".into())],
                            ConstCounter::new(s.tx.load(Relaxed)),
                        ),
                    ]
                })
                .collect();
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            rows
        };
        family(
            enc,
            "booster_lent",
            "Bytes this node lent to peers through a local uplink since it started.",
            Some(Unit::Bytes),
            MetricType::Counter,
            lent,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{Config, FileConfig, Overrides, Tier},
        source::{Source, SourceKind},
    };

    #[test]
    fn every_family_is_typed_and_counters_read_the_live_state() {
        let cfg = Config::build(
            FileConfig::default(),
            Overrides {
                probe_target: Some("none".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let node = Arc::new(Node::new(cfg, None).unwrap());
        let s = node.add_source(Source::new(
            "eth0".into(),
            SourceKind::Iface { name: "eth0".into() },
            Tier::Primary,
            Some(5_000),
            None,
        ));
        s.rx.store(1234, Relaxed);
        s.record_success(Some(Duration::from_millis(30)));
        node.metrics.observe_connect(Duration::from_millis(40), true);
        let text = encode(&node).unwrap();
        assert!(text.contains("# TYPE booster_source_bytes counter"), "{text}");
        assert!(
            text.contains("booster_source_bytes_total{source=\"eth0\",direction=\"rx\"} 1234"),
            "{text}"
        );
        assert!(text.contains("# TYPE booster_source_rtt_seconds histogram"), "{text}");
        assert!(
            text.contains("booster_source_rtt_seconds_bucket{le=\"0.05\",source=\"eth0\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("booster_connect_duration_seconds_count{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("booster_source_cap_bytes{source=\"eth0\"} 5000"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
