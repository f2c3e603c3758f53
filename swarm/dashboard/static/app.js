// The swarm page: polls /api/snapshot and re-renders. Read-only.
// Every string from the run (descriptions, diffs, logs, agent and worker names) goes into the DOM
// through textContent / createTextNode, never as markup; the charts' strings arrive escaped.
"use strict";

const VIEWS = ["progress", "gpus", "experiments", "best", "agents", "cost"];
const FIGURES = {progress: ["progress"], gpus: ["timeline"], best: ["lineage"], agents: ["agents"], cost: ["cost"]};
const params = new URLSearchParams(location.search);
const POLL_MS = Math.max(200, Number(params.get("poll")) || 2000);
const EXP_COLUMNS = [
  ["exp_id", "#", "num"], ["status", "status", "text"], ["kind", "kind", "text"], ["worker", "worker", "text"],
  ["agent", "agent", "text"], ["description", "description", "text"], ["metric", "metric", "num"],
  ["delta", "delta", "num"], ["runs", "runs", "num"], ["mean", "mean", "num"], ["task_seconds", "task s", "num"],
  ["cost_usd", "cost $", "num"], ["finished_at", "finished", "num"],
];
const state = {doc: null, received: 0, view: "progress", sort: {key: "exp_id", desc: true}, selected: null,
               drawn: {}};

function $(id) { return document.getElementById(id); }
function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}
function fixed(x, digits) { return x === null || x === undefined ? "-" : Number(x).toFixed(digits); }
function signed(x, digits) { return x === null || x === undefined ? "-" : (x >= 0 ? "+" : "") + Number(x).toFixed(digits); }
function clock(t) { return t ? new Date(t * 1000).toLocaleTimeString() : "-"; }
function ago(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 90) return Math.round(seconds) + " s ago";
  if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
  return (seconds / 3600).toFixed(1) + " h ago";
}
function cell(row, key) {
  const v = row[key];
  if (key === "metric" || key === "mean") return fixed(v, 6);
  if (key === "delta") return signed(v, 6);
  if (key === "task_seconds") return fixed(v, 1);
  if (key === "cost_usd") return v ? fixed(v, 4) : "-";
  if (key === "finished_at") return clock(v);
  return v === null || v === undefined ? "-" : String(v);
}

// ---- views and tabs -------------------------------------------------------------------------

function showView(name) {
  state.view = VIEWS.includes(name) ? name : "progress";
  for (const v of VIEWS) {
    $("view-" + v).classList.toggle("active", v === state.view);
  }
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.view === state.view);
  drawFigures();
}

function drawFigures() {
  const doc = state.doc;
  if (!doc || doc.empty || typeof Plotly === "undefined") return;
  for (const name of FIGURES[state.view] || []) {
    const fig = doc.figures[name];
    const div = $("fig-" + name);
    Plotly.react(div, fig.data, fig.layout, {displaylogo: false, responsive: true});
    if (!state.drawn[name]) {
      state.drawn[name] = true;
      if (name === "progress" || name === "timeline") {
        div.on("plotly_click", (ev) => {
          const id = ev.points && ev.points[0] && ev.points[0].customdata;
          if (id !== undefined && id !== null) { location.hash = "#experiments"; openExperiment(Number(id)); }
        });
      }
    }
  }
}

// ---- header ---------------------------------------------------------------------------------

function renderHeader(doc) {
  $("tag").textContent = doc.tag;
  const pill = $("state");
  pill.textContent = doc.state;
  pill.className = "pill " + doc.state.replace(" ", "-");
  $("state-detail").textContent = doc.state_detail || "";
  const facts = $("facts");
  facts.replaceChildren();
  const add = (label, value, id) => {
    const d = el("div");
    d.append(el("dt", label));
    const dd = el("dd", value);
    if (id) dd.id = id;
    d.append(dd);
    facts.append(d);
  };
  const moved = doc.last_event_t ? doc.now - doc.last_event_t : null;
  add("journal moved", ago(moved), "fact-moved");
  if (doc.empty) return;
  const alive = doc.workers_alive === null || doc.workers_alive === undefined ? "-" : doc.workers_alive;
  add("workers alive", `${alive} / ${doc.workers ?? "-"}` + (doc.state === "running" ? `, ${doc.busy} busy` : ""),
      "fact-workers");
  const best = doc.best;
  add("best " + doc.metric, best ? `${fixed(best.metric, 6)} (${best.exp_id === null ? "baseline" : "#" + best.exp_id}, ${best.commit})` : "-",
      "fact-best");
  add("baseline", fixed(doc.baseline, 6));
  add("noise σ", doc.sigma ? Number(doc.sigma).toPrecision(3) : "-");
  const counts = Object.entries(doc.counts).map(([k, v]) => `${k} ${v}`).join(", ");
  add("experiments", `${doc.experiments_total}` + (counts ? ` (${counts})` : ""), "fact-experiments");
  add("cost", "$" + fixed(doc.cost.usd, 4) + (doc.cost.max_cost ? ` of $${doc.cost.max_cost}` : ""));
  const settings = Object.entries(doc.settings).map(([k, v]) => `${k} ${v}`).join(", ");
  if (settings) add("settings", settings, "fact-settings");
}

// ---- experiments table ------------------------------------------------------------------------

function renderExperiments(doc) {
  const head = $("exp-table").tHead;
  if (!head.rows.length) {
    const tr = head.insertRow();
    for (const [key, label, type] of EXP_COLUMNS) {
      const th = el("th", label, type === "text" ? "text" : "");
      th.dataset.key = key;
      th.addEventListener("click", () => {
        state.sort = {key, desc: state.sort.key === key ? !state.sort.desc : type === "num"};
        renderExperiments(state.doc);
      });
      tr.append(th);
    }
  }
  const select = $("status-filter");
  const known = new Set([...select.options].map((o) => o.value));
  for (const s of Object.keys(doc.counts).sort()) {
    if (!known.has(s)) select.append(new Option(s, s));
  }
  const needle = $("filter").value.trim().toLowerCase();
  const status = select.value;
  const rows = doc.rows.filter((r) => (!status || r.status === status) && (!needle ||
    [r.description, r.agent, r.worker, r.status, r.kind, "#" + r.exp_id, r.lane].some(
      (v) => String(v ?? "").toLowerCase().includes(needle))));
  const {key, desc} = state.sort;
  rows.sort((a, b) => {
    const x = a[key], y = b[key];
    if (x === y) return b.exp_id - a.exp_id;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return desc ? -c : c;
  });
  const body = document.createElement("tbody");
  for (const r of rows) {
    const tr = body.insertRow();
    tr.dataset.expId = r.exp_id;
    if (r.exp_id === state.selected) tr.classList.add("selected");
    for (const [k, , type] of EXP_COLUMNS) {
      let cls = type === "text" ? "text" : "";
      if (k === "description") cls = "description";
      if (k === "status") cls += " status " + r.status;
      const td = el("td", cell(r, k), cls.trim());
      td.dataset.col = k;
      tr.append(td);
    }
    tr.addEventListener("click", () => openExperiment(r.exp_id));
  }
  $("exp-table").replaceChild(body, $("exp-table").tBodies[0]);
  $("shown").textContent = `${rows.length} of ${doc.rows.length} shown`;
}

async function openExperiment(expId) {
  state.selected = expId;
  for (const tr of $("exp-table").tBodies[0].rows) tr.classList.toggle("selected", Number(tr.dataset.expId) === expId);
  const aside = $("detail");
  aside.hidden = false;
  $("detail-title").textContent = `#${expId}`;
  $("detail-diff").textContent = "loading…";
  $("detail-log").textContent = "";
  try {
    const res = await fetch(`/api/experiments/${expId}`, {cache: "no-store"});
    if (!res.ok) throw new Error(await answered(res));
    const d = await res.json();
    if (state.selected !== expId) return;
    $("detail-title").textContent = `#${d.exp_id} ${d.status}`;
    const meta = [d.commit ? `commit ${d.commit.slice(0, 7)}` : "no commit", `parent ${String(d.parent || "").slice(0, 7)}`];
    if (d.reason) meta.push(d.reason);
    if (d.error) meta.push("error: " + d.error);
    $("detail-meta").textContent = meta.join(" · ");
    $("detail-description").textContent = d.description;
    $("detail-diff").textContent = d.diff;
    $("detail-log").textContent = d.log;
  } catch (err) {
    $("detail-diff").textContent = "could not load: " + err.message;
  }
}

// ---- the other tables -------------------------------------------------------------------------

function fillTable(table, header, rows, classes) {
  // classes[i]: "" (a number, right-aligned), "text" or "description" (wraps)
  const cls = (i) => classes[i] || "";
  const thead = el("thead");
  const tr = thead.insertRow();
  header.forEach((h, i) => tr.append(el("th", h, cls(i) ? "text" : "")));
  const tbody = el("tbody");
  for (const row of rows) {
    const r = tbody.insertRow();
    row.forEach((v, i) => r.append(el("td", v, cls(i))));
  }
  table.replaceChildren(thead, tbody);
}

function renderOthers(doc) {
  const g = doc.gpus;
  $("gpu-summary").textContent = `duty cycle ${(100 * g.duty_cycle).toFixed(0)}% (GPU time inside the task command ÷ ` +
    `workers × ${(g.span_seconds / 60).toFixed(1)} min); ${g.experiments_per_hour.toFixed(1)} experiments per hour, ` +
    `${g.experiments_per_gpu_hour.toFixed(1)} per GPU-hour`;
  fillTable($("gpu-table"), ["worker", "experiments", "busy min", "in task min", "duty cycle", "experiments / h"],
    g.workers.map((w) => [w.worker, w.experiments, fixed(w.busy_seconds / 60, 1), fixed(w.task_seconds / 60, 1),
      (100 * w.duty_cycle).toFixed(0) + "%", fixed(w.experiments_per_hour, 1)]), ["text"]);
  fillTable($("lineage-table"), ["when", "lane", "experiment", "kind", "commit", doc.metric, "improvement", "agent", "description"],
    doc.lineage.map((b) => [clock(b.t), b.lane, b.exp_id === null ? "baseline" : "#" + b.exp_id,
      b.merge ? "★ merge" : b.kind, b.commit, fixed(b.metric, 6), signed(b.improvement, 6), b.agent ?? "-", b.description]),
    ["", "text", "text", "text", "text", "", "", "text", "description"]);
  fillTable($("agents-table"), doc.agents.header, doc.agents.rows, ["text"]);
  const c = doc.cost;
  $("cost-summary").textContent = `$${fixed(c.usd, 4)} over ${c.calls} model calls, ${c.tokens_in} tokens in, ` +
    `${c.tokens_out} tokens out` + (c.agent_errors ? `; ${c.agent_errors} failed agent attempts` : "") +
    (c.max_cost ? `; --max-cost $${c.max_cost}` : "; no --max-cost");
}

// ---- polling --------------------------------------------------------------------------------

async function answered(res) {
  // a failed request's one line: the status and the server's own message (e.g. a corrupt journal)
  return `${res.status} ${res.statusText}: ${(await res.text()).trim()}`;
}

function render(doc) {
  state.doc = doc;
  renderHeader(doc);
  $("empty").hidden = !doc.empty;
  document.body.dataset.updates = String(++state.received);
  document.body.dataset.experiments = String(doc.empty ? 0 : doc.experiments_total);
  document.body.dataset.state = doc.state;
  if (doc.empty) return;
  renderExperiments(doc);
  renderOthers(doc);
  drawFigures();
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}; polling every ${POLL_MS / 1000} s`;
}

async function poll() {
  let problem = "", res = null;
  try {
    res = await fetch("/api/snapshot", {cache: "no-store"});
  } catch (err) {
    problem = "cannot reach the dashboard server: " + err.message;
  }
  if (res) {
    try {
      if (res.ok) render(await res.json());
      else problem = "the dashboard server cannot read the run: " + await answered(res);
    } catch (err) {
      problem = "the page could not show the run: " + err.message;
    }
  }
  $("error").hidden = !problem;
  $("error").textContent = problem;
  setTimeout(poll, POLL_MS);
}

window.addEventListener("hashchange", () => showView(location.hash.slice(1)));
$("filter").addEventListener("input", () => state.doc && !state.doc.empty && renderExperiments(state.doc));
$("status-filter").addEventListener("change", () => state.doc && !state.doc.empty && renderExperiments(state.doc));
showView(location.hash.slice(1));
poll();
