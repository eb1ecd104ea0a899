"""Any posterior q(z|x) as a torch distribution, for users (never in the training step)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.distributions import Distribution, constraints

from vaekit.model.contract import Posterior, PosteriorParameters


class PosteriorDistribution(Distribution):
    """q(z|x) of a posterior and its parameters for B examples, batch ``(B,)``, event
    ``(noise_dim,)`` (z has as many dimensions as its noise): ``rsample`` through the
    posterior's reparameterisation, ``log_prob`` by its :meth:`Posterior.log_prob`."""

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, posterior: Posterior, params: PosteriorParameters) -> None:
        self.posterior, self.params = posterior, params
        batch = params[0].shape[:-1]
        super().__init__(batch, torch.Size([posterior.noise_dim]), validate_args=False)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        shape = torch.Size(sample_shape)
        like, size = self.params[0], (shape.numel(), *self.batch_shape, *self.event_shape)
        noise = torch.randn(size, dtype=like.dtype, device=like.device)
        z = self.posterior.rsample(self.params, noise)
        return z.reshape(*shape, *self.batch_shape, *self.event_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.posterior.log_prob(self.params, value)
