"""The resumable state of a run beyond its weights and optimizer: counters, the learning-rate
scale, the random-number generators, and the position inside an interrupted epoch. All of it
is kept in the checkpoint (JSON scalars and tensors), so a resumed run continues exactly
(on a device of the same type: see :meth:`TrainingState.set_generators`)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch

from vaekit.errors import CheckpointError


@dataclass
class EpochState:
    """Where a run stopped inside an epoch: the epoch's order of examples, the per-step term
    sums so far, the next step, and the training seconds spent in the epoch."""

    order: torch.Tensor
    sums: torch.Tensor
    step: int
    seconds: float


class Interrupted(Exception):
    """Raised at a step boundary after Ctrl-C, carrying the position inside the epoch."""

    def __init__(self, state: EpochState) -> None:
        super().__init__("interrupted")
        self.state = state


@dataclass
class TrainingState:
    """Counters and generators: ``data`` draws the order and binarisations, ``noise`` the
    posterior's noise; torch's global generator is saved too (dropout and the like)."""

    data: torch.Generator
    noise: torch.Generator
    epoch: int = 0
    global_step: int = 0
    elapsed_s: float = 0.0
    lr_scale: float = 1.0
    partial: EpochState | None = None

    def snapshot(self, partial: EpochState | None = None) -> dict[str, Any]:
        """Everything the checkpoint holds beyond weights and optimizer: ``{"state": JSON
        scalars, "tensors": tensors}`` (with the position inside the epoch, if given)."""
        state: dict[str, Any] = {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "elapsed_s": self.elapsed_s,
            "lr_scale": self.lr_scale,
        }
        tensors = {
            "rng.torch": torch.get_rng_state(),
            "rng.data": self.data.get_state(),
            "rng.noise": self.noise.get_state(),
        }
        if partial is not None:
            state.update(step=partial.step, epoch_time_s=partial.seconds)
            tensors.update({"epoch.order": partial.order, "epoch.sums": partial.sums})
        return {"state": state, "tensors": tensors}

    def restore(
        self, state: dict[str, Any], tensors: dict[str, torch.Tensor], where: Any
    ) -> list[str]:
        """Set the counters and generators from a checkpoint's ``state`` and ``tensors``;
        return the generators seeded afresh (see :meth:`set_generators`)."""
        try:
            self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
            self.elapsed_s = float(state["elapsed_s"])
            self.lr_scale = float(state.get("lr_scale", 1.0))
            self._check_counters()
            moved = self.set_generators(tensors)
            self.partial = None
            if "epoch.order" in tensors:
                self.partial = EpochState(
                    tensors["epoch.order"],
                    tensors["epoch.sums"],
                    int(state["step"]),
                    float(state["epoch_time_s"]),
                )
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{where}: incomplete training state ({err})") from err
        return moved

    def _check_counters(self) -> None:
        """Counters and seconds are ≥ 0, the learning-rate scale > 0 (a negative epoch would
        train more epochs than asked; a negative scale, uphill)."""
        for name, value, least in (
            ("epoch", self.epoch, 0),
            ("global_step", self.global_step, 0),
            ("elapsed_s", self.elapsed_s, 0),
            ("lr_scale", self.lr_scale, math.ulp(0)),
        ):
            if not least <= value < math.inf:
                raise ValueError(f"{name} is {value}")

    def check_position(self, n: int, batch_size: int, where: Any) -> None:
        """Refuse a position inside an epoch that does not fit ``n`` examples (a damaged or
        forged checkpoint, or other data)."""
        partial = self.partial
        if partial is None:
            return
        steps = -(-n // batch_size)
        order = partial.order
        if (
            order.dtype != torch.int64
            or order.shape != (n,)
            or not torch.equal(order.sort().values, torch.arange(n))
            or partial.sums.shape != (steps, 3)
            or not 0 <= partial.step <= steps
        ):
            raise CheckpointError(
                f"{where}: the checkpoint's position inside epoch {self.epoch + 1} does not fit "
                f"these {n} examples; it is damaged, or the data changed"
            )

    def set_generators(self, tensors: dict[str, torch.Tensor]) -> list[str]:
        """Set the generators to their saved states. A state saved on another type of device
        does not fit (a CPU generator's state is 5,056 bytes, a CUDA one's 16): that
        generator is seeded from the saved state's SHA-256 instead, so the same checkpoint
        continues the same way on the new device, though not as it would have on the old
        one. Returns the names (``data``, ``noise``) of the generators seeded so."""
        torch.set_rng_state(tensors["rng.torch"])
        moved = []
        for name, generator in (("data", self.data), ("noise", self.noise)):
            saved = tensors[f"rng.{name}"]
            if saved.dtype != torch.uint8 or saved.dim() != 1 or saved.numel() == 0:
                raise ValueError(f"rng.{name} is not a generator's state")
            if saved.shape == generator.get_state().shape:
                generator.set_state(saved)
            else:
                digest = hashlib.sha256(saved.contiguous().numpy().tobytes()).digest()
                generator.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
                moved.append(name)
        return moved
