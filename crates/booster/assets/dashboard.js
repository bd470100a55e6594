// booster dashboard: hand-written, no build step, no dependencies. Served from the binary.
//
// Data comes pushed from the node's event stream (GET /api/events, Server-Sent Events): one
// snapshot about every second. The page keeps the last HISTORY snapshots' numbers for its
// charts and redraws from them. Every string from the node is put in the page as text
// (textContent), never as HTML.
//
// With api_token set on the node, the token typed into the page goes in sessionStorage, is sent
// as "Authorization: Bearer" on fetches and as ?token= on the event stream (EventSource cannot
// send headers).
"use strict";

(function () {
  const HISTORY = 120; // snapshots kept for the charts: 2 minutes at one a second
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2b6cb0", "#d69e2e", "#38a169", "#c53030", "#805ad5", "#dd6b20", "#319795", "#b83280"];
  const W = 600, H = 210, PAD_L = 40, PAD_R = 8, PAD_T = 8, PAD_B = 22;

  // ---- small helpers ---------------------------------------------------------------------

  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) e.setAttribute(k, v);
    }
    for (const c of [].concat(children || [])) {
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function svg(tag, attrs, children) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const c of [].concat(children || [])) {
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function mbit(bytesPerSec) {
    return ((bytesPerSec || 0) * 8 / 1e6).toFixed(1);
  }

  function bytes(n) {
    if (n === null || n === undefined) return "-";
    if (n < 1e3) return n + " B";
    if (n < 1e6) return (n / 1e3).toFixed(1) + " kB";
    if (n < 1e9) return (n / 1e6).toFixed(1) + " MB";
    return (n / 1e9).toFixed(2) + " GB";
  }

  function ms(v) {
    return v === null || v === undefined ? "-" : Number(v).toFixed(1) + " ms";
  }

  function pill(state) {
    const good = ["up", "ok"].includes(state);
    const bad = ["down", "dead", "degraded"].includes(state);
    return el("span", { class: "pill " + (good ? "pill-ok" : bad ? "pill-bad" : "pill-wait") }, state);
  }

  function table(head, rows, numeric) {
    const num = new Set(numeric || []);
    return el("table", {}, [
      el("thead", {}, el("tr", {}, head.map((h, i) => el("th", { class: num.has(i) ? "num" : null }, h)))),
      el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c, i) => el("td", { class: num.has(i) ? "num" : null }, c))))),
    ]);
  }

  function fill(id, node) {
    const target = document.getElementById(id);
    if (target) target.replaceChildren(node);
  }

  // ---- charts ----------------------------------------------------------------------------

  // A line chart of `series` ([{name, color, values: [number|null], cls}]) over `n` slots,
  // newest on the right. Returns an <svg>.
  function lineChart(series, n, unit) {
    const max = Math.max(1e-9, ...series.flatMap((s) => s.values.filter((v) => v !== null)));
    const top = niceCeil(max);
    const x = (i) => PAD_L + (i * (W - PAD_L - PAD_R)) / Math.max(1, n - 1);
    const y = (v) => PAD_T + (H - PAD_T - PAD_B) * (1 - v / top);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "data-max": String(top) });
    for (let k = 0; k <= 4; k++) {
      const v = (top * k) / 4;
      root.append(svg("line", { class: "axis", x1: PAD_L, x2: W - PAD_R, y1: y(v), y2: y(v) }));
      root.append(svg("text", { class: "tick", x: PAD_L - 6, y: y(v) + 4, "text-anchor": "end" }, fmtTick(v)));
    }
    root.append(svg("text", { class: "tick", x: PAD_L, y: H - 4 }, `-${n}s`));
    root.append(svg("text", { class: "tick", x: W - PAD_R, y: H - 4, "text-anchor": "end" }, `now (${unit})`));
    for (const s of series) {
      const offset = n - s.values.length;
      const pts = [];
      s.values.forEach((v, i) => {
        if (v !== null) pts.push(`${x(i + offset).toFixed(1)},${y(v).toFixed(1)}`);
      });
      if (pts.length === 0) continue;
      root.append(
        svg("polyline", {
          class: "series " + (s.cls || ""),
          stroke: s.color,
          points: pts.join(" "),
          "data-source": s.name,
          "data-samples": String(pts.length),
          "data-last": String(s.values[s.values.length - 1] ?? ""),
        })
      );
    }
    return root;
  }

  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function fmtTick(v) {
    return v >= 100 || Number.isInteger(v) ? v.toFixed(0) : v.toFixed(1);
  }

  function legend(items) {
    return el(
      "div",
      { class: "legend" },
      items.map((it) =>
        el("span", { "data-source": it.name }, [
          el("span", { class: "swatch", "data-color": it.color }),
          it.name,
          el("span", { class: "value" }, it.value),
        ])
      )
    );
  }

  // Swatch colours are set through the CSSOM (allowed by the page's CSP; style attributes are not).
  function paintSwatches(root) {
    for (const s of root.querySelectorAll(".swatch")) s.style.background = s.dataset.color;
  }

  // ---- state -----------------------------------------------------------------------------

  const history = []; // [{ts, clients, sources: {name: {rx, tx, open}}}]
  const colors = new Map();

  function colorOf(name) {
    if (!colors.has(name)) colors.set(name, PALETTE[colors.size % PALETTE.length]);
    return colors.get(name);
  }

  function record(snap) {
    const sources = {};
    for (const s of snap.sources || []) sources[s.name] = { rx: s.rate_rx, tx: s.rate_tx, open: s.open };
    history.push({ ts: snap.ts_ms, clients: snap.node ? snap.node.clients_open : 0, sources });
    while (history.length > HISTORY) history.shift();
  }

  // The charts' time window: the samples there are, at least 30 s, at most HISTORY.
  function windowLen() {
    return Math.min(HISTORY, Math.max(30, history.length));
  }

  function seriesOf(names, pick) {
    return names.map((name) => ({
      name,
      color: colorOf(name),
      values: history.map((h) => (h.sources[name] ? pick(h.sources[name]) : null)),
    }));
  }

  // ---- sections (each a pure function of snapshot data, so each can be tested alone) -----

  function renderThroughput(names) {
    const series = seriesOf(names, (s) => (s.rx * 8) / 1e6);
    const last = history[history.length - 1] || { sources: {} };
    return {
      chart: lineChart(series, windowLen(), "Mbit/s"),
      legend: legend(names.map((n) => ({ name: n, color: colorOf(n), value: mbit(last.sources[n] && last.sources[n].rx) + " Mbit/s" }))),
    };
  }

  function renderConnections(names) {
    const series = seriesOf(names, (s) => s.open);
    series.push({ name: "clients", color: "#4a5568", cls: "total", values: history.map((h) => h.clients) });
    const last = history[history.length - 1] || { sources: {}, clients: 0 };
    const items = names.map((n) => ({ name: n, color: colorOf(n), value: String(last.sources[n] ? last.sources[n].open : 0) }));
    items.push({ name: "clients", color: "#4a5568", value: String(last.clients) });
    return { chart: lineChart(series, windowLen(), "connections"), legend: legend(items) };
  }

  function renderSources(sources) {
    if (!sources.length) return el("p", { class: "empty" }, "no sources");
    return table(
      ["source", "tier", "health", "open", "down", "up", "capacity", "RTT", "total down"],
      sources.map((s) => [
        s.name,
        s.tier,
        pill(s.health),
        String(s.open),
        mbit(s.rate_rx) + " Mbit/s",
        mbit(s.rate_tx) + " Mbit/s",
        mbit(s.capacity) + " Mbit/s" + (s.capacity_known ? "" : " (guess)"),
        ms(s.rtt_ms),
        bytes(s.rx_bytes),
      ]),
      [3, 4, 5, 6, 7, 8]
    );
  }

  function usageBar(used, cap) {
    const frac = cap ? Math.min(1, used / cap) : 0;
    const cls = "used" + (cap && used >= cap ? " over" : frac > 0.8 ? " high" : "");
    return svg("svg", { class: "bar", viewBox: "0 0 100 4", preserveAspectRatio: "none" }, [
      svg("rect", { class: "track", x: 0, y: 0, width: 100, height: 4 }),
      svg("rect", { class: cls, x: 0, y: 0, width: (frac * 100).toFixed(2), height: 4 }),
    ]);
  }

  function renderUsage(usage) {
    const rows = (usage && usage.sources) || [];
    if (!rows.length) return el("p", { class: "empty" }, "no sources");
    const out = el("div");
    for (const r of rows) {
      const text = r.cap_bytes ? `${bytes(r.month_bytes)} of ${bytes(r.cap_bytes)}` : `${bytes(r.month_bytes)}, no cap`;
      out.append(
        el("div", { class: "usage-row", "data-source": r.name }, [
          el("div", { class: "label" }, [el("span", {}, r.name), el("span", {}, text + (r.over_cap ? " (over cap: backup only)" : ""))]),
          r.cap_bytes ? usageBar(r.month_bytes, r.cap_bytes) : "",
        ])
      );
    }
    for (const l of (usage && usage.lent) || []) {
      out.append(el("div", { class: "muted" }, `lent to peers through ${l.uplink}: ${bytes(l.month_bytes)}`));
    }
    return out;
  }

  function renderPeers(snap) {
    const out = el("div");
    const peers = snap.peers || [];
    const byName = new Map((snap.sources || []).map((s) => [s.name, s]));
    if (!peers.length) out.append(el("p", { class: "empty" }, "no peers (booster connect HOST adds one)"));
    else
      out.append(
        table(
          ["peer", "state", "uplink", "load here / there", "their cap left", "their max rate"],
          peers.flatMap((p) => {
            const ups = p.uplinks && p.uplinks.length ? p.uplinks : [null];
            return ups.map((u) => {
              const s = u && byName.get(u);
              const r = s && s.remote;
              return [
                `${p.name || "?"} (${p.addr})`,
                pill(p.state),
                u ? [u, " ", s ? pill(s.health) : ""] : p.last_error || "-",
                s ? `${s.open} / ${r ? r.open : "-"}` : "-",
                r ? (r.cap_left === null ? "no cap" : bytes(r.cap_left)) : "-",
                r ? (r.max_rate ? mbit(r.max_rate) + " Mbit/s" : "none") : "-",
              ].map((c) => (Array.isArray(c) ? el("span", {}, c) : c));
            });
          })
        )
      );
    const lending = snap.lending || {};
    if (lending.enabled) {
      const limits = [
        lending.max_rate ? `at most ${mbit(lending.max_rate)} Mbit/s` : "no rate limit",
        lending.cap ? `at most ${bytes(lending.cap)} a month` : "no monthly cap",
      ];
      out.append(el("p", { class: "muted" }, `this node lends ${(lending.uplinks || []).map((u) => u.name).join(", ") || "nothing"} (${limits.join(", ")})`));
    }
    for (const a of snap.available || []) {
      out.append(el("p", { class: "muted" }, `on the LAN: ${a.node} at ${(a.addrs || []).join(", ")} port ${a.port}`));
    }
    return out;
  }

  // The bond's relays and their paths (schema in docs/api.md, GET /api/relays).
  function renderRelays(relays) {
    if (!relays || !relays.length) return el("p", { class: "empty", "data-relays": "0" }, "no relays");
    const out = el("div", { "data-relays": String(relays.length) });
    for (const r of relays) {
      out.append(
        el("h3", {}, [r.relay + " ", pill(r.state), el("span", { class: "muted" }, ` ${r.streams} streams, ${bytes(r.redundant_bytes)} sent twice`)])
      );
      out.append(
        table(
          ["path", "state", "RTT", "loss", "rate", "in flight", "sent", "received"],
          (r.paths || []).map((p) => [
            p.source,
            pill(p.state),
            ms(p.rtt_ms),
            ((p.loss || 0) * 100).toFixed(1) + " %",
            mbit(p.rate_bps / 8) + " Mbit/s",
            bytes(p.inflight),
            bytes(p.tx_bytes),
            bytes(p.rx_bytes),
          ]),
          [2, 3, 4, 5, 6, 7]
        )
      );
    }
    return out;
  }

  function renderPolicies(policies, onDelete) {
    if (!policies.length) return el("p", { class: "empty" }, "no policies");
    return table(
      ["id", "kind", "uplink", "hosts", "ttl", "from", ""],
      policies.map((p) => [
        p.id,
        p.kind,
        p.uplink || "any",
        (p.hosts || []).join(", ") || "all",
        p.ttl || "-",
        p.origin,
        p.origin === "api"
          ? el("button", { class: "danger", type: "button", "data-policy": p.id }, "delete")
          : el("span", { class: "muted" }, "config file"),
      ])
    );
  }

  // ---- the page --------------------------------------------------------------------------

  function draw(snap) {
    record(snap);
    const names = (snap.sources || []).map((s) => s.name);
    const n = snap.node || {};
    document.getElementById("node-line").textContent =
      `proxy ${n.listen} · up ${n.uptime_secs}s · clients open ${n.clients_open}, total ${n.clients_total} · month ${n.month}`;
    const t = renderThroughput(names);
    fill("chart-throughput", t.chart);
    fill("legend-throughput", t.legend);
    const c = renderConnections(names);
    fill("chart-connections", c.chart);
    fill("legend-connections", c.legend);
    paintSwatches(document);
    fill("sources", renderSources(snap.sources || []));
    document.getElementById("usage-month").textContent = snap.usage ? `(${snap.usage.month})` : "";
    fill("usage", renderUsage(snap.usage));
    fill("peers", renderPeers(snap));
    fill("relays", renderRelays(snap.relays));
    fill("policies", renderPolicies(snap.policies || []));
    const list = document.getElementById("source-names");
    list.replaceChildren(...names.map((nm) => el("option", { value: nm })));
  }

  let token = sessionStorage.getItem("booster-token") || "";
  let events = null;
  // ?frames=N: draw N snapshots, then close the stream and stop (a still page, for
  // screenshots and headless captures: a browser's virtual clock waits for open streams).
  const frames = Number(new URLSearchParams(location.search).get("frames")) || 0;
  let drawn = 0;

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (token) h.Authorization = "Bearer " + token;
    return h;
  }

  function linkState(text, cls) {
    const s = document.getElementById("link-state");
    s.textContent = text;
    s.className = "pill " + cls;
  }

  async function api(method, path, body) {
    const res = await fetch(path, {
      method,
      headers: headers(body ? { "Content-Type": "application/json" } : {}),
      body: body ? JSON.stringify(body) : undefined,
    });
    if (res.status === 401) askToken("the token was refused");
    const text = await res.text();
    const data = text ? JSON.parse(text) : null;
    if (!res.ok) throw new Error((data && data.error) || res.statusText);
    return data;
  }

  function askToken(why) {
    if (events) events.close();
    events = null;
    linkState("needs token", "pill-bad");
    document.getElementById("token-form").hidden = false;
    document.getElementById("token-error").textContent = token ? why : "";
  }

  // Opens the event stream. The browser reconnects by itself when the node restarts; a
  // refused token closes it for good, which a fetch then tells apart from "node away".
  function connect() {
    if (events) events.close();
    const url = "/api/events" + (token ? "?token=" + encodeURIComponent(token) : "");
    events = new EventSource(url);
    events.addEventListener("snapshot", (e) => {
      linkState("live", "pill-ok");
      document.getElementById("token-form").hidden = true;
      draw(JSON.parse(e.data));
      drawn += 1;
      if (frames && drawn >= frames) {
        events.close();
        events = null;
        linkState(`stopped after ${drawn} updates`, "pill-wait");
      }
    });
    events.onerror = () => {
      if (events && events.readyState === EventSource.CLOSED) {
        fetch("/api/health", { headers: headers() })
          .then((r) => (r.status === 401 ? askToken("the token was refused") : setTimeout(connect, 2000)))
          .catch(() => setTimeout(connect, 2000));
      }
      linkState("reconnecting", "pill-wait");
    };
  }

  function start() {
    document.getElementById("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      token = document.getElementById("token-input").value.trim();
      sessionStorage.setItem("booster-token", token);
      connect();
    });
    document.getElementById("policy-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const val = (id) => document.getElementById(id).value.trim();
      const body = {
        kind: val("policy-kind"),
        uplink: val("policy-uplink") || null,
        hosts: val("policy-hosts").split(/[\s,]+/).filter(Boolean),
        ttl: val("policy-ttl") || null,
      };
      const err = document.getElementById("policy-error");
      try {
        await api("POST", "/api/policies", body);
        err.textContent = "";
        document.getElementById("policy-hosts").value = "";
      } catch (x) {
        err.textContent = x.message;
      }
    });
    document.getElementById("policies").addEventListener("click", async (e) => {
      const id = e.target && e.target.dataset && e.target.dataset.policy;
      if (!id) return;
      const err = document.getElementById("policy-error");
      try {
        await api("DELETE", "/api/policies/" + encodeURIComponent(id));
        err.textContent = "";
      } catch (x) {
        err.textContent = x.message;
      }
    });
    connect();
  }

  // Exposed for tests that render one section from a sample value.
  window.BoosterDashboard = { renderRelays, renderUsage, renderPeers, renderPolicies, renderSources, lineChart };

  if (document.getElementById("booster-dashboard")) {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
    else start();
  }
})();
