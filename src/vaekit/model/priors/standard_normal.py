"""p(z) = N(0, I), with its closed-form KL from a diagonal Gaussian posterior."""

from __future__ import annotations

import torch

from vaekit.model.contract import PRIORS, PosteriorParameters, Prior
from vaekit.model.draws import random_like
from vaekit.model.gaussian import HALF_LOG_2PI, kl_to_standard, standard_log_density
from vaekit.model.posteriors.diagonal_gaussian import DiagonalGaussianPosterior
from vaekit.model.rate import register_rate
from vaekit.registry import NoOptions


@PRIORS.register("standard-normal")
class StandardNormalPrior(Prior):
    """N(0, I); at temperature T, N(0, T² I)."""

    def __init__(self, latent_dim: int, options: NoOptions | None = None) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return standard_log_density(z)

    def log_prob_dims(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * z.square() - HALF_LOG_2PI

    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """z = T ε, ε ~ N(0, I) ``(n, D)``."""
        return temperature * random_like(torch.randn, (n, self.latent_dim), self.anchor, generator)


@register_rate(DiagonalGaussianPosterior, StandardNormalPrior)
def _diagonal_to_standard(
    posterior: DiagonalGaussianPosterior, prior: StandardNormalPrior, params: PosteriorParameters
) -> torch.Tensor:
    """KL(N(μ, diag σ²) || N(0, I)) per dimension, ``(B, D)``."""
    loc, scale = params
    return kl_to_standard(loc, scale, reduction="dims")
