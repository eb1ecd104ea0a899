"""Averages over a dataset with their standard errors."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vaekit.objectives.elbo import ELBOTerms


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


def elbo_summary(terms: ELBOTerms) -> dict[str, Mean]:
    """Mean ± standard error of each ELBO term."""
    return {name: Mean.of(values) for name, values in terms._asdict().items()}
