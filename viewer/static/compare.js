// Compare runs: params side by side (only differences on demand), last/min/max of every
// metric, and one chart per metric key with every run overlaid.
import { MetricChart } from "./chart.js";
import { PALETTE, api, el, fmtValue, markLoaded, showError } from "./common.js";

const $ = (id) => document.getElementById(id);
const ids = new URLSearchParams(location.search).getAll("run");
const charts = [];
let data = null;

const color = (index) => PALETTE[index % PALETTE.length];
const same = (values) => values.every((v) => JSON.stringify(v) === JSON.stringify(values[0]));

function renderRuns() {
  const head = el("tr", {}, ...["", "run", "status", "plugin", "action", "job"].map((t) => el("th", { text: t })));
  const rows = data.runs.map((run, i) => {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = color(i);
    return el("tr", {}, el("td", {}, swatch),
      el("td", {}, el("a", { href: `/runs/${encodeURIComponent(run.run_id)}`, text: run.run_id })),
      el("td", { text: run.status }), el("td", { text: run.plugin ?? "" }), el("td", { text: run.action ?? "" }), el("td", { text: run.job_id ?? "" }));
  });
  $("compared").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
}

function renderParams() {
  const only = $("diff-only").checked;
  const keys = [...new Set(data.runs.flatMap((run) => Object.keys(run.params || {})))].sort();
  const head = el("tr", {}, el("th", { text: "param" }), ...data.runs.map((run) => el("th", { text: run.run_id })));
  const rows = [];
  for (const key of keys) {
    const values = data.runs.map((run) => (run.params || {})[key]);
    const differs = !same(values);
    if (only && !differs) continue;
    rows.push(el("tr", { "data-param": key }, el("th", { text: key }),
      ...values.map((v) => el("td", { class: `mono${differs ? " diff" : ""}`, text: v === undefined ? "—" : fmtValue(v) }))));
  }
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "muted", colspan: data.runs.length + 1, text: only ? "no params differ" : "no params" })));
  $("params").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
}

function metricKeys() {
  const keys = new Map();
  for (const row of data.metrics) keys.set(`${row.category ?? ""}\u0000${row.key}`, { category: row.category, key: row.key });
  return [...keys.values()];
}

function renderStats() {
  const head = el("tr", {}, el("th", { text: "metric" }), ...data.runs.map((run) => el("th", { text: run.run_id })));
  const stats = new Map(data.metrics.map((row) => [`${row.category ?? ""}\u0000${row.key}\u0000${row.run_id}`, row]));
  const rows = metricKeys().map(({ category, key }) => el("tr", {},
    el("th", { text: category ? `${category} / ${key}` : key }),
    ...data.runs.map((run) => {
      const row = stats.get(`${category ?? ""}\u0000${key}\u0000${run.run_id}`);
      return el("td", { class: "num", text: row ? `${fmtValue(row.last)}  (${fmtValue(row.min)} … ${fmtValue(row.max)})` : "—" });
    })));
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "muted", text: "no numeric metrics" })));
  $("stats").replaceChildren(el("thead", {}, head, el("tr", {}, el("th", { class: "muted", text: "last (min … max)", colspan: data.runs.length + 1 }))), el("tbody", {}, ...rows));
}

function renderCharts() {
  $("charts").replaceChildren();
  charts.length = 0;
  const group = el("div", { class: "charts-group" });
  $("charts").append(group);
  for (const { category, key } of metricKeys()) {
    const having = data.runs.filter((run) => data.metrics.some((m) => m.run_id === run.run_id && m.key === key && (m.category ?? null) === (category ?? null)));
    const chart = new MetricChart(group, {
      title: category ? `${category} / ${key}` : key,
      series: having.map((run) => ({
        label: run.run_id,
        color: color(data.runs.indexOf(run)),
        load: (lo, hi, buckets) => api("/api/series", { run: run.run_id, key, category, x: $("x-axis").value, lo, hi, buckets }),
      })),
      xAxis: $("x-axis").value,
      log: $("log-scale").checked,
    });
    chart.node.dataset.key = key;
    charts.push(chart);
  }
}

$("diff-only").addEventListener("change", () => data && renderParams());
$("x-axis").addEventListener("change", () => charts.forEach((c) => c.setOptions({ xAxis: $("x-axis").value })));
$("log-scale").addEventListener("change", () => charts.forEach((c) => c.setOptions({ log: $("log-scale").checked })));

if (!ids.length) {
  $("empty").hidden = false;
} else {
  try {
    data = await api("/api/compare", { run: ids });
    renderRuns();
    renderParams();
    renderStats();
    renderCharts();
    markLoaded();
  } catch (error) {
    showError($("error"), error);
  }
}
