"""Weights and checkpoints as safetensors files (tensors), with JSON metadata (the rest).

- ``model.safetensors``: the weights, with the model configuration in its metadata, so the
  file alone rebuilds the model (``vaekit.load("model.safetensors")``);
- ``checkpoint.safetensors``: weights, optimizer state and random-number-generator states
  with the epoch counter in its metadata, everything ``--resume`` needs, in one file.

Every file is replaced atomically, so a crash leaves the previous version intact. Nothing is
ever unpickled. The run directory that holds them is :mod:`vaekit.training.run_dir`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from vaekit.checks import is_number
from vaekit.errors import CheckpointError, ConfigError
from vaekit.files import atomic_write_bytes
from vaekit.model import ModelConfig, build_model

FORMAT_VERSION = 2
"""Version of the files vaekit writes: 2 holds the model's components as named objects
(format 1, flat options, still loads)."""


def check_format(version: Any, where: Path) -> None:
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
    check_format(metadata.get("vaekit_format"), path)
    return tensors, metadata


def _load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        detail = _weights_mismatch(model.state_dict(), tensors) or str(err).strip().splitlines()[0]
        raise CheckpointError(
            f"{where}: the weights do not match the model configuration ({detail}); "
            "was config.json edited, or the file taken from another run?"
        ) from err


def _weights_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """How a file's tensors differ from a model's, counted, with the first name of each kind
    (torch's own message lists every name: hundreds for a model with flows)."""
    kinds = {
        "missing": [k for k in expected if k not in found],
        "not in the model": [k for k in found if k not in expected],
        "of another shape": [
            f"{k} {list(found[k].shape)} where the model has {list(v.shape)}"
            for k, v in expected.items()
            if k in found and found[k].shape != v.shape
        ],
    }
    return "; ".join(f"{len(keys)} {kind}, e.g. {keys[0]}" for kind, keys in kinds.items() if keys)


def save_weights(path: Path, model: nn.Module) -> None:
    metadata = {"vaekit_format": str(FORMAT_VERSION), "model": json.dumps(model.config.to_dict())}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata))


def load_weights_file(path: Path, **networks: nn.Module) -> nn.Module:
    """The model a ``model.safetensors`` file holds (its configuration is in its metadata)."""
    tensors, metadata = read_safetensors(path)
    try:
        config = ModelConfig.from_dict(json.loads(metadata["model"]))
    except (KeyError, TypeError, json.JSONDecodeError, ConfigError) as err:
        raise CheckpointError(f"{path}: missing or invalid model configuration ({err})") from err
    return model_with_weights(config, tensors, path, **networks)


def model_with_weights(
    config: ModelConfig, tensors: dict[str, torch.Tensor], where: Path, **networks: nn.Module
) -> nn.Module:
    """The model ``config`` names, with ``tensors`` as its weights, in evaluation mode."""
    model = build_model(config, **networks)
    _load_weights(model, tensors, where)
    return model.eval()


def save_checkpoint(
    path: Path,
    weights_path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    extra: dict[str, torch.Tensor],
) -> None:
    """Write the checkpoint at ``path`` (weights, optimizer, ``state`` as JSON, and ``extra``
    tensors such as RNG states, named ``group.name``) and the weights at ``weights_path``,
    each atomically."""
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
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata))
    save_weights(weights_path, model)


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore weights and optimizer state in place; return ``(state, extra tensors)``."""
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
        if not isinstance(scalars, dict):
            raise ValueError("optimizer_scalars is not a JSON object")
        optimizer_state: dict[int, dict[str, Any]] = {}
        for name, value in [*groups["optimizer"].items(), *scalars.items()]:
            name = name.removeprefix("optimizer.")
            index, key = name.split(".", 1)
            optimizer_state.setdefault(int(index), {})[key] = value
        _check_optimizer_state(optimizer_state, optimizer)
        params = optimizer.state_dict()["param_groups"]
        optimizer.load_state_dict({"state": optimizer_state, "param_groups": params})
    except (KeyError, ValueError, TypeError, RuntimeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: optimizer state does not fit this model ({err})") from err
    return state, extra


def _check_optimizer_state(
    optimizer_state: dict[int, dict[str, Any]], optimizer: torch.optim.Optimizer
) -> None:
    """Refuse what torch would load and then train with wrongly: a parameter's moments of
    another shape than the parameter (they broadcast in the update), or a step count that is
    not a count (Adam's bias correction with a negative step is NaN); either way the resumed
    run would diverge with no word of the file. A parameter with no state, as one that has
    had no gradient yet, is left to start afresh."""
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    for index, param_state in optimizer_state.items():
        if not 0 <= index < len(parameters):
            raise ValueError(
                f"optimizer.{index}: no such parameter (the model has {len(parameters)})"
            )
        for key, value in param_state.items():
            name = f"optimizer.{index}.{key}"
            if key == "step":
                steps = float(value) if torch.is_tensor(value) and value.numel() == 1 else value
                if not is_number(steps) or not 0 <= steps < math.inf:
                    raise ValueError(f"{name} is {steps!r}, not a count of steps")
            elif not torch.is_tensor(value):
                raise ValueError(f"{name} is not a tensor")
            elif value.shape != parameters[index].shape:
                raise ValueError(
                    f"{name} has shape {list(value.shape)} where its parameter has "
                    f"{list(parameters[index].shape)}"
                )
