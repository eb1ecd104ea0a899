"""Training: the loop, its resumable state, interrupts, schedules, checkpoints and the run
directory."""

from vaekit.training.config import TrainConfig
from vaekit.training.run_dir import RunDirectory, load
from vaekit.training.trainer import Trainer, fit, resume

__all__ = ["RunDirectory", "TrainConfig", "Trainer", "fit", "load", "resume"]
