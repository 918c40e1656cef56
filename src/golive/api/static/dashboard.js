// golive dashboard: polls dashboard/data and draws it. No libraries: the
// servers it runs on may be offline, so the charts are plain SVG drawn here.
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  // ?interval=ms (250..10000) and ?window=s are for tests and slow links.
  const INTERVAL = Math.min(10000, Math.max(250, Number(params.get("interval")) || 1000));
  const WINDOW = Number(params.get("window")) || 60;
  const HISTORY_S = 120; // seconds of history in the line charts
  const SVG = "http://www.w3.org/2000/svg";
  const TIER_COLORS = { priority: "#e4572e", default: "#4c8bf5", flex: "#29a36a", batch: "#a06cd5" };

  const history = []; // {t, running, waiting, tps}
  let last = null; // previous sample, for tokens/s
  let failures = 0;

  const $ = (id) => document.getElementById(id);

  // ---- formatting ---------------------------------------------------------

  const int = (v) => (v == null ? "–" : Math.round(v).toLocaleString("en-US"));
  const pct = (v) => (v == null ? "–" : (100 * v).toFixed(1) + "%");
  // Local models cost fractions of a cent: keep 2 significant digits below a cent.
  function usd(v) {
    if (v == null) return "–";
    if (v === 0) return "$0";
    return "$" + (v < 0.01 ? v.toPrecision(2) : v.toFixed(v < 100 ? 4 : 2));
  }
  function secs(v) {
    if (v == null) return "–";
    if (v < 1) return (1000 * v).toFixed(v < 0.01 ? 2 : 0) + " ms";
    return v.toFixed(2) + " s";
  }
  function duration(s) {
    s = Math.floor(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
  }

  function setText(id, text, value) {
    const el = $(id);
    el.textContent = text;
    el.classList.toggle("long", text.length > 8); // e.g. $0.000082 in a narrow card
    if (value !== undefined) el.dataset.value = value == null ? "" : String(value);
  }

  function cell(row, col, text, value) {
    const td = document.createElement("td");
    td.dataset.col = col;
    td.textContent = text;
    if (value !== undefined) td.dataset.value = value == null ? "" : String(value);
    row.appendChild(td);
    return td;
  }

  // ---- charts -------------------------------------------------------------

  function el(name, attrs, text) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text != null) e.textContent = text;
    return e;
  }

  function niceMax(v) {
    if (v <= 1) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // Lines over the last HISTORY_S seconds; series: [{key, color}].
  function lineChart(svg, series) {
    svg.replaceChildren();
    const W = 600, H = 160, L = 36, B = 18, T = 8;
    const now = history.length ? history[history.length - 1].t : 0;
    let max = 0;
    for (const p of history) for (const s of series) max = Math.max(max, p[s.key] || 0);
    max = niceMax(max);
    const x = (t) => L + (W - L - 4) * (1 - (now - t) / HISTORY_S);
    const y = (v) => T + (H - T - B) * (1 - v / max);
    for (const f of [0, 0.5, 1]) {
      svg.appendChild(el("line", { x1: L, x2: W - 4, y1: y(max * f), y2: y(max * f), class: "grid" }));
      svg.appendChild(el("text", { x: L - 4, y: y(max * f) + 4, class: "axis", "text-anchor": "end" },
        Number.isInteger(max * f) ? max * f : (max * f).toFixed(1)));
    }
    svg.appendChild(el("text", { x: L, y: H - 3, class: "axis" }, `-${HISTORY_S}s`));
    svg.appendChild(el("text", { x: W - 4, y: H - 3, class: "axis", "text-anchor": "end" }, "now"));
    for (const s of series) {
      const pts = history.filter((p) => p[s.key] != null).map((p) => `${x(p.t).toFixed(1)},${y(p[s.key]).toFixed(1)}`);
      if (pts.length) svg.appendChild(el("polyline", { points: pts.join(" "), stroke: s.color, class: "line" }));
    }
  }

  function costChart(svg, tiers) {
    svg.replaceChildren();
    const rows = tiers.filter((t) => t.total.requests > 0);
    if (!rows.length) {
      svg.appendChild(el("text", { x: 300, y: 85, class: "axis", "text-anchor": "middle" }, "no requests yet"));
      return;
    }
    const max = Math.max(...rows.map((t) => t.total.cost_usd)) || 1;
    const bh = Math.min(28, 150 / rows.length - 6);
    rows.forEach((t, i) => {
      const yy = 6 + i * (bh + 6);
      const w = Math.max(2, 380 * (t.total.cost_usd / max));
      svg.appendChild(el("text", { x: 70, y: yy + bh / 2 + 4, class: "label", "text-anchor": "end" }, t.tier));
      svg.appendChild(el("rect", { x: 78, y: yy, width: w, height: bh, rx: 3, fill: TIER_COLORS[t.tier] || "#888", "data-tier": t.tier }));
      svg.appendChild(el("text", { x: 84 + w, y: yy + bh / 2 + 4, class: "label" }, usd(t.total.cost_usd)));
    });
  }

  // ---- rendering ----------------------------------------------------------

  function renderTiers(tiers) {
    const body = document.querySelector("#tiers tbody");
    body.replaceChildren();
    for (const t of tiers) {
      const tr = document.createElement("tr");
      tr.dataset.tier = t.tier;
      const name = cell(tr, "tier", t.tier);
      name.style.borderLeft = `4px solid ${TIER_COLORS[t.tier] || "#888"}`;
      cell(tr, "running", int(t.running), t.running);
      cell(tr, "waiting", int(t.waiting), t.waiting);
      const w = t.window;
      cell(tr, "window_requests", int(w.requests), w.requests);
      cell(tr, "ttft_p50", secs(w.ttft_p50), w.ttft_p50);
      cell(tr, "ttft_p95", secs(w.ttft_p95), w.ttft_p95);
      cell(tr, "itl_p50", secs(w.itl_p50), w.itl_p50);
      cell(tr, "itl_p95", secs(w.itl_p95), w.itl_p95);
      cell(tr, "window_cache_hit", pct(w.cache_hit_rate), w.cache_hit_rate);
      cell(tr, "total_requests", int(t.total.requests), t.total.requests);
      cell(tr, "total_cached_tokens", int(t.total.cached_tokens), t.total.cached_tokens);
      cell(tr, "total_cost", usd(t.total.cost_usd), t.total.cost_usd);
      body.appendChild(tr);
    }
  }

  function renderBatches(b) {
    const section = $("batches");
    if (!b) { section.hidden = true; return; } // no batch store on this server
    section.hidden = false;
    $("batches-active").textContent = b.active ? `(${b.active} active)` : "";
    $("batches-empty").hidden = b.jobs.length > 0;
    const body = document.querySelector("#batch-table tbody");
    body.replaceChildren();
    for (const j of b.jobs) {
      const tr = document.createElement("tr");
      tr.dataset.batch = j.id;
      cell(tr, "id", j.id);
      const st = cell(tr, "status", j.status);
      st.className = "status-" + j.status;
      cell(tr, "endpoint", j.endpoint);
      const rc = j.request_counts;
      const td = document.createElement("td");
      td.dataset.col = "progress";
      const bar = document.createElement("div");
      bar.className = "bar";
      const done = document.createElement("span");
      done.className = "done";
      done.style.width = rc.total ? (100 * rc.completed / rc.total) + "%" : "0";
      const failed = document.createElement("span");
      failed.className = "failed";
      failed.style.width = rc.total ? (100 * rc.failed / rc.total) + "%" : "0";
      bar.append(done, failed);
      td.appendChild(bar);
      tr.appendChild(td);
      cell(tr, "completed", int(rc.completed), rc.completed);
      cell(tr, "failed", int(rc.failed), rc.failed);
      cell(tr, "total", int(rc.total), rc.total);
      cell(tr, "created", new Date(j.created_at * 1000).toLocaleTimeString());
      body.appendChild(tr);
    }
  }

  function render(d) {
    const e = d.engine || {};
    let tps = null;
    if (last && d.engine && d.time > last.time) {
      tps = Math.max(0, (e.generated_tokens - last.engine.generated_tokens) / (d.time - last.time));
    }
    history.push({ t: d.time, running: e.running || 0, waiting: e.waiting || 0, tps });
    while (history.length && d.time - history[0].t > HISTORY_S) history.shift();

    setText("model", d.model || "–");
    renderModels(d.models || [], d.model);
    setText("uptime", duration(d.uptime_s));
    setText("window", `${d.window_s}s`);
    setText("kpi-running", int(e.running), e.running);
    setText("kpi-slots", e.slots ? `of ${e.slots} slots` : "");
    setText("kpi-waiting", int(e.waiting), e.waiting);
    setText("kpi-tps", tps == null ? "–" : tps.toFixed(1), tps);
    setText("kpi-cache", pct(e.cache_hit_rate), e.cache_hit_rate);
    setText("kpi-cache-detail", `${int(e.cached_tokens)} of ${int(e.prompt_tokens)} prompt tokens`);
    setText("kpi-accept", pct(e.draft_acceptance), e.draft_acceptance);
    setText("kpi-accept-detail", `${int(e.draft_accepted)} of ${int(e.draft_proposed)} draft tokens`);
    setText("kpi-requests", int(d.total.requests), d.total.requests);
    setText("kpi-errors", d.total.errors ? `${int(d.total.errors)} errors, since start` : "since start");
    setText("kpi-cost", usd(d.total.cost_usd), d.total.cost_usd);

    renderTiers(d.tiers);
    renderBatches(d.batches);
    lineChart($("chart-seq"), [{ key: "running", color: "#4c8bf5" }, { key: "waiting", color: "#e4572e" }]);
    lineChart($("chart-tps"), [{ key: "tps", color: "#29a36a" }]);
    costChart($("chart-cost"), d.tiers);

    $("updated").textContent = "updated " + new Date(d.time * 1000).toLocaleTimeString();
    // Which response the page shows, so a test can match DOM and JSON exactly.
    document.body.dataset.updated = String(d.time);
    last = d;
  }

  function setStatus(state, text) {
    document.body.dataset.state = state;
    const s = $("status");
    s.textContent = text;
    s.className = "pill " + state;
  }

  // One page per model: ?model=ID picks it; links to the others when there are several.
  const MODEL = new URLSearchParams(location.search).get("model");
  function renderModels(ids, current) {
    const box = $("models");
    if (!box || ids.length < 2 || box.dataset.ids === ids.join("\n")) return;
    box.dataset.ids = ids.join("\n");
    box.replaceChildren(...ids.map((id) => {
      const a = document.createElement("a");
      a.textContent = id;  // text, never HTML: ids come from the server's config
      a.href = `?model=${encodeURIComponent(id)}`;
      if (id === current) a.className = "current";
      return a;
    }));
  }

  async function poll() {
    try {
      const q = `window=${encodeURIComponent(WINDOW)}` + (MODEL ? `&model=${encodeURIComponent(MODEL)}` : "");
      const r = await fetch(`dashboard/data?${q}`, { cache: "no-store" });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      render(await r.json());
      failures = 0;
      setStatus("live", "live");
    } catch (err) {
      failures += 1;
      setStatus("error", failures > 2 ? "server unreachable" : "retrying");
      console.warn("dashboard poll failed", err);
    } finally {
      setTimeout(poll, INTERVAL);
    }
  }

  poll();
})();
