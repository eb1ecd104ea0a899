"""Learning-rate and KL-weight schedules, pure functions of the epoch / step (so a resumed run
needs no scheduler state)."""

from __future__ import annotations

import math

from vaekit.config import TrainConfig


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """Learning rate for 0-based ``epoch`` e of E: ``constant`` lr; ``cosine``
    lr_final + (lr − lr_final)(1 + cos(π e / E)) / 2; ``exponential`` lr · (lr_final / lr)^(e / E);
    ``burda`` (Burda et al. 2015) lr · 10^(−i/7) in stage i, stage i lasting 3^i epochs.
    """
    if config.lr_schedule == "constant":
        return config.lr
    if config.lr_schedule == "burda":
        return config.lr * 10 ** (-burda_stage(epoch) / 7)
    progress = epoch / config.epochs
    if config.lr_schedule == "cosine":
        return (
            config.lr_final + (config.lr - config.lr_final) * (1 + math.cos(math.pi * progress)) / 2
        )
    return config.lr * (config.lr_final / config.lr) ** progress


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
