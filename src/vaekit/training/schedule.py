"""Learning-rate and KL-weight schedules, pure functions of the epoch / step (so a resumed run
needs no scheduler state). Learning-rate schedules are registered by name (``SCHEDULES``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from vaekit.registry import Registry

if TYPE_CHECKING:
    from vaekit.training.config import TrainConfig

SCHEDULES: Registry = Registry("learning-rate schedule")
"""Functions ``(config, epoch) -> learning rate`` for the 0-based ``epoch`` e of E."""


@SCHEDULES.register("constant")
def constant(config: TrainConfig, epoch: int) -> float:
    """lr throughout."""
    return config.lr


@SCHEDULES.register("cosine")
def cosine(config: TrainConfig, epoch: int) -> float:
    """lr_final + (lr − lr_final)(1 + cos(π e / E)) / 2."""
    progress = epoch / config.epochs
    return config.lr_final + (config.lr - config.lr_final) * (1 + math.cos(math.pi * progress)) / 2


@SCHEDULES.register("exponential")
def exponential(config: TrainConfig, epoch: int) -> float:
    """lr · (lr_final / lr)^(e / E)."""
    return config.lr * (config.lr_final / config.lr) ** (epoch / config.epochs)


@SCHEDULES.register("burda")
def burda(config: TrainConfig, epoch: int) -> float:
    """lr · 10^(−i/7) in stage i, stage i lasting 3^i epochs (Burda et al. 2015)."""
    return config.lr * 10 ** (-burda_stage(epoch) / 7)


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """The learning rate of 0-based ``epoch`` under ``config.lr_schedule``."""
    return SCHEDULES[config.lr_schedule].builder(config, epoch)


def burda_stage(epoch: int) -> int:
    """The stage i of 0-based ``epoch`` when stage i lasts 3^i epochs (0, 1-3, 4-12, ...)."""
    stage, end = 0, 1
    while epoch >= end:
        stage += 1
        end += 3**stage
    return stage


def kl_weight(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """β_t = β · min(1, t / (warmup_epochs · steps_per_epoch)): linear KL warm-up from 0 at
    global step t = 0, then β."""
    return _ramp(config.beta, config.warmup_epochs, step, steps_per_epoch)


def layer_kl_weights(config: TrainConfig, step: int, steps_per_epoch: int) -> list[float]:
    """Each latent layer's β_t, bottom to top: :func:`kl_weight`'s ramp with that layer's
    ``layer_warmup_epochs``."""
    return [
        _ramp(config.beta, epochs, step, steps_per_epoch) for epochs in config.layer_warmup_epochs
    ]


def _ramp(beta: float, epochs: int, step: int, steps_per_epoch: int) -> float:
    """β · min(1, t / (epochs · steps_per_epoch)); β when ``epochs`` is 0."""
    if epochs == 0:
        return beta
    return beta * min(1.0, step / (epochs * steps_per_epoch))
