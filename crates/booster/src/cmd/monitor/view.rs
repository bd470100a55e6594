//! What `booster monitor` shows: a model fed with the node's snapshots (`/api/events`), and
//! the ratatui drawing of its two views. Pure: no terminal, no I/O, so tests render it into
//! ratatui's `TestBackend` with sample values.

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style, Stylize},
    text::{Line, Span},
    widgets::{Block, LineGauge, Paragraph, Row, Sparkline, Table},
    Frame,
};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};

/// Samples kept per source for the sparklines: two minutes at one snapshot a second.
const HISTORY: usize = 120;
/// Lines kept in the node view's event log.
const LOG_LINES: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum View {
    /// Peers joining and leaving, their load and health.
    Node,
    /// Per-source throughput, open connections, bytes against caps, bond paths.
    Net,
}

/// The link to the node's event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    Connecting,
    Live,
    Reconnecting(String),
}

pub struct Model {
    pub view: View,
    pub target: String,
    pub link: Link,
    pub last: Option<Value>,
    /// Download rate per source, kbit/s, oldest first.
    rates: BTreeMap<String, VecDeque<u64>>,
    /// Client connections open, oldest first.
    clients: VecDeque<u64>,
    /// What happened to peers and LAN nodes, oldest first.
    pub log: VecDeque<String>,
}

impl Model {
    pub fn new(view: View, target: &str) -> Model {
        Model {
            view,
            target: target.to_string(),
            link: Link::Connecting,
            last: None,
            rates: BTreeMap::new(),
            clients: VecDeque::new(),
            log: VecDeque::new(),
        }
    }

    /// Takes a snapshot; `clock` labels the log lines it causes (`HH:MM:SS`).
    pub fn apply(&mut self, snap: Value, clock: &str) {
        for line in peer_events(self.last.as_ref(), &snap) {
            self.log.push_back(format!("{clock} {line}"));
            if self.log.len() > LOG_LINES {
                self.log.pop_front();
            }
        }
        for s in list(&snap["sources"]) {
            let name = text(&s["name"]).to_string();
            let kbit = (s["rate_rx"].as_f64().unwrap_or(0.0) * 8.0 / 1e3).round() as u64;
            push(self.rates.entry(name).or_default(), kbit);
        }
        push(&mut self.clients, snap["node"]["clients_open"].as_u64().unwrap_or(0));
        self.last = Some(snap);
        self.link = Link::Live;
    }

    pub fn lost(&mut self, why: String) {
        self.link = Link::Reconnecting(why);
    }
}

fn push(history: &mut VecDeque<u64>, v: u64) {
    history.push_back(v);
    if history.len() > HISTORY {
        history.pop_front();
    }
}

/// The newest `width` samples, for a sparkline that wide.
fn tail(history: Option<&VecDeque<u64>>, width: u16) -> Vec<u64> {
    history
        .map(|h| h.iter().skip(h.len().saturating_sub(width as usize)).copied().collect())
        .unwrap_or_default()
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

pub fn mbit(bytes_per_sec: &Value) -> String {
    format!("{:.1} Mbit/s", bytes_per_sec.as_f64().unwrap_or(0.0) * 8.0 / 1e6)
}

pub fn size(v: &Value) -> String {
    match v.as_u64() {
        Some(b) => crate::units::ByteSize(b).to_string(),
        None => "-".into(),
    }
}

fn ms(v: &Value) -> String {
    v.as_f64().map(|r| format!("{r:.1} ms")).unwrap_or_else(|| "-".into())
}

/// What changed between two snapshots for the node view: peers joining, leaving, going up or
/// down, and nodes appearing on or leaving the LAN.
pub fn peer_events(prev: Option<&Value>, next: &Value) -> Vec<String> {
    let empty = Value::Null;
    let prev = prev.unwrap_or(&empty);
    let by = |v: &Value, key: &str, field: &str| -> BTreeMap<String, Value> {
        list(&v[key])
            .iter()
            .map(|p| (text(&p[field]).to_string(), p.clone()))
            .collect()
    };
    let (old, new) = (by(prev, "peers", "addr"), by(next, "peers", "addr"));
    let who = |p: &Value| format!("{} ({})", p["name"].as_str().unwrap_or("?"), text(&p["addr"]));
    let mut out = Vec::new();
    for (addr, p) in &new {
        match old.get(addr) {
            None => out.push(format!("peer {} joined: {}", who(p), text(&p["state"]))),
            Some(o) if o["state"] != p["state"] => {
                let why = p["last_error"].as_str().map(|e| format!(" ({e})")).unwrap_or_default();
                out.push(format!("peer {} is {}{why}", who(p), text(&p["state"])));
            }
            Some(_) => {}
        }
    }
    for (addr, p) in &old {
        if !new.contains_key(addr) {
            out.push(format!("peer {} left", who(p)));
        }
    }
    let (old, new) = (by(prev, "available", "node"), by(next, "available", "node"));
    for (name, a) in &new {
        if !old.contains_key(name) {
            let addrs: Vec<&str> = list(&a["addrs"]).iter().map(text).collect();
            out.push(format!("seen on the LAN: {name} at {}", addrs.join(", ")));
        }
    }
    for name in old.keys().filter(|n| !new.contains_key(*n)) {
        out.push(format!("gone from the LAN: {name}"));
    }
    out
}

pub fn draw(f: &mut Frame, m: &Model) {
    let [head, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(f.area());
    f.render_widget(Paragraph::new(header(m)), head);
    let Some(snap) = &m.last else {
        f.render_widget(
            Paragraph::new(format!("waiting for the node at {} … (q quits)", m.target)),
            body,
        );
        return;
    };
    match m.view {
        View::Net => draw_net(f, m, snap, body),
        View::Node => draw_node(f, m, snap, body),
    }
}

fn header(m: &Model) -> Line<'static> {
    let view = match m.view {
        View::Net => "net",
        View::Node => "node",
    };
    let link = match &m.link {
        Link::Connecting => Span::raw("connecting").yellow(),
        Link::Live => Span::raw("live").green(),
        Link::Reconnecting(why) => Span::raw(format!("reconnecting ({why})")).red(),
    };
    let mut spans = vec![
        Span::raw(format!("booster monitor {view} · {} · ", m.target)).bold(),
        link,
    ];
    if let Some(n) = m.last.as_ref().map(|s| &s["node"]) {
        spans.push(Span::raw(format!(
            " · up {}s · clients open {} (total {}) · q quits",
            n["uptime_secs"], n["clients_open"], n["clients_total"]
        )));
    }
    Line::from(spans)
}

fn draw_net(f: &mut Frame, m: &Model, snap: &Value, area: Rect) {
    let sources = list(&snap["sources"]);
    let rows = sources.len().max(1) as u16;
    let [src, conns, usage, relays] = Layout::vertical([
        Constraint::Length(SOURCE_ROWS * rows + 2),
        Constraint::Length(SOURCE_ROWS + 2),
        Constraint::Length(rows + 2),
        Constraint::Min(4),
    ])
    .areas(area);
    draw_sources(f, m, sources, src);
    draw_connections(f, m, snap, conns);
    draw_usage(f, &snap["usage"], usage);
    draw_relays(f, &snap["relays"], relays);
}

/// Terminal rows per source in the net view (the height of its sparkline).
const SOURCE_ROWS: u16 = 3;
/// Columns of text before each source's sparkline.
const INFO_COLS: u16 = 84;

fn draw_connections(f: &mut Frame, m: &Model, snap: &Value, area: Rect) {
    let c = &snap["connections"];
    let per: Vec<String> = c["per_source"]
        .as_object()
        .map(|o| o.iter().map(|(k, v)| format!("{k} {v}")).collect())
        .unwrap_or_default();
    let block = Block::bordered().title(format!(
        " open connections: clients {} (total {}) · per source: {} ",
        snap["node"]["clients_open"],
        c["total"],
        if per.is_empty() {
            "-".to_string()
        } else {
            per.join(", ")
        }
    ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let data = tail(Some(&m.clients), inner.width);
    f.render_widget(
        Sparkline::default()
            .data(&data)
            .style(Style::default().fg(Color::Magenta)),
        inner,
    );
}

fn draw_sources(f: &mut Frame, m: &Model, sources: &[Value], area: Rect) {
    let block = Block::bordered().title(" sources: health, open connections, download, capacity, RTT ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    if sources.is_empty() {
        f.render_widget(Paragraph::new("no sources"), inner);
        return;
    }
    let lines = Layout::vertical(vec![Constraint::Length(SOURCE_ROWS); sources.len()]).split(inner);
    for (s, line) in sources.iter().zip(lines.iter()) {
        let [info, spark] = Layout::horizontal([Constraint::Length(INFO_COLS), Constraint::Min(10)]).areas(*line);
        let health = text(&s["health"]);
        let style = match health {
            "up" => Style::default().fg(Color::Green),
            "down" | "degraded" => Style::default().fg(Color::Red),
            _ => Style::default().fg(Color::Yellow),
        };
        let row = Line::from(vec![
            Span::raw(format!("{:<16} ", text(&s["name"]))).bold(),
            Span::styled(format!("{health:<9}"), style),
            Span::raw(format!(
                "{:>4} open {:>14} of {:>14} {:>9}",
                s["open"],
                mbit(&s["rate_rx"]),
                mbit(&s["capacity"]),
                ms(&s["rtt_ms"])
            )),
        ]);
        let second = Line::from(format!(
            "{:<26} up {:>14}   total {:>9} down {:>9} up",
            "",
            mbit(&s["rate_tx"]),
            size(&s["rx_bytes"]),
            size(&s["tx_bytes"])
        ))
        .dim();
        f.render_widget(Paragraph::new(vec![row, second]), info);
        let data = tail(m.rates.get(text(&s["name"])), spark.width);
        f.render_widget(
            Sparkline::default().data(&data).style(Style::default().fg(Color::Cyan)),
            spark,
        );
    }
}

fn draw_usage(f: &mut Frame, usage: &Value, area: Rect) {
    let month = usage["month"].as_str().unwrap_or("");
    let block = Block::bordered().title(format!(" usage this month {month}: bytes against caps "));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let rows = list(&usage["sources"]);
    let lines = Layout::vertical(vec![Constraint::Length(1); rows.len().max(1)]).split(inner);
    for (r, line) in rows.iter().zip(lines.iter()) {
        let used = r["month_bytes"].as_u64().unwrap_or(0);
        let label = match r["cap_bytes"].as_u64() {
            Some(cap) => format!(
                "{:<16} {} of {}",
                text(&r["name"]),
                size(&r["month_bytes"]),
                size(&json_u64(cap))
            ),
            None => format!("{:<16} {} (no cap)", text(&r["name"]), size(&r["month_bytes"])),
        };
        let ratio = r["cap_bytes"]
            .as_u64()
            .map(|c| if c == 0 { 1.0 } else { (used as f64 / c as f64).min(1.0) })
            .unwrap_or(0.0);
        let color = if r["over_cap"] == true {
            Color::Red
        } else {
            Color::Green
        };
        f.render_widget(
            LineGauge::default()
                .ratio(ratio)
                .label(label)
                .filled_style(Style::default().fg(color)),
            *line,
        );
    }
}

fn json_u64(n: u64) -> Value {
    Value::from(n)
}

/// The bond's relays and their paths, or "no relays" (schema: `Node::relays_json`).
pub fn draw_relays(f: &mut Frame, relays: &Value, area: Rect) {
    let block = Block::bordered().title(" bond paths ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let relays = list(relays);
    if relays.is_empty() {
        f.render_widget(Paragraph::new("no relays").italic(), inner);
        return;
    }
    let mut rows = Vec::new();
    for r in relays {
        rows.push(
            Row::new(vec![
                format!("relay {}", text(&r["relay"])),
                text(&r["state"]).to_string(),
                format!("{} streams", r["streams"]),
                format!("{} sent twice", size(&r["redundant_bytes"])),
            ])
            .style(Style::default().add_modifier(Modifier::BOLD)),
        );
        for p in list(&r["paths"]) {
            rows.push(Row::new(vec![
                format!("  {}", text(&p["source"])),
                text(&p["state"]).to_string(),
                format!("rtt {}", ms(&p["rtt_ms"])),
                format!("loss {:.1} %", p["loss"].as_f64().unwrap_or(0.0) * 100.0),
                format!("{:.1} Mbit/s", p["rate_bps"].as_f64().unwrap_or(0.0) / 1e6),
                format!("in flight {}", size(&p["inflight"])),
                format!("tx {}", size(&p["tx_bytes"])),
                format!("rx {}", size(&p["rx_bytes"])),
            ]));
        }
    }
    let widths = [
        Constraint::Length(26),
        Constraint::Length(11),
        Constraint::Length(14),
        Constraint::Length(18),
        Constraint::Length(14),
        Constraint::Length(18),
        Constraint::Length(14),
        Constraint::Length(14),
    ];
    f.render_widget(Table::new(rows, widths), inner);
}

fn draw_node(f: &mut Frame, m: &Model, snap: &Value, area: Rect) {
    let peers = list(&snap["peers"]);
    let uplinks: usize = peers.iter().map(|p| list(&p["uplinks"]).len().max(1)).sum();
    let [table, lan, log] = Layout::vertical([
        Constraint::Length(uplinks.max(1) as u16 + 3),
        Constraint::Length(3),
        Constraint::Min(3),
    ])
    .areas(area);
    draw_peers(f, snap, peers, table);
    let mut lan_lines: Vec<String> = list(&snap["available"])
        .iter()
        .map(|a| {
            let addrs: Vec<&str> = list(&a["addrs"]).iter().map(text).collect();
            format!("{} at {} port {}", text(&a["node"]), addrs.join(", "), a["port"])
        })
        .collect();
    if lan_lines.is_empty() {
        lan_lines.push("nobody announces itself on the LAN".into());
    }
    f.render_widget(
        Paragraph::new(lan_lines.join(" · ")).block(Block::bordered().title(" on the LAN ")),
        lan,
    );
    let shown = log.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = m
        .log
        .iter()
        .rev()
        .take(shown)
        .rev()
        .map(|l| Line::from(l.as_str()))
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" peers joining and leaving ")),
        log,
    );
}

fn draw_peers(f: &mut Frame, snap: &Value, peers: &[Value], area: Rect) {
    let block = Block::bordered().title(" peers: state, their uplinks' health and load, their limits ");
    if peers.is_empty() {
        f.render_widget(
            Paragraph::new("no peers (booster connect HOST adds one)").block(block),
            area,
        );
        return;
    }
    let sources: BTreeMap<&str, &Value> = list(&snap["sources"]).iter().map(|s| (text(&s["name"]), s)).collect();
    let mut rows = Vec::new();
    for p in peers {
        let who = format!("{} ({})", p["name"].as_str().unwrap_or("?"), text(&p["addr"]));
        let ups = list(&p["uplinks"]);
        if ups.is_empty() {
            rows.push(Row::new(vec![
                who.clone(),
                text(&p["state"]).to_string(),
                p["last_error"].as_str().unwrap_or("-").to_string(),
            ]));
        }
        for u in ups {
            let s = sources.get(text(u)).copied().unwrap_or(&Value::Null);
            let r = &s["remote"];
            rows.push(Row::new(vec![
                who.clone(),
                text(&p["state"]).to_string(),
                text(u).to_string(),
                text(&s["health"]).to_string(),
                format!("{} / {}", s["open"], r["open"]),
                mbit(&s["rate_rx"]),
                mbit(&s["capacity"]),
                if r["cap_left"].is_null() {
                    "no cap".into()
                } else {
                    size(&r["cap_left"])
                },
                if r["max_rate"].as_f64().unwrap_or(0.0) > 0.0 {
                    mbit(&r["max_rate"])
                } else {
                    "none".into()
                },
            ]));
        }
    }
    let header = Row::new(vec![
        "peer",
        "state",
        "uplink",
        "health",
        "open here/there",
        "down",
        "capacity",
        "cap left",
        "max rate",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let widths = [
        Constraint::Length(30),
        Constraint::Length(11),
        Constraint::Length(18),
        Constraint::Length(9),
        Constraint::Length(16),
        Constraint::Length(14),
        Constraint::Length(14),
        Constraint::Length(10),
        Constraint::Length(14),
    ];
    f.render_widget(Table::new(rows, widths).header(header).block(block), area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::{backend::TestBackend, Terminal};
    use serde_json::json;

    fn screen(m: &Model) -> String {
        let mut t = Terminal::new(TestBackend::new(140, 40)).unwrap();
        t.draw(|f| draw(f, m)).unwrap();
        let buf = t.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    fn snapshot(relays: Value) -> Value {
        json!({
            "type": "snapshot",
            "node": {"uptime_secs": 12, "clients_open": 3, "clients_total": 40},
            "sources": [{"name": "eth1", "health": "up", "open": 2, "rate_rx": 250000.0,
                         "capacity": 2500000.0, "rtt_ms": 12.5}],
            "usage": {"month": "2026-11", "sources": [{"name": "eth1", "month_bytes": 500_000_000u64,
                      "cap_bytes": 1_000_000_000u64, "over_cap": false}]},
            "peers": [], "available": [],
            "relays": relays,
        })
    }

    #[test]
    fn net_view_renders_bond_paths_from_a_sample() {
        let mut m = Model::new(View::Net, "127.0.0.1:4884");
        m.apply(
            snapshot(
                json!([{"relay": "relay.example:4886", "state": "up", "streams": 1, "redundant_bytes": 0,
                "paths": [{"source": "eth1", "state": "up", "rtt_ms": 12.5, "loss": 0.0, "rate_bps": 2500000.0,
                           "inflight": 12345, "tx_bytes": 1, "rx_bytes": 2}]}]),
            ),
            "12:00:00",
        );
        let s = screen(&m);
        assert!(s.contains("relay relay.example:4886"), "{s}");
        assert!(
            s.contains("rtt 12.5 ms") && s.contains("2.5 Mbit/s") && s.contains("in flight 12.3 kB"),
            "{s}"
        );
        assert!(s.contains("500.0 MB of 1.00 GB"), "{s}");
        assert!(s.contains("live"), "{s}");
    }

    #[test]
    fn no_relays_and_reconnecting_are_said() {
        let mut m = Model::new(View::Net, "127.0.0.1:4884");
        m.apply(snapshot(json!([])), "12:00:00");
        m.lost("connection refused".into());
        let s = screen(&m);
        assert!(s.contains("no relays"), "{s}");
        assert!(s.contains("reconnecting (connection refused)"), "{s}");
    }

    #[test]
    fn peers_joining_and_leaving_are_logged() {
        let a = json!({"peers": [{"addr": "10.0.0.2:4885", "name": "phone-1", "state": "up"}],
                       "available": [{"node": "phone-2", "addrs": ["10.0.0.3"]}]});
        let b = json!({"peers": [{"addr": "10.0.0.2:4885", "name": "phone-1", "state": "down",
                                  "last_error": "silent for 3 s"}], "available": []});
        assert_eq!(
            peer_events(None, &a),
            [
                "peer phone-1 (10.0.0.2:4885) joined: up",
                "seen on the LAN: phone-2 at 10.0.0.3"
            ]
        );
        assert_eq!(
            peer_events(Some(&a), &b),
            [
                "peer phone-1 (10.0.0.2:4885) is down (silent for 3 s)",
                "gone from the LAN: phone-2"
            ]
        );
        assert_eq!(
            peer_events(Some(&b), &json!({"peers": []})),
            ["peer phone-1 (10.0.0.2:4885) left"]
        );
        let mut m = Model::new(View::Node, "x");
        m.apply(a, "12:00:01");
        let s = screen(&m);
        assert!(s.contains("12:00:01 peer phone-1 (10.0.0.2:4885) joined: up"), "{s}");
    }
}
