"""Experiment trackers: a run's records, figures, model and evaluation, logged besides its run
directory (which stays the record vaekit itself reads).

    --tensorboard    TensorBoard event files in RUN/tensorboard: each epoch's scalars, samples
    --track mlflow   an MLflow run (pip install 'vaekit[mlflow]'): the configuration as
                     parameters, each epoch's record as metrics (step: the epoch), and at the
                     end the figures and the model folder (config.json, model.safetensors) as
                     artifacts; ``vaekit evaluate RUN`` adds the evaluation (its numbers as
                     metrics, its table and evaluation.json as artifacts)

The MLflow store is ``--track-uri``, else ``$MLFLOW_TRACKING_URI``, else MLflow's default in the
current folder. ``RUN/tracking.json`` remembers the store and the MLflow run, so a resumed run
and its evaluation log to the same MLflow run, from any folder.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from vaekit.errors import ConfigError, first_line
from vaekit.files import atomic_write_json

TRACKERS = ("mlflow",)
TRACKING = "tracking.json"
EXPERIMENT = "vaekit"


class Tracker(Protocol):
    """What the trainer tells a tracker, on rank 0 of a run with a run directory."""

    def log_epoch(self, record: dict[str, Any], model: torch.nn.Module) -> None: ...

    def log_files(self, paths: list[Path]) -> None: ...

    def close(self, finished: bool) -> None: ...


def make_trackers(config: Any, run_dir: Path | None) -> list[Tracker]:
    """The trackers ``config`` (a TrainConfig) asks for; refuses, before any file is written,
    a run without a run directory or a tracker whose package is missing."""
    wanted = ["tensorboard"] * config.tensorboard + [config.track] * (config.track is not None)
    if wanted and run_dir is None:
        raise ConfigError(f"--{wanted[0]} keeps its place in the run directory: give one")
    trackers: list[Tracker] = []
    for name in wanted:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(Path(run_dir)))  # type: ignore[arg-type]
        elif name == "mlflow":
            trackers.append(MLflowTracker(Path(run_dir), config.track_uri))  # type: ignore[arg-type]
        else:
            raise ConfigError(f"unknown tracker {name!r}: choose from {', '.join(TRACKERS)}")
    return trackers


class TensorBoardTracker:
    """Scalars of each epoch's record and a grid of samples, as TensorBoard event files."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "--tensorboard needs the tensorboard package: pip install tensorboard"
            ) from None
        self.folder, self.writer_class, self.writer = run_dir / "tensorboard", SummaryWriter, None

    def log_epoch(self, record: dict[str, Any], model: torch.nn.Module) -> None:
        if self.writer is None:
            self.writer = self.writer_class(str(self.folder))
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, record["epoch"])
        samples = model.sample(16, generator=torch.Generator().manual_seed(0))
        if samples.dim() == 4:  # images
            self.writer.add_images("samples", samples.clamp(0, 1), record["epoch"])
        self.writer.flush()

    def log_files(self, paths: list[Path]) -> None:
        """TensorBoard holds scalars and images, not files."""

    def close(self, finished: bool) -> None:
        if self.writer is not None:
            self.writer.close()


def _never_fatal(method: Callable[..., None]) -> Callable[..., None]:
    """A tracker's failure (its server down, its store full) is one warning, after which it
    logs no more: training goes on, and the run directory keeps every record."""

    @functools.wraps(method)
    def guarded(self: MLflowTracker, *args: Any) -> None:
        if self.failed:
            return
        try:
            method(self, *args)
        except (self.mlflow.exceptions.MlflowException, OSError) as err:
            self.failed = True
            warnings.warn(
                f"MLflow stopped logging this run ({first_line(err)}); training goes on, and "
                "the run directory keeps every record",
                stacklevel=2,
            )

    return guarded


class MLflowTracker:
    """One MLflow run per vaekit run, through MLflow's own client (see the module's note)."""

    def __init__(self, run_dir: Path, uri: str | None) -> None:
        self.mlflow = _mlflow()
        read_tracking(run_dir)  # a damaged RUN/tracking.json: refused before training
        self.run_dir, self.uri, self.run_id = run_dir, uri, None
        self.client: Any = None
        self.failed = False

    def _start(self) -> None:
        """Continue the MLflow run of ``RUN/tracking.json``, or start one with the run's
        configuration as its parameters (logged once: MLflow keeps parameters fixed)."""
        saved = read_tracking(self.run_dir)
        uri = saved["uri"] if saved else self.uri or self.mlflow.get_tracking_uri()
        self.client = self.mlflow.MlflowClient(uri)
        if saved:
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment(EXPERIMENT)
        )
        run = self.client.create_run(experiment_id, run_name=self.run_dir.name)
        self.run_id = run.info.run_id
        atomic_write_json(self.run_dir / TRACKING, {"mlflow": {"uri": uri, "run_id": self.run_id}})
        config = json.loads((self.run_dir / "config.json").read_text())
        params = [self.mlflow.entities.Param(k, v) for k, v in parameters(config).items()]
        self.client.log_batch(self.run_id, params=params)

    @_never_fatal
    def log_epoch(self, record: dict[str, Any], model: torch.nn.Module) -> None:
        if self.client is None:
            self._start()
        metric = self.mlflow.entities.Metric
        step, stamp = record["epoch"], _now_ms()
        metrics = [metric(k, v, stamp, step) for k, v in scalars(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    @_never_fatal
    def log_files(self, paths: list[Path]) -> None:
        if self.client is None:
            self._start()
        for path in paths:
            folder = "model" if path.suffix in (".json", ".safetensors") else None
            self.client.log_artifact(self.run_id, str(path), folder)

    @_never_fatal
    def close(self, finished: bool) -> None:
        if self.client is not None:
            self.client.set_terminated(self.run_id, "FINISHED" if finished else "KILLED")


def log_evaluation(run_dir: Path, evaluation: dict[str, Any], table: str) -> str | None:
    """Add an evaluation to the MLflow run of ``run_dir`` (if it was tracked): its numbers as
    metrics (``eval_K{k}_log_px`` etc.), its table and ``evaluation.json`` as artifacts; return
    where it went (None: the run is not tracked)."""
    try:
        saved = read_tracking(run_dir)
    except ConfigError as err:  # the evaluation itself is saved: say so, and go on
        warnings.warn(f"the evaluation was not logged to MLflow: {err}", stacklevel=2)
        return None
    if saved is None:
        return None
    mlflow = _mlflow()
    try:
        _log_evaluation(
            mlflow.MlflowClient(saved["uri"]), saved["run_id"], run_dir, evaluation, table
        )
    except (mlflow.exceptions.MlflowException, OSError) as err:
        warnings.warn(f"the evaluation was not logged to MLflow ({first_line(err)})", stacklevel=2)
        return None
    return f"MLflow run {saved['run_id']} in {saved['uri']}"


def _log_evaluation(
    client: Any, run_id: str, run_dir: Path, evaluation: dict[str, Any], table: str
) -> None:
    prefix = f"eval_K{evaluation['k']}_"
    values = {
        name: evaluation[name]["value"] for name in ("log_px", "elbo", "gap", "reconstruction")
    }
    values |= {f"{name}_stderr": evaluation[name]["stderr"] for name in ("log_px", "elbo")}
    stamp = _now_ms()
    metric = _mlflow().entities.Metric
    metrics = [metric(prefix + k, v, stamp, 0) for k, v in scalars(values).items()]
    client.log_batch(run_id, metrics=metrics)
    client.log_text(run_id, table, f"evaluation-K{evaluation['k']}.txt")
    if (run_dir / "evaluation.json").is_file():
        client.log_artifact(run_id, str(run_dir / "evaluation.json"))


def read_tracking(run_dir: Path) -> dict[str, str] | None:
    """The MLflow store and run of ``RUN/tracking.json``, or None (not tracked)."""
    path = run_dir / TRACKING
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())["mlflow"]
        return {"uri": str(saved["uri"]), "run_id": str(saved["run_id"])}
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{path} is damaged: delete it to track the run as a new MLflow run"
        ) from None


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a record (lists, e.g. per-layer rates, as ``name_0``, ``name_1``, …),
    without the epoch (the step)."""
    flat: dict[str, float] = {}
    for key, value in record.items():
        if key == "epoch":
            continue
        if isinstance(value, (list, tuple)):
            flat |= {f"{key}_{i}": float(v) for i, v in enumerate(value) if _number(v)}
        elif _number(value):
            flat[key] = float(value)
    return flat


def parameters(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """config.json's sections flattened to ``section.key`` strings (MLflow parameters hold at
    most 500 characters in older stores)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= parameters(value, f"{prefix}{key}.")
        else:
            flat[prefix + key] = (value if isinstance(value, str) else json.dumps(value))[:500]
    return flat


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise ConfigError("--track mlflow needs MLflow: pip install 'vaekit[mlflow]'") from None
    for name in ("mlflow", "alembic"):  # their start-up notes are not the user's concern,
        logging.getLogger(name).setLevel(logging.WARNING)
    # nor MLflow's own deprecation warnings (e.g. of the SQLAlchemy it calls)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mlflow(\.|$)")
    return mlflow
