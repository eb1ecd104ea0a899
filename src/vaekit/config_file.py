"""Run configurations as TOML files: ``vaekit config RUN > run.toml`` writes the one that
reproduces a run, ``vaekit train --config run.toml`` trains from one (options given on the
command line override its fields).

A file has two tables, ``[model]`` and ``[train]``, with the options of ``vaekit train``
by their Python names (``latent_dim``, ``prior``, ``pseudo_inputs``; ``batch_size``, ``lr``):
the same fields as a recipe's. Read with the standard library's ``tomllib`` (``tomli``
before Python 3.11), written with ``tomli_w``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import tomli_w

from vaekit.errors import ConfigError
from vaekit.training.config import TrainConfig
from vaekit.training.run_dir import RunDirectory

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TABLES = ("model", "train")


def read_config_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model options, train options)`` of a TOML file; one-line errors for a file that
    cannot be read or parsed, or that has tables other than [model] and [train]."""
    try:
        with open(path, "rb") as file:
            raw = tomllib.load(file)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the configuration ({err.strerror})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    unknown = sorted(set(raw) - set(TABLES))
    if unknown:
        raise ConfigError(
            f"{path}: unknown tables {unknown}; a configuration has [model] and [train]"
        )
    tables = {name: raw.get(name, {}) for name in TABLES}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: '{name}' must be a table ([{name}])")
    unknown = sorted(set(tables["train"]) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise ConfigError(
            f"{path}: [train] has unknown options {unknown} (see vaekit train --help)"
        )
    return tables["model"], tables["train"]


def run_config_toml(run: RunDirectory) -> str:
    """The TOML that trains ``run`` again: its model's options and its training
    configuration (options left unset, such as ``data_dir`` without one, are left out)."""
    config = run.config
    if config.custom_networks:
        raise ConfigError(
            f"{run} was trained with networks of your own: a file cannot rebuild them; train "
            "it through the Python API"
        )
    model = {"latent_dim": config.model.latent_dim, **config.model.flat_options()}
    train = config.train.to_dict()
    header = (
        f"# vaekit run configuration of {run}\n"
        f"# train it again: vaekit train --config FILE (options given beside it override it)\n"
    )
    return header + tomli_w.dumps({"model": _plain(model), "train": _plain(train)})


def _plain(options: dict[str, Any]) -> dict[str, Any]:
    """Tuples as lists (TOML arrays), None left out."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items() if v is not None}
