"""The viewer in a real browser: Playwright driving Debian's chromium.

Every request that would leave 127.0.0.1 is blocked and counted (the page must work
without them, and there must be none); a script error on a page fails its test.
Screenshots go to the test's tmp_path (`--basetemp` to keep them).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from runstore import open_run

from .conftest import Server, serving

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


class Tab:
    """A page of its own browser context, with what it tried to reach outside."""

    def __init__(self, browser: Any, shots: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.shots = shots
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.requests.append(request.url))

    def _route(self, route: Any) -> None:
        url = route.request.url
        host = urlparse(url).hostname
        if url.startswith("data:") or host == "127.0.0.1":
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def open(self, url: str) -> Any:
        self.page.goto(url)
        return self.page

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: Any, tmp_path: Path) -> Iterator[Tab]:
    opened = Tab(browser, tmp_path)
    yield opened
    opened.close()
    assert opened.outside == [], "requests left 127.0.0.1"
    assert opened.errors == [], "script errors on the page"


# Waits poll from Python: Playwright's wait_for_function evaluates text, which the
# viewer's Content-Security-Policy forbids (as it should).
def _until(check: Any, what: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _loaded(page: Any, at_least: int = 1) -> None:
    _until(
        lambda: int(page.locator("body").get_attribute("data-loaded") or 0) >= at_least,
        "the page's data",
    )


def _points(page: Any, key: str = "loss") -> int:
    chart = page.locator(f".chart[data-key={key}][data-drawn='1']")
    chart.wait_for(timeout=15_000)
    return int(chart.get_attribute("data-points"))


def test_runs_page_to_a_run_with_its_charts(tab: Tab, sample_server: Server) -> None:
    page = tab.open(sample_server.base + "/")
    _loaded(page)
    rows = page.locator("#runs-body tr")
    assert rows.count() == 4
    assert page.locator("#runs-body [data-status=failed]").count() == 1
    assert "failed to upload" in page.locator("#runs-body .err-text").inner_text()
    tab.shot("runs")
    page.get_by_role("link", name="demo-train").click()
    page.wait_for_url("**/runs/demo-train")
    _loaded(page)
    chart = page.locator(".chart[data-key=loss]")
    assert _points(page) == 200  # short: every point
    assert "all 200 points" in chart.inner_text()
    assert page.locator("#steps tr").count() == 3
    assert page.locator("#overall-percent").inner_text() == "100.0%"
    assert page.locator("#messages li").count() == 4
    assert page.locator("#messages li.success").count() == 1
    page.locator("#dev-events").check()
    _until(lambda: page.locator("#messages li").count() == 9, "dev events")
    images = page.locator("#images img")
    assert images.count() == 2
    _until(lambda: images.evaluate_all("all => all.every(i => i.naturalWidth === 96)"), "images")
    assert page.locator("#env").inner_text().count("***") == 1
    tab.shot("run")


@pytest.fixture(scope="module")
def long_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("long")
    with open_run(root, run_id="long", plugin="bench") as ctx:
        for step in range(200_000):
            ctx.set_metrics({"loss": 50.0 if step == 123_457 else 1.0 / (1 + step / 1000)}, "train")
        ctx.end_log()
    return root


def test_a_long_series_is_thinned_and_zoom_asks_the_server_again(tab: Tab, long_root: Path) -> None:
    with serving(long_root) as server:
        page = tab.open(server.base + "/runs/long")
        chart = page.locator(".chart[data-key=loss]")
        drawn = _points(page)
        assert 100 < drawn < 4 * 1300, drawn
        assert "of 200,000 points (min/max kept)" in chart.inner_text()
        assert chart.get_attribute("data-y-max") == "50"  # the one spike survives thinning
        over = chart.locator(".u-over")
        box = over.bounding_box()
        assert box is not None
        before = len(tab.requests)
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] * 0.30, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.32, y, steps=5)
        page.mouse.up()
        page.locator(".chart[data-key=loss][data-zoom-fetches='1']").wait_for()
        asked = [url for url in tab.requests[before:] if "/api/series" in url]
        assert asked and "lo=" in asked[-1] and "hi=" in asked[-1]
        _until(lambda: _points(page) > drawn, "the zoomed points")
        tab.shot("zoomed")
        over.dblclick()  # zoomed out: the overview again, with no new request
        _until(lambda: _points(page) == drawn, "the overview again")
        assert chart.get_attribute("data-zoom-fetches") == "1"


_LIVE_JOB = """
import sys, time
from runstore import open_run
with open_run(sys.argv[1], run_id="live", plugin="live-demo", action="train") as ctx:
    for step in range(1, 61):
        ctx.set_metrics({"loss": 1.0 / step}, "train")
        ctx.set_progress(step, 60, "train")
        if step == 30:
            ctx.log_message("halfway there", "success")
        time.sleep(0.1)
    ctx.end_log()
"""


def test_live_records_arrive_in_place_and_the_end_shows_without_reload(
    tab: Tab, browser: Any, tmp_path: Path
) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    with serving(root) as server:
        runs_tab = Tab(browser, tmp_path)
        try:
            runs_page = runs_tab.open(server.base + "/")
            _loaded(runs_page)
            job = subprocess.Popen(
                [sys.executable, "-c", textwrap.dedent(_LIVE_JOB), str(root)],
                stderr=subprocess.PIPE,
            )
            deadline = time.monotonic() + 20
            while not (root / "live" / "run.json").exists():
                assert time.monotonic() < deadline, "the job did not start"
                time.sleep(0.05)
            # The runs page learns of the new run by itself, running.
            runs_page.locator("#runs-body tr[data-run=live] [data-status=running]").wait_for(
                timeout=15_000
            )
            bar = runs_page.locator("#runs-body tr[data-run=live] [role=progressbar]")
            _until(lambda: float(bar.get_attribute("aria-valuenow") or 0) > 10, "live progress")
            runs_tab.shot("runs-live")
            page = tab.open(server.base + "/runs/live")
            page.evaluate("window.__sameDocument = true")
            first = _points(page)
            _until(lambda: _points(page) > first, "live points")
            page.locator("#messages li.success", has_text="halfway there").wait_for(timeout=15_000)
            page.locator("#run-status [data-status=completed]").wait_for(timeout=20_000)
            assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
            assert job.wait(timeout=20) == 0
            _until(lambda: _points(page) == 60, "every point of the run")
            # Following new points is no zoom: the chart never asked for a range.
            assert page.locator(".chart[data-key=loss]").get_attribute("data-zoom-fetches") == "0"
            assert page.locator("#messages li", has_text="halfway there").count() == 1
            tab.shot("live-ended")
            runs_page.locator("#runs-body tr[data-run=live] [data-status=completed]").wait_for(
                timeout=15_000
            )
            assert runs_tab.outside == [] and runs_tab.errors == []
        finally:
            runs_tab.close()


def test_sql_page_shows_rows_and_errors_as_messages(tab: Tab, sample_server: Server) -> None:
    page = tab.open(sample_server.base + "/sql")
    page.locator("#query").fill("SELECT run_id, status FROM runs ORDER BY run_id")
    page.get_by_role("button", name="Run (Ctrl+Enter)").click()
    _loaded(page)
    assert page.locator("#result tbody tr").count() == 4
    assert page.locator("#result tbody tr").first.inner_text().startswith("demo-crashed")
    page.locator("#query").fill("COPY runs TO '/tmp/stolen.csv'")
    page.locator("#query").press("Control+Enter")
    _loaded(page, 2)
    error = page.locator("#error")
    assert error.is_visible() and "refused" in error.inner_text()
    assert page.locator("#result tr").count() == 0
    assert not Path("/tmp/stolen.csv").exists()
    tab.shot("sql-error")
    page.reload()  # the query is in the address: a reload runs it again
    _loaded(page)
    assert "refused" in page.locator("#error").inner_text()


def test_compare_two_selected_runs(tab: Tab, sample_server: Server) -> None:
    page = tab.open(sample_server.base + "/")
    _loaded(page)
    page.get_by_label("select demo-train").check()
    page.get_by_label("select demo-export").check()
    page.get_by_role("button", name="Compare selected").click()
    page.wait_for_url("**/compare?*")
    _loaded(page)
    assert page.locator("#compared tbody tr").count() == 2
    params = page.locator("#params tbody tr[data-param]")
    assert params.count() == 4  # batch_size, epochs, format, model
    page.locator("#diff-only").check()
    assert page.locator("#params tbody tr[data-param]").count() == 4  # every one differs
    assert "0.13" in page.locator("#stats").inner_text()  # train / loss, last
    assert _points(page) == 200
    tab.shot("compare")


_BURST_JOB = """
import sys, time
from runstore import WriterOptions, open_run
with open_run(sys.argv[1], run_id="burst", options=WriterOptions(flush_interval=0.02)) as ctx:
    ctx.set_metrics({"loss": 1.0}, "train")
    while not (ctx.run_dir / "go").exists():  # until the page shows the chart
        time.sleep(0.05)
    for step in range(30_000):
        ctx.set_metrics({"loss": 77.0 if step == 12_345 else 1.0 / (2 + step)}, "train")
        if step % 1000 == 0:
            time.sleep(0.05)
    ctx.end_log()
"""


def test_live_points_are_thinned_in_the_page_and_keep_their_spike(tab: Tab, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    with serving(root) as server:
        job = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_BURST_JOB), str(root)])
        try:
            _until(lambda: (root / "burst" / "run.json").exists(), "the job")
            page = tab.open(server.base + "/runs/burst")
            assert _points(page) >= 1
            (root / "burst" / "go").touch()
            page.locator("#run-status [data-status=completed]").wait_for(timeout=30_000)
            assert job.wait(timeout=30) == 0
            chart = page.locator(".chart[data-key=loss]")
            _until(lambda: "30,001" in chart.inner_text(), "every point counted")
            drawn = _points(page)
            width = int(page.evaluate("document.querySelector('.chart .chart-body').clientWidth"))
            assert drawn < 30_001 and drawn <= 8 * width + 4 * width  # thinned
            assert chart.get_attribute("data-y-max") == "77"  # the spike was kept
        finally:
            job.kill()
