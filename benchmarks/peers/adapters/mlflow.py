"""MLflow's file store (`MLFLOW_ALLOW_FILE_STORE=true`, which MLflow 3 requires for
it): `mlflow.log_metrics` per step; cross-run with `MlflowClient.search_runs` ordered
by the metric, as its docs show."""

from __future__ import annotations

import logging
import os

os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

import mlflow
from mlflow.tracking import MlflowClient

logging.getLogger("mlflow").setLevel(logging.ERROR)


def _use(directory: str) -> str:
    mlflow.set_tracking_uri("file:" + os.path.abspath(os.path.join(directory, "mlruns")))
    return mlflow.set_experiment("bench").experiment_id


class Run:
    def __init__(self, directory: str, name: str) -> None:
        _use(directory)
        self._run = mlflow.start_run(run_name=name)
        self._log = mlflow.log_metrics

    def step(self, step: int, loss: float, accuracy: float) -> None:
        self._log({"loss": loss, "accuracy": accuracy}, step=step)

    def finish(self) -> None:
        mlflow.end_run()


def start(directory: str, name: str) -> Run:
    return Run(directory, name)


def final_losses(directory: str) -> list[tuple[str, float]]:
    experiment = _use(directory)
    client = MlflowClient()
    found, token = [], None
    while True:
        page = client.search_runs(
            [experiment], order_by=["metrics.loss ASC"], max_results=50_000, page_token=token
        )
        found.extend(
            (run.info.run_name, run.data.metrics["loss"])
            for run in page
            if "loss" in run.data.metrics
        )
        token = page.token
        if not token:
            break
    return found


def count_steps(directory: str) -> int:
    experiment = _use(directory)
    client = MlflowClient()
    return sum(
        len(client.get_metric_history(run.info.run_id, "loss"))
        for run in client.search_runs([experiment])
    )
