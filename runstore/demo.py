"""A demo plugin job: a training workflow, an export, an upload with failures, and a
crashed run. `runstore demo ROOT` runs it; `sample-runs/` in the repository is its output.
"""

from __future__ import annotations

import math
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from .context import RuntimeContext, open_run
from .errors import StepFailedError
from .steps import (
    BaseStep,
    ExportContext,
    Orchestrator,
    StepRegistry,
    StepResult,
    TrainContext,
    UploadContext,
)

__all__ = ["run_demo"]

#: Seconds between the demo's steps, so its runs take real time (durations, elapsed).
_STEP_SECONDS = 0.005

_DEMO_ENV = {"DEBUG": "false", "API_KEY": "demo-secret-never-stored", "SYNAPSE_LANGUAGE": "en"}


class _LoadDataset(BaseStep[TrainContext]):
    name = "dataset"
    progress_weight = 0.1

    def execute(self, context: TrainContext) -> StepResult:
        for batch in range(1, 11):
            time.sleep(_STEP_SECONDS)
            context.set_progress(batch, 10)
        context.dataset = {"train": 800, "val": 200}
        context.log_message("Dataset downloaded: 800 train / 200 val images", "info")
        return StepResult(data=context.dataset)


class _Train(BaseStep[TrainContext]):
    name = "train"
    progress_weight = 0.8

    def __init__(self, epochs: int, steps_per_epoch: int, workdir: Path) -> None:
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.workdir = workdir

    def execute(self, context: TrainContext) -> StepResult:
        rng = random.Random(7)
        total = self.epochs * self.steps_per_epoch
        context.log_message("Training started", "info")
        for step in range(1, total + 1):
            loss = 2.0 * math.exp(-step / (total / 3)) + rng.random() * 0.05
            context.set_metrics({"loss": loss, "lr": 0.01 * (1 - step / total) + 1e-4})
            context.set_progress(step, total)
            time.sleep(_STEP_SECONDS)
            if step % self.steps_per_epoch == 0:
                epoch = step // self.steps_per_epoch
                accuracy = 0.5 + 0.45 * (1 - math.exp(-epoch / 2)) + rng.random() * 0.01
                context.runtime_ctx.set_metrics(
                    {"epoch": epoch, "accuracy": accuracy, "map50": accuracy * 0.9}, "validation"
                )
                context.runtime_ctx.log_dev_event("epoch finished", {"epoch": epoch})
                if epoch in (1, self.epochs):
                    image = self.workdir / f"val_epoch{epoch}.png"
                    _write_png(image, 96, 64, accuracy)
                    context.runtime_ctx.log_visualization("validation", "predictions", epoch, image)
        context.model_path = "model.pt"
        context.log_message("Training finished", "success")
        return StepResult(data={"epochs": self.epochs})


def _write_png(path: Path, width: int, height: int, sharpness: float) -> None:
    """A small RGB PNG (a blurred box that sharpens as `sharpness` goes to 1), written
    with zlib alone: the demo's visualization attachment."""
    rows = []
    for y in range(height):
        row = bytearray([0])  # filter type: none
        for x in range(width):
            inside = abs(x - width / 2) / (width / 4) + abs(y - height / 2) / (height / 4)
            edge = max(0.0, min(1.0, (1.2 - inside) * (2 + 20 * sharpness)))
            row += bytes((int(40 + 200 * edge), int(90 + 120 * edge), int(200 - 120 * edge)))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + chunk(b"IEND", b"")
    )


class _SaveModel(BaseStep[TrainContext]):
    name = "save_model"
    progress_weight = 0.1

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def execute(self, context: TrainContext) -> StepResult:
        weights = self.workdir / "model.pt"
        weights.write_bytes(b"demo weights\n" * 16)
        context.set_progress(1, 1)
        context.log("checkpoint", {"epoch": 5, "path": "model.pt"}, weights)
        return StepResult(data={"path": str(weights)})


def _train_run(root: Path, workdir: Path) -> RuntimeContext:
    with open_run(
        root,
        plugin="yolo-train",
        action="train",
        params={"epochs": 5, "batch_size": 16, "model": "yolov8n"},
        job_id="job-train-001",
        env=_DEMO_ENV,
        checkpoint={"path": "models/yolov8n.pt", "category": "base"},
        run_id="demo-train",
    ) as ctx:
        registry: StepRegistry[TrainContext] = StepRegistry()
        registry.register(_LoadDataset())
        registry.register(_Train(epochs=5, steps_per_epoch=40, workdir=workdir))
        registry.register(_SaveModel(workdir))
        Orchestrator(registry, TrainContext(ctx)).execute()
        ctx.end_log()
    return ctx


def _export_run(root: Path, workdir: Path) -> RuntimeContext:
    with open_run(
        root,
        plugin="coco-export",
        action="export",
        params={"format": "coco"},
        job_id="job-export-002",
        env=_DEMO_ENV,
        run_id="demo-export",
    ) as ctx:
        export = ExportContext(ctx, output_path=str(workdir / "export"), current_step="export")
        for index in range(1, 51):
            time.sleep(_STEP_SECONDS)
            export.results.append({"id": index})
            export.exported_count += 1
            export.set_progress(index, 50)
        export.set_metrics({"exported": export.exported_count, "skipped": 0})
        ctx.log_message(
            {"en": "Exported {n} items", "ko": "{n}개 항목을 내보냈습니다"},
            "success",
            n=export.exported_count,
        )
        ctx.end_log()
    return ctx


class _Upload(BaseStep[UploadContext]):
    name = "upload"
    progress_weight = 1.0

    def execute(self, context: UploadContext) -> StepResult:
        failures = 0
        for index in range(1, 31):
            time.sleep(_STEP_SECONDS)
            if index % 7 == 0:
                failures += 1
                context.log("upload_failed", {"file": f"img_{index:03d}.jpg", "reason": "timeout"})
                context.log_message(f"Upload of img_{index:03d}.jpg failed: timeout", "warning")
            else:
                context.uploaded_files.append(f"img_{index:03d}.jpg")
            context.set_progress(index, 30)
        context.set_metrics({"uploaded": len(context.uploaded_files), "failed": failures})
        if failures > 3:
            return StepResult(success=False, error=f"{failures} of 30 files failed to upload")
        return StepResult()


class _Register(BaseStep[UploadContext]):
    name = "register"
    progress_weight = 0.2

    def execute(self, context: UploadContext) -> StepResult:
        context.set_progress(1, 1)
        return StepResult(rollback_data={"collection": "demo"})

    def rollback(self, context: UploadContext, result: StepResult) -> None:
        context.log_message("Removed the half-registered collection", "warning")


def _upload_run(root: Path) -> RuntimeContext:
    ctx = open_run(
        root,
        plugin="s3-upload",
        action="upload",
        params={"bucket": "demo"},
        job_id="job-upload-003",
        env=_DEMO_ENV,
        run_id="demo-upload",
    )
    registry: StepRegistry[UploadContext] = StepRegistry()
    registry.register(_Register())
    registry.register(_Upload())
    try:
        with ctx:
            Orchestrator(registry, UploadContext(ctx)).execute()
    except StepFailedError:
        pass  # the run records the failure; the demo goes on
    return ctx


_CRASHING_JOB = """
import os, signal, sys, time
from runstore import open_run
ctx = open_run(sys.argv[1], plugin="onnx-inference", action="inference", run_id="demo-crashed",
               job_id="job-inference-004", env={})
for index in range(1, 101):
    time.sleep(0.005)
    ctx.set_progress(index, 200, "inference")
    ctx.set_metrics({"latency_ms": 10.0 + index % 5}, "inference")
ctx.log_message("Processed 100 of 200 images", "info")
ctx.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def _crashed_run(root: Path) -> None:
    """A job killed with SIGKILL mid-run: readers show it as crashed."""
    process = subprocess.run(
        [sys.executable, "-c", _CRASHING_JOB, str(root)], capture_output=True, check=False
    )
    if process.returncode != -signal.SIGKILL:
        raise RuntimeError(
            f"the crashing demo job ended with {process.returncode}: "
            f"{process.stderr.decode(errors='replace')}"
        )


def run_demo(root: str | os.PathLike[str]) -> list[Path]:
    """Write the four demo runs under `root`; their directories."""
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    taken = [base / name for name in ("demo-train", "demo-export", "demo-upload", "demo-crashed")]
    existing = [str(path) for path in taken if path.exists()]
    if existing:
        from .errors import RunDirectoryError

        raise RunDirectoryError(
            f"demo runs already exist: {', '.join(existing)}; use an empty folder"
        )
    with tempfile.TemporaryDirectory() as scratch:
        _train_run(base, Path(scratch))
        _export_run(base, Path(scratch))
    _upload_run(base)
    _crashed_run(base)
    return taken
