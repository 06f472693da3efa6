// The runs page: sorted, filtered and paged by the server; live status and progress.
import { api, debounce, el, fmtDuration, fmtTime, fmtValue, follow, markLoaded, progressBar, setProgress, showError, statusBadge } from "./common.js";

const params = new URLSearchParams(location.search);
const state = {
  q: params.get("q") || "",
  status: params.get("status") || "",
  sort: params.get("sort") || "started",
  order: params.get("order") || "desc",
  offset: Number(params.get("offset")) || 0,
  limit: 50,
  metrics: params.getAll("metric"),
  chosenMetrics: params.has("metric"),
};
const selected = new Set(params.getAll("selected"));
const COLUMNS = [
  ["run", "run"], ["status", "status"], ["plugin", "plugin"], ["action", "action"],
  ["job", "job"], ["started", "started"], ["duration", "duration"],
];
const $ = (id) => document.getElementById(id);
let bars = new Map();
let loading = null;

function saveState() {
  const url = new URLSearchParams();
  if (state.q) url.set("q", state.q);
  if (state.status) url.set("status", state.status);
  if (state.sort !== "started") url.set("sort", state.sort);
  if (state.order !== "desc") url.set("order", state.order);
  if (state.offset) url.set("offset", state.offset);
  if (state.chosenMetrics) for (const key of state.metrics) url.append("metric", key);
  if (state.chosenMetrics && !state.metrics.length) url.append("metric", "");
  history.replaceState(null, "", url.toString() ? `?${url}` : location.pathname);
}

function header() {
  const row = $("runs-head");
  row.replaceChildren(el("th", { title: "select to compare" }, ""));
  const sortable = (label, sort) => {
    const th = el("th", { class: "sortable", text: label, "data-sort": sort });
    if (state.sort === sort) th.classList.add("sorted", state.order);
    th.addEventListener("click", () => {
      state.order = state.sort === sort && state.order === "desc" ? "asc" : "desc";
      state.sort = sort;
      state.offset = 0;
      refresh();
    });
    return th;
  };
  for (const [label, sort] of COLUMNS) row.append(sortable(label, sort));
  for (const key of state.metrics) row.append(sortable(key, `metric:${key}`));
}

function runRow(run) {
  const check = el("input", { type: "checkbox", "aria-label": `select ${run.run_id}` });
  check.checked = selected.has(run.run_id);
  check.addEventListener("change", () => {
    if (check.checked) selected.add(run.run_id); else selected.delete(run.run_id);
    $("compare").disabled = selected.size === 0;
  });
  const status = el("td", { class: "status-cell" }, statusBadge(run.status));
  if (run.status === "running") {
    const bar = progressBar(run.progress ?? 0);
    bars.set(run.dir, bar);
    status.append(el("div", { class: "progress-cell" }, bar));
  }
  if (run.error) status.append(el("div", { class: "err-text", text: run.error }));
  if (run.problems.length) {
    status.append(" ", el("span", { class: "badge problem", title: run.problems.join("\n"), text: `${run.problems.length} problem${run.problems.length > 1 ? "s" : ""}` }));
  }
  const row = el("tr", { "data-run": run.run_id, "data-dir": run.dir },
    el("td", {}, check),
    el("td", {}, el("a", { href: `/runs/${encodeURIComponent(run.run_id)}`, text: run.run_id })),
    status,
    el("td", { text: run.plugin ?? "" }),
    el("td", { text: run.action ?? "" }),
    el("td", { text: run.job_id ?? "" }),
    el("td", { text: fmtTime(run.started_at) }),
    el("td", { class: "num", text: fmtDuration(run.duration), "data-running-since": run.status === "running" ? run.started_at : null }),
  );
  for (const key of state.metrics) row.append(el("td", { class: "num", text: fmtValue(run.metrics[key]) }));
  return row;
}

async function refresh() {
  saveState();
  header();
  const ticket = {};
  loading = ticket;
  try {
    const page = await api("/api/runs", {
      q: state.q, status: state.status, sort: state.sort, order: state.order,
      offset: state.offset, limit: state.limit, metric: state.metrics,
    });
    if (loading !== ticket) return;
    showError($("error"), null);
    bars = new Map();
    $("runs-body").replaceChildren(...page.runs.map(runRow));
    if (!page.runs.length) {
      $("runs-body").append(el("tr", {}, el("td", { colspan: 8 + state.metrics.length, class: "muted", text: state.q || state.status ? "No run matches the filter." : "No runs in this folder yet." })));
    }
    const last = Math.min(page.offset + page.runs.length, page.total);
    $("page-info").textContent = page.total ? `${(page.offset + 1).toLocaleString("en-US")}–${last.toLocaleString("en-US")} of ${page.total.toLocaleString("en-US")} runs` : "0 runs";
    $("prev").disabled = page.offset === 0;
    $("next").disabled = last >= page.total;
    const problems = $("problems");
    const notes = [...(page.notice ? [page.notice] : []), ...(page.problems.length ? [`Left out of the list:\n${page.problems.join("\n")}`] : [])];
    problems.hidden = !notes.length;
    problems.textContent = notes.join("\n");
    markLoaded();
  } catch (error) {
    showError($("error"), error);
  }
}

async function loadKeys() {
  try {
    const { keys } = await api("/api/metric-keys");
    if (!state.chosenMetrics) state.metrics = keys.slice(0, 3).map((k) => k.key);
    const list = $("column-list");
    list.replaceChildren();
    if (!keys.length) list.append(el("span", { class: "muted", text: "no metrics yet" }));
    for (const { key, runs } of keys) {
      const box = el("input", { type: "checkbox", value: key });
      box.checked = state.metrics.includes(key);
      box.addEventListener("change", () => {
        state.chosenMetrics = true;
        state.metrics = [...list.querySelectorAll("input:checked")].map((b) => b.value).slice(0, 12);
        refresh();
      });
      list.append(el("label", {}, box, ` ${key} `, el("span", { class: "muted", text: `(${runs})` })));
    }
  } catch (error) {
    showError($("error"), error);
  }
}

$("filter").value = state.q;
$("status").value = state.status;
$("filter").addEventListener("input", debounce(() => { state.q = $("filter").value.trim(); state.offset = 0; refresh(); }, 250));
$("status").addEventListener("change", () => { state.status = $("status").value; state.offset = 0; refresh(); });
$("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); refresh(); });
$("next").addEventListener("click", () => { state.offset += state.limit; refresh(); });
$("compare").disabled = selected.size === 0;
$("compare").addEventListener("click", () => {
  const url = new URLSearchParams();
  for (const id of selected) url.append("run", id);
  location.href = `/compare?${url}`;
});

// A running run's duration counts up between the server's answers.
setInterval(() => {
  for (const cell of document.querySelectorAll("[data-running-since]")) {
    cell.textContent = fmtDuration((Date.now() - Date.parse(cell.dataset.runningSince)) / 1000);
  }
}, 1000);

// Live: a progress record moves its bar in place; a status change (a run started,
// ended) asks the server for the page again, keeping filter, sort, page and selection.
const again = debounce(refresh, 500);
follow(null, (records) => {
  for (const record of records) {
    if (record.stream === "status") { again(); continue; }
    const bar = bars.get(record.run);
    if (bar && record.stream === "progress") setProgress(bar, record.overall ?? record.percent, "running");
  }
}, again);

await loadKeys();
await refresh();
