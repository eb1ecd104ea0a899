"""A batch: examples x and, where the data have them, labels y."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Batch(NamedTuple):
    """``x (B, *shape)`` and labels ``y (B,)`` or ``None``. Everything that takes a batch
    also takes a bare tensor x (see :func:`as_batch`)."""

    x: torch.Tensor
    y: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        y = None if self.y is None else self.y.to(device)
        return Batch(self.x.to(device), y)

    def select(self, index: slice | torch.Tensor) -> Batch:
        """The examples at ``index`` (a slice or an index tensor), x and y alike."""
        return Batch(self.x[index], None if self.y is None else self.y[index])


def as_batch(data: torch.Tensor | Batch) -> Batch:
    return data if isinstance(data, Batch) else Batch(data)
