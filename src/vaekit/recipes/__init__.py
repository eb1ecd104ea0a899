"""Named, versioned training recipes: each a JSON file that fully defines a run.

``vaekit train --recipe NAME`` takes the model and training configuration from the recipe;
options given on the command line override single fields (e.g. ``--epochs`` or ``--data-dir``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from vaekit.errors import ConfigError
from vaekit.model import ModelConfig
from vaekit.training.config import TrainConfig


@dataclass(frozen=True)
class Recipe:
    name: str
    version: int
    description: str
    published: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]


def available() -> list[str]:
    return sorted(
        entry.name.removesuffix(".json")
        for entry in resources.files(__package__).iterdir()
        if entry.name.endswith(".json")
    )


def load_recipe(name: str) -> Recipe:
    """The recipe ``name``; its configurations are validated against ModelConfig/TrainConfig."""
    if name not in available():
        raise ConfigError(f"unknown recipe {name!r}: use one of {', '.join(available())}")
    raw = json.loads(resources.files(__package__).joinpath(f"{name}.json").read_text())
    recipe = Recipe(**raw)
    ModelConfig.from_options((1, 28, 28), **recipe.model)
    TrainConfig(**recipe.train)
    return recipe
