"""The approximate posterior q(z|x): a diagonal Gaussian from the encoder's output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal

MIN_SCALE = 1e-6


def diagonal_gaussian(encoder_output: torch.Tensor) -> Independent:
    """q(z|x) = N(μ, diag σ²) from ``(..., 2D)`` encoder output ``[μ, s]``, σ = softplus(s) + 1e-6.

    Its ``rsample`` is the reparameterisation z = μ + σ ⊙ ε, ε ~ N(0, I), so gradients flow to
    the encoder through z.
    """
    loc, raw_scale = encoder_output.chunk(2, dim=-1)
    scale = F.softplus(raw_scale) + MIN_SCALE
    return Independent(Normal(loc, scale, validate_args=False), 1)
