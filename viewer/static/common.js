// Helpers every page uses. Run data is untrusted: text goes in with textContent only.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export async function api(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params)) {
    if (value === null || value === undefined || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) url.searchParams.append(name, item);
  }
  let response;
  try {
    response = await fetch(url, { headers: { accept: "application/json" } });
  } catch (error) {
    throw new Error(`the viewer's server did not answer (${error.message}); is runstore ui still running?`);
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new Error(`the server answered ${response.status} without JSON`);
  }
  if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
  return body;
}

export function showError(node, error) {
  if (!node) return;
  if (!error) { node.hidden = true; node.textContent = ""; return; }
  node.hidden = false;
  node.textContent = error.message || String(error);
}

export function fmtTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || typeof seconds !== "number") return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h ${String(m).padStart(2, "0")}m` : `${m}m ${String(r).padStart(2, "0")}s`;
}

export function fmtValue(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return value.toLocaleString("en-US");
    const abs = Math.abs(value);
    return abs !== 0 && (abs < 1e-3 || abs >= 1e6) ? value.toExponential(4) : value.toPrecision(5).replace(/\.?0+$/, "");
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export function statusBadge(status) {
  return el("span", { class: `badge ${status}`, "data-status": status, text: status });
}

export function progressBar(percent, status = "running") {
  const width = Math.max(0, Math.min(100, Number(percent) || 0));
  const bar = el("div", { class: `bar ${status}`, role: "progressbar", "aria-valuenow": width.toFixed(1), "aria-valuemin": 0, "aria-valuemax": 100 });
  const fill = el("span");
  fill.style.width = `${width}%`;
  bar.append(fill);
  return bar;
}

export function setProgress(bar, percent, status) {
  const width = Math.max(0, Math.min(100, Number(percent) || 0));
  bar.className = `bar ${status || "running"}`;
  bar.setAttribute("aria-valuenow", width.toFixed(1));
  bar.firstChild.style.width = `${width}%`;
}

export function kvTable(table, object) {
  table.replaceChildren();
  const entries = object && typeof object === "object" ? Object.entries(object) : [];
  if (!entries.length) {
    table.append(el("tr", {}, el("td", { class: "muted", text: "none" })));
    return;
  }
  for (const [key, value] of entries) {
    table.append(el("tr", {}, el("th", { text: key }), el("td", { class: "mono", text: fmtValue(value) })));
  }
}

// Counts the times a page has rendered what it fetched: the browser tests wait on it.
export function markLoaded() {
  document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

// Server-sent records: `dir` one run's folder, or null for every run's status and progress.
// A hidden tab lets its stream go (a browser keeps only six connections to a server,
// and each open stream holds one) and, shown again, fetches afresh (`onResync`).
export function follow(dir, onRecords, onResync) {
  const state = document.getElementById("live-state");
  const url = dir ? `/api/live?dir=${encodeURIComponent(dir)}` : "/api/live";
  let source = null;
  let opened;
  const ready = new Promise((resolve) => { opened = resolve; });
  const show = (text, off) => {
    if (!state) return;
    state.hidden = false;
    state.className = off ? "live-state off" : "live-state";
    state.textContent = text;
  };
  const open = () => {
    source = new EventSource(url);
    source.addEventListener("ready", () => { show("live", false); opened(); });
    source.addEventListener("records", (event) => onRecords(JSON.parse(event.data)));
    source.addEventListener("resync", () => onResync && onResync());
    source.onerror = () => show("reconnecting", true);
  };
  document.addEventListener("visibilitychange", () => {
    if (document.hidden && source) {
      source.close();
      source = null;
      show("paused", true);
    } else if (!document.hidden && !source) {
      open();
      if (onResync) onResync();
    }
  });
  if (!document.hidden) open();
  // `ready` resolves once the stream is open: history read after it misses nothing.
  return { ready, close: () => { if (source) source.close(); source = null; } };
}

export const PALETTE = ["#2f6fdb", "#e4572e", "#1f8a4c", "#9c4dcc", "#d69e2e", "#17a2b8", "#c2185b", "#5d6d7e", "#8bc34a", "#795548"];
