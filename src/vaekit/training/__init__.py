"""Training: the loop, schedules, checkpoints and crash-safe files."""

from vaekit.training.checkpoint import load
from vaekit.training.trainer import Trainer, fit, resume

__all__ = ["Trainer", "fit", "load", "resume"]
