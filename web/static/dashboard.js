// The dashboard: polls this node's JSON about once a second and redraws, with plain
// DOM and SVG (no library, nothing fetched beyond the cluster's own nodes).
//
// /api/members: this node's membership view (the ring, the leader, HTTP ports).
// /api/dashboard: what the current leader knows, fetched by this node (it follows
// the leader by itself).  If this node stops answering, the page moves to another
// member's dashboard that does (its address and HTTP port from the last view).
"use strict";

const POLL_MS = 1000;
const FETCH_TIMEOUT_MS = 6000;
const MOVE_AFTER_FAILURES = 3; // polls this node missed before trying another member
const SVGNS = "http://www.w3.org/2000/svg";
const PALETTE = ["#2f81f7", "#e3882b", "#2da44e", "#a371f7", "#cf222e", "#1b7c83", "#bf8700", "#db61a2"];

let lastMembers = null; // the last /api/members answer
let failures = 0;
let moving = false;

async function getJSON(path) {
  // A node that hangs (rather than refusing) counts as unreachable after this long;
  // /api/dashboard itself gives up on the leader after about 4 s.
  const r = await fetch(path, { cache: "no-store", signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) {
    const why = body && body.error ? body.error : `HTTP ${r.status}`;
    const err = new Error(why);
    err.status = r.status;
    throw err;
  }
  return body;
}

function el(tag, attrs = {}, text = null) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== null) e.textContent = text;
  return e;
}

function svgEl(parent, tag, attrs = {}, text = null) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== null) e.textContent = text;
  parent.append(e);
  return e;
}

function cell(text, cls) {
  const td = el("td", cls ? { class: cls } : {}, text);
  return td;
}

function colorOf(key) {
  let h = 0;
  for (const c of key) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function ms(seconds) {
  if (seconds === undefined || seconds === null) return "";
  if (seconds >= 1) return `${+seconds.toFixed(2)} s`;
  const m = seconds * 1000;
  return `${m >= 10 ? m.toFixed(0) : +m.toFixed(2)} ms`;
}

// --- membership: the ring and the table ---------------------------------------------

function drawRing(view) {
  // Every configured node in ring order (members from this node's view; the others
  // greyed, where they would be), the leader ringed in gold, this node outlined.
  const svg = document.getElementById("ring");
  svg.replaceChildren();
  const byName = Object.fromEntries(view.members.map((m) => [m.name, m]));
  const names = [...(view.configured || [])];
  for (const m of view.members) if (!names.includes(m.name)) names.push(m.name);
  const n = names.length;
  const cx = 160, cy = 160, r = 115;
  svgEl(svg, "circle", { cx, cy, r, fill: "none", stroke: "#ccc", "stroke-width": 2 });
  names.forEach((name, i) => {
    const m = byName[name];
    const status = m ? m.status : "absent";
    const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(n, 1);
    const x = cx + r * Math.cos(a), y = cy + r * Math.sin(a);
    const isLeader = name === view.leader;
    const g = svgEl(svg, "g", {
      class: `member ${status}${isLeader ? " leader" : ""}`,
      "data-name": name,
      "data-status": status,
    });
    const where = m ? ` ${m.host}:${m.port}` : "";
    svgEl(g, "title", {}, `${name}${where} ${m ? status : "not a member"}${isLeader ? " (leader)" : ""}`);
    if (isLeader) svgEl(g, "circle", { cx: x, cy: y, r: 24, fill: "none", stroke: "#d4a017", "stroke-width": 4 });
    svgEl(g, "circle", {
      cx: x, cy: y, r: 18,
      fill: { alive: "#2da44e", suspect: "#e3882b" }[status] || "#d0d7de",
      stroke: name === view.self ? "#222" : (m ? "none" : "#999"), "stroke-width": 2,
      "stroke-dasharray": m ? "" : "4 3",
    });
    svgEl(g, "text", { x, y: y + 4, "text-anchor": "middle", "font-size": 11, fill: m ? "#fff" : "#666", "font-weight": "bold" }, name);
  });
  svgEl(svg, "text", { x: cx, y: cy - 4, "text-anchor": "middle", "font-size": 12 }, `${view.members.length} of ${n} members`);
  svgEl(svg, "text", { x: cx, y: cy + 14, "text-anchor": "middle", "font-size": 12 },
    view.leader ? `leader ${view.leader}` : "no leader");
}

function drawMembers(view) {
  const body = document.querySelector("#members tbody");
  body.replaceChildren();
  for (const m of view.members) {
    const tr = el("tr", { "data-name": m.name, "data-status": m.status });
    const isLeader = m.name === view.leader;
    tr.append(
      cell(m.name + (isLeader ? " (leader)" : "") + (m.name === view.self ? " (this node)" : ""), isLeader ? "leader" : ""),
      cell(`${m.host}:${m.port}`),
      cell(m.status, m.status),
      cell(String(m.incarnation), "num"),
    );
    const td = el("td");
    if (m.http_port) {
      const a = el("a", { href: `http://${m.host}:${m.http_port}/` }, `:${m.http_port}`);
      td.append(a);
    }
    tr.append(td);
    body.append(tr);
  }
  const leader = document.getElementById("leader");
  leader.textContent = view.leader || "none";
  leader.dataset.leader = view.leader || "";
  document.getElementById("served-by").textContent = view.self;
}

// --- jobs -----------------------------------------------------------------------------

function drawJobs(data) {
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren();
  for (const j of data.jobs) {
    const tr = el("tr", { "data-job": j.job_id, "data-state": j.state, "data-done": j.done, "data-total": j.total });
    const pct = j.total ? (100 * j.done) / j.total : 0;
    const bar = el("div", { class: `bar ${j.state}`, role: "progressbar", "aria-valuenow": j.done, "aria-valuemax": j.total });
    const fill = el("div");
    fill.style.width = `${pct.toFixed(1)}%`;
    bar.append(fill);
    const progress = el("td");
    progress.append(bar);
    tr.append(
      cell(j.job_id), cell(j.model), cell(j.state), progress,
      cell(`${j.done} / ${j.total}`, "num"), cell(String(j.errors ?? 0), "num"),
      cell((j.workers || []).join(", ")),
    );
    body.append(tr);
  }
  document.getElementById("jobs-note").textContent = data.jobs.length
    ? `the ${data.limits.jobs} most recent jobs at most, as leader ${data.leader} knows them`
    : "no jobs yet (C4 submit-job MODEL)";
}

// --- charts -----------------------------------------------------------------------------

function axes(svg, x0, y0, x1, y1, ymax, yfmt, ticks = 4) {
  for (let k = 0; k <= ticks; k++) {
    const y = y1 - ((y1 - y0) * k) / ticks;
    svgEl(svg, "line", { x1: x0, x2: x1, y1: y, y2: y, class: k ? "grid" : "axis" });
    svgEl(svg, "text", { x: x0 - 4, y: y + 3, "text-anchor": "end" }, yfmt((ymax * k) / ticks));
  }
  svgEl(svg, "line", { x1: x0, x2: x0, y1: y0, y2: y1, class: "axis" });
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function drawRates(data) {
  const svg = document.getElementById("rates");
  svg.replaceChildren();
  const models = Object.keys(data.models);
  const x0 = 44, x1 = 470, y0 = 10, y1 = 180;
  const span = data.limits.rate_span_s;
  let top = 0;
  for (const m of models) for (const [, r] of data.models[m].rates) top = Math.max(top, r);
  const ymax = niceMax(top);
  axes(svg, x0, y0, x1, y1, ymax, (v) => `${+v.toFixed(2)}`);
  for (let s = 0; s <= span; s += 10) {
    const x = x1 - ((x1 - x0) * s) / span;
    svgEl(svg, "text", { x, y: y1 + 14, "text-anchor": "middle" }, s ? `-${s}s` : "now");
  }
  svgEl(svg, "text", { x: 4, y: 8 }, "queries/s");
  models.forEach((m, i) => {
    const pts = data.models[m].rates.map(([t, r]) => {
      const x = x1 - ((x1 - x0) * (data.now - t)) / span;
      const y = y1 - ((y1 - y0) * r) / ymax;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    svgEl(svg, "polyline", {
      points: pts.join(" "), fill: "none", stroke: colorOf(m), "stroke-width": 2, "data-model": m, class: "rate-line",
    });
    svgEl(svg, "rect", { x: x0 + 10 + i * 110, y: y1 + 24, width: 10, height: 10, fill: colorOf(m) });
    svgEl(svg, "text", { x: x0 + 24 + i * 110, y: y1 + 33 }, `${m} ${(data.models[m].query_rate ?? 0).toFixed(2)}/s`);
  });
  if (!models.length) svgEl(svg, "text", { x: 240, y: 100, "text-anchor": "middle" }, "no queries yet");
}

const PCTS = ["mean", "median", "p90", "p95", "p99"];

function drawLatency(data) {
  const svg = document.getElementById("latency");
  svg.replaceChildren();
  const models = Object.keys(data.models);
  const x0 = 54, x1 = 470, y0 = 10, y1 = 180;
  let top = 0;
  for (const m of models) for (const p of PCTS) top = Math.max(top, data.models[m].latency[p] || 0);
  const ymax = niceMax(top);
  axes(svg, x0, y0, x1, y1, ymax, (v) => ms(v));
  const group = (x1 - x0) / Math.max(models.length, 1);
  const bw = Math.min(18, (group - 16) / PCTS.length);
  models.forEach((m, i) => {
    const lat = data.models[m].latency;
    PCTS.forEach((p, k) => {
      const v = lat[p] || 0;
      const h = ((y1 - y0) * v) / ymax;
      const x = x0 + i * group + 8 + k * bw;
      const r = svgEl(svg, "rect", {
        x, y: y1 - h, width: bw - 2, height: h, fill: colorOf(m), "fill-opacity": 0.45 + 0.11 * k,
        "data-model": m, "data-stat": p,
      });
      svgEl(r, "title", {}, `${m} ${p} ${ms(v)}`);
      svgEl(svg, "text", { x: x + bw / 2 - 1, y: y1 + 10, "text-anchor": "middle", "font-size": 7 }, p === "median" ? "p50" : p);
    });
    svgEl(svg, "text", { x: x0 + i * group + group / 2, y: y1 + 28, "text-anchor": "middle" }, m);
  });
  if (!models.length) svgEl(svg, "text", { x: 240, y: 100, "text-anchor": "middle" }, "no queries yet");
  const body = document.querySelector("#latency-table tbody");
  body.replaceChildren();
  for (const m of models) {
    const d = data.models[m];
    const tr = el("tr", { "data-model": m });
    tr.append(cell(m), cell(String(d.query_count ?? 0), "num"), cell(`${(d.query_rate ?? 0).toFixed(2)}/s`, "num"));
    for (const p of PCTS) tr.append(cell(ms(d.latency[p]), "num"));
    body.append(tr);
  }
}

function drawBusy(data) {
  const svg = document.getElementById("busy");
  svg.replaceChildren();
  const horizon = data.limits.busy_horizon_s;
  const names = new Set(Object.keys(data.workers));
  for (const s of data.busy) names.add(s[0]);
  const workers = [...names].sort();
  const row = 22, x0 = 60, x1 = 950, top = 6;
  const height = top + row * workers.length + 36;
  svg.setAttribute("viewBox", `0 0 960 ${height}`);
  const yOf = {};
  workers.forEach((w, i) => {
    const y = top + i * row;
    yOf[w] = y;
    const busyNow = data.workers[w] ? data.workers[w].batches : 0;
    svgEl(svg, "text", { x: x0 - 6, y: y + 14, "text-anchor": "end", "font-weight": busyNow ? "bold" : "normal" }, w);
    svgEl(svg, "line", { x1: x0, x2: x1, y1: y + row - 2, y2: y + row - 2, class: "grid" });
  });
  const jobs = new Set();
  for (const [w, job, model, start, end, queries] of data.busy) {
    const a = Math.max(start, data.now - horizon), b = Math.min(end, data.now);
    if (b <= a && end < data.now - horizon) continue;
    const xa = x1 - ((x1 - x0) * (data.now - a)) / horizon;
    const xb = x1 - ((x1 - x0) * (data.now - b)) / horizon;
    jobs.add(job);
    const r = svgEl(svg, "rect", {
      x: xa, y: yOf[w] + 2, width: Math.max(xb - xa, 1), height: row - 6, fill: colorOf(job),
      class: "span", "data-worker": w, "data-job": job,
    });
    svgEl(r, "title", {}, `${w}: ${job} (${model}), ${queries} queries, ${(end - start).toFixed(2)} s`);
  }
  const yAxis = top + row * workers.length;
  for (let s = 0; s <= horizon; s += 10) {
    const x = x1 - ((x1 - x0) * s) / horizon;
    svgEl(svg, "text", { x, y: yAxis + 12, "text-anchor": "middle" }, s ? `-${s}s` : "now");
  }
  [...jobs].sort().forEach((job, i) => {
    svgEl(svg, "rect", { x: x0 + i * 100, y: yAxis + 20, width: 10, height: 10, fill: colorOf(job) });
    svgEl(svg, "text", { x: x0 + 14 + i * 100, y: yAxis + 29 }, job);
  });
  document.getElementById("busy-note").textContent =
    `batches answered in the last ${horizon} s (at most ${data.limits.busy_spans}), as leader ${data.leader} ` +
    "recorded them; the record starts afresh when the leader changes";
}

function drawSdfs(data) {
  const nodes = document.querySelector("#sdfs-nodes tbody");
  const files = document.querySelector("#sdfs-files tbody");
  nodes.replaceChildren();
  files.replaceChildren();
  const s = data.sdfs;
  if (s.error) {
    document.getElementById("sdfs-note").textContent = s.error;
    document.getElementById("files-note").textContent = "";
    return;
  }
  for (const [name, n] of Object.entries(s.nodes)) {
    const tr = el("tr", { "data-node": name });
    tr.append(cell(name), cell(String(n.files), "num"), cell(bytes(n.bytes), "num"));
    nodes.append(tr);
  }
  for (const f of s.files) {
    const tr = el("tr", { "data-file": f.name });
    tr.append(cell(f.name), cell(f.replicas.join(", ")), cell(f.versions.join(", ")), cell(bytes(f.bytes), "num"));
    files.append(tr);
  }
  document.getElementById("sdfs-note").textContent =
    `${s.total_files} files, ${bytes(s.total_bytes)} (newest versions), replication ${s.replication}; ` +
    `every version a node holds counts; counted ${Math.max(0, data.now - s.at).toFixed(0)} s ago ` +
    `(at most every ${data.limits.sdfs_refresh_s} s, less often with many files)`;
  document.getElementById("files-note").textContent =
    `the ${s.files.length} most recently changed of ${s.total_files} files (at most ${data.limits.files})`;
}

// --- the poll, and moving to another member when this node is gone ------------------------

function banner(text, cls = "") {
  const b = document.getElementById("banner");
  if (!text) { b.hidden = true; return; }
  b.hidden = false;
  b.className = cls;
  b.textContent = text;
}

async function moveToAnotherMember() {
  if (!lastMembers || moving) return;
  const here = lastMembers.self;
  for (const m of lastMembers.members) {
    if (m.name === here || !m.http_port) continue;
    const base = `http://${m.host}:${m.http_port}`;
    try {
      // Without a token the other node answers any origin; with one it does not
      // (CORS), and the opaque answer of a no-cors request still says it is up.
      try {
        await fetch(`${base}/api/members`, { cache: "no-store", signal: AbortSignal.timeout(2000) });
      } catch (e) {
        await fetch(`${base}/api/members`, { cache: "no-store", mode: "no-cors", signal: AbortSignal.timeout(2000) });
      }
    } catch (e) {
      continue;
    }
    moving = true;
    banner(`${here} is not answering: moving to ${m.name}'s dashboard`, "warn");
    location.assign(`${base}/?from=${encodeURIComponent(here)}`);
    return;
  }
}

async function tick() {
  const status = document.getElementById("status");
  // Both asked at once; the members are drawn as soon as they come, without waiting
  // for the leader's data (which takes longer while leadership moves).
  const dashboard = getJSON("/api/dashboard");
  dashboard.catch(() => {}); // handled below
  let members;
  try {
    members = await getJSON("/api/members");
  } catch (e) {
    failures++;
    const here = lastMembers ? lastMembers.self : "this node";
    status.textContent = `cannot reach ${here}: ${e.message}`;
    status.className = "down";
    banner(`cannot reach ${here}, the node serving this page (${failures} polls missed)`);
    if (failures >= MOVE_AFTER_FAILURES) await moveToAnotherMember();
    if (!moving) setTimeout(tick, POLL_MS);
    return;
  }
  failures = 0;
  lastMembers = members;
  drawRing(members);
  drawMembers(members);
  document.body.dataset.self = members.self;
  status.textContent = `updated ${new Date().toLocaleTimeString()}`;
  status.className = "";
  try {
    const d = await dashboard;
    drawJobs(d);
    drawRates(d);
    drawLatency(d);
    drawBusy(d);
    drawSdfs(d);
    document.body.dataset.dataFrom = d.leader;
    banner(null);
  } catch (e) {
    banner(`no data from the leader: ${e.message} (retrying)`, "warn");
  }
  setTimeout(tick, POLL_MS);
}

tick();
