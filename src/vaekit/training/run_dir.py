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
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaekit.checks import is_number
from vaekit.data import STANDARD_DATASETS, Dataset, load_dataset
from vaekit.errors import CheckpointError, ConfigError, DataError
from vaekit.evaluation.evaluate import fuller, mismatch, well_formed
from vaekit.files import atomic_write_bytes, atomic_write_json, run_lock
from vaekit.hub import hub_folder, is_hub_id
from vaekit.model import ModelConfig
from vaekit.training import checkpoint as ckpt
from vaekit.training.config import TrainConfig

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
EVALUATION = "evaluation.json"
EVALUATIONS = "evaluations"
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

    def __init__(self, path: str | Path | RunDirectory) -> None:
        self.path = path.path if isinstance(path, RunDirectory) else Path(path)
        # the command that continues this run (a sweep's member: the sweep's), and whether it
        # takes --on-nan rollback (a sweep's does not: one Adam steps all its members)
        self.resume_command = f"vaekit train --resume {self.path}"
        self.resume_rolls_back = True

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    # ---------------------------------------------------------------- configuration
    def is_run(self) -> bool:
        return (self.path / CONFIG).is_file()

    def create(self) -> None:
        """Make the directory for a new run, refusing to overwrite an existing run or any
        other file (an existing folder must be empty, but for what vaekit itself left)."""
        if (self.path / CONFIG).exists():
            raise ConfigError(
                f"{self.path} already holds a run; continue it ('vaekit train --resume "
                f"{self.path}', or vaekit.resume('{self.path}')) or choose another run directory"
            )
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--run-dir {self.path} is a file; name a folder")
        if self.path.is_dir():
            foreign = sorted(p.name for p in self.path.iterdir() if not _left_by_vaekit(p))
            if foreign:
                raise ConfigError(
                    f"{self.path} holds other files ({', '.join(foreign[:3])}"
                    f"{', ...' if len(foreign) > 3 else ''}); choose a new or empty --run-dir"
                )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # a dangling symbolic link
            raise ConfigError(f"--run-dir {self.path} is a broken link; name a folder") from None

    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).is_file()

    def resume_hint(self, options: str = "") -> str:
        """What the run directory offers now: the last checkpoint, or a start from epoch 0
        (by the resume command, with ``options`` added)."""
        if not self.is_run():
            return "nothing was written"
        command = f"{self.resume_command}{options}"
        if self.has_checkpoint():
            return f"the last checkpoint is kept: continue with '{command}'"
        return f"no checkpoint was written yet: '{command}' starts the run again from epoch 0"

    @cached_property
    def config(self) -> RunConfig:
        """``config.json``, read once (format 1 or 2)."""
        path = self.path / CONFIG
        try:
            raw = json.loads(path.read_text())
        except (FileNotFoundError, NotADirectoryError):  # no such folder, or a file
            raise CheckpointError(
                f"{self.path}: no {CONFIG}; is this a vaekit run directory?"
            ) from None
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
            raise CheckpointError(f"{path}: unreadable or corrupt ({err})") from None
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

    def write_config(
        self, model: nn.Module, train: TrainConfig, data_summary: dict[str, Any]
    ) -> None:
        """Write ``config.json``; ``data_summary`` is ``Dataset.summary()`` (computed once by
        the caller: it hashes the data)."""
        atomic_write_json(
            self.path / CONFIG,
            {
                "vaekit_format": ckpt.FORMAT_VERSION,
                "model": model.config.to_dict(),
                "custom_networks": model.custom_networks,
                "train": _with_absolute_paths(train).to_dict(),
                "data": data_summary,
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
                f"{self.path}: trained with your own encoder/decoder networks, which only "
                "Python has: model = vaekit.load(path, encoder=..., decoder=...), then "
                "vaekit.write_report(model, data, 'report.html') for its figures and report"
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
        run's MNIST-style files are. A relative path the run recorded (runs before vaekit
        recorded absolute ones, or copied elsewhere) is looked for from the current folder,
        then from each folder above the run directory (where it was trained)."""
        if dataset:
            return load_dataset(dataset, data_dir, image_size, verify)
        train = self.config.train
        name = train.dataset if train.dataset in STANDARD_DATASETS else self._find(train.dataset)
        where = data_dir or (None if train.data_dir is None else self._find(train.data_dir))
        try:
            return load_dataset(name, where, train.image_size, verify)
        except DataError as err:
            raise DataError(f"{err} (the run's data; name them with --dataset)") from None

    def _find(self, recorded: str) -> str:
        path = Path(recorded)
        if path.is_absolute() or path.exists():
            return recorded
        for folder in self.path.resolve().parents:
            if (folder / path).exists():
                return str(folder / path)
        return recorded

    # ---------------------------------------------------------------- training files
    def read_metrics(self) -> list[dict[str, Any]]:
        """The per-epoch records of ``metrics.jsonl`` (none if the run has no such file yet)."""
        metrics = self.path / METRICS
        if not metrics.exists():
            return []
        try:
            records = [json.loads(line) for line in metrics.read_text().splitlines()]
        except (UnicodeDecodeError, ValueError) as err:
            raise CheckpointError(
                f"{metrics}: damaged ({err}); remove it (its epochs' records are lost; the "
                "checkpoint is not)"
            ) from None
        if not all(_is_epoch_record(r) for r in records):
            raise CheckpointError(f"{metrics}: not vaekit's per-epoch records; remove it")
        return records

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

    def save_weights(self, model: nn.Module) -> None:
        """Write ``model.safetensors`` (e.g. to agree with the checkpoint just restored)."""
        ckpt.save_weights(self.path / WEIGHTS, model)

    def read_evaluation(self) -> dict[str, Any] | None:
        """``evaluation.json`` (the run's evaluation the report shows), or None if it has
        none or it cannot be read."""
        try:
            saved = json.loads((self.path / EVALUATION).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return saved if well_formed(saved) else None

    def evaluation_of(self, model: nn.Module) -> tuple[dict[str, Any] | None, str | None]:
        """``(evaluation.json, why it is not of model)``: the reason is None where it is of
        these weights on the test split (its examples checked by their count only), and
        ``(None, None)`` where the run has no readable one."""
        saved = self.read_evaluation()
        return (None, None) if saved is None else (saved, mismatch(saved, model, saved["n"]))

    def save_evaluation(self, evaluation: dict[str, Any]) -> list[Path]:
        """Keep every evaluation in ``evaluations/`` (named by what was evaluated), and make
        it ``evaluation.json`` unless that one is fuller (see ``fuller``); return the files
        written."""
        info = evaluation["info"]
        name = (
            f"{info['split'].replace(' ', '-')}-n{evaluation['n']}-k{evaluation['k']}-"
            f"seed{info['seed']}-{info['weights_sha256'][:12]}.json"
        )
        (self.path / EVALUATIONS).mkdir(exist_ok=True)
        written = [self.path / EVALUATIONS / name]
        atomic_write_json(written[0], evaluation)
        current = self.read_evaluation()
        if current is None or fuller(evaluation, current):
            atomic_write_json(self.path / EVALUATION, evaluation)
            written.append(self.path / EVALUATION)
        return written

    def write(self, name: str, data: bytes) -> Path:
        """Write a file of the run (a figure, the report), atomically."""
        path = self.path / name
        atomic_write_bytes(path, data)
        return path

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's lock while writing into it (one writer per run); the temporary
        files of an atomic write that a killed process left are removed first."""
        with run_lock(self.path):
            for leftover in self.path.glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    leftover.unlink()
            yield


def _with_absolute_paths(train: TrainConfig) -> TrainConfig:
    """``train`` with its data paths absolute, so that the run finds its data from anywhere."""
    dataset = train.dataset
    if dataset not in STANDARD_DATASETS and Path(dataset).exists():
        dataset = str(Path(dataset).resolve())
    data_dir = None if train.data_dir is None else str(Path(train.data_dir).resolve())
    return replace(train, dataset=dataset, data_dir=data_dir)


EPOCH_TERMS = tuple(
    f"{split}_{term}" for split in ("train", "test") for term in ("elbo", "reconstruction", "rate")
)
"""What every epoch's record holds (nats per example), beside its number and learning rate:
the curves, the report and a sweep read them."""


def _is_epoch_record(record: Any) -> bool:
    """An epoch's record as the trainer writes it: an integer ``epoch``, the terms and ``lr``,
    and numbers (or null) as every value."""
    return (
        isinstance(record, dict)
        and isinstance(record.get("epoch"), int)
        and all(key in record for key in (*EPOCH_TERMS, "lr"))
        and all(value is None or is_number(value) for value in record.values())
    )


def _left_by_vaekit(path: Path) -> bool:
    """The lock, or a temporary file of an atomic write (``.name.XXXX.tmp``)."""
    return path.name == ".lock" or (path.name.startswith(".") and path.name.endswith(".tmp"))


def load(path: str | Path, **networks: nn.Module) -> nn.Module:
    """Rebuild a trained model from a run directory, a ``model.safetensors`` file, or a model
    on the Hugging Face Hub, ``hf://owner/name[@revision]`` (see :mod:`vaekit.hub`).

    Models trained with custom networks need the same ``encoder`` and ``decoder`` classes.
    """
    path = hub_folder(path) if is_hub_id(path) else Path(path)
    if path.is_dir():
        return RunDirectory(path).load_model(**networks)
    return ckpt.load_weights_file(path, **networks)
