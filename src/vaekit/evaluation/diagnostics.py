"""Latent-space diagnostics: KL per dimension, active units, and ELBO surgery.

- KL per dimension: E_x KL(q(z_d|x) || p(z_d)) where the rate has a closed form per dimension
  (a factorised prior); the rate is their sum.
- Active units (Burda et al. 2015): dimension d is active when Cov_x(E_q[z_d|x]) > 0.01.
- ELBO surgery (Hoffman & Johnson 2016): the average rate splits into
      E_x KL(q(z|x) || p(z)) = I_q(x; z) + KL(q(z) || p(z)),
  with q(z) = (1/N) Σ_n q(z|x_n) the aggregate posterior of the N evaluated examples.
  KL(q(z) || p(z)) is estimated with one z_m ~ q(z|x_m) per example (so z_m ~ q(z)) and
  log q(z_m) = logsumexp_n log q(z_m|x_n) − log N, for a Gaussian posterior, with the model's
  own prior's log p(z); I_q = rate − KL(q(z) || p(z)) ≤ log N.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from vaekit.model.draws import random_like
from vaekit.model.gaussian import pairwise_log_density

ACTIVE_THRESHOLD = 0.01


def active_units(means: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> torch.Tensor:
    """Boolean ``(D,)``: Cov_x(E_q[z_d|x]) > threshold, from posterior means ``(N, D)``."""
    return means.double().var(0, unbiased=True) > threshold


@torch.no_grad()
def aggregate_posterior_kl(
    loc: torch.Tensor,
    scale: torch.Tensor,
    log_prior: Callable[[torch.Tensor], torch.Tensor],
    generator: torch.Generator | None = None,
    block: int = 512,
) -> float:
    """KL(q(z) || p(z)) in nats for the aggregate posterior of ``N`` diagonal Gaussians
    ``(N, D)`` and the prior's ``log_prior`` (see the module docstring); O(N² D) work as
    matrix products, O(block · N) memory."""
    loc, scale = loc.double(), scale.double()
    n = len(loc)
    z = loc + scale * random_like(torch.randn, loc.shape, loc, generator)
    total = 0.0
    for start in range(0, n, block):
        zb = z[start : start + block]
        log_q_pairs = pairwise_log_density(zb, loc, scale)  # (b, N): log q(z_m | x_n)
        log_qz = torch.logsumexp(log_q_pairs, dim=1) - math.log(n)
        total += float((log_qz - log_prior(zb).double()).sum())
    return total / n
