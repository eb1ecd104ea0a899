"""The VampPrior (Tomczak & Welling 2018): p(z) = (1/C) Σ_c q(z | u_c), a mixture of the
model's own posterior at C learned pseudo-inputs u_c.

The prior the ELBO's rate is optimal for is the aggregate posterior q(z) = E_x q(z|x); the
VampPrior approximates it with C "inputs" learned with the model. Its KL from q(z|x) has no
closed form, so the Monte Carlo rate serves it (see :mod:`vaekit.model.rate`). Sampling goes
through the learned mixture: a pseudo-input c uniformly, then z ~ q(z | u_c).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from vaekit.checks import option, positive_int
from vaekit.errors import ConfigError
from vaekit.model.contract import PRIORS, Posterior, PosteriorParameters, Prior
from vaekit.model.draws import random_like

PSEUDO_INPUT_MEAN, PSEUDO_INPUT_STD = 0.05, 0.01
"""The pseudo-inputs' initial values, N(0.05, 0.01²) per entry, as in the paper's code."""


@dataclass
class VampOptions:
    """pseudo_inputs: the number C of learned pseudo-inputs."""

    pseudo_inputs: int = option(500, "the number C of learned pseudo-inputs of the VampPrior")

    def __post_init__(self) -> None:
        positive_int("pseudo_inputs", self.pseudo_inputs)


@PRIORS.register("vamp", VampOptions)
class VampPrior(Prior):
    """(1/C) Σ_c q(z | u_c) over --pseudo-inputs learned inputs u_c (Monte Carlo rate); at
    temperature T, each component's noise is scaled by T (z = μ_c + T σ_c ε for a Gaussian
    posterior)."""

    def __init__(self, latent_dim: int, options: VampOptions) -> None:
        super().__init__()
        self.components = options.pseudo_inputs
        self.latent_dim = latent_dim

    def bind(self, model: nn.Module) -> None:
        """The pseudo-inputs take the model's input shape; q(z|u) is the model's posterior on
        top of its encoder (kept as plain references: they belong to the model)."""
        if not model.posterior.log_prob_is_cheap:
            raise ConfigError(
                f"the VampPrior needs a posterior whose density is cheap at any z; the "
                f"{model.config.posterior.name} posterior's is not: use --posterior "
                "diagonal-gaussian with --prior vamp"
            )
        shape = (self.components, *model.input_shape)
        self.pseudo_inputs = nn.Parameter(torch.randn(shape) * PSEUDO_INPUT_STD + PSEUDO_INPUT_MEAN)
        self._parameters_of: Callable[[torch.Tensor], PosteriorParameters] = (
            model.posterior_parameters
        )
        object.__setattr__(self, "_posterior", model.posterior)  # not a submodule of the prior
        self._posterior: Posterior

    def components_parameters(self) -> PosteriorParameters:
        """q(z | u_c)'s parameters for every pseudo-input, ``(C, D)`` each."""
        return self._parameters_of(self.pseudo_inputs)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log (1/C) Σ_c q(z | u_c) = logsumexp_c log q(z | u_c) − log C; ``z (..., D)``."""
        per_component = self._posterior.log_prob_each(self.components_parameters(), z)
        return torch.logsumexp(per_component, dim=-1) - math.log(self.components)

    @torch.no_grad()
    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """c uniform over the pseudo-inputs, then z = q(z | u_c)'s reparameterisation of
        T ε; ``(n, D)``."""
        c = (random_like(torch.rand, (n,), self.anchor, generator) * self.components).long()
        params = tuple(p[c.clamp_max(self.components - 1)] for p in self.components_parameters())
        noise = random_like(torch.randn, (1, n, self._posterior.noise_dim), self.anchor, generator)
        return self._posterior.rsample(params, temperature * noise)[0]
