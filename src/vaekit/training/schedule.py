"""Learning-rate and KL-weight schedules, pure functions of the epoch / step (so a resumed run
needs no scheduler state)."""

from __future__ import annotations

import math

from vaekit.config import TrainConfig


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """Learning rate for 0-based ``epoch`` e of E: ``constant`` lr; ``cosine``
    lr_final + (lr − lr_final)(1 + cos(π e / E)) / 2; ``exponential`` lr · (lr_final / lr)^(e / E).
    """
    if config.lr_schedule == "constant":
        return config.lr
    progress = epoch / config.epochs
    if config.lr_schedule == "cosine":
        return (
            config.lr_final + (config.lr - config.lr_final) * (1 + math.cos(math.pi * progress)) / 2
        )
    return config.lr * (config.lr_final / config.lr) ** progress


def kl_weight(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """β_t = β · min(1, t / (warmup_epochs · steps_per_epoch)): linear KL warm-up from 0 at
    global step t = 0, then β."""
    if config.warmup_epochs == 0:
        return config.beta
    return config.beta * min(1.0, step / (config.warmup_epochs * steps_per_epoch))
