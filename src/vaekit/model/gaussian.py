"""Closed forms for diagonal Gaussians, the maths behind the posterior q(z|x) and the prior p(z).

torch.distributions gives the same values (the tests check it); the training and evaluation
loops call these functions on plain tensors because building distribution objects costs
about 10% of a training step for small networks (benchmarks/train_throughput.py, batch 20).
"""

from __future__ import annotations

import math

import torch

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def log_density(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(z; μ, diag σ²) = −Σ_j [½ ((z_j − μ_j)/σ_j)² + log σ_j + ½ log 2π], summed over the
    last dimension; ``z (..., D)`` broadcast against ``loc``, ``scale`` ``(B, D)``; ``(...)``."""
    return -_log_density_terms(z, loc, scale).sum(-1) - z.shape[-1] * HALF_LOG_2PI


def log_density_dims(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The terms of :func:`log_density`, one per dimension: ``(..., D)``."""
    return -_log_density_terms(z, loc, scale) - HALF_LOG_2PI


def _log_density_terms(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """½ ((z_j − μ_j)/σ_j)² + log σ_j, ``(..., D)``."""
    return 0.5 * ((z - loc) / scale).square() + scale.log()


def reparameterised_log_density(noise: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(μ + σ ε; μ, diag σ²) = −Σ_j [½ ε_j² + log σ_j + ½ log 2π], from the noise ε
    itself (no subtraction, no division), summed over the last dimension; ``(...)``."""
    return -(0.5 * noise.square() + scale.log()).sum(-1) - noise.shape[-1] * HALF_LOG_2PI


def pairwise_log_density(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(z_m; μ_n, diag σ_n²) for every pair: ``z (M, D)``, ``loc``, ``scale`` ``(N, D)`` ->
    ``(M, N)``. Expands Σ_j (z_j − μ_j)²/σ_j² = z² · σ⁻² − 2 z · μσ⁻² + Σ_j μ_j²/σ_j² into
    matrix products, so memory is O(M N) rather than the O(M N D) of broadcasting (use float64:
    the expansion cancels large terms when σ is small)."""
    precision = scale.square().reciprocal()  # (N, D)
    squared = (
        z.square() @ precision.T - 2 * z @ (loc * precision).T + (loc.square() * precision).sum(-1)
    )
    return -0.5 * squared - scale.log().sum(-1) - z.shape[-1] * HALF_LOG_2PI


def standard_log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) = −½ ‖z‖² − (D/2) log 2π for ``z (..., D)``; ``(...)``."""
    return -0.5 * z.square().sum(-1) - z.shape[-1] * HALF_LOG_2PI


def kl_to_standard(loc: torch.Tensor, scale: torch.Tensor, reduction: str = "none") -> torch.Tensor:
    """KL(N(μ, diag σ²) || N(0, I)) = Σ_j [½ (μ_j² + σ_j² − 1) − log σ_j] for ``loc``, ``scale``
    ``(B, D)``: ``(B,)`` with ``reduction="none"``, the sum over the batch with ``"sum"``, the
    per-dimension terms ``(B, D)`` with ``"dims"``."""
    per_dim = 0.5 * (loc.square() + scale.square() - 1) - scale.log()
    if reduction == "dims":
        return per_dim
    return per_dim.sum() if reduction == "sum" else per_dim.sum(-1)
