"""Priors p(z) over the latent space."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Independent, Normal

from vaekit.model.gaussian import kl_to_standard, standard_log_density


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I) over ``latent_dim`` dimensions, with optional temperature T:
    p_T(z) = N(0, T² I) (T < 1 samples closer to the mode)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    def forward(self, temperature: float = 1.0) -> Independent:
        scale = self.scale if temperature == 1.0 else self.scale * temperature
        return Independent(Normal(self.loc, scale, validate_args=False), 1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) for ``z (..., D)``; ``(...)``."""
        return standard_log_density(z)

    def kl(self, loc: torch.Tensor, scale: torch.Tensor, reduction: str = "none") -> torch.Tensor:
        """KL(N(μ, diag σ²) || p(z)) in closed form: ``(B,)``, or its batch sum with
        ``reduction="sum"``."""
        return kl_to_standard(loc, scale, reduction)
