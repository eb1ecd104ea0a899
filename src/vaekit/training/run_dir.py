"""A run directory, as one object that owns its files:

- ``config.json``: format version, model and training configuration, data summary;
- ``model.safetensors``: the weights (the file alone rebuilds the model);
- ``checkpoint.safetensors``: everything ``--resume`` needs (see :mod:`.checkpoint`);
- ``metrics.jsonl``: one JSON record per epoch;
- ``evaluation.json``, ``report.html`` and the figures (``samples.png``, ...);
- ``.lock`` while a process trains into it.

Every file is written atomically (:mod:`vaekit.files`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaekit.data import Dataset, load_dataset
from vaekit.errors import CheckpointError, ConfigError, DataError
from vaekit.files import atomic_write_bytes, atomic_write_json, run_lock
from vaekit.model import ModelConfig
from vaekit.training import checkpoint as ckpt
from vaekit.training.config import TrainConfig

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
EVALUATION = "evaluation.json"
REPORT = "report.html"


@dataclass(frozen=True)
class RunConfig:
    """What ``config.json`` holds."""

    model: ModelConfig
    train: TrainConfig
    custom_networks: bool
    data: dict[str, Any]


class RunDirectory:
    """The files of one run in ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    # ---------------------------------------------------------------- configuration
    def is_run(self) -> bool:
        return (self.path / CONFIG).is_file()

    def create(self) -> None:
        """Make the directory for a new run, refusing to overwrite an existing run."""
        if (self.path / CONFIG).exists():
            raise ConfigError(
                f"{self.path} already holds a run; continue it with --resume {self.path} or "
                "choose another --run-dir"
            )
        self.path.mkdir(parents=True, exist_ok=True)

    @cached_property
    def config(self) -> RunConfig:
        """``config.json``, read once (format 1 or 2)."""
        path = self.path / CONFIG
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(
                f"{self.path}: no {CONFIG}; is this a vaekit run directory?"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path}: unreadable or corrupt ({err})") from err
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path}: not a vaekit configuration")
        ckpt.check_format(raw.get("vaekit_format"), path)
        try:
            return RunConfig(
                ModelConfig.from_dict(raw["model"]),
                TrainConfig.from_dict(raw["train"]),
                bool(raw.get("custom_networks", False)),
                raw.get("data", {}),
            )
        except (KeyError, TypeError, ConfigError) as err:
            raise CheckpointError(f"{path}: invalid configuration ({err})") from err

    def write_config(self, model: nn.Module, train: TrainConfig, data: Dataset) -> None:
        atomic_write_json(
            self.path / CONFIG,
            {
                "vaekit_format": ckpt.FORMAT_VERSION,
                "model": model.config.to_dict(),
                "custom_networks": model.custom_networks,
                "train": train.to_dict(),
                "data": data.summary(),
            },
        )
        self.__dict__.pop("config", None)

    # ---------------------------------------------------------------- model and data
    def load_model(self, **networks: nn.Module) -> nn.Module:
        """The trained model (runs trained with custom networks need them: ``encoder=...,
        decoder=...``)."""
        config = self.config
        if config.custom_networks and not networks:
            raise CheckpointError(
                f"{self.path}: trained with custom encoder/decoder networks; pass them: "
                "vaekit.load(path, encoder=..., decoder=...)"
            )
        path = self.path / WEIGHTS
        tensors, _ = ckpt.read_safetensors(path)
        return ckpt.model_with_weights(config.model, tensors, path, **networks)

    def load_dataset(
        self,
        dataset: str | None = None,
        data_dir: str | None = None,
        image_size: int | None = None,
        verify: bool = True,
    ) -> Dataset:
        """The run's dataset, or ``dataset`` if named; ``data_dir`` overrides where the
        run's MNIST-style files are."""
        if dataset:
            return load_dataset(dataset, data_dir, image_size, verify)
        train = self.config.train
        try:
            return load_dataset(train.dataset, data_dir or train.data_dir, train.image_size, verify)
        except DataError as err:
            raise DataError(f"{err} (the run's data; name them with --dataset)") from None

    # ---------------------------------------------------------------- training files
    def read_metrics(self) -> list[dict[str, Any]]:
        """The per-epoch records of ``metrics.jsonl`` (none if the run has no such file yet)."""
        metrics = self.path / METRICS
        if not metrics.exists():
            return []
        return [json.loads(line) for line in metrics.read_text().splitlines()]

    def write_metrics(self, records: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(record) + "\n" for record in records)
        atomic_write_bytes(self.path / METRICS, text.encode())

    def save_checkpoint(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        state: dict[str, Any],
        tensors: dict[str, torch.Tensor],
    ) -> None:
        ckpt.save_checkpoint(
            self.path / CHECKPOINT, self.path / WEIGHTS, model, optimizer, state, tensors
        )

    def load_checkpoint(
        self, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        return ckpt.load_checkpoint(self.path / CHECKPOINT, model, optimizer)

    def write(self, name: str, data: bytes) -> Path:
        """Write a file of the run (a figure, the report), atomically."""
        path = self.path / name
        atomic_write_bytes(path, data)
        return path

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's lock while writing into it (one writer per run)."""
        with run_lock(self.path):
            yield


def load(path: str | Path, **networks: nn.Module) -> nn.Module:
    """Rebuild a trained model from a run directory or a ``model.safetensors`` file.

    Models trained with custom networks need the same ``encoder`` and ``decoder`` classes.
    """
    path = Path(path)
    if path.is_dir():
        return RunDirectory(path).load_model(**networks)
    return ckpt.load_weights_file(path, **networks)
