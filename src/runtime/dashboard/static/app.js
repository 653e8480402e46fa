// The dashboard page: tables from /api/page and server-drawn SVG charts, refreshed every 2 s.
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
const withToken = (path) => path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
const esc = (v) => String(typeof v === "object" && v !== null ? JSON.stringify(v) : v)
  .replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
// Long hex ids: the head and the tail (a task id's head is its caller's, its tail a counter).
const isId = (v) => typeof v === "string" && /^[0-9a-f]{24,}$/.test(v);
const short = (v) => isId(v) ? v.slice(0, 8) + "\u2026" + v.slice(-4) : v;

const COLUMNS = {
  nodes: ["node_id", "address", "is_driver", "pid", "alive", "resources", "available"],
  actors: ["class_name", "name", "state", "node_id", "restarts", "death_cause", "actor_id"],
  tasks: ["name", "state", "node_id", "attempt", "duration_s", "error", "task_id"],
  objects: ["object_id", "size", "where", "owner"],
  placement_groups: ["pg_id", "name", "state", "strategy", "bundles"],
  jobs: ["job_id", "status", "entrypoint", "exit_code", "message"],
  serve: ["app", "deployment", "replicas", "requests", "errors", "mean_latency_ms"],
  train: ["run", "workers", "reports", "reports_per_s"],
  experiments: ["experiment", "trials", "metrics"],
  trials: ["trial_id", "state", "results"],
};

function cell(key, value) {
  if (value === null || value === undefined) return "<td></td>";
  if (key === "state" || key === "status") return '<td class="state-' + esc(value) + '">' + esc(value) + "</td>";
  if (key === "error" || key === "death_cause") return '<td class="err">' + esc(value) + "</td>";
  if (key === "duration_s" && typeof value === "number") return "<td>" + esc(value < 1 ? (value * 1000).toFixed(2) + " ms" : value.toFixed(2) + " s") + "</td>";
  if (isId(value)) return '<td title="' + esc(value) + '">' + esc(short(value)) + "</td>";
  return "<td>" + esc(short(value)) + "</td>";
}

function table(rows, columns) {
  if (!rows || !rows.length) return '<p class="muted">none</p>';
  const logs = rows.some((r) => r.logs !== undefined);
  let out = "<table><tr>" + columns.map((k) => "<th>" + esc(k) + "</th>").join("") + (logs ? "<th>logs</th>" : "") + "</tr>";
  for (const r of rows.slice(0, 300)) {
    out += "<tr>" + columns.map((k) => cell(k, r[k])).join("");
    if (logs) out += r.logs !== undefined ? '<td><a class="logs" href="' + esc(withToken("/logs?" + r.logs)) + '">logs</a></td>' : "<td></td>";
    out += "</tr>";
  }
  return out + "</table>";
}

async function getJSON(path) {
  const r = await fetch(withToken(path));
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

async function chart(id, path) {
  const r = await fetch(withToken(path));
  if (r.ok) document.getElementById(id).innerHTML = await r.text();
}

function tuneSection(tune) {
  let html = "";
  for (const exp of tune.experiments) {
    const trials = tune.trials.filter((t) => t.experiment === exp.experiment);
    html += "<h3>" + esc(exp.experiment) + "</h3>" + table(trials, COLUMNS.trials);
    if (exp.metrics.length) {
      html += '<div class="chart tune-chart" data-experiment="' + esc(exp.experiment) + '" data-metric="' + esc(exp.metrics[0]) + '"></div>';
    }
  }
  const el = document.getElementById("tune-trials");
  el.innerHTML = html;
  return Array.from(el.querySelectorAll(".tune-chart"));
}

async function refresh() {
  try {
    const page = await getJSON("/api/page");
    const s = page.summary;
    document.getElementById("addr").textContent = s.address;
    const res = Object.entries(s.resources).map(([k, v]) => esc(k) + ": " + v.available + " of " + v.total + " free").join(", ");
    const act = Object.entries(s.actors).map(([k, v]) => v + " " + esc(k)).join(", ");
    document.getElementById("summary").innerHTML = s.nodes + " node(s), " + s.drivers + " driver(s); " + res + "; actors: " + (act || "none");
    for (const what of ["nodes", "actors", "tasks", "placement_groups", "jobs", "serve", "train"]) {
      document.getElementById("table-" + what).innerHTML = table(page[what], COLUMNS[what]);
    }
    document.getElementById("table-tune").innerHTML = table(page.tune.experiments, COLUMNS.experiments);
    const tuneCharts = tuneSection(page.tune);
    const charts = ["cpu", "memory", "store", "tasks", "calls"].map((n) => chart("chart-" + n, "/api/chart/" + n + ".svg"));
    tuneCharts.forEach((el, i) => {
      el.id = "tune-chart-" + i;
      charts.push(chart(el.id, "/api/chart/tune.svg?experiment=" + encodeURIComponent(el.dataset.experiment) + "&metric=" + encodeURIComponent(el.dataset.metric)));
    });
    await Promise.all(charts);
    document.body.dataset.loaded = String(Date.now());
  } catch (e) {
    document.getElementById("summary").textContent = "cannot read the cluster: " + e;
  }
}

document.getElementById("metrics-link").href = withToken("/metrics");
for (const [id, path] of [["timeline-link", "/api/timeline?download=1"], ["stacks-link", "/api/stacks?format=text"], ["memory-link", "/api/memory?format=text"]]) {
  document.getElementById(id).href = withToken(path);
}
refresh();
setInterval(refresh, 2000);
