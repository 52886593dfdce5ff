// The live page of a vigil job: status, open alerts, a feed of raises and clears, a chart per
// series with an alert, and the guard catalogue; for the archaeology job, its patterns,
// entangled pairs and sessions. Everything from the server is written with textContent or as
// SVG attributes, never parsed as HTML, so a hostile series name shows as text.

const MAX_CHARTS = 12; // charts drawn at once, the most recent alerts first
const MAX_POINTS = 2000; // readings kept per series; older ones are dropped
const MAX_FEED = 200; // feed entries kept
const MIN_FRAME_MS = 250; // at most four redraws a second, however fast the stream
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  status: null,
  guards: [],
  open: new Map(), // alert_id -> alert
  feed: [], // newest first
  feedKeys: new Set(), // alert_id + status, so a resync does not repeat an entry
  // key(source, name) -> { source, name, points, alerts, lastAlertMs, loaded, dirty, and the
  // readings and alerts that arrived while its history was loading: pending, pendingAlerts }
  series: new Map(),
  dirty: new Set(),
  resyncLogs: new Set(), // per resync in flight, the live alerts that arrived meanwhile
};

// ---- small helpers -------------------------------------------------------------------------

const $ = (sel) => document.querySelector(sel);
const key = (source, name) => `${source}\u0000${name}`;

/** An HTML element with attributes and children; strings become text nodes. */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

/** An SVG element with attributes, optionally with text content. */
function s(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text != null) node.textContent = text;
  return node;
}

const pad = (n) => String(n).padStart(2, "0");
function utc(ms, withDate = true) {
  if (ms == null) return "–";
  const d = new Date(ms);
  const time = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  return withDate ? `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${time}` : time;
}
function num(x, digits = 2) {
  if (x == null || !Number.isFinite(x)) return "–";
  return Math.abs(x) >= 1e5 ? x.toExponential(2) : Number(x.toFixed(digits)).toLocaleString("en-US");
}
const count = (n) => (n == null ? "–" : Number(n).toLocaleString("en-US"));

async function getJSON(path) {
  const res = await fetch(path, { cache: "no-store" });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}
const seriesPath = (source, name) =>
  `/api/series/${encodeURIComponent(source)}/${encodeURIComponent(name)}`;

function setEmpty(section, empty) {
  const p = section.querySelector(".empty");
  if (p) p.hidden = !empty;
}

// ---- redraws, throttled --------------------------------------------------------------------

let frameQueued = false;
let lastFrame = 0;
/** Marks parts of the page for redraw; they are drawn together at most every MIN_FRAME_MS. */
function invalidate(...parts) {
  for (const p of parts) state.dirty.add(p);
  if (frameQueued) return;
  frameQueued = true;
  const wait = Math.max(0, lastFrame + MIN_FRAME_MS - performance.now());
  setTimeout(() => requestAnimationFrame(draw), wait);
}

function draw() {
  frameQueued = false;
  lastFrame = performance.now();
  const dirty = new Set(state.dirty);
  state.dirty.clear();
  if (dirty.has("status")) drawStatus();
  if (dirty.has("open")) drawOpen();
  if (dirty.has("feed")) drawFeed();
  if (dirty.has("charts")) drawCharts();
  if (dirty.has("guards")) drawGuards();
}

// ---- status header -------------------------------------------------------------------------

function applyStatus(st) {
  const wasFinished = state.status?.finished;
  state.status = st;
  document.body.dataset.job = st.job;
  if (st.finished && !wasFinished) setBadge("finished", "finished");
  invalidate("status");
}

function drawStatus() {
  const st = state.status;
  if (!st) return;
  $("#job").textContent = st.job;
  $("#input").textContent = st.input ?? "";
  $("#events-in").textContent = count(st.events_in);
  $("#events-per-s").textContent = num(st.events_per_s, 1);
  $("#watermark").textContent = utc(st.watermark_ms);
  $("#raised").textContent = count(st.alerts_raised);
  $("#cleared").textContent = count(st.alerts_cleared);
  $("#open-count").textContent = count(st.open_alerts);
  if (st.finished) $("#status").setAttribute("data-finished", "");
  else $("#status").removeAttribute("data-finished");
}

function setBadge(stateName, text) {
  const badge = $("#badge");
  badge.dataset.state = stateName;
  badge.textContent = text;
}

let noteTimer = 0;
function showNote(text) {
  const note = $("#note");
  note.textContent = text;
  note.hidden = false;
  clearTimeout(noteTimer);
  noteTimer = setTimeout(() => (note.hidden = true), 6000);
}

// ---- alerts --------------------------------------------------------------------------------

/** Takes in one raise or clear, from the socket or a resync. */
function applyAlert(alert, live) {
  applyOpen(alert);
  if (live) for (const log of state.resyncLogs) log.push(alert);
  if (!state.feedKeys.has(feedKey(alert))) {
    state.feedKeys.add(feedKey(alert));
    state.feed.unshift(alert);
    // A resync can bring entries older than the newest shown: keep the feed newest first.
    if (!live) state.feed.sort((a, b) => b.ts - a.ts);
    if (state.feed.length > MAX_FEED) state.feedKeys.delete(feedKey(state.feed.pop()));
  }
  if (live) trackSeries(alert);
  invalidate("open", "feed");
}
const feedKey = (a) => `${a.alert_id}\u0000${a.status}`;

function applyOpen(alert) {
  if (alert.status === "raised") {
    state.open.set(alert.alert_id, alert);
  } else if (!state.open.delete(alert.alert_id)) {
    // A clear that does not carry its raise's id closes that guard's alert on the series.
    for (const [id, a] of state.open)
      if (a.guard === alert.guard && a.source === alert.source && a.name === alert.name) state.open.delete(id);
  }
}

function drawOpen() {
  const section = $("#open-alerts");
  const rows = [...state.open.values()]
    .sort((a, b) => b.ts - a.ts)
    .map((a) =>
      h("tr", { "data-alert-id": a.alert_id },
        h("td", {}, a.guard),
        h("td", {}, h("span", { class: "severity", "data-severity": a.severity }, a.severity)),
        h("td", { class: "series" }, `${a.source}/${a.name}`),
        h("td", { class: "time" }, utc(a.ts)),
        h("td", { class: "num" }, num(a.observed)),
        h("td", { class: "num" }, num(a.expected)),
        h("td", { class: "num" }, num(a.score))));
  section.querySelector("tbody").replaceChildren(...rows);
  setEmpty(section, rows.length === 0);
}

function drawFeed() {
  const items = state.feed.map((a) =>
    h("li", { "data-status": a.status, "data-alert-id": a.alert_id },
      h("span", { class: "time" }, utc(a.ts)),
      h("span", { class: "verb" }, a.status),
      h("span", { class: "severity", "data-severity": a.severity }, a.severity),
      h("span", { class: "series" }, `${a.source}/${a.name}`),
      h("span", { class: "detail" }, `${a.guard} · observed ${num(a.observed)}, expected ${num(a.expected)}, score ${num(a.score)}`)));
  $("#feed").replaceChildren(...items);
  setEmpty($(".feed-panel"), items.length === 0);
}

// ---- charted series ------------------------------------------------------------------------

/** Starts charting an alert's series, or moves its alert band along. */
function trackSeries(alert) {
  const k = key(alert.source, alert.name);
  let sr = state.series.get(k);
  if (!sr) {
    sr = addSeries(alert.source, alert.name, alert.ts);
    if (!sr) return;
    sr.pendingAlerts.push(alert);
    loadIfCharted(sr);
    return;
  }
  sr.lastAlertMs = Math.max(sr.lastAlertMs, alert.ts);
  // The history being fetched may predate this alert: it is applied again once it arrives.
  if (!sr.loaded) sr.pendingAlerts.push(alert);
  applyBand(sr, alert);
  sr.dirty = true;
  invalidate("charts");
}

/** Opens or closes a guard's alert band; a guard has at most one open band per series. */
function applyBand(sr, alert) {
  const open = sr.alerts.findLast((b) => b.guard === alert.guard && b.end == null);
  if (alert.status === "raised") {
    if (!open) sr.alerts.push({ guard: alert.guard, start: alert.ts, end: null });
  } else if (open && open.start <= alert.ts) {
    open.end = alert.ts;
  }
}

/** Adds a series to chart, dropping the one with the oldest alert beyond MAX_CHARTS. */
function addSeries(source, name, lastAlertMs) {
  const sr = { source, name, points: [], alerts: [], lastAlertMs, loaded: false, pending: [], pendingAlerts: [], dirty: true };
  state.series.set(key(source, name), sr);
  if (state.series.size > MAX_CHARTS) {
    const oldest = [...state.series.values()].sort((a, b) => a.lastAlertMs - b.lastAlertMs)[0];
    state.series.delete(key(oldest.source, oldest.name));
    if (oldest === sr) return null;
  }
  return sr;
}

/**
 * Readings `a` and `b` (each oldest first) as one list, oldest first, one reading per time, the
 * newest MAX_POINTS. The server backfills a newly charted series, so `b` may reach back in time.
 */
function mergePoints(a, b) {
  if (b.length === 0) return a;
  let out;
  if (a.length === 0 || b[0][0] > a[a.length - 1][0]) {
    out = a.concat(b);
  } else {
    const byTime = new Map(a.map((p) => [p[0], p]));
    // A repeated reading keeps the score it had when the newer copy has none.
    for (const p of b) byTime.set(p[0], p[2] == null && byTime.get(p[0])?.[2] != null ? byTime.get(p[0]) : p);
    out = [...byTime.values()].sort((x, y) => x[0] - y[0]);
  }
  return out.length > MAX_POINTS ? out.slice(-MAX_POINTS) : out;
}

/** Loads a newly alerted series if the server charts it (it charts a bounded number). */
async function loadIfCharted(sr) {
  try {
    const list = await getJSON("/api/series");
    if (list.some((c) => c.source === sr.source && c.name === sr.name)) return loadSeries(sr);
    if (state.series.get(key(sr.source, sr.name)) === sr) state.series.delete(key(sr.source, sr.name));
    invalidate("charts");
  } catch (err) {
    report(err);
  }
}

/** Fetches a series' history; readings that arrived meanwhile are merged into it. */
async function loadSeries(sr) {
  try {
    const data = await getJSON(seriesPath(sr.source, sr.name));
    sr.points = mergePoints(data.points, sr.pending);
    sr.alerts = data.alerts.map((a) => ({ ...a }));
    for (const alert of sr.pendingAlerts) applyBand(sr, alert);
    sr.pending = [];
    sr.pendingAlerts = [];
    sr.loaded = true;
    sr.dirty = true;
    invalidate("charts");
  } catch (err) {
    // Chart what the socket brought rather than wait for a history that did not come.
    console.warn(`vigil: could not load ${sr.source}/${sr.name}: ${err.message}`);
    sr.points = mergePoints(sr.points, sr.pending);
    sr.pending = [];
    sr.pendingAlerts = [];
    sr.loaded = true;
    sr.dirty = true;
    invalidate("charts");
  }
}

function applyPoints(msg) {
  const sr = state.series.get(key(msg.source, msg.name));
  if (!sr) return; // not charted (yet): its history is fetched when its alert arrives
  if (sr.loaded) sr.points = mergePoints(sr.points, msg.points);
  else sr.pending = mergePoints(sr.pending, msg.points);
  if (sr.loaded) {
    sr.dirty = true;
    invalidate("charts");
  }
}

// Reuses each series' chart element between redraws so the page does not flicker.
const chartNodes = new Map();

function drawCharts() {
  const list = [...state.series.values()].sort((a, b) => b.lastAlertMs - a.lastAlertMs);
  const nodes = list.map((sr) => {
    const k = key(sr.source, sr.name);
    let node = chartNodes.get(k);
    if (!node) {
      node = h("figure", { class: "chart" },
        h("figcaption", {}, h("span", { class: "series" }, `${sr.source}/${sr.name}`), h("span", { class: "meta" })),
        h("div", { class: "plot" }));
      chartNodes.set(k, node);
    }
    const open = sr.alerts.some((b) => b.end == null);
    node.classList.toggle("open", open);
    node.querySelector(".meta").textContent =
      `${open ? "open alert" : "last alert"} ${utc(sr.lastAlertMs)} · ${count(sr.points.length)} readings`;
    return node;
  });
  for (const k of chartNodes.keys()) if (!state.series.has(k)) chartNodes.delete(k);
  $("#charts").replaceChildren(...nodes);
  // Drawn once in the page, so each chart is as wide as its place in the grid.
  list.forEach((sr, i) => {
    if (sr.dirty) drawChart(nodes[i].querySelector(".plot"), sr);
    sr.dirty = false;
  });
  setEmpty($("#charts").parentElement, nodes.length === 0);
}

/** Nice round tick values covering [lo, hi], about `n` of them. */
function ticks(lo, hi, n) {
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw) ?? 10 * mag;
  const first = Math.ceil(lo / step) * step;
  const out = [];
  // Counted, not accumulated: a step below the values' precision must not loop for ever.
  for (let i = 0; i <= 2 * n && first + i * step <= hi + step * 1e-9; i++) out.push(Number((first + i * step).toPrecision(12)));
  return out;
}

const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800]
  .map((sec) => sec * 1000);
/** Time ticks on round UTC boundaries, with labels as short as the span allows. */
function timeTicks(t0, t1, n) {
  const week = TIME_STEPS[TIME_STEPS.length - 1];
  const step = TIME_STEPS.find((st) => (t1 - t0) / st <= n) ?? Math.ceil((t1 - t0) / n / week) * week;
  const out = [];
  for (let t = Math.ceil(t0 / step) * step; t <= t1 && out.length <= n; t += step) out.push(t);
  const label = (t) => {
    const full = utc(t);
    if (step > 2 * 604800000 || t1 - t0 > 300 * 86400000) return full.slice(0, 10);
    if (step >= 86400000) return full.slice(5, 10);
    const time = step >= 60000 ? full.slice(11, 16) : full.slice(11, 19);
    return t1 - t0 > 86400000 ? `${full.slice(5, 10)} ${time}` : time;
  };
  return out.map((t) => ({ t, label: label(t) }));
}

/** A path through the finite values of column `col`; a gap (null) starts a new stroke. */
function linePath(points, col, x, y) {
  let d = "";
  let pen = "M";
  for (const p of points) {
    const v = p[col];
    if (v == null || !Number.isFinite(v)) { pen = "M"; continue; }
    d += `${pen}${x(p[0]).toFixed(1)},${y(v).toFixed(1)}`;
    pen = "L";
  }
  return d;
}

/** The threshold in the first guard's parameters ("threshold=6"), drawn on the score strip. */
function scoreThreshold() {
  const m = /(?:^|[,\s])threshold=(-?[\d.]+)/.exec(state.guards[0]?.params ?? "");
  return m ? Number(m[1]) : null;
}

function drawChart(plot, sr) {
  const W = Math.max(320, plot.clientWidth || 560);
  const M = { left: 56, right: 12 };
  const H = 170, S = 56; // readings and score heights
  const pts = sr.points;
  if (pts.length === 0) { plot.replaceChildren(h("p", { class: "empty" }, sr.loaded ? "No readings." : "Loading…")); return; }
  const t0 = pts[0][0];
  const t1 = Math.max(pts[pts.length - 1][0], t0 + 1000);
  const x = (t) => M.left + ((t - t0) / (t1 - t0)) * (W - M.left - M.right);

  // Readings, with the alert intervals as bands behind the line.
  let lo = Infinity, hi = -Infinity;
  for (const p of pts) if (Number.isFinite(p[1])) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); }
  if (!Number.isFinite(lo)) { lo = 0; hi = 1; } // no finite reading at all
  // A flat series gets a small range around its value, wide enough to label.
  if (hi - lo < Math.abs(hi) * 1e-9 || hi - lo < 1e-12) { const mid = (lo + hi) / 2, r = Math.max(Math.abs(mid) * 0.01, 1); lo = mid - r; hi = mid + r; }
  const padY = (hi - lo) * 0.08;
  lo -= padY; hi += padY;
  const top = 10, bottom = H - 24;
  const y = (v) => bottom - ((v - lo) / (hi - lo)) * (bottom - top);
  const main = s("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img" });
  main.append(s("title", {}, `${sr.source}/${sr.name} readings`));
  for (const v of ticks(lo, hi, 5)) {
    main.append(s("line", { class: "grid", x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }));
    main.append(s("text", { class: "tick y", x: M.left - 6, y: y(v) + 4 }, num(v)));
  }
  const xTicks = timeTicks(t0, t1, Math.max(3, Math.floor(W / 110)));
  for (const tk of xTicks) {
    main.append(s("line", { class: "grid", x1: x(tk.t), x2: x(tk.t), y1: top, y2: bottom }));
    main.append(s("text", { class: "tick x", x: x(tk.t), y: H - 6 }, tk.label));
  }
  const bands = s("g", { class: "bands" });
  for (const b of sr.alerts) {
    const start = Math.max(b.start, t0);
    const end = b.end == null ? t1 : Math.min(b.end, t1);
    if (end < t0 || start > t1) continue;
    const rect = s("rect", { class: "alert-band", x: x(start), y: top, width: Math.max(2, x(end) - x(start)), height: bottom - top });
    if (b.end == null) rect.classList.add("open");
    rect.append(s("title", {}, `${b.guard}: ${utc(b.start)} – ${b.end == null ? "open" : utc(b.end)}`));
    bands.append(rect);
  }
  main.append(bands);
  main.append(s("line", { class: "axis", x1: M.left, x2: W - M.right, y1: bottom, y2: bottom }));
  main.append(s("path", { class: "line", d: linePath(pts, 1, x, y) }));

  // The guard's score on the same time axis.
  let smax = 0;
  for (const p of pts) if (p[2] != null && Number.isFinite(p[2])) smax = Math.max(smax, Math.abs(p[2]));
  const threshold = scoreThreshold();
  if (threshold != null) smax = Math.max(smax, threshold * 1.1);
  smax = smax || 1;
  const sy = (v) => S - 6 - (Math.abs(v) / smax) * (S - 12);
  const strip = s("svg", { class: "score", viewBox: `0 0 ${W} ${S}`, width: W, height: S, role: "img" });
  strip.append(s("title", {}, `${sr.source}/${sr.name} score`));
  for (const b of sr.alerts) {
    const start = Math.max(b.start, t0);
    const end = b.end == null ? t1 : Math.min(b.end, t1);
    if (end < t0 || start > t1) continue;
    strip.append(s("rect", { class: "score-band", x: x(start), y: 0, width: Math.max(2, x(end) - x(start)), height: S }));
  }
  if (threshold != null)
    strip.append(s("line", { class: "threshold", x1: M.left, x2: W - M.right, y1: sy(threshold), y2: sy(threshold) }));
  strip.append(s("text", { class: "tick y", x: M.left - 6, y: S / 2 + 4 }, "|score|"));
  strip.append(s("line", { class: "axis", x1: M.left, x2: W - M.right, y1: S - 6, y2: S - 6 }));
  strip.append(s("path", { class: "score-line", d: linePath(pts.map((p) => [p[0], p[2] == null ? null : Math.abs(p[2])]), 1, x, sy) }));
  plot.replaceChildren(main, strip);
}

// ---- guard catalogue -----------------------------------------------------------------------

function drawGuards() {
  const rows = state.guards.map((g) =>
    h("tr", {},
      h("td", { class: "name" }, g.name), h("td", {}, g.kind), h("td", {}, h("code", {}, g.params)),
      h("td", {}, h("code", {}, g.topic)),
      h("td", {}, h("span", { class: "severity", "data-severity": g.severity }, g.severity)),
      h("td", { class: "description" }, g.description)));
  $("#guards tbody").replaceChildren(...rows);
}

// ---- archaeology ---------------------------------------------------------------------------

async function refreshArchaeology() {
  const [patterns, pairs, sessions] = await Promise.all(
    ["/api/patterns", "/api/entanglements", "/api/sessions"].map((p) => getJSON(p)));
  const top = patterns[0]?.support || 1;
  const rows = patterns.map((p) => {
    // Set through the CSSOM: the server's content security policy refuses style attributes.
    const bar = h("span", { class: "support-bar" });
    bar.style.setProperty("--share", (p.support / top).toFixed(3));
    return h("tr", {}, h("td", { class: "pattern" }, p.pattern), h("td", { class: "num" }, bar, count(p.support)));
  });
  $("#patterns tbody").replaceChildren(...rows);
  setEmpty($("#patterns"), rows.length === 0);
  drawEntanglements(pairs);
  drawSessions(sessions);
}

/** The entangled pairs as a graph: series on a circle, edges as wide as their score. */
function drawEntanglements(pairs) {
  const section = $("#entanglements");
  const names = [...new Set(pairs.flatMap((p) => [p.a, p.b]))].sort();
  setEmpty(section, names.length === 0);
  if (names.length === 0) { section.querySelector(".plot").replaceChildren(); return; }
  const W = 720, H = 460, R = 170, cx = W / 2, cy = H / 2;
  const at = new Map(names.map((n, i) => {
    const angle = (2 * Math.PI * i) / names.length - Math.PI / 2;
    return [n, { x: cx + R * Math.cos(angle), y: cy + R * Math.sin(angle), angle }];
  }));
  const smax = Math.max(...pairs.map((p) => Math.abs(p.score))) || 1;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  svg.append(s("title", {}, "entangled series"));
  for (const p of pairs) {
    const a = at.get(p.a), b = at.get(p.b);
    const line = s("line", { class: "edge", x1: a.x, y1: a.y, x2: b.x, y2: b.y,
      "stroke-width": (1 + 7 * (Math.abs(p.score) / smax)).toFixed(2), "stroke-opacity": (0.3 + 0.6 * (Math.abs(p.score) / smax)).toFixed(2) });
    line.append(s("title", {}, `${p.a} ↔ ${p.b}: ${num(p.score, 3)}`));
    svg.append(line);
  }
  for (const [n, pos] of at) {
    const g = s("g", { class: "node" });
    g.append(s("circle", { class: "node", cx: pos.x, cy: pos.y, r: 6 }));
    const right = Math.cos(pos.angle) >= 0;
    g.append(s("text", { x: pos.x + (right ? 10 : -10), y: pos.y + 4, "text-anchor": right ? "start" : "end" }, n));
    svg.append(g);
  }
  section.querySelector(".plot").replaceChildren(svg);
}

/** Sessions per room as horizontal bars, biggest first. */
function drawSessions(rooms) {
  const section = $("#sessions");
  setEmpty(section, rooms.length === 0);
  const sorted = [...rooms].sort((a, b) => b.sessions - a.sessions);
  const W = 520, row = 24, left = 140, H = sorted.length * row + 8;
  const max = Math.max(...sorted.map((r) => r.sessions), 1);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  sorted.forEach((r, i) => {
    const y = 4 + i * row;
    const w = ((W - left - 60) * r.sessions) / max;
    svg.append(s("text", { class: "label", x: left - 8, y: y + 15, "text-anchor": "end" }, r.room));
    const bar = s("rect", { class: "bar", x: left, y: y + 3, width: Math.max(1, w), height: row - 8, rx: 2 });
    bar.append(s("title", {}, `${r.room}: ${r.sessions}`));
    svg.append(bar);
    svg.append(s("text", { class: "value", x: left + w + 6, y: y + 15 }, count(r.sessions)));
  });
  section.querySelector(".plot").replaceChildren(svg);
}

// ---- loading and the socket ----------------------------------------------------------------

/** Reads everything the socket would otherwise have told: status, alerts, charted series. */
async function resync() {
  const st = await getJSON("/api/status");
  applyStatus(st);
  if (st.job === "archaeology") return refreshArchaeology();
  const log = [];
  state.resyncLogs.add(log);
  let guards, alerts, list;
  try {
    [guards, alerts, list] = await Promise.all(["/api/guards", "/api/alerts", "/api/series"].map((p) => getJSON(p)));
  } finally {
    state.resyncLogs.delete(log);
  }
  state.guards = guards;
  for (const a of alerts.recent) applyAlert(a, false);
  // The lists may predate alerts that came over the socket while they were fetched.
  state.open = new Map(alerts.open.map((a) => [a.alert_id, a]));
  for (const a of log) applyOpen(a);
  const wanted = list.sort((a, b) => b.last_alert_ms - a.last_alert_ms).slice(0, MAX_CHARTS);
  const keep = new Set(wanted.map((w) => key(w.source, w.name)));
  for (const k of [...state.series.keys()]) if (!keep.has(k)) state.series.delete(k);
  for (const w of wanted) {
    const sr = state.series.get(key(w.source, w.name)) ?? addSeries(w.source, w.name, w.last_alert_ms);
    sr.lastAlertMs = w.last_alert_ms;
    sr.loaded = false;
    sr.pending = [];
    sr.pendingAlerts = [];
  }
  await Promise.all([...state.series.values()].map(loadSeries));
  invalidate("open", "feed", "charts", "guards");
}

let socket = null;
let retries = 0;
let connectedBefore = false;
function connect() {
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(url);
  socket.onopen = () => {
    retries = 0;
    if (state.status?.finished) setBadge("finished", "finished");
    else setBadge("live", "live");
  };
  socket.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    switch (msg.type) {
      case "hello":
        // The first load is resync() below; after a reconnect, catch up on what was missed.
        if (connectedBefore) resync().catch(report);
        connectedBefore = true;
        break;
      case "alert": applyAlert(msg.alert, true); break;
      case "points": applyPoints(msg); break;
      case "status": { const { type, ...st } = msg; applyStatus(st); break; }
      case "refresh": refreshArchaeology().catch(report); break;
      case "lagged":
        resync().then(() => showNote(`resynced after ${count(msg.dropped)} dropped messages`), report);
        break;
    }
  };
  socket.onclose = () => {
    socket = null;
    // A finished job's final state stays on the page; the server may be gone for good.
    if (state.status?.finished) { setBadge("finished", "finished"); return; }
    const delay = Math.min(10, 2 ** retries++);
    setBadge("down", `disconnected · reconnecting in ${delay}s`);
    setTimeout(connect, delay * 1000);
  };
}

function report(err) {
  console.warn(`vigil: ${err.message ?? err}`);
}

let resizeTimer = 0;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    for (const sr of state.series.values()) sr.dirty = true;
    invalidate("charts");
  }, 150);
});

connect();
resync().catch(report);
