"""A learned mixture of Gaussians, p(z) = Σ_c π_c N(z; μ_c, diag σ_c²).

No closed-form KL from a Gaussian posterior exists, so the Monte Carlo rate serves it (see
:mod:`vaekit.model.rate`); nothing else in vaekit needs to know about it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vaekit.checks import option, positive_int
from vaekit.model.contract import PRIORS, Prior
from vaekit.model.draws import random_like
from vaekit.model.gaussian import log_density


@dataclass
class MixtureOptions:
    """components: the number C of Gaussians."""

    components: int = option(10, "the number of Gaussians of the mixture prior")

    def __post_init__(self) -> None:
        positive_int("components", self.components)


@PRIORS.register("mog", MixtureOptions)
class MixtureOfGaussiansPrior(Prior):
    """A learned mixture of --components diagonal Gaussians (Monte Carlo rate).

    Weights π = softmax(logits), means μ_c (started at N(0, I) draws) and scales σ_c (started
    at 1); at temperature T each component's scale is T σ_c."""

    def __init__(self, latent_dim: int, options: MixtureOptions) -> None:
        super().__init__()
        shape = (options.components, latent_dim)
        self.logits = nn.Parameter(torch.zeros(options.components))
        self.loc = nn.Parameter(torch.randn(shape))
        self.log_scale = nn.Parameter(torch.zeros(shape))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log Σ_c π_c N(z; μ_c, σ_c²) = logsumexp_c [log π_c + log N(z; μ_c, σ_c²)]."""
        per_component = log_density(z.unsqueeze(-2), self.loc, self.log_scale.exp())  # (..., C)
        return torch.logsumexp(per_component + self.logits.log_softmax(0), dim=-1)

    @torch.no_grad()
    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """c ~ Categorical(π) (by inverting its CDF at u ~ U[0, 1)), z = μ_c + T σ_c ε."""
        u = random_like(torch.rand, (n,), self.anchor, generator)
        cdf = self.logits.softmax(0).cumsum(0)
        component = torch.searchsorted(cdf, u.unsqueeze(-1)).squeeze(-1).clamp_max(len(cdf) - 1)
        noise = random_like(torch.randn, (n, self.loc.shape[1]), self.anchor, generator)
        return self.loc[component] + temperature * self.log_scale[component].exp() * noise
