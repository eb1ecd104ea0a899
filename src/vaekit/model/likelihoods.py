"""Likelihoods p(x|z): turn the decoder's output into a distribution over one example.

Each likelihood is a module so that a learned parameter (the Gaussian's scale) is saved with
the model. ``likelihood(params)`` returns a torch distribution whose ``log_prob(x)`` sums
over all dimensions of an example, giving nats per example.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal


class BernoulliLikelihood(nn.Module):
    """p(x|z) = ∏_d Bernoulli(x_d; sigmoid(logits_d)); ``params`` are the logits.

    Only a likelihood of binary data: on grey levels its log_prob is not a log-density of the
    data, so vaekit binarises (dynamically) or refuses grey-level data with this likelihood.
    """

    name = "bernoulli"

    def __init__(self, event_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.event_dims = len(event_shape)

    def forward(self, params: torch.Tensor) -> Distribution:
        return Independent(Bernoulli(logits=params, validate_args=False), self.event_dims)


class GaussianLikelihood(nn.Module):
    """p(x|z) = ∏_d N(x_d; μ_d, σ_d²); ``params`` are the means μ.

    σ is fixed (``scale``) or, with ``learn_scale``, a learned parameter per data dimension
    (initialised at ``scale``), independent of z.
    """

    name = "gaussian"

    def __init__(self, event_shape: tuple[int, ...], scale: float, learn_scale: bool) -> None:
        super().__init__()
        self.event_dims = len(event_shape)
        log_scale = torch.full(event_shape, math.log(scale))
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def forward(self, params: torch.Tensor) -> Distribution:
        scale = self.log_scale.exp().expand_as(params)
        return Independent(Normal(params, scale, validate_args=False), self.event_dims)


def build_likelihood(
    name: str, event_shape: tuple[int, ...], scale: float = 0.1, learn_scale: bool = False
) -> nn.Module:
    if name == "bernoulli":
        return BernoulliLikelihood(event_shape)
    return GaussianLikelihood(event_shape, scale, learn_scale)
