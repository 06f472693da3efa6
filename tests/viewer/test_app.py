"""The viewer's server over real HTTP: pages, JSON, confined SQL, files, safety."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from runstore import open_run

from .conftest import Server, request, serving


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


# -- pages and the runs list -----------------------------------------------------------


def test_pages_are_html_with_local_assets_only(sample_server: Server) -> None:
    for path in ("/", "/runs/demo-train", "/compare?run=demo-train", "/sql"):
        answer = sample_server.get(path)
        assert answer.status == 200, path
        assert answer.headers["content-type"].startswith("text/html")
        page = answer.body.decode()
        assert "http://" not in page and "https://" not in page, path
        assert "default-src 'self'" in answer.headers["content-security-policy"]
    script = sample_server.get("/static/vendor/uPlot.iife.min.js")
    assert script.status == 200 and b"uPlot" in script.body


def test_runs_list_sorts_filters_and_pages_in_sql(sample_server: Server) -> None:
    page = sample_server.get("/api/runs").json()
    assert page["total"] == 4
    started = [run["started_at"] for run in page["runs"]]
    assert started == sorted(started, reverse=True)
    statuses = {run["run_id"]: run["status"] for run in page["runs"]}
    assert statuses == {
        "demo-train": "completed",
        "demo-export": "completed",
        "demo-upload": "failed",
        "demo-crashed": "crashed",
    }
    failed = next(run for run in page["runs"] if run["status"] == "failed")
    assert "failed to upload" in failed["error"]
    assert all(run["duration"] > 0 for run in page["runs"])

    only = sample_server.get("/api/runs?q=UPLOAD").json()
    assert [run["run_id"] for run in only["runs"]] == ["demo-upload"] and only["total"] == 1
    crashed = sample_server.get("/api/runs?status=crashed").json()
    assert [run["run_id"] for run in crashed["runs"]] == ["demo-crashed"]
    assert crashed["runs"][0]["progress"] == 50.0

    second = sample_server.get("/api/runs?sort=run&order=asc&limit=1&offset=1").json()
    assert second["total"] == 4 and [run["run_id"] for run in second["runs"]] == ["demo-export"]

    by_loss = sample_server.get("/api/runs?sort=metric:loss&order=asc&metric=loss").json()
    assert by_loss["runs"][0]["run_id"] == "demo-train"
    assert 0.1 < by_loss["runs"][0]["metrics"]["loss"] < 0.2
    assert by_loss["runs"][1]["metrics"] == {}  # no loss: sorted last


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sort=bogus", "sort 'bogus' is not one of"),
        ("status=sleeping", "status 'sleeping' is not one of"),
        ("limit=0", "limit 1 to 500"),
        ("offset=x", "offset must be a whole number"),
    ],
)
def test_runs_list_refuses_bad_parameters_with_a_message(
    sample_server: Server, query: str, message: str
) -> None:
    answer = sample_server.get(f"/api/runs?{query}")
    assert answer.status == 400 and message in answer.json()["error"]


def test_metric_keys_most_common_first(sample_server: Server) -> None:
    keys = [row["key"] for row in sample_server.get("/api/metric-keys").json()["keys"]]
    assert {"loss", "accuracy", "latency_ms", "exported"} <= set(keys)


# -- one run ---------------------------------------------------------------------------


def test_run_detail_has_steps_metrics_files_params_and_masked_env(
    sample_server: Server,
) -> None:
    detail = sample_server.get("/api/runs/demo-train").json()
    assert detail["run"]["status"] == "completed" and detail["overall"] == 100.0
    assert [step["category"] for step in detail["steps"]] == ["dataset", "train", "save_model"]
    assert all(step["percent"] == 100.0 for step in detail["steps"])
    keys = {(m["category"], m["key"]): m["points"] for m in detail["metrics"]}
    assert keys[("train", "loss")] == 200 and keys[("validation", "accuracy")] == 5
    assert detail["run"]["params"] == {"epochs": 5, "batch_size": 16, "model": "yolov8n"}
    assert detail["run"]["env"]["API_KEY"] == "***"
    events = {item["event"] for item in detail["attachments"]}
    assert events == {"checkpoint", "visualization"}
    assert detail["writers"][0]["status"] == "closed"
    assert detail["counts"]["messages"] == 4 and detail["counts"]["dev_events"] == 5
    missing = sample_server.get("/api/runs/no-such-run")
    assert missing.status == 404 and "no run 'no-such-run'" in missing.json()["error"]
    assert sample_server.get("/runs/no-such-run").status == 200  # the page says so itself


def test_messages_newest_first_filtered_by_level_and_dev_events(sample_server: Server) -> None:
    base = "/api/runs/demo-upload/messages"
    everything = sample_server.get(base).json()
    times = [m["ts"] for m in everything["messages"]]
    assert times == sorted(times, reverse=True)
    assert everything["messages"][0]["level"] == "danger"  # the step's failure, last
    assert {m["level"] for m in everything["messages"][1:]} == {"warning"}
    assert sample_server.get(f"{base}?level=info").json()["total"] == 0
    warnings = sample_server.get(f"{base}?level=warning&limit=2&offset=1").json()
    assert warnings["total"] == everything["total"] - 1 and len(warnings["messages"]) == 2
    assert warnings["messages"][0] == everything["messages"][2]
    train = "/api/runs/demo-train/messages"
    with_dev = sample_server.get(f"{train}?dev=1").json()
    assert with_dev["total"] == 4 + 5
    dev = [m for m in with_dev["messages"] if m["kind"] == "dev_event"]
    assert dev[0]["text"] == "epoch finished" and dev[0]["data"] == {"epoch": 5}
    only_dev = sample_server.get(f"{train}?dev=1&messages=0").json()
    assert only_dev["total"] == 5
    bad = sample_server.get(f"{train}?level=loud")
    assert bad.status == 400 and "level 'loud'" in bad.json()["error"]


def test_events_page_leaves_messages_out(sample_server: Server) -> None:
    page = sample_server.get("/api/runs/demo-upload/events").json()
    names = {event["event"] for event in page["events"]}
    assert "upload_failed" in names and "message" not in names and "dev_event" not in names
    failed = next(e for e in page["events"] if e["event"] == "upload_failed")
    assert failed["data"]["reason"] == "timeout"


def test_compare_gives_params_and_metric_stats(sample_server: Server) -> None:
    answer = sample_server.get("/api/compare?run=demo-train&run=demo-export").json()
    assert [run["run_id"] for run in answer["runs"]] == ["demo-train", "demo-export"]
    loss = next(row for row in answer["metrics"] if row["key"] == "loss")
    assert loss["run_id"] == "demo-train" and loss["min"] <= loss["last"] <= loss["max"]
    assert sample_server.get("/api/compare").status == 400
    assert sample_server.get("/api/compare?run=demo-train&run=ghost").status == 404


# -- series ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of 100,000 points with one spike, and a small one."""
    root = tmp_path_factory.mktemp("series")
    with open_run(root, run_id="long") as ctx:
        for step in range(100_000):
            ctx.set_metrics({"loss": 99.0 if step == 61_234 else 1.0 / (1 + step)}, "train")
        ctx.end_log()
    return root


def test_series_is_m4_thinned_keeping_spikes_first_and_last(long_run: Path) -> None:
    with serving(long_run) as server:
        url = "/api/series?run=long&key=loss&category=train&buckets=200"
        answer = server.get(url).json()
        assert answer["total"] == 100_000 and not answer["exact"]
        assert 200 <= len(answer["x"]) <= 800
        assert 99.0 in answer["y"]
        assert answer["y"][0] == 1.0 and answer["y"][-1] == pytest.approx(1 / 100_000)
        assert answer["x"] == sorted(answer["x"])
        assert server.get(url).json() == answer  # deterministic: the same on a refresh
        lo, hi = answer["x"][10], answer["x"][12]
        zoomed = server.get(f"{url}&lo={lo}&hi={hi}").json()
        assert zoomed["x"][0] >= lo and zoomed["x"][-1] <= hi
        assert zoomed["exact"] and len(zoomed["x"]) == zoomed["total"] > 2
        assert set(zoomed["x"]) > {x for x in answer["x"] if lo <= x <= hi}
        for axis in ("ts", "elapsed"):
            other = server.get(f"{url}&x={axis}").json()
            assert other["total"] == 100_000 and other["x"] == sorted(other["x"])
        assert server.get(f"{url}&x=wall").status == 400
        assert server.get(f"{url}&lo=nan").status == 400
        assert server.get("/api/series?run=long").status == 400


# -- the SQL page ----------------------------------------------------------------------


def test_sql_is_confined_capped_and_says_what_was_wrong(sample_server: Server) -> None:
    ok = sample_server.get("/api/sql?q=" + _q("SELECT run_id, 1, 1 FROM runs ORDER BY 1")).json()
    assert [c["name"] for c in ok["columns"]] == ["run_id", "1", "1"] and len(ok["rows"]) == 4
    assert ok["rows"][0] == ["demo-crashed", 1, 1] and not ok["truncated"]
    many = sample_server.get("/api/sql?q=" + _q("SELECT * FROM range(5000)")).json()
    assert len(many["rows"]) == 1000 and many["truncated"]
    nan = sample_server.get("/api/sql?q=" + _q("SELECT 'nan'::DOUBLE AS x")).json()
    assert nan["rows"] == [["nan"]]
    for query, message in [
        ("SELECT * FROM read_csv('/etc/passwd')", "refused"),
        ("COPY runs TO '/tmp/x.csv'", "refused"),
        ("SELECT nope FROM runs", "Binder Error"),
        ("", "write a query"),
    ]:
        answer = sample_server.get("/api/sql?q=" + _q(query))
        assert answer.status == 400, query
        assert message in answer.json()["error"], query


# -- safety ----------------------------------------------------------------------------


def test_only_get_and_only_the_local_host(sample_server: Server) -> None:
    assert request(sample_server.base + "/api/runs", method="POST").status == 405
    assert request(sample_server.base + "/api/runs", method="DELETE").status == 405
    rebinding = sample_server.get("/api/runs", headers={"Host": "evil.example:8417"})
    assert rebinding.status == 400
    assert sample_server.get("/", headers={"Host": "localhost"}).status == 200


def test_files_only_attachments_from_inside_the_run(
    sample_server: Server, sample_root: Path
) -> None:
    detail = sample_server.get("/api/runs/demo-train").json()
    image = next(a for a in detail["attachments"] if a["event"] == "visualization")
    answer = sample_server.get(f"/files/demo-train/{image['attachment']}")
    assert answer.status == 200 and answer.body.startswith(b"\x89PNG")
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["content-security-policy"].startswith("sandbox")
    model = next(a for a in detail["attachments"] if a["event"] == "checkpoint")
    download = sample_server.get(f"/files/demo-train/{model['attachment']}")
    assert download.status == 200 and "attachment" in download.headers["content-disposition"]
    # A link planted where an attachment is named: never followed.
    target = sample_root / "demo-train" / model["attachment"]
    saved = target.read_bytes()
    target.unlink()
    target.symlink_to("/etc/passwd")
    try:
        assert sample_server.get(f"/files/demo-train/{model['attachment']}").status == 404
    finally:
        target.unlink()
        target.write_bytes(saved)
    for path in (
        "/files/demo-train/run.json",
        "/files/demo-train/../demo-upload/run.json",
        "/files/demo-train/%2e%2e/%2e%2e/etc/passwd",
        "/files/demo-train/%2Fetc%2Fpasswd",
        "/files/ghost/attachments/x.png",
    ):
        answer = sample_server.get(path)
        assert answer.status == 404, path
        assert b"root:" not in answer.body


def test_a_damaged_run_gets_a_message_not_a_500(tmp_path: Path) -> None:
    import shutil

    from tests.conftest import SAMPLE_RUNS

    root = tmp_path / "runs"
    shutil.copytree(SAMPLE_RUNS, root)
    segment = next((root / "demo-crashed" / "streams" / "events").glob("*.jsonl"))
    segment.write_bytes(segment.read_bytes() + b'\x00garbage that is not json\n{"ts_ns": 1}\n')
    (root / "broken").mkdir()
    (root / "broken" / "run.json").write_text("{not json")
    (root / "broken" / "streams").mkdir()
    with serving(root) as server:
        page = server.get("/api/runs").json()
        assert page["total"] == 4
        assert any("broken" in problem for problem in page["problems"])
        crashed = next(run for run in page["runs"] if run["run_id"] == "demo-crashed")
        assert crashed["problems"], "the damaged segment is shown on its run"
        detail = server.get("/api/runs/demo-crashed")
        assert detail.status == 200 and detail.json()["problems"]
        assert server.get("/api/runs/demo-crashed/messages").status == 200


# -- starting it -----------------------------------------------------------------------


def test_ui_without_root_uses_the_variable_or_says_how_to_make_runs(
    tmp_path: Path, sample_root: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RUNSTORE_ROOT"}
    bare = subprocess.run(
        [sys.executable, "-m", "runstore", "ui", "--port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bare.returncode == 1
    assert "runstore demo runs" in bare.stderr and "runstore ui sample-runs" in bare.stderr
    process = subprocess.Popen(
        [sys.executable, "-m", "runstore", "ui", "--port", "0"],
        cwd=tmp_path,
        env={**env, "RUNSTORE_ROOT": str(sample_root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert str(sample_root) in line and "http://127.0.0.1:" in line
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_a_taken_port_is_said_plainly(sample_server: Server) -> None:
    port = sample_server.base.rsplit(":", 1)[1]
    taken = subprocess.run(
        [sys.executable, "-m", "runstore", "ui", str(sample_server.root), "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert taken.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in taken.stderr


def test_another_interface_warns_and_accepts_its_own_name(sample_root: Path) -> None:
    with serving(sample_root, "--host", "0.0.0.0") as server:
        time.sleep(0.2)
        assert server.get("/api/runs").status == 200
        name = socket.gethostname()
        assert server.get("/api/runs", headers={"Host": name}).status == 200
        assert server.get("/api/runs", headers={"Host": "evil.example"}).status == 400
    assert server.process.stderr is not None
    assert "reachable from other machines" in server.process.stderr.read()


def test_ctrl_c_with_a_page_following_stops_quietly(sample_root: Path) -> None:
    import contextlib
    import http.client
    import signal
    import threading
    import urllib.request

    with serving(sample_root) as server:
        opened = threading.Event()

        def listen() -> None:
            with urllib.request.urlopen(server.base + "/api/live", timeout=30) as stream:
                stream.readline()  # the first event: the stream is open
                opened.set()
                with contextlib.suppress(OSError, http.client.HTTPException):
                    stream.read()  # until the server closes it

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        assert opened.wait(10)
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(timeout=15) == 0
    assert server.process.stderr is not None
    assert server.process.stderr.read() == ""


def test_the_documented_default_port_is_the_commands() -> None:
    from runstore.cli import all_commands
    from runstore.viewer import DEFAULT_PORT

    port = next(p for p in all_commands()["ui"].params if p.name == "port")
    assert port.default == DEFAULT_PORT == 8417  # README and docs/viewer.md say 8417


def test_runs_are_listed_even_when_their_metric_columns_exceed_the_limits(
    tmp_path: Path,
) -> None:
    from runstore import QueryError, Store
    from runstore.viewer.queries import RunsQuery, runs_page

    class Tight(Store):
        # A store whose limits the metric columns' query exceeds and the runs' does not.
        # (Which query exceeds a real memory limit depends on DuckDB's plan: since
        # latest_metrics is an aggregate, two runs of 100,000 points fit in 16 MB.)
        def query(self, query: str, params: Any = None, *, max_rows: int | None = None) -> Any:
            if "FROM latest_metrics" in query and "$keys" in query:
                raise QueryError("refused: the query needs more memory than this store allows")
            return super().query(query, params, max_rows=max_rows)

    for name in ("a", "b"):
        with open_run(tmp_path, run_id=name) as ctx:
            for step in range(1000):
                ctx.set_metrics({"loss": 1 / (1 + step), "acc": step / 1000}, "train")
            ctx.end_log()
    with Tight(tmp_path, confined=True) as store:
        page = runs_page(store, RunsQuery(metrics=("loss", "acc")))
    assert [run["run_id"] for run in page["runs"]] == ["b", "a"]
    assert page["notice"].startswith("metric columns left empty: refused")
    with Store(tmp_path, confined=True) as store:
        full = runs_page(store, RunsQuery(metrics=("loss",)))
    assert full["notice"] is None and full["runs"][0]["metrics"]["loss"] == 1 / 1000


def test_a_hostile_run_id_is_text_in_the_page(sample_server: Server) -> None:
    hostile = '"><img src=x onerror=alert(1)><b>bold'  # a run id may hold all of it
    page = sample_server.get("/runs/" + _q(hostile)).body.decode()
    assert "<img src=x" not in page and "<b>bold" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;&lt;b&gt;bold" in page


def test_a_root_that_vanishes_is_said_not_a_500(tmp_path: Path) -> None:
    import shutil

    from tests.conftest import SAMPLE_RUNS

    root = tmp_path / "runs"
    shutil.copytree(SAMPLE_RUNS, root)
    with serving(root, "--no-archive") as server:
        shutil.rmtree(root)
        answer = server.get("/api/runs")
        assert answer.status == 503 and "no such folder of runs" in answer.json()["error"]
        assert server.get("/").status == 200  # the page itself, then its message
