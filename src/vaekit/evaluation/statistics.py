"""Averages over a dataset with their standard errors."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vaekit.objectives.elbo import ELBOTerms, elbo


@dataclass(frozen=True)
class Mean:
    """A sample mean and its standard error s / √n."""

    value: float
    stderr: float

    @classmethod
    def of(cls, values: torch.Tensor) -> Mean:
        values = values.double()
        n = values.numel()
        stderr = float(values.std(unbiased=True)) / math.sqrt(n) if n > 1 else math.nan
        return cls(float(values.mean()), stderr)

    def __str__(self) -> str:
        digits = 2 if abs(self.value) >= 1 or self.stderr >= 0.01 else 4
        return f"{self.value:.{digits}f} ± {self.stderr:.{digits}f}"


@torch.no_grad()
def per_example_elbo(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1000, n_samples: int = 1
) -> ELBOTerms:
    """ELBO terms of every example of ``x (N, *shape)``, computed in batches; ``(N,)`` each."""
    was_training = model.training
    model.eval()
    parts = [elbo(model, x[i : i + batch_size], n_samples) for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return ELBOTerms(*(torch.cat(column) for column in zip(*parts, strict=True)))


def elbo_summary(terms: ELBOTerms) -> dict[str, Mean]:
    """Mean ± standard error of each ELBO term."""
    return {name: Mean.of(values) for name, values in terms._asdict().items()}
