// Metric charts on uPlot: M4-thinned history from the server, asked again on zoom,
// live points appended in place and thinned the same way here.
import { el, fmtValue } from "./common.js";

// The same thinning as the server's: per bucket of x, the first, last, lowest and
// highest point; series up to 4 points a bucket stay whole.
export function m4(xs, ys, buckets) {
  const n = xs.length;
  if (n <= 4 * buckets) return [xs, ys];
  const lo = xs[0], span = (xs[n - 1] - lo) || 1;
  const keep = [];
  let bucket = -1, first = 0, last = 0, min = -1, max = -1;
  const flush = () => {
    if (bucket < 0) return;
    const picked = [first, min, max, last].filter((i) => i >= 0).sort((a, b) => a - b);
    for (const i of picked) if (keep[keep.length - 1] !== i) keep.push(i);
  };
  for (let i = 0; i < n; i++) {
    const b = Math.min(Math.floor(((xs[i] - lo) / span) * buckets), buckets - 1);
    if (b !== bucket) { flush(); bucket = b; first = i; min = -1; max = -1; }
    last = i;
    const y = ys[i];
    if (y !== null && Number.isFinite(y)) {
      if (min < 0 || y < ys[min]) min = i;
      if (max < 0 || y > ys[max]) max = i;
    }
  }
  flush();
  return [keep.map((i) => xs[i]), keep.map((i) => ys[i])];
}

// Live points are drawn at most this often (ms): smooth, and cheap with many charts.
const LIVE_DRAW_MS = 100;

// seq: the writer's record number, which orders a run's calls as the job made them.
// The y axis as wide as its longest label (0.01625 would be cut at a fixed width).
const labelWidth = (u, values) => Math.max(48, 16 + 7 * Math.max(0, ...(values || []).map((v) => String(v).length)));

const X_LABELS = { seq: "seq", ts: "time", elapsed: "seconds since start" };

// One chart: `series` is a list of {label, color, load(lo, hi, buckets)} where load
// resolves to the server's {x, y, total, exact}.
export class MetricChart {
  constructor(container, { title, series, xAxis = "seq", log = false }) {
    this.series = series;
    this.xAxis = xAxis;
    this.log = log;
    this.overview = series.map(() => ({ x: [], y: [] }));
    this.detail = null;
    this.totals = series.map(() => 0);
    this.zoomFetches = 0;
    this.plot = null;
    this.pendingDraw = false;
    this.programmatic = false;
    this.node = el("div", { class: "chart", "data-title": title });
    this.note = el("span", { class: "chart-note" });
    this.error = el("div", { class: "chart-error" });
    this.body = el("div", { class: "chart-body" });
    this.node.append(el("div", { class: "chart-title" }, el("span", { text: title }), this.note), this.error, this.body);
    container.append(this.node);
    // Drawn when it scrolls into view: a run of 300 keys costs the charts on screen.
    this.visible = new IntersectionObserver((entries) => {
      if (entries.some((entry) => entry.isIntersecting)) { this.visible.disconnect(); this.load(); }
    }, { rootMargin: "200px" });
    this.visible.observe(this.node);
  }

  buckets() {
    return Math.max(50, Math.round(this.body.clientWidth || 400));
  }

  async load() {
    try {
      const results = await Promise.all(this.series.map((s) => s.load(null, null, this.buckets())));
      results.forEach((result, i) => {
        // Live points that arrived while the history was on its way, and are newer
        // than it, stay: the history was read before they were written.
        const last = result.x.length ? result.x[result.x.length - 1] : -Infinity;
        const live = this.overview[i];
        const x = result.x.slice(), y = result.y.slice();
        for (let j = 0; j < live.x.length; j++) if (live.x[j] > last) { x.push(live.x[j]); y.push(live.y[j]); }
        this.overview[i] = { x, y };
        this.totals[i] = result.total + (x.length - result.x.length);
      });
      this.detail = null;
      this.draw(true);
    } catch (error) {
      this.error.textContent = error.message;
    }
  }

  data() {
    const parts = this.overview.map((part, i) => {
      const zoom = this.detail && this.detail[i];
      if (!zoom) return part;
      // Outside the zoomed range the overview, inside it the finer points.
      const x = [], y = [];
      for (let j = 0; j < part.x.length && part.x[j] < zoom.lo; j++) { x.push(part.x[j]); y.push(part.y[j]); }
      for (let j = 0; j < zoom.x.length; j++) { x.push(zoom.x[j]); y.push(zoom.y[j]); }
      for (let j = 0; j < part.x.length; j++) if (part.x[j] > zoom.hi) { x.push(part.x[j]); y.push(part.y[j]); }
      return { x, y };
    });
    const fix = (ys) => (this.log ? ys.map((v) => (v !== null && v > 0 ? v : null)) : ys);
    if (parts.length === 1) return [parts[0].x, fix(parts[0].y)];
    const joined = uPlot.join(parts.map((p) => [p.x, p.y]));
    return [joined[0], ...joined.slice(1).map(fix)];
  }

  options(width) {
    return {
      width,
      height: 240,
      scales: { x: { time: this.xAxis === "ts" }, y: { distr: this.log ? 3 : 1 } },
      axes: [{ label: X_LABELS[this.xAxis], size: 40 }, { size: labelWidth, values: (u, ticks) => ticks.map(fmtValue) }],
      series: [
        { label: X_LABELS[this.xAxis], value: (u, v) => (v === null ? "" : this.xAxis === "ts" ? new Date(v * 1000).toISOString().replace("T", " ").slice(0, 23) : fmtValue(v)) },
        ...this.series.map((s) => ({ label: s.label, stroke: s.color, width: 1.5, spanGaps: true, value: (u, v) => fmtValue(v) })),
      ],
      cursor: { drag: { x: true, y: false }, sync: { key: null } },
      hooks: { setScale: [(u, key) => { if (key === "x" && !this.programmatic) this.scaled(u); }] },
    };
  }

  draw(resetScales) {
    const data = this.data();
    this.note.textContent = this.describe(data[0].length);
    this.node.dataset.points = String(data[0].length);
    let top = -Infinity;
    for (const ys of data.slice(1)) for (const y of ys) if (y !== null && y > top) top = y;
    this.node.dataset.yMax = String(top);
    this.node.dataset.zoomFetches = String(this.zoomFetches);
    const last = data[1].length ? data[1][data[1].length - 1] : null;
    this.node.dataset.lastY = last === null ? "" : String(last);
    const started = performance.now();
    this.programmatic = true;
    try {
      if (!this.plot) {
        this.plot = new uPlot(this.options(this.body.clientWidth || 400), data, this.body);
        new ResizeObserver(() => this.plot.setSize({ width: this.body.clientWidth, height: 240 })).observe(this.body);
      } else {
        this.plot.setData(data, resetScales);
      }
    } finally {
      this.programmatic = false;
    }
    // What a draw cost (benchmarks/bench_viewer.py reads it), and that one happened.
    this.node.dataset.drawMs = (performance.now() - started).toFixed(2);
    this.node.dataset.drawn = "1";
  }

  describe(drawn) {
    const total = this.totals.reduce((a, b) => a + b, 0);
    if (!total) return "no points";
    return drawn >= total ? `all ${total.toLocaleString("en-US")} points` :
      `${drawn.toLocaleString("en-US")} of ${total.toLocaleString("en-US")} points (min/max kept)`;
  }

  // The x scale changed. uPlot may report it after later live points were added, so
  // it is compared with the data the plot holds: all of it shown is no zoom (a reset,
  // or new points followed), less is the user's zoom.
  scaled(u) {
    const xs = u.data[0];
    if (!xs || !xs.length) return;
    const lo = u.scales.x.min, hi = u.scales.x.max;
    if (lo <= xs[0] && hi >= xs[xs.length - 1]) {
      clearTimeout(this.zoomTimer);
      if (this.detail) { this.detail = null; this.draw(false); }
      return;
    }
    this.zoomed(lo, hi);
  }

  zoomed(lo, hi) {
    clearTimeout(this.zoomTimer);
    this.zoomTimer = setTimeout(async () => {
      const ticket = (this.zoomTicket = (this.zoomTicket || 0) + 1);
      try {
        this.zoomFetches += 1;
        const results = await Promise.all(this.series.map((s) => s.load(lo, hi, this.buckets())));
        if (ticket !== this.zoomTicket) return;
        this.detail = results.map((r) => ({ lo, hi, x: r.x, y: r.y }));
        this.draw(false);
      } catch (error) {
        this.error.textContent = error.message;
      }
    }, 120);
  }

  // A live point of series `index`; drawn at most a few times a second.
  append(index, x, y) {
    const part = this.overview[index];
    if (!part || (part.x.length && x <= part.x[part.x.length - 1])) return;
    part.x.push(x);
    part.y.push(y !== null && Number.isFinite(y) ? y : null);
    this.totals[index] += 1;
    if (this.detail && this.detail[index] && x <= this.detail[index].hi) {
      this.detail[index].x.push(x); this.detail[index].y.push(part.y[part.y.length - 1]);
    }
    const limit = 8 * this.buckets();
    if (part.x.length > limit) {
      const [tx, ty] = m4(part.x, part.y, this.buckets());
      this.overview[index] = { x: tx, y: ty };
    }
    if (!this.plot || this.pendingDraw) return;
    this.pendingDraw = true;
    setTimeout(() => {
      this.pendingDraw = false;
      // Zoomed in: keep the user's range; otherwise follow the new points.
      this.draw(!this.detail);
    }, LIVE_DRAW_MS);
  }

  setOptions({ xAxis, log }) {
    this.xAxis = xAxis ?? this.xAxis;
    this.log = log ?? this.log;
    if (this.plot) { this.plot.destroy(); this.plot = null; }
    this.load();
  }
}
