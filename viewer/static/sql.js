// The SQL page: a confined query over the store's views; errors shown, never a broken page.
import { api, el, markLoaded, showError } from "./common.js";

const $ = (id) => document.getElementById(id);

async function run(query) {
  $("sql-info").textContent = "running…";
  const started = performance.now();
  try {
    const result = await api("/api/sql", { q: query });
    showError($("error"), null);
    const head = el("tr", {}, ...result.columns.map((c) => el("th", { title: c.type, text: c.name })));
    const rows = result.rows.map((row) => el("tr", {}, ...row.map((value) => el("td", {
      class: typeof value === "number" ? "num" : "mono",
      text: value === null ? "NULL" : typeof value === "object" ? JSON.stringify(value) : String(value),
    }))));
    $("result").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
    const ms = Math.round(performance.now() - started);
    $("sql-info").textContent = `${result.rows.length.toLocaleString("en-US")} row${result.rows.length === 1 ? "" : "s"}` +
      `${result.truncated ? ` (more rows exist: only the first ${result.rows.length.toLocaleString("en-US")} are shown; add a LIMIT or WHERE)` : ""}, ${ms} ms`;
  } catch (error) {
    $("result").replaceChildren();
    $("sql-info").textContent = "";
    showError($("error"), error);
  }
  markLoaded();
}

$("sql-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = $("query").value;
  history.replaceState(null, "", `/sql?q=${encodeURIComponent(query)}`);
  run(query);
});
$("query").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("sql-form").requestSubmit();
});
if (new URLSearchParams(location.search).has("q")) run($("query").value);
