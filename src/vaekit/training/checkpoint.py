"""Run directories, weights and checkpoints: safetensors for tensors, JSON for the rest.

A run directory holds:

- ``config.json``: format version, model and training configuration, data summary;
- ``model.safetensors``: the weights, with the model configuration in its metadata, so the
  file alone rebuilds the model (``vaekit.load("model.safetensors")``);
- ``checkpoint.safetensors``: weights, optimizer state and random-number-generator states
  with the epoch counter in its metadata, everything ``--resume`` needs, in one file;
- ``metrics.jsonl``, ``samples.png``, ``reconstructions.png``.

Every file is replaced atomically, so a crash leaves the previous version intact. Nothing is
ever unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from vaekit.config import FORMAT_VERSION, ModelConfig, TrainConfig
from vaekit.errors import CheckpointError, ConfigError
from vaekit.model.vae import VAE
from vaekit.training.io import atomic_write_bytes, atomic_write_json

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"


def _check_format(version: Any, where: Path) -> None:
    try:
        version = int(version)
    except (TypeError, ValueError):
        raise CheckpointError(f"{where}: not a vaekit file (no format version)") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: written by a newer vaekit (format {version}, this one reads up to "
            f"{FORMAT_VERSION}); upgrade vaekit"
        )


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; a clear error if it is missing,
    truncated or not safetensors (this format cannot carry code, unlike a pickle)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found; is this a vaekit run directory?")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise CheckpointError(
            f"{path}: not a readable safetensors file (truncated or corrupt: {err}); "
            "use an intact copy"
        ) from err
    _check_format(metadata.get("vaekit_format"), path)
    return tensors, metadata


def write_config(run_dir: Path, model: VAE, train: TrainConfig, data_summary: dict) -> None:
    atomic_write_json(
        run_dir / CONFIG,
        {
            "vaekit_format": FORMAT_VERSION,
            "model": model.config.to_dict(),
            "custom_networks": model.custom_networks,
            "train": train.to_dict(),
            "data": data_summary,
        },
    )


def read_config(run_dir: Path) -> tuple[ModelConfig, TrainConfig, dict[str, Any]]:
    path = run_dir / CONFIG
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{run_dir}: no {CONFIG}; is this a vaekit run directory?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable or corrupt ({err})") from err
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: not a vaekit configuration")
    _check_format(raw.get("vaekit_format"), path)
    try:
        return ModelConfig.from_dict(raw["model"]), TrainConfig.from_dict(raw["train"]), raw
    except (KeyError, TypeError, ConfigError) as err:
        raise CheckpointError(f"{path}: invalid configuration ({err})") from err


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``metrics.jsonl`` (none if the run has no such file yet)."""
    metrics = run_dir / METRICS
    return (
        [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    )


def _load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise CheckpointError(
            f"{where}: the weights do not match the model configuration ({detail})"
        ) from err


def save_weights(path: Path, model: VAE) -> None:
    metadata = {"vaekit_format": str(FORMAT_VERSION), "model": json.dumps(model.config.to_dict())}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata))


def load(
    path: str | Path, encoder: nn.Module | None = None, decoder: nn.Module | None = None
) -> VAE:
    """Rebuild a trained model from a run directory or a ``model.safetensors`` file.

    Models trained with custom networks need the same ``encoder`` and ``decoder`` classes.
    """
    path = Path(path)
    if path.is_dir():
        config, _, raw = read_config(path)
        if raw.get("custom_networks") and encoder is None:
            raise CheckpointError(
                f"{path}: trained with custom encoder/decoder networks; pass them: "
                "vaekit.load(path, encoder=..., decoder=...)"
            )
        path = path / WEIGHTS
        tensors, _ = read_safetensors(path)
    else:
        tensors, metadata = read_safetensors(path)
        try:
            config = ModelConfig.from_dict(json.loads(metadata["model"]))
        except (KeyError, TypeError, json.JSONDecodeError, ConfigError) as err:
            raise CheckpointError(
                f"{path}: missing or invalid model configuration ({err})"
            ) from err
    networks = {} if encoder is None else {"encoder": encoder, "decoder": decoder}
    model = VAE.from_config(config, **networks)
    _load_weights(model, tensors, path)
    return model.eval()


def save_checkpoint(
    run_dir: Path,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    extra: dict[str, torch.Tensor],
) -> None:
    """Write ``checkpoint.safetensors`` (weights, optimizer, ``state`` as JSON, and ``extra``
    tensors such as RNG states, named ``group.name``) and ``model.safetensors``, each
    atomically."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    scalars: dict[str, Any] = {}
    for index, param_state in optimizer.state_dict()["state"].items():
        for key, value in param_state.items():
            name = f"optimizer.{index}.{key}"
            if torch.is_tensor(value):
                tensors[name] = value.detach().cpu().contiguous()
            else:
                scalars[name] = value
    tensors.update({k: v.detach().cpu().contiguous() for k, v in extra.items()})
    metadata = {
        "vaekit_format": str(FORMAT_VERSION),
        "state": json.dumps(state),
        "optimizer_scalars": json.dumps(scalars),
    }
    atomic_write_bytes(run_dir / CHECKPOINT, safetensors_bytes(tensors, metadata))
    save_weights(run_dir / WEIGHTS, model)


def load_checkpoint(
    run_dir: Path, model: VAE, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore weights and optimizer state in place; return ``(state, extra tensors)``."""
    path = run_dir / CHECKPOINT
    tensors, metadata = read_safetensors(path)
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "optimizer": {}}
    extra = {}
    for key, value in tensors.items():
        group, _, name = key.partition(".")
        if group in groups:
            groups[group][name] = value
        else:
            extra[key] = value
    _load_weights(model, groups["model"], path)
    try:
        state = json.loads(metadata["state"])
        scalars = json.loads(metadata.get("optimizer_scalars", "{}"))
        optimizer_state: dict[int, dict[str, Any]] = {}
        for name, value in [*groups["optimizer"].items(), *scalars.items()]:
            name = name.removeprefix("optimizer.")
            index, key = name.split(".", 1)
            optimizer_state.setdefault(int(index), {})[key] = value
        params = optimizer.state_dict()["param_groups"]
        optimizer.load_state_dict({"state": optimizer_state, "param_groups": params})
    except (KeyError, ValueError, TypeError, RuntimeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: optimizer state does not fit this model ({err})") from err
    return state, extra
