"""The web viewer's speed: a real `runstore ui` process and headless Chromium.

Measured, medians, each beside a baseline from the same run:

- runs page over 1,000 and 10,000 finished runs (bench_query's runs: 1,000 steps of two
  metrics each), before and after `runstore compact`: the server's answer to
  `/api/runs` with a metric column, sorted by start and by the metric, against the same
  SQL asked of a `Store` in-process; and the page in Chromium from navigation to its
  rows drawn;
- one series of 1,000,000 points: `/api/series` (M4, one bucket a pixel of a 1,000 px
  chart) against fetching the whole series from a `Store`; the page's draw of it;
- live: a job logs a metric every 50 ms holding its own wall time; the page's chart
  takes the time the point was drawn (set_metrics -> flush -> tail -> SSE -> draw);
- 20 pages following a live run (20 browser contexts): the server's CPU, against one
  page and against none.

    .venv/bin/python benchmarks/bench_viewer.py [--runs 1000,10000] [--repeats 7]
        [--data DIR] [--pages 20] [--points 1000000] [--skip-runs] [--skip-live]

Targets (issue 15): runs answer < 200 ms and page usable < 1 s at 1,000 and 10,000 runs;
1M-point series < 150 ms at the server and drawn < 100 ms; live p50 < 300 ms, p99 < 1 s;
20 pages following a live run < 25% of one core.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_query import make_store

from runstore import Store, open_run

CHROMIUM = "/usr/bin/chromium"
RUNS_URL = "/api/runs?metric=loss&metric=accuracy"
SORTED_URL = "/api/runs?metric=loss&metric=accuracy&sort=metric:loss&order=asc"


@contextmanager
def serving(root: Path) -> Iterator[tuple[str, int]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "runstore", "ui", str(root), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"at (http://\S+?)/ ", line)
    if found is None:
        process.kill()
        raise SystemExit(f"runstore ui did not start: {line!r}")
    try:
        yield found.group(1), process.pid
    finally:
        process.terminate()
        process.wait(timeout=15)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as answer:
        data: bytes = answer.read()
        return data


def median_ms(action: Callable[[], object], repeats: int) -> float:
    action()  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def line(name: str, value: float, unit: str = "ms", baseline: float | None = None) -> None:
    ratio = f"   {value / baseline:6.2f}x the baseline" if baseline else ""
    print(f"  {name:<58} {value:9.1f} {unit}{ratio}", flush=True)


def _page_ready_ms(browser: Any, url: str, repeats: int) -> float:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    times = []
    for index in range(repeats + 1):
        start = time.perf_counter()
        page.goto(url)
        page.locator("body[data-loaded='1'] #runs-body tr").first.wait_for(timeout=60_000)
        if index:  # the first load fills the browser's cache
            times.append(time.perf_counter() - start)
    context.close()
    return statistics.median(times) * 1000


def _archived(base_url: str, timeout: float = 600) -> float:
    """Seconds until the server's background archiving has run once."""
    start = time.perf_counter()
    while orjson.loads(fetch(base_url + "/api/status"))["archive"]["compactions"] < 1:
        if time.perf_counter() - start > timeout:
            raise SystemExit("the viewer did not archive the root")
        time.sleep(0.2)
    return time.perf_counter() - start


def bench_runs(data: Path, sizes: list[int], repeats: int, browser: Any) -> None:
    query = "SELECT r.run_id FROM runs r ORDER BY r.started_at DESC LIMIT 50"
    for runs in sizes:
        root = data / f"runs-{runs}"
        made = make_store(root, runs)
        shutil.rmtree(root / ".runstore", ignore_errors=True)  # as jobs leave it
        print(
            f"\n{runs:,} runs, never compacted ({f'made in {made:.0f} s' if made else 'reused'}):"
        )
        with serving(root) as (base_url, _):
            start = time.perf_counter()
            fetch(base_url + RUNS_URL)
            first = (time.perf_counter() - start) * 1000
            archiving = _archived(base_url) * 1000
            answer = median_ms(lambda u=base_url: fetch(u + RUNS_URL), repeats)
            by_metric = median_ms(lambda u=base_url: fetch(u + SORTED_URL), repeats)
            page = _page_ready_ms(browser, base_url + "/", max(3, repeats // 2))
        with Store(root, confined=True) as store:
            base = median_ms(lambda store=store: store.query(query), repeats)
        line("Store.query, a page of 50 runs, archived (baseline)", base)
        line("/api/runs, first request of a fresh server", first, baseline=base)
        line("the server's background archiving, done after", archiving)
        line("/api/runs, 50 runs + 2 metric columns, warm", answer, baseline=base)
        line("/api/runs sorted by a metric, warm", by_metric, baseline=base)
        line("runs page in Chromium, navigation to rows", page)


def _series_run(root: Path, points: int) -> None:
    if (root / "million" / "run.json").exists():
        return
    with open_run(root, run_id="million", plugin="bench") as ctx:
        for step in range(points):
            ctx.set_metrics({"loss": 1.0 / (1 + step / 1000) + (step % 997 == 0)}, "train")
        ctx.end_log()


def bench_series(data: Path, repeats: int, browser: Any, points: int) -> None:
    root = data / f"series-{points}"
    root.mkdir(parents=True, exist_ok=True)
    _series_run(root, points)
    print(f"\none series of {points:,} points:")
    with Store(root, confined=True) as store:
        whole = median_ms(
            lambda: store.query(
                "SELECT seq, value FROM metrics WHERE run_id = 'million' AND key = 'loss'",
                max_rows=2_000_000,
            ),
            repeats,
        )
    with serving(root) as (base_url, _):
        url = base_url + "/api/series?run=million&key=loss&category=train&buckets=1000"
        answer = median_ms(lambda: fetch(url), repeats)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        draws = []
        for _ in range(max(3, repeats // 2)):
            page.goto(base_url + "/runs/million")
            chart = page.locator(".chart[data-key=loss][data-drawn='1']")
            chart.wait_for(timeout=60_000)
            draws.append(float(chart.get_attribute("data-draw-ms") or "nan"))
            points = int(chart.get_attribute("data-points") or 0)
        context.close()
    line("Store.query of the whole series (baseline)", whole)
    line("/api/series, M4 for a 1,000 px chart", answer, baseline=whole)
    line(f"chart draw in Chromium ({points:,} points)", statistics.median(draws))


_LIVE_JOB = """
import sys, time
from runstore import open_run
with open_run(sys.argv[1], run_id=sys.argv[2], plugin="live") as ctx:
    end = time.time() + float(sys.argv[3])
    step = 0
    while time.time() < end:
        step += 1
        ctx.set_metrics({"sent": time.time(), "loss": 1 / step}, "train")
        ctx.set_progress(step % 100 + 1, 101, "train")
        time.sleep(float(sys.argv[4]))
    ctx.end_log()
"""

_PROBE = """() => new Promise((resolve) => {
  const chart = document.querySelector(".chart[data-key=sent]");
  window.__latency = [];
  new MutationObserver(() => {
    const sent = Number(chart.dataset.lastY);
    if (sent) window.__latency.push(Date.now() / 1000 - sent);
  }).observe(chart, { attributes: true, attributeFilter: ["data-last-y"] });
  resolve(true);
})"""


def _start_job(root: Path, run_id: str, seconds: float, pause: float) -> subprocess.Popen[bytes]:
    job = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(_LIVE_JOB),
            str(root),
            run_id,
            str(seconds),
            str(pause),
        ]
    )
    deadline = time.monotonic() + 30
    while not (root / run_id / "run.json").exists():
        if time.monotonic() > deadline:
            raise SystemExit("the live job did not start")
        time.sleep(0.02)
    return job


def _drawn(tab: Any) -> int:
    return int(tab.locator(".chart[data-key=loss]").get_attribute("data-points") or 0)


def bench_live(data: Path, pages: int, browser: Any) -> None:
    with tempfile.TemporaryDirectory(dir=data) as scratch:
        root = Path(scratch)
        with serving(root) as (base_url, pid):
            job = _start_job(root, "live", 12, 0.05)
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(base_url + "/runs/live")
            page.locator(".chart[data-key=sent][data-drawn='1']").wait_for(timeout=30_000)
            page.evaluate(_PROBE)
            job.wait()
            time.sleep(0.5)
            latency = sorted(page.evaluate("window.__latency"))
            context.close()
        print(f"\nlive: a set_metrics call to its point drawn ({len(latency)} draws):")
        if latency:
            line("p50", statistics.median(latency) * 1000)
            line("p99", latency[min(len(latency) - 1, int(len(latency) * 0.99))] * 1000)

        print("\nserver CPU while a run logs 20 calls a second (10 s windows):")
        figures: dict[int, float] = {}
        for count in (0, 1, pages):
            run_id = f"cpu-{count}"
            with serving(root) as (base_url, pid):
                # Long enough for every page to open; ended (SIGTERM) after the window.
                job = _start_job(root, run_id, 300, 0.05)
                contexts = [browser.new_context() for _ in range(count)]
                tabs = []
                for context in contexts:
                    tab = context.new_page()
                    tab.goto(f"{base_url}/runs/{run_id}")
                    tab.locator(".chart[data-key=loss][data-drawn='1']").wait_for(timeout=60_000)
                    tabs.append(tab)
                time.sleep(1)
                points = [_drawn(tab) for tab in tabs]
                before, start = cpu_seconds(pid), time.perf_counter()
                time.sleep(10)
                figures[count] = (cpu_seconds(pid) - before) / (time.perf_counter() - start)
                # Every page really followed: its chart grew during the window.
                grew = sum(_drawn(tab) > was for tab, was in zip(tabs, points, strict=True))
                if grew != count:
                    raise SystemExit(f"only {grew} of {count} pages received live points")
                for context in contexts:
                    context.close()
                job.terminate()
                job.wait()
        line("no page open (baseline)", figures[0] * 100, "% of a core")
        line("one page following", figures[1] * 100, "% of a core")
        line(
            f"{pages} pages following",
            figures[pages] * 100,
            "% of a core",
            baseline=figures[1] * 100 or None,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="1000,10000", help="root sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--data", type=Path, help="keep generated roots here and reuse them")
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--points", type=int, default=1_000_000, help="of the one series")
    parser.add_argument("--skip-runs", action="store_true")
    parser.add_argument("--skip-live", action="store_true")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as scratch, sync_playwright() as playwright:
        data = args.data or Path(scratch)
        data.mkdir(parents=True, exist_ok=True)
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        print(f"runstore ui, {os.cpu_count()} cores; medians of {args.repeats}")
        if not args.skip_runs:
            bench_runs(data, [int(n) for n in args.runs.split(",") if n], args.repeats, browser)
        bench_series(data, args.repeats, browser, args.points)
        if not args.skip_live:
            bench_live(data, args.pages, browser)
        browser.close()


if __name__ == "__main__":
    main()
