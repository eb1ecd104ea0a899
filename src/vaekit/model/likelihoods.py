"""Likelihoods p(x|z): turn the decoder's output into a distribution over one example.

Each likelihood is a module so that a learned parameter (the Gaussian's scale) is saved with
the model. ``likelihood(params)`` returns a torch distribution whose ``log_prob(x)`` sums
over all dimensions of an example, giving nats per example; ``likelihood.log_prob(params, x)``
computes the same numbers with one fused operation, for the training and evaluation loops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal

from vaekit.errors import DataError
from vaekit.model.gaussian import HALF_LOG_2PI


class _Likelihood(nn.Module):
    def __init__(self, event_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.event_dims = len(event_shape)

    def check(self, x: torch.Tensor) -> None:
        """Raise :class:`DataError` if ``x`` is outside this likelihood's support (called by
        the measuring entry points, not by the training step, whose data are checked once)."""

    def _reduce(self, elementwise: torch.Tensor, reduction: str) -> torch.Tensor:
        if reduction == "sum":
            return elementwise.sum()
        return elementwise.sum(tuple(range(-self.event_dims, 0)))


class BernoulliLikelihood(_Likelihood):
    """p(x|z) = ∏_d Bernoulli(x_d; sigmoid(logits_d)); ``params`` are the logits.

    Only a likelihood of binary data: on grey levels its log_prob is not a log-density of the
    data, so vaekit binarises (dynamically) or refuses grey-level data with this likelihood.
    """

    name = "bernoulli"

    def check(self, x: torch.Tensor) -> None:
        if not bool(((x == 0) | (x == 1)).all()):
            raise DataError(
                "the data have values other than 0 and 1: a Bernoulli log-likelihood of grey "
                "levels is not a log-probability of the data; binarise them first "
                "(vaekit.fixed_binarization(x), the standard test-set draw) or evaluate a "
                "vaekit.Dataset"
            )

    def forward(self, params: torch.Tensor) -> Distribution:
        return Independent(Bernoulli(logits=params, validate_args=False), self.event_dims)

    def log_prob(
        self, params: torch.Tensor, x: torch.Tensor, reduction: str = "none"
    ) -> torch.Tensor:
        """log p(x|z) = Σ_d [x_d l_d − log(1 + e^{l_d})] = −BCE-with-logits(l, x) for logits
        ``params (..., *event)`` and ``x`` broadcastable to them: ``(...)`` per example, or
        the sum over everything with ``reduction="sum"``."""
        x = x.expand_as(params)
        if reduction == "sum":  # one fused operation for the whole batch
            return -F.binary_cross_entropy_with_logits(params, x, reduction="sum")
        elementwise = -F.binary_cross_entropy_with_logits(params, x, reduction="none")
        return self._reduce(elementwise, reduction)


class GaussianLikelihood(_Likelihood):
    """p(x|z) = ∏_d N(x_d; μ_d, σ_d²); ``params`` are the means μ.

    σ is fixed (``scale``) or, with ``learn_scale``, a learned parameter per data dimension
    (initialised at ``scale``), independent of z.
    """

    name = "gaussian"

    def __init__(self, event_shape: tuple[int, ...], scale: float, learn_scale: bool) -> None:
        super().__init__(event_shape)
        log_scale = torch.full(event_shape, math.log(scale))
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def forward(self, params: torch.Tensor) -> Distribution:
        scale = self.log_scale.exp().expand_as(params)
        return Independent(Normal(params, scale, validate_args=False), self.event_dims)

    def log_prob(
        self, params: torch.Tensor, x: torch.Tensor, reduction: str = "none"
    ) -> torch.Tensor:
        """log p(x|z) = −Σ_d [½ ((x_d − μ_d)/σ_d)² + log σ_d + ½ log 2π] for means
        ``params (..., *event)``: ``(...)`` per example, or the total with ``"sum"``."""
        standardised = (x - params) * torch.exp(-self.log_scale)
        elementwise = -(0.5 * standardised.square() + self.log_scale + HALF_LOG_2PI)
        return self._reduce(elementwise, reduction)


def build_likelihood(
    name: str, event_shape: tuple[int, ...], scale: float = 0.1, learn_scale: bool = False
) -> nn.Module:
    if name == "bernoulli":
        return BernoulliLikelihood(event_shape)
    return GaussianLikelihood(event_shape, scale, learn_scale)
