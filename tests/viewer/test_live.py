"""One follower of the root fanned out to pages: each page its run, a slow page told to
fetch again rather than holding the others back."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import orjson

from runstore import WriterOptions, open_run
from runstore.viewer.live import RESYNC, LiveHub


def _job(root: Path, run_id: str, steps: int) -> None:
    with open_run(root, run_id=run_id, options=WriterOptions(flush_interval=0.005)) as ctx:
        for step in range(1, steps + 1):
            ctx.set_metrics({"loss": 1 / step}, "train")
            ctx.set_progress(step, steps, "train")
            time.sleep(0.002)
        ctx.end_log()


def test_pages_get_their_run_a_summary_and_a_slow_page_a_resync(tmp_path: Path) -> None:
    async def follow() -> tuple[list[dict], list[dict], list[bytes], list[dict]]:
        hub = LiveHub(tmp_path, tick=0.01, queue_batches=4)
        mine = hub.subscribe("job")
        summary = hub.subscribe(None)
        slow = hub.subscribe("job")
        other = hub.subscribe("other")
        await asyncio.sleep(0.5)  # the follower is watching
        threads = [
            threading.Thread(target=_job, args=(tmp_path, "job", 400)),
            threading.Thread(target=_job, args=(tmp_path, "other", 5)),
        ]
        for thread in threads:
            thread.start()
        records: list[dict] = []
        summaries: list[list[dict]] = []
        deadline = time.monotonic() + 30
        while not any(r["stream"] == "status" and r["status"] == "completed" for r in records):
            assert time.monotonic() < deadline, "the run's end never arrived"
            records += orjson.loads(await asyncio.wait_for(mine.queue.get(), 10))
            while not summary.queue.empty():
                summaries.append(orjson.loads(summary.queue.get_nowait()))
        for thread in threads:
            await asyncio.to_thread(thread.join)
        await asyncio.sleep(0.3)
        while not summary.queue.empty():
            summaries.append(orjson.loads(summary.queue.get_nowait()))
        waiting = []
        while not slow.queue.empty():
            waiting.append(slow.queue.get_nowait())
        others = []
        while not other.queue.empty():
            others += orjson.loads(other.queue.get_nowait())
        hub.close()
        flat = [record for batch in summaries for record in batch]
        for batch in summaries:  # one progress record a run a batch, the newest
            runs = [r["run"] for r in batch if r["stream"] == "progress"]
            assert len(runs) == len(set(runs))
        return records, flat, waiting, others

    records, summary, waiting, others = asyncio.run(follow())
    assert {r["run"] for r in records} == {"job"}
    losses = [r["values"]["loss"] for r in records if r["stream"] == "metrics"]
    assert losses == [1 / step for step in range(1, 401)]  # every point, in order
    assert {r["stream"] for r in summary} == {"status", "progress"}
    assert {r["run"] for r in summary} == {"job", "other"}
    assert any(r["run"] == "job" and r.get("status") == "completed" for r in summary)
    assert RESYNC in waiting and len(waiting) <= 4
    assert {r["run"] for r in others} == {"other"}
