// edged live dashboard: plain JavaScript and inline SVG, no libraries (the box may be offline).
// Data comes from edged's server-sent events (/events): "hello", then "stage" messages (the MQTT stage
// JSON), "availability" and "counters". Stage messages are merged by their stable id, so a resumed or
// restarted stream never shows an epoch twice.
"use strict";

const W = 1000;                      // SVG user units; the charts scale (uniformly) to the page width
const LEFT = 42;                     // room for the row labels
const MIN_SPAN = 3600;               // seconds: a short session is drawn on at least an hour
const STAGE_ORDER = ["W", "Wake", "REM", "N1", "Light", "NREM", "N2", "N3", "Deep"];
const COLOURS = { W: "#f2cc60", Wake: "#f2cc60", REM: "#ff7b72", N1: "#79c0ff", Light: "#79c0ff",
                  NREM: "#388bfd", N2: "#388bfd", N3: "#1f4fa8", Deep: "#1f4fa8" };
const EXTRA_COLOURS = ["#a371f7", "#3fb950", "#db61a2", "#8b949e"];

const state = { node: null, run: null, runs: 0, live: false, lastId: "", devices: new Map(), source: null };

function device(name) {
  let d = state.devices.get(name);
  if (!d) {
    d = { name, info: null, sessions: new Map(), current: null, viewing: null, online: null, counters: null };
    state.devices.set(name, d);
  }
  return d;
}

function esc(text) {
  return String(text).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function colour(cls, classes) {
  if (COLOURS[cls]) return COLOURS[cls];
  const i = Math.max(0, classes.indexOf(cls));
  return EXTRA_COLOURS[i % EXTRA_COLOURS.length];
}

// Top to bottom the way sleep labs draw it: wake, REM, then lighter to deeper sleep.
function rowOrder(classes) {
  const rank = c => { const i = STAGE_ORDER.indexOf(c); return i < 0 ? STAGE_ORDER.length : i; };
  return [...classes].sort((a, b) => rank(a) - rank(b) || classes.indexOf(a) - classes.indexOf(b));
}

function clock(ts) {
  const t = new Date(ts * 1000);
  return t.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// ---------------------------------------------------------------------------------- the event stream

function connect() {
  const url = state.lastId ? "events?last=" + encodeURIComponent(state.lastId) : "events";
  const source = new EventSource(url);
  state.source = source;
  source.addEventListener("open", () => setLive(true));
  source.addEventListener("error", () => {
    setLive(false);
    // The browser retries by itself after a network error; after an HTTP error it gives up, so start over
    // (with the last id in the URL, since a new EventSource cannot send Last-Event-ID).
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
  });
  source.addEventListener("hello", e => {
    const hello = JSON.parse(e.data);
    if (hello.run !== state.run) state.runs += 1;
    state.run = hello.run;
    state.node = hello.node;
    state.warning = hello.synthetic_warning;
    for (const info of hello.devices) device(info.name).info = info;
    setLive(true);
    schedule();
  });
  source.addEventListener("stage", e => {
    const m = JSON.parse(e.data);
    if (e.lastEventId) state.lastId = e.lastEventId;
    const d = device(m.device);
    let session = d.sessions.get(m.session);
    if (!session) { session = new Map(); d.sessions.set(m.session, session); }
    session.set(m.epoch, m);
    if (d.viewing === d.current) d.viewing = m.session;   // follow the live session unless the user chose another
    d.current = m.session;
    schedule();
  });
  source.addEventListener("availability", e => {
    const m = JSON.parse(e.data);
    device(m.device).online = m.online;
    schedule();
  });
  source.addEventListener("counters", e => {
    const m = JSON.parse(e.data);
    device(m.device).counters = m.counters;
    schedule();
  });
}

function setLive(live) {
  if (state.live === live) return;
  state.live = live;
  schedule();
}

let pending = null;
function schedule() {
  // Many events arrive at once when catching up: draw once they have.
  if (pending === null) pending = setTimeout(() => { pending = null; render(); }, 50);
}

// ------------------------------------------------------------------------------------------ drawing

function render() {
  const conn = document.getElementById("conn");
  conn.dataset.state = state.live ? "live" : "reconnecting";
  conn.textContent = state.live ? "live" : "edged unreachable: reconnecting…";
  document.body.dataset.state = state.live ? "live" : "reconnecting";
  document.body.dataset.run = state.run || "";
  document.body.dataset.runs = String(state.runs);
  document.getElementById("node").textContent = state.node ? "· node " + state.node : "";
  document.getElementById("run").textContent = state.run ? "daemon run " + state.run : "";
  const main = document.getElementById("devices");
  const empty = document.getElementById("empty");
  if (empty && state.devices.size) empty.remove();
  for (const d of state.devices.values()) {
    let el = main.querySelector(`section.device[data-device="${CSS.escape(d.name)}"]`);
    if (!el) {
      el = document.createElement("section");
      el.className = "device";
      el.dataset.device = d.name;
      el.addEventListener("change", ev => {
        if (ev.target.matches("select.session")) { d.viewing = ev.target.value; render(); }
      });
      main.appendChild(el);
    }
    el.innerHTML = deviceHtml(d);
  }
}

function deviceHtml(d) {
  const epochs = d.viewing && d.sessions.has(d.viewing)
    ? [...d.sessions.get(d.viewing).values()].sort((a, b) => a.epoch - b.epoch) : [];
  const last = epochs[epochs.length - 1];
  const classes = d.info ? d.info.classes : (last ? Object.keys(last.probabilities) : []);
  const synthetic = (d.info && d.info.synthetic) || epochs.some(m => m.model.synthetic);
  const model = last ? last.model.id : (d.info ? d.info.model : "");
  const online = d.online === null ? "unknown" : (d.online ? "online" : "offline");
  const linkText = !state.live ? "status unknown (edged unreachable)"
    : { online: "device connected", offline: "device disconnected", unknown: "no data yet" }[online];
  let html = `<header><h2>${esc(d.name)}</h2>`
    + `<span class="conn device-conn" data-state="${state.live ? online : "unknown"}">${esc(linkText)}</span>`
    + `<span class="muted">model ${esc(model)}</span>`
    + (synthetic ? `<span class="synthetic-badge" title="${esc(state.warning || "")}">SYNTHETIC model: not a sleep measurement</span>` : "")
    + sessionPicker(d) + `</header>`;
  if (!last) return html + `<p class="muted">No epoch scored yet.</p>`;
  const p = last.probabilities[last.stage];
  const hr = last.hr_bpm !== undefined ? `${last.hr_bpm.toFixed(0)} bpm` : "–";
  html += `<div class="now">`
    + `<div><span class="label">stage (${clock(last.start_ts)}–${clock(last.end_ts)})</span>`
    + `<span class="stage-now" data-stage="${esc(last.stage)}">${esc(last.stage)}${last.model.synthetic ? "*" : ""}</span></div>`
    + `<div><span class="label">confidence</span>${(100 * p).toFixed(0)} %</div>`
    + `<div><span class="label">signal quality</span>${(100 * last.quality.score).toFixed(0)} %${last.quality.ok ? "" : " (low)"}</div>`
    + `<div><span class="label">heart rate</span>${hr}</div>`
    + `<div><span class="label">epochs</span><span class="epoch-count">${epochs.length}</span></div>`
    + `<div><span class="label">latency</span>${last.latency_ms.toFixed(0)} ms</div>`
    + `</div>`;
  const t0 = epochs[0].start_ts;
  const span = Math.max(MIN_SPAN, last.end_ts - t0);
  const x = ts => LEFT + ((ts - t0) / span) * (W - LEFT);
  html += chart("Hypnogram", hypnogram(epochs, classes, x, t0, span), legend(classes));
  html += chart("Stage probabilities", probabilities(epochs, classes, x), "");
  html += chart("Signal quality", lineChart(epochs, m => m.quality.score, x, 0, 1, "quality", v => `${(v * 100).toFixed(0)} %`), "");
  if (epochs.some(m => m.hr_bpm !== undefined)) {
    const hrs = epochs.filter(m => m.hr_bpm !== undefined).map(m => m.hr_bpm);
    const lo = Math.floor(Math.min(...hrs) / 10) * 10, hi = Math.ceil(Math.max(...hrs) / 10) * 10 || lo + 10;
    html += chart("Heart rate (bpm)", lineChart(epochs, m => m.hr_bpm, x, lo, Math.max(hi, lo + 10), "hr", v => v.toFixed(0)), "");
  }
  return html;
}

function sessionPicker(d) {
  if (d.sessions.size < 2) return "";
  const options = [...d.sessions.keys()].map(s =>
    `<option value="${esc(s)}"${s === d.viewing ? " selected" : ""}>${esc(s)}${s === d.current ? " (live)" : ""}</option>`);
  return `<label class="muted">session <select class="session">${options.join("")}</select></label>`;
}

function chart(title, svg, extra) {
  return `<div class="chart"><div class="title">${esc(title)} ${extra}</div>${svg}</div>`;
}

function legend(classes) {
  return `<span class="legend">` + classes.map(c => `<span><i style="background:${colour(c, classes)}"></i>${esc(c)}</span>`).join("") + `</span>`;
}

function timeAxis(x, t0, span, height) {
  let out = "";
  const first = Math.ceil(t0 / 3600) * 3600;
  for (let t = first; t <= t0 + span; t += 3600) {
    out += `<line class="grid" x1="${x(t).toFixed(1)}" x2="${x(t).toFixed(1)}" y1="0" y2="${height}"/>`
      + `<text x="${(x(t) + 3).toFixed(1)}" y="${height - 3}">${clock(t)}</text>`;
  }
  return out;
}

function hypnogram(epochs, classes, x, t0, span) {
  const rows = rowOrder(classes);
  const rowH = 22, top = 4, height = top + rows.length * rowH + 16;
  const y = c => top + Math.max(0, rows.indexOf(c)) * rowH;
  let svg = `<svg class="hypnogram" viewBox="0 0 ${W} ${height}" role="img" aria-label="hypnogram">`
    + `<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">`
    + `<rect width="3" height="6" fill="#000" opacity=".45"/></pattern></defs>`;
  rows.forEach((c, i) => {
    svg += `<line class="grid" x1="0" x2="${W}" y1="${top + i * rowH + rowH}" y2="${top + i * rowH + rowH}"/>`
      + `<text x="3" y="${top + i * rowH + 14}">${esc(c)}</text>`;
  });
  svg += timeAxis(x, t0, span, height);
  let step = "";
  for (const m of epochs) {
    const x0 = x(m.start_ts), w = Math.max(0.5, x(m.end_ts) - x0), yy = y(m.stage);
    const cls = "ep" + (m.quality.ok ? "" : " lowq") + (m.model.synthetic ? " synthetic" : "");
    const tip = `${clock(m.start_ts)} epoch ${m.epoch}: ${m.stage} (${(100 * m.probabilities[m.stage]).toFixed(0)} %), `
      + `quality ${(100 * m.quality.score).toFixed(0)} %` + (m.model.synthetic ? ", SYNTHETIC model" : "");
    svg += `<rect class="${cls}" data-id="${esc(m.id)}" data-epoch="${m.epoch}" data-stage="${esc(m.stage)}" `
      + `x="${x0.toFixed(2)}" y="${yy + 3}" width="${w.toFixed(2)}" height="${rowH - 6}" fill="${colour(m.stage, classes)}"><title>${esc(tip)}</title></rect>`;
    if (m.model.synthetic) {
      svg += `<rect x="${x0.toFixed(2)}" y="${yy + 3}" width="${w.toFixed(2)}" height="${rowH - 6}" fill="url(#hatch)" pointer-events="none"/>`;
    }
    step += (step ? "L" : "M") + `${x0.toFixed(2)},${yy + rowH / 2}H${(x0 + w).toFixed(2)}`;
  }
  return svg + `<path class="step" d="${step}"/></svg>`;
}

function probabilities(epochs, classes, x) {
  const height = 70;
  let svg = `<svg class="probabilities" viewBox="0 0 ${W} ${height}" role="img" aria-label="stage probabilities">`;
  const below = epochs.map(() => 0);
  for (const c of rowOrder(classes).reverse()) {
    let upper = "", lower = "";
    epochs.forEach((m, i) => {
      const p = m.probabilities[c] || 0;
      const x0 = x(m.start_ts).toFixed(2), x1 = x(m.end_ts).toFixed(2);
      const y0 = (height * (1 - below[i])).toFixed(2), y1 = (height * (1 - below[i] - p)).toFixed(2);
      upper += `${upper ? "L" : "M"}${x0},${y1}L${x1},${y1}`;
      lower = `L${x1},${y0}L${x0},${y0}` + lower;
      below[i] += p;
    });
    svg += `<path data-class="${esc(c)}" d="${upper}${lower}Z" fill="${colour(c, classes)}" opacity=".85"/>`;
  }
  return svg + `</svg>`;
}

function lineChart(epochs, value, x, lo, hi, cls, label) {
  const height = 60, pad = 4;
  const y = v => pad + (1 - (v - lo) / (hi - lo)) * (height - 2 * pad);
  let d = "", gap = true;
  for (const m of epochs) {
    const v = value(m);
    if (v === undefined || v === null) { gap = true; continue; }
    d += `${gap ? "M" : "L"}${x((m.start_ts + m.end_ts) / 2).toFixed(2)},${y(v).toFixed(2)}`;
    gap = false;
  }
  return `<svg class="${cls}-chart" viewBox="0 0 ${W} ${height}" role="img" aria-label="${cls}">`
    + `<text x="3" y="12">${esc(label(hi))}</text><text x="3" y="${height - 3}">${esc(label(lo))}</text>`
    + `<path class="line ${cls}" d="${d}" vector-effect="non-scaling-stroke"/></svg>`;
}

connect();
