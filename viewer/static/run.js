// One run: progress per step, a chart per metric, messages, events, files, live.
import { MetricChart } from "./chart.js";
import { api, debounce, el, fmtDuration, fmtTime, fmtValue, follow, kvTable, markLoaded, progressBar, showError, statusBadge } from "./common.js";

const runId = document.getElementById("main").dataset.runId;
const $ = (id) => document.getElementById(id);
const charts = new Map(); // "category\u0000key" -> MetricChart
const chartGroups = new Map(); // category -> grid element
const stepRows = new Map(); // category -> row parts
const messages = { offset: 0, limit: 50 };
const events = { offset: 0, limit: 25 };
let detail = null;
let source = null;
let startedAt = 0;

const chartId = (category, key) => `${category ?? ""}\u0000${key}`;
const NUMERIC = new Set(["float", "int", "bool"]);

function renderHead(info) {
  const run = info.run;
  $("run-status").replaceChildren(statusBadge(run.status));
  const facts = [
    ["plugin", run.plugin], ["action", run.action], ["job", run.job_id],
    ["started", fmtTime(run.started_at)], ["ended", fmtTime(run.ended_at)], ["duration", fmtDuration(run.duration)],
    ["host", run.host], ["pid", run.pid], ["records", fmtValue(run.records)],
    ["lost records", fmtValue(run.lost_records)], ["writers", run.writers], ["language", run.language],
  ];
  $("run-facts").replaceChildren(...facts.flatMap(([name, value]) => [el("dt", { text: name }), el("dd", { text: value ?? "", "data-fact": name })]));
  clearInterval(renderHead.ticking);
  if (run.status === "running") {
    // The duration counts up between the server's answers.
    const since = Date.parse(run.started_at);
    renderHead.ticking = setInterval(() => {
      const cell = document.querySelector("[data-fact=duration]");
      if (cell) cell.textContent = fmtDuration((Date.now() - since) / 1000);
    }, 1000);
  }
  const error = $("run-error");
  error.hidden = !run.error;
  error.textContent = run.error ? `Failed: ${run.error}` : "";
  const problems = $("run-problems");
  problems.hidden = !info.problems.length;
  problems.textContent = info.problems.length ? `Problems reading this run:\n${info.problems.join("\n")}` : "";
  document.title = `${run.run_id} · runstore`;
}

function renderSteps(info) {
  const status = info.run.status;
  $("overall").replaceChildren(
    el("div", { class: "overall" }, el("strong", { text: "overall" }),
      progressBar(info.overall ?? 0, status === "running" ? "running" : status === "completed" ? "completed" : "failed"),
      el("span", { id: "overall-percent", text: info.overall === null || info.overall === undefined ? "no progress reported" : `${info.overall.toFixed(1)}%` })));
  $("steps").replaceChildren();
  stepRows.clear();
  if (!info.steps.length) $("steps").append(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "no progress reported" })));
  for (const step of info.steps) addStep(step);
}

function addStep(step) {
  const bar = progressBar(step.percent, step.status);
  const parts = {
    bar,
    done: el("td", { class: "num" }),
    elapsed: el("td", { class: "num" }),
    remaining: el("td", { class: "num" }),
    status: el("td"),
    percent: el("span", { class: "muted" }),
  };
  const row = el("tr", { "data-category": step.category ?? "" },
    el("td", { text: step.category ?? "(default)" }),
    el("td", {}, el("div", { class: "progress-cell" }, bar, parts.percent)),
    parts.done, parts.elapsed, parts.remaining, parts.status);
  stepRows.set(step.category ?? "", parts);
  $("steps").append(row);
  updateStep(step);
}

function updateStep(step) {
  const parts = stepRows.get(step.category ?? "");
  if (!parts) return false;
  const percent = step.percent ?? 0;
  parts.bar.className = `bar ${step.status || "running"}`;
  parts.bar.firstChild.style.width = `${Math.max(0, Math.min(100, percent))}%`;
  parts.bar.setAttribute("aria-valuenow", percent.toFixed(1));
  parts.percent.textContent = `${percent.toFixed(1)}%`;
  parts.done.textContent = `${fmtValue(step.current)} / ${fmtValue(step.total)}`;
  parts.elapsed.textContent = fmtDuration(step.elapsed);
  parts.remaining.textContent = step.status === "running" ? fmtDuration(step.time_remaining) : "";
  parts.status.textContent = step.status ?? "";
  return true;
}

function seriesLoader(category, key) {
  return (lo, hi, buckets) => api("/api/series", { run: runId, key, category, x: $("x-axis").value, lo, hi, buckets });
}

function renderMetrics(info) {
  const textRows = [];
  const filter = $("key-filter").value.trim().toLowerCase();
  for (const metric of info.metrics) {
    if (!NUMERIC.has(metric.kind)) { textRows.push(metric); continue; }
    const id = chartId(metric.category, metric.key);
    if (charts.has(id)) continue;
    const category = metric.category ?? "";
    let group = chartGroups.get(category);
    if (!group) {
      group = el("div", { class: "charts-group" });
      const section = el("div", { class: "chart-category", "data-category": category }, el("h3", { text: metric.category ?? "(default category)" }), group);
      $("charts").append(section);
      chartGroups.set(category, group);
    }
    const chart = new MetricChart(group, {
      title: metric.key,
      series: [{ label: metric.key, color: "#2f6fdb", load: seriesLoader(metric.category, metric.key) }],
      xAxis: $("x-axis").value,
      log: $("log-scale").checked,
    });
    chart.node.dataset.key = metric.key;
    chart.node.dataset.category = category;
    chart.node.hidden = filter && !metric.key.toLowerCase().includes(filter);
    charts.set(id, chart);
  }
  if (!info.metrics.length && !$("charts").childElementCount) $("charts").append(el("p", { class: "muted", id: "no-metrics", text: "no metrics logged" }));
  if (info.metrics.length) $("no-metrics")?.remove();
  const table = $("text-metrics");
  table.hidden = !textRows.length;
  table.tBodies[0].replaceChildren(...textRows.map((m) => el("tr", {}, el("td", { text: m.category ?? "" }), el("td", { text: m.key }), el("td", { class: "mono", text: m.text ?? fmtValue(m.last) }))));
}

function renderFiles(info) {
  const images = [], files = [];
  for (const item of info.attachments) {
    const url = `/files/${encodeURIComponent(runId)}/${item.attachment.split("/").map(encodeURIComponent).join("/")}`;
    const name = item.file ? item.file.split("/").pop() : item.attachment.split("/").pop();
    if (/\.(png|jpe?g|gif|webp)$/i.test(item.attachment)) {
      const caption = item.event === "visualization" && item.data ? `${item.data.category ?? ""} / ${item.data.group ?? ""} #${item.data.index ?? ""}` : `${item.event}: ${name}`;
      images.push(el("figure", {}, el("a", { href: url }, el("img", { src: url, alt: caption, loading: "lazy" })), el("figcaption", { text: caption })));
    } else {
      files.push(el("li", {}, el("a", { href: url, text: name }), el("span", { class: "muted", text: ` ${item.event}, ${fmtTime(item.ts)}` })));
    }
  }
  $("images").replaceChildren(...images);
  $("files").replaceChildren(...files);
  if (!images.length && !files.length) $("files").append(el("li", { class: "muted", text: "no files attached" }));
}

function renderWriters(info) {
  $("writers").replaceChildren(...info.writers.map((w) => el("tr", {},
    el("td", { class: "mono", text: w.writer }), el("td", { text: w.host ?? "" }), el("td", { text: w.pid ?? "" }),
    el("td", { text: w.status ?? "" }), el("td", { text: fmtTime(w.started_at) }), el("td", { text: fmtTime(w.heartbeat_at) }),
    el("td", { class: "num", text: fmtValue(w.records) }), el("td", { class: "num", text: fmtValue(w.lost_records) }),
    el("td", { text: w.last_fault ?? "" }))));
}

async function loadDetail() {
  try {
    detail = await api(`/api/runs/${encodeURIComponent(runId)}`);
    showError($("error"), null);
  } catch (error) {
    showError($("error"), error);
    return;
  }
  startedAt = Date.parse(detail.run.started_at) / 1000;
  if (!source && detail.run.status === "running") {
    // Follow first, then read the history (the charts'): a record written in between
    // arrives live, and a chart drops a point its history already has.
    startLive(detail.run.dir);
    await Promise.race([source.ready, new Promise((resolve) => setTimeout(resolve, 3000))]);
  }
  renderHead(detail);
  renderSteps(detail);
  renderMetrics(detail);
  renderFiles(detail);
  renderWriters(detail);
  kvTable($("params"), detail.run.params);
  kvTable($("env"), detail.run.env);
  kvTable($("checkpoint"), detail.run.checkpoint);
}

function levels() {
  return [...$("level-filter").querySelectorAll("input[value]:checked")].map((box) => box.value);
}

function messageItem(m, fresh = false) {
  const text = m.kind === "dev_event" && m.data !== null && m.data !== undefined ? `${m.text ?? ""} ${JSON.stringify(m.data)}` : m.text ?? "";
  return el("li", { class: `${m.level}${fresh ? " fresh" : ""}`, "data-kind": m.kind },
    el("span", { class: "muted", text: fmtTime(m.ts) }),
    el("span", { class: "level", text: m.kind === "dev_event" ? "dev" : m.level }),
    el("span", { class: "muted", text: m.category ?? "" }),
    el("span", { class: "text", text }));
}

async function loadMessages() {
  const all = $("level-filter").querySelectorAll("input[value]").length;
  const chosen = levels();
  const dev = $("dev-events").checked;
  try {
    const page = chosen.length || dev
      ? await api(`/api/runs/${encodeURIComponent(runId)}/messages`, {
        level: chosen.length === all ? [] : chosen,
        messages: chosen.length ? 1 : 0, dev: dev ? 1 : 0, offset: messages.offset, limit: messages.limit,
      })
      : { total: 0, offset: 0, messages: [] };
    messages.total = page.total;
    messages.shown = new Set(page.messages.map((m) => `${m.writer}:${m.seq}`));
    $("messages").replaceChildren(...page.messages.map((m) => messageItem(m)));
    if (!page.messages.length) $("messages").append(el("li", { class: "muted", text: "no messages" }));
    pager("msg", messages, page.messages.length);
  } catch (error) {
    showError($("error"), error);
  }
}

function pager(prefix, place, shown) {
  const last = place.offset + shown;
  $(`${prefix}-info`).textContent = place.total ? `${place.offset + 1}–${last} of ${place.total}` : "";
  $(`${prefix}-newer`).disabled = place.offset === 0;
  $(`${prefix}-older`).disabled = last >= place.total;
  const count = prefix === "msg" ? $("message-count") : $("event-count");
  count.textContent = `(${place.total})`;
}

async function loadEvents() {
  try {
    const page = await api(`/api/runs/${encodeURIComponent(runId)}/events`, { offset: events.offset, limit: events.limit });
    events.total = page.total;
    events.shown = new Set(page.events.map((e) => `${e.writer}:${e.seq}`));
    $("events").replaceChildren(...page.events.map(eventRow));
    if (!page.events.length) $("events").append(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "no events" })));
    pager("ev", events, page.events.length);
  } catch (error) {
    showError($("error"), error);
  }
}

function eventRow(e) {
  return el("tr", {},
    el("td", { text: fmtTime(e.ts) }), el("td", { text: e.event }), el("td", { text: e.level }),
    el("td", { text: e.category ?? "" }),
    el("td", {}, el("pre", { class: "data", text: e.data === null || e.data === undefined ? "" : JSON.stringify(e.data) })),
    el("td", { class: "mono", text: e.file ?? "" }));
}

// -- live -------------------------------------------------------------------------------

const reloadDetail = debounce(async () => { await loadDetail(); markLoaded(); }, 400);

function xOf(record) {
  const axis = $("x-axis").value;
  const ts = Date.parse(record.ts) / 1000;
  return axis === "seq" ? record.seq : axis === "ts" ? ts : ts - startedAt;
}

function onRecords(records) {
  let newKeys = false;
  for (const record of records) {
    if (record.stream === "metrics") {
      for (const [key, value] of Object.entries(record.values)) {
        const chart = charts.get(chartId(record.category, key));
        if (chart) chart.append(0, xOf(record), typeof value === "boolean" ? Number(value) : typeof value === "number" ? value : null);
        else newKeys = true;
      }
    } else if (record.stream === "progress") {
      if (!updateStep(record)) newKeys = true;
      if (record.overall !== null && record.overall !== undefined) {
        const bar = $("overall").querySelector(".bar");
        if (bar) bar.firstChild.style.width = `${record.overall}%`;
        $("overall-percent").textContent = `${record.overall.toFixed(1)}%`;
      }
    } else if (record.stream === "events") {
      liveEvent(record);
    } else if (record.stream === "status") {
      newKeys = true;
    }
  }
  if (newKeys) reloadDetail();
}

function liveEvent(record) {
  if (record.attachment) reloadDetail();
  const dev = record.event === "dev_event";
  if (record.event === "message" || dev) {
    if (dev && !$("dev-events").checked) return;
    if (!levels().includes(record.level) && !dev) return;
    const key = `${record.writer}:${record.seq}`;
    if (messages.shown?.has(key)) return; // the page read it already
    messages.shown?.add(key);
    messages.total = (messages.total || 0) + 1;
    if (messages.offset !== 0) return;
    $("messages").querySelector("li.muted")?.remove();
    const data = record.data || {};
    const item = dev ? { kind: "dev_event", level: record.level, ts: record.ts, category: record.category, text: data.message ?? data.content, data: data.data }
      : { kind: "message", level: record.level, ts: record.ts, category: record.category, text: data.content };
    $("messages").prepend(messageItem(item, true));
    while ($("messages").childElementCount > messages.limit) $("messages").lastChild.remove();
    $("message-count").textContent = `(${messages.total})`;
  } else {
    const key = `${record.writer}:${record.seq}`;
    if (events.shown?.has(key)) return;
    events.shown?.add(key);
    events.total = (events.total || 0) + 1;
    if (events.offset !== 0) return;
    $("events").querySelector("td.muted")?.parentElement.remove();
    $("events").prepend(eventRow(record));
    while ($("events").childElementCount > events.limit) $("events").lastChild.remove();
    $("event-count").textContent = `(${events.total})`;
  }
}

function startLive(dir) {
  source = follow(dir, onRecords, () => { loadDetail(); loadMessages(); loadEvents(); for (const chart of charts.values()) chart.load(); });
}

// -- controls -------------------------------------------------------------------------

$("x-axis").addEventListener("change", () => { for (const chart of charts.values()) chart.setOptions({ xAxis: $("x-axis").value }); });
$("log-scale").addEventListener("change", () => { for (const chart of charts.values()) chart.setOptions({ log: $("log-scale").checked }); });
$("key-filter").addEventListener("input", () => {
  const filter = $("key-filter").value.trim().toLowerCase();
  for (const chart of charts.values()) chart.node.hidden = filter && !chart.node.dataset.key.toLowerCase().includes(filter);
});
$("level-filter").addEventListener("change", () => { messages.offset = 0; loadMessages(); });
$("msg-newer").addEventListener("click", () => { messages.offset = Math.max(0, messages.offset - messages.limit); loadMessages(); });
$("msg-older").addEventListener("click", () => { messages.offset += messages.limit; loadMessages(); });
$("ev-newer").addEventListener("click", () => { events.offset = Math.max(0, events.offset - events.limit); loadEvents(); });
$("ev-older").addEventListener("click", () => { events.offset += events.limit; loadEvents(); });

await loadDetail();
await Promise.all([loadMessages(), loadEvents()]);
markLoaded(); // the first time only once the messages and events are in too
