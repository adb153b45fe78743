/* hammerstack live dashboard: the sampler's last 120 s from /data.json,
   then one point a second from /events (Server-Sent Events).  Every chart
   is derived from the raw per-component series S[component][metric] =
   [[t, v], ...], so a reload shows the same as a page left open.
   Chart.js comes from the local disk (/static/chart.js); without it the
   tiles still show the numbers. */
"use strict";

const KEEP_S = 120;
const S = {};                 // component -> metric -> [[t, v], ...]
const status = { ticks: 0, errors: [], points: {}, requests: 0, step: "" };
let now = 0;

function note(msg) { status.errors.push(String(msg)); publish(); }
window.addEventListener("error", e => note(e.message || "error"));
window.addEventListener("unhandledrejection", e => note(e.reason));

/* The page's state, for tests (read with --dump-dom or over CDP). */
function publish() {
  const el = document.getElementById("hs-status");
  if (el) el.textContent = JSON.stringify(status);
  window.hsStatus = status;
}

function add(comp, metric, t, v) {
  const c = S[comp] || (S[comp] = {});
  const s = c[metric] || (c[metric] = []);
  if (s.length && s[s.length - 1][0] >= t) return;
  s.push([t, v]);
  while (s.length && s[0][0] < t - KEEP_S) s.shift();
}

function comps(re) { return Object.keys(S).filter(c => re.test(c)).sort(); }
function get(c, m) { return (S[c] && S[c][m]) || []; }
function last(pts) { return pts.length ? pts[pts.length - 1][1] : null; }

/* Per-second rate of a counter: the sampler's METRIC/s when it wrote one,
   else the difference of consecutive points. */
function rate(c, m) {
  const r = get(c, m + "/s");
  if (r.length) return r;
  const p = get(c, m), out = [];
  for (let i = 1; i < p.length; i++) {
    const dt = p[i][0] - p[i - 1][0];
    if (dt > 0) out.push([p[i][0], Math.max(0, (p[i][1] - p[i - 1][1]) / dt)]);
  }
  return out;
}

/* Pointwise combination of series that share sample times. */
function combine(list, f) {
  const by = new Map();
  list.forEach((s, i) => s.forEach(([t, v]) => {
    const k = t.toFixed(3);
    if (!by.has(k)) by.set(k, [t, new Array(list.length).fill(null)]);
    by.get(k)[1][i] = v;
  }));
  const out = [];
  [...by.values()].sort((a, b) => a[0] - b[0]).forEach(([t, vs]) => {
    const v = f(vs);
    if (v !== null && isFinite(v)) out.push([t, v]);
  });
  return out;
}
const sum = vs => vs.reduce((a, v) => a + (v || 0), 0);

function metricsOf(c, re) { return Object.keys(S[c] || {}).filter(m => re.test(m)); }

/* ---------------------------------------------------------- derived */

function servers() { return comps(/^hs-server/); }
function memcacheds() { return comps(/^memcached/); }

function throughput() {
  const out = [];
  if (S["hs-balancer"]) out.push(["through the balancer", rate("hs-balancer", "requests")]);
  servers().forEach(c => out.push([c, rate(c, "requests")]));
  return out;
}

function shares() {
  const sv = servers(), rs = sv.map(c => rate(c, "requests"));
  return sv.map((c, i) => [c, combine(rs, vs => {
    const tot = sum(vs);
    return tot > 0 && vs[i] !== null ? 100 * vs[i] / tot : null;
  })]);
}

/* p50 / p99 of the requests answered in each second alone: the sampler's
   window.* (the difference of two ticks' server-side histograms).  At the
   balancer when there is one (its wait for the backends, all of them),
   else the slowest server's.  Also says where it was measured. */
function latency() {
  const bal = get("hs-balancer", "window.p99_us").length > 0;
  const src = bal ? ["hs-balancer"] : servers();
  const mx = vs => { const x = vs.filter(v => v !== null); return x.length ? Math.max(...x) / 1000 : null; };
  // hs-load's own per-second view when it drives the load (walkthrough
  // step 4): from each request's planned send, queueing included.
  const ms = pts => pts.map(([t, v]) => [t, v / 1000]);
  return { client: ms(get("hs-load", "interval_p99_us")),
           where: bal ? "at the balancer" : src.length > 1 ? "slowest server" : "at the server",
           p50: combine(src.map(c => get(c, "window.p50_us")), mx),
           p99: combine(src.map(c => get(c, "window.p99_us")), mx) };
}

function errorsPerS() {
  const list = [];
  servers().forEach(c => metricsOf(c, /^status\.5\d\d$/).forEach(m => list.push(rate(c, m))));
  if (S["hs-balancer"]) {
    metricsOf("hs-balancer", /^errors\.\d+$/).forEach(m => list.push(rate("hs-balancer", m)));
    metricsOf("hs-balancer", /^backends\.\d+\.failures$/).forEach(m => list.push(rate("hs-balancer", m)));
  }
  if (!list.length) return combine(servers().map(c => rate(c, "requests")), () => 0);
  return combine(list, sum);
}

function db() {
  const q = combine(servers().map(c => rate(c, "db.queries")), sum);
  const r = combine(servers().map(c => rate(c, "requests")), sum);
  const per = combine([q, r], ([a, b]) => (a !== null && b > 0.5) ? a / b : null);
  return [q, per];
}

function cache() {
  const sv = servers();
  const hits = combine(sv.map(c => rate(c, "cache.hits")), sum);
  const miss = combine(sv.map(c => rate(c, "cache.misses")), sum);
  const hit = combine([hits, miss], ([h, m]) => (h + m) > 0 ? 100 * h / (h + m) : null);
  const mc = memcacheds();
  return {
    hit,
    gets: combine(mc.map(c => rate(c, "cmd_get")), sum),
    sets: combine(mc.map(c => rate(c, "cmd_set")), sum),
    evictions: combine(mc.map(c => rate(c, "evictions")), sum),
  };
}

function cpu() {
  const out = [];
  Object.keys(S).sort().forEach(c => {
    const u = get(c, "host.cpu_s/s");
    if (u.length) out.push([c.replace(/^hs-/, ""), u, rate(c, "host.throttled_s")]);
  });
  return out;
}

/* PostgreSQL replicas (components pg-replica-K; hslab/sampler.py): each
   one's lag as the servers measure it, in ms (lag_ms: the age of the
   newest commit it applied while it has WAL left to replay, else 0) and
   in kB of WAL not yet replayed.  null without replicas in the last minute. */
function replicas() {
  const rs = comps(/^pg-replica-\d+$/).filter(c => {
    const b = get(c, "lag_bytes");
    return b.length && b[b.length - 1][0] >= now - STALE_SHOWN_S;
  });
  if (!rs.length) return null;
  const kb = pts => pts.map(([t, v]) => [t, v / 1024]);
  return rs.map(c => ({ name: c.replace(/^pg-/, ""), ms: get(c, "lag_ms"),
                        kb: kb(get(c, "lag_bytes")) }));
}

/* hs-checker's running count of stale reads (its --progress-ms lines,
   component "checker"), while it runs and for a minute after; a later
   step without the checker gets the memcached tile back. */
const STALE_SHOWN_S = 60;
function stale() {
  const s = get("checker", "stale_reads");
  if (!s.length || s[s.length - 1][0] < now - STALE_SHOWN_S) return null;
  return last(s);
}

/* ---------------------------------------------------------- charts */

const PALETTE = ["#4fa3ff", "#ff9f40", "#4bc07a", "#e25c8a", "#b38cff",
                 "#f2c94c", "#40d0d0", "#ff6b6b"];
const charts = {};
const hasChart = typeof Chart !== "undefined";

function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

function applyTheme() {
  if (!hasChart) return;
  Chart.defaults.color = css("--fg");
  Chart.defaults.borderColor = css("--grid");
  Object.values(charts).forEach(ch => {
    Object.values(ch.options.scales).forEach(s => {
      s.ticks.color = css("--fg"); s.grid.color = css("--grid");
      if (s.title) s.title.color = css("--fg");
    });
    ch.options.plugins.title.color = css("--fg");
    ch.options.plugins.subtitle.color = css("--fg");
    ch.options.plugins.legend.labels.color = css("--fg");
    ch.update("none");
  });
}

/* Tick labels short enough for 24 px: 12k, not 12,000. */
function short(v) {
  const a = Math.abs(v);
  if (a >= 1e6) return +(v / 1e6).toFixed(1) + "M";
  if (a >= 1e3) return +(v / 1e3).toFixed(1) + "k";
  return a > 0 && a < 1 ? +v.toPrecision(2) : +v.toFixed(2);
}

/* A vertical axis gets at most a quarter of a chart's width when there
   are two (Chart.js caps each at half of a half: 100 px of a third of
   1280), and a squeezed one draws its title over its tick labels.  At
   24 px "1.5k" and a title need about that much, so fitSide() widens a
   squeezed axis to what its labels and title measure; no tick marks, and
   the title's padding on the labels' side ("bottom" is the inner side of
   a rotated side title) keeps them apart. */
function fitSide(s) {
  const o = s.options, f = Chart.helpers.toFont(o.ticks.font);
  s.ctx.save();
  s.ctx.font = f.string;
  const widest = Math.max(0, ...s.ticks.map(t => s.ctx.measureText(String(t.label)).width));
  s.ctx.restore();
  const pad = Chart.helpers.toPadding(o.title.padding);
  const need = Math.ceil(widest + o.ticks.padding + Chart.helpers.toFont(o.title.font).lineHeight + pad.top + pad.bottom);
  if (s.width < need) s.width = need;
}

function sideAxis(text, font, extra) {
  return Object.assign({ beginAtZero: true, afterFit: fitSide,
    ticks: { font, maxTicksLimit: 5, padding: 4, callback: short },
    grid: { drawTicks: false },
    title: { display: true, text, font, padding: { top: 2, bottom: 10 } } }, extra || {});
}

function makeChart(id, title, yTitle, y2Title) {
  if (!hasChart) return;
  const font = { size: 24 };
  const scales = {
    x: { type: "linear", min: -KEEP_S, max: 0,
         ticks: { font, stepSize: 30, maxRotation: 0, autoSkipPadding: 16, callback: v => v + " s" },
         grid: {} },
    y: sideAxis(yTitle, font),
  };
  if (y2Title) scales.y2 = sideAxis(y2Title, font, { position: "right" });
  if (y2Title) scales.y2.grid.drawOnChartArea = false;
  charts[id] = new Chart(document.getElementById(id), {
    type: "line",
    data: { datasets: [] },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false,
      parsing: false, normalized: true,
      elements: { point: { radius: 0 }, line: { borderWidth: 3 } },
      scales,
      plugins: {
        title: { display: true, text: title, font: { size: 24, weight: "bold" }, padding: 2 },
        subtitle: { display: id === "c-lat", text: "", font, padding: 0 },
        // The throttled lines are their host's, dashed: said in the title.
        legend: { labels: { font, boxWidth: 28, padding: 6, usePointStyle: true,
                            filter: item => !/ throttled$/.test(item.text) } },
        tooltip: { enabled: true },
      },
    },
  });
}

/* Chart points; a null where no point came for a while (between steps
   the sampler is idle), so that a line does not bridge the gap. */
function withGaps(pts) {
  const out = [];
  pts.forEach(([t, v], i) => {
    if (i > 0 && t - pts[i - 1][0] > 3) out.push({ x: +(pts[i - 1][0] + 1 - now).toFixed(2), y: null });
    out.push({ x: +(t - now).toFixed(2), y: v });
  });
  return out;
}

function setData(id, sets) {
  const ch = charts[id];
  const n = sets.reduce((a, s) => a + s.data.length, 0);
  status.points[id] = n;
  if (!ch) return;
  ch.data.datasets = sets.map((s, i) => ({
    label: s.label, yAxisID: s.axis || "y",
    borderColor: s.color || PALETTE[i % PALETTE.length],
    backgroundColor: s.color || PALETTE[i % PALETTE.length],
    borderDash: s.dash || [], borderWidth: 4, pointStyle: "line",
    data: withGaps(s.data),
  }));
  ch.update("none");
}

function fmt(v, digits) {
  if (v === null || v === undefined || !isFinite(v)) return "—";
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString("en-US");
  return v.toFixed(digits);
}

function render() {
  const tp = throughput();
  // Each server's share of the requests, in its legend label.
  const sh = {};
  shares().forEach(([c, d]) => { sh[c] = last(d); });
  setData("c-rps", tp.map(([l, d]) => ({
    label: sh[l] !== undefined && sh[l] !== null ? l + " " + sh[l].toFixed(0) + "%" : l, data: d })));
  const lat = latency();
  const sub = charts["c-lat"] && charts["c-lat"].options.plugins.subtitle;
  if (sub) sub.text = "server-side, " + lat.where;
  const latSets = [{ label: "p50", data: lat.p50 }, { label: "p99", data: lat.p99 }];
  if (lat.client.some(p => p[0] >= now - KEEP_S))
    latSets.push({ label: "p99 client", data: lat.client, color: "#e25c8a", dash: [8, 6] });
  latSets.push({ label: "errors/s", data: errorsPerS(), axis: "y2", color: "#ff5a5a" });
  setData("c-lat", latSets);
  const [q, per] = db();
  const reps = replicas();
  dbTitles(reps !== null);
  if (reps) {
    // The database chart turns into the replicas' lag: ms solid, kB dashed.
    const sets = [];
    reps.forEach((r, i) => {
      const color = PALETTE[i % PALETTE.length];
      sets.push({ label: r.name + " ms", data: r.ms, color });
      sets.push({ label: r.name + " kB", data: r.kb, color, dash: [8, 6], axis: "y2" });
    });
    setData("c-db", sets);
  } else {
    setData("c-db", [{ label: "queries/s", data: q }, { label: "per request", data: per, axis: "y2" }]);
  }
  const ca = cache();
  setData("c-cache", [{ label: "hit %", data: ca.hit, axis: "y2", color: "#4bc07a" },
                      { label: "gets/s", data: ca.gets, color: "#4fa3ff" }, { label: "sets/s", data: ca.sets, color: "#ff9f40" },
                      { label: "evictions/s", data: ca.evictions, color: "#ff5a5a" }]);
  const cp = cpu(), cpuSets = [];
  cp.forEach(([c, u, th], i) => {
    cpuSets.push({ label: c, data: u, color: PALETTE[i % PALETTE.length] });
    if (th.some(p => p[1] > 0)) cpuSets.push({ label: c + " throttled", data: th, color: PALETTE[i % PALETTE.length], dash: [8, 6] });
  });
  setData("c-cpu", cpuSets);

  const total = tp.length ? (S["hs-balancer"] ? tp[0][1] : combine(tp.map(x => x[1]), sum)) : [];
  set("n-rps", fmt(last(total), 0));
  set("n-p99", fmt(last(lat.p99), 1));
  set("n-err", fmt(last(errorsPerS()), 0));
  set("n-dbq", fmt(last(per), 2));
  set("n-hit", fmt(last(ca.hit), 1));
  const st = stale();
  const tile = document.getElementById("n-stale");
  if (tile) tile.classList.toggle("bad", st !== null && st > 0);
  set("l-stale", st !== null ? "stale reads" : "memcached gets/s");
  set("n-stale", st !== null ? fmt(st, 0) : fmt(last(ca.gets), 0));
  // With replicas the lag tile takes the DB q/request tile's place: the
  // worst replica's last sample.
  const lagTile = document.getElementById("t-lag");
  if (lagTile) lagTile.hidden = reps === null;
  const dbqTile = document.getElementById("t-dbq");
  if (dbqTile) dbqTile.hidden = reps !== null;
  status.lag = null;
  if (reps) {
    const worst = k => Math.max(...reps.map(r => last(r[k])).filter(v => v !== null), -1);
    const ms = worst("ms"), kb = worst("kb");
    status.lag = { ms: ms >= 0 ? ms : null, kb: kb >= 0 ? kb : null };
    set("n-lag", fmt(status.lag.ms, 0));
    set("l-lag", "lag ms, " + (kb >= 0 ? fmt(kb, 0) : "—") + " kB");
  }
  let reqs = 0;
  servers().forEach(c => { reqs += last(get(c, "requests")) || 0; });
  status.requests = reqs;
  publish();
}

/* The database chart's titles: queries, or the replicas' lag. */
function dbTitles(lag) {
  const ch = charts["c-db"];
  if (!ch || ch.hsLag === lag) return;
  ch.hsLag = lag;
  ch.options.plugins.title.text = lag ? "Replica lag (dashed: kB)" : "Database";
  ch.options.scales.y.title.text = lag ? "ms behind" : "queries/s";
  ch.options.scales.y2.title.text = lag ? "kB behind" : "q/request";
}

function set(id, text) { const el = document.getElementById(id); if (el) el.textContent = text; }

function showStep(step) {
  status.step = step || "";
  set("step", !step ? "no step running" : step === "up" ? "stack up" : "step " + step);
}

/* Step-through mode (walkthrough --interactive): the "next" button,
   shown only then, enabled while a step waits for the speaker. */
function showControl(d) {
  const b = document.getElementById("next");
  if (!b) return;
  b.hidden = !d.interactive;
  b.disabled = !d.waiting;
  b.textContent = d.waiting ? "next ▶ " + d.waiting : "next ▶";
}

async function next() {
  const b = document.getElementById("next");
  if (!b || b.hidden || b.disabled) return;
  b.disabled = true;
  try {
    await fetch("/next", { method: "POST" });
  } catch (e) {
    note("next: " + e);
  }
}

/* ---------------------------------------------------------- data */

function ingestLatest(msg) {
  now = Math.max(now, msg.t);
  Object.entries(msg.latest || {}).forEach(([c, ms]) =>
    Object.entries(ms).forEach(([m, v]) => add(c, m, msg.t, v)));
  showStep(msg.step);
  showControl(msg);
  status.ticks++;
  render();
}

async function start() {
  makeChart("c-rps", "Requests per second (each server's share %)", "req/s");
  makeChart("c-lat", "Latency of each second", "ms", "errors/s");
  makeChart("c-db", "Database", "queries/s", "q/request");
  makeChart("c-cache", "Cache", "ops/s", "hit %");
  makeChart("c-cpu", "CPU, dashed: throttled", "cores");
  applyTheme();
  try {
    const r = await fetch("/data.json", { cache: "no-store" });
    const d = await r.json();
    now = d.now;
    Object.entries(d.series).forEach(([c, ms]) =>
      Object.entries(ms).forEach(([m, pts]) => pts.forEach(([t, v]) => add(c, m, t, v))));
    showStep(d.step);
    showControl(d);
    render();
  } catch (e) {
    note("data.json: " + e);
  }
  const es = new EventSource("/events");
  es.onopen = () => set("conn", "● connected");
  es.onerror = () => set("conn", "reconnecting…");
  es.onmessage = ev => ingestLatest(JSON.parse(ev.data));
  document.getElementById("next").addEventListener("click", next);
}

/* ---------------------------------------------------------- keys */

document.addEventListener("keydown", e => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const help = document.getElementById("help");
  if (e.key === "t") {
    const root = document.documentElement;
    root.dataset.theme = root.dataset.theme === "dark" ? "light" : "dark";
    try { localStorage.setItem("hs-theme", root.dataset.theme); } catch (_) { /* private mode */ }
    applyTheme();
  } else if (e.key === "f") {
    if (document.fullscreenElement) document.exitFullscreen();
    else document.documentElement.requestFullscreen().catch(() => {});
  } else if (e.key === "n") {
    next();
  } else if (e.key === "?") {
    help.hidden = !help.hidden;
  } else if (e.key === "Escape") {
    help.hidden = true;
  }
});

(function initTheme() {
  let t = new URLSearchParams(location.search).get("theme");
  try { t = t || localStorage.getItem("hs-theme"); } catch (_) { /* private mode */ }
  if (t === "light" || t === "dark") document.documentElement.dataset.theme = t;
})();
if (!hasChart) note("Chart.js did not load (./hammerstack setup installs libjs-chart.js)");
start();
