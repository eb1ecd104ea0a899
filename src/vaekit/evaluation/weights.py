"""How far to trust log p̂_K(x): diagnostics of the K importance weights w_k = p(x, z_k) / q(z_k|x).

- The effective sample size ESS = (Σ_k w_k)² / Σ_k w_k², between 1 (one draw carries all the
  weight) and K (equal weights, q = p(z|x)).
- The Pareto k̂ of the weights' upper tail (Vehtari, Simpson, Gelman, Yao & Gabry, "Pareto
  smoothed importance sampling", 2024): the shape of a generalized Pareto distribution fitted
  to the M = ⌈min(K/5, 3√K)⌉ largest weights. Where k̂ > 0.7 the weights' variance is so
  large that log p̂_K(x) is unreliable (it may sit far below log p(x) at any practical K);
  k̂ < 0.5: the central limit theorem holds.

The shape is fitted as in Zhang & Stephens (2009) with the weakly informative prior towards
0.5 that PSIS uses (loo, arviz): written here in torch, vectorised over examples, so that
``evaluate`` fits 10,000 examples' tails in one pass instead of looping over a per-example
fit; tested against weights of known tail index (tests/test_weights.py).
"""

from __future__ import annotations

import math

import torch

UNRELIABLE_K = 0.7
"""Above this k̂, log p̂_K(x) is not to be trusted (Vehtari et al. 2024, §3)."""

MIN_TAIL = 5
"""Fewest tail weights to fit a shape to: k̂ needs K ≥ 25 (it is NaN below)."""

_PRIOR_WEIGHT, _PRIOR_SHAPE = 10.0, 0.5  # the shape's prior: 10 pseudo-observations at 0.5
_EXAMPLES_PER_FIT = 1000  # bounds the (examples, grid, M) tensor of the fit to ~75 MB


def effective_sample_size(log_w: torch.Tensor) -> torch.Tensor:
    """ESS = (Σ_k w_k)² / Σ_k w_k² per example from log weights ``(K, B)``; ``(B,)``."""
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))


def tail_size(k: int) -> int:
    """M = ⌈min(K/5, 3√K)⌉: how many of the largest weights the tail fit uses."""
    return math.ceil(min(0.2 * k, 3 * math.sqrt(k)))


def largest_log_weights(log_w: torch.Tensor) -> torch.Tensor:
    """The M + 1 largest log weights per example, ascending, from ``(K, B)``: ``(B, M + 1)``,
    the tail's threshold first (all that :func:`pareto_k` needs, so that an evaluation keeps
    O(√K) numbers per example)."""
    m = min(tail_size(len(log_w)), len(log_w) - 1)
    return torch.topk(log_w.T, m + 1, dim=1, sorted=True).values.flip(1)


def pareto_k(largest: torch.Tensor) -> torch.Tensor:
    """k̂ per example from :func:`largest_log_weights` ``(B, M + 1)``; ``(B,)``, float64. NaN
    where the tail is too short (K < 25) or all its weights are equal (then there is no
    tail: the weights are as reliable as they can be)."""
    largest = largest.double()
    if largest.shape[1] - 1 < MIN_TAIL:
        return torch.full(largest.shape[:1], math.nan, dtype=torch.float64, device=largest.device)
    top = largest[:, -1:]
    excesses = torch.exp(largest[:, 1:] - top) - torch.exp(largest[:, :1] - top)
    shapes = torch.cat(
        [generalized_pareto_shape(part) for part in excesses.split(_EXAMPLES_PER_FIT)]
    )
    return torch.where(excesses[:, -1] > 0, shapes, math.nan)


def generalized_pareto_shape(excesses: torch.Tensor) -> torch.Tensor:
    """The shape ξ of a generalized Pareto distribution fitted to each row of ``excesses``
    ``(B, n)`` (ascending, over a threshold): Zhang & Stephens's (2009) posterior mean of
    θ = −ξ/σ over a grid of 30 + ⌊√n⌋ values, the profile likelihood's ξ at it, then
    the prior's pull towards 0.5, (n ξ + 10 · 0.5) / (n + 10); ``(B,)``."""
    n = excesses.shape[1]
    grid = torch.arange(1, 31 + math.isqrt(n), dtype=excesses.dtype, device=excesses.device) - 0.5
    quartile = excesses[:, max(0, math.floor(n / 4 + 0.5) - 1)].unsqueeze(1)
    theta = 1 / excesses[:, -1:] + (1 - torch.sqrt(len(grid) / grid)) / (3 * quartile)
    shape = torch.log1p(-theta.unsqueeze(2) * excesses.unsqueeze(1)).mean(2)  # (B, grid)
    profile = n * (torch.log(-theta / shape) - shape - 1)
    theta_mean = (torch.softmax(profile, dim=1) * theta).sum(1, keepdim=True)
    fitted = torch.log1p(-theta_mean * excesses).mean(1)
    return (n * fitted + _PRIOR_WEIGHT * _PRIOR_SHAPE) / (n + _PRIOR_WEIGHT)
