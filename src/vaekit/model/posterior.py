"""The approximate posterior q(z|x): a diagonal Gaussian from the encoder's output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal

MIN_SCALE = 1e-6


def posterior_parameters(encoder_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(μ, σ)`` of q(z|x) from ``(..., 2D)`` encoder output ``[μ, s]``: σ = softplus(s) + 1e-6;
    each ``(..., D)``."""
    loc, raw_scale = encoder_output.chunk(2, dim=-1)
    return loc, F.softplus(raw_scale) + MIN_SCALE


def diagonal_gaussian(encoder_output: torch.Tensor) -> Independent:
    """q(z|x) = N(μ, diag σ²) as a torch distribution (see :func:`posterior_parameters`).

    Its ``rsample`` is the reparameterisation z = μ + σ ⊙ ε, ε ~ N(0, I), so gradients flow to
    the encoder through z.
    """
    loc, scale = posterior_parameters(encoder_output)
    return Independent(Normal(loc, scale, validate_args=False), 1)
