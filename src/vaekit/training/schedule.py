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
    if config.warmup_epochs == 0:
        return config.beta
    return config.beta * min(1.0, step / (config.warmup_epochs * steps_per_epoch))
