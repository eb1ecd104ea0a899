"""Importance sampling with the encoder as proposal: the IWAE bound and log p̂_K(x).

    log p̂_K(x) = logsumexp_k [log p(x, z_k) − log q(z_k|x)] − log K,   z_k ~ q(z|x)

E[log p̂_K(x)] is a lower bound on log p(x) that rises with K (Burda et al. 2015); K = 1 is
the ELBO. The sum over all K samples is one logsumexp, accumulated exactly across chunks
(never an average of per-chunk log-means, which would be the looser bound L_chunk).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from vaekit.objectives.elbo import ELBOTerms, log_weights, reparameterise

if TYPE_CHECKING:
    from vaekit.model.vae import VAE


def iwae_bound(model: VAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """L_K(x) = logsumexp_k log w_k − log K with reparameterised samples; ``(B,)``.

    Differentiable: its gradient is Σ_k w̃_k ∇ log w_k with normalised weights w̃_k that
    autograd derives through the logsumexp (no detached or hand-signed weights needed).
    """
    return iwae_terms(model, x, k)[0]


def iwae_terms(
    model: VAE, x: torch.Tensor, k: int, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, ELBOTerms]:
    """``(L_K(x), ELBO terms)`` from the same K reparameterised draws (ε = ``noise``
    ``(K, B, D)`` if given), each ``(B,)``: the ELBO's reconstruction is the mean of
    log p(x|z_k), its rate the closed-form KL."""
    loc, scale = model.posterior_parameters(x)
    z = reparameterise(loc, scale, k, noise)
    log_w, log_likelihood = log_weights(model, x, z, loc, scale)
    reconstruction = log_likelihood.mean(0)
    kl = model.prior.kl(loc, scale)
    bound = torch.logsumexp(log_w, dim=0) - math.log(k)
    return bound, ELBOTerms(reconstruction - kl, reconstruction, kl)


@torch.no_grad()
def iter_log_weights(
    model: VAE,
    x: torch.Tensor,
    k: int,
    chunk_size: int = 500,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(log w, log p(x|z))``, each ``(c, B)``, for K samples z = μ + σ ⊙ ε drawn
    ``chunk_size`` at a time from q(z|x); ``x`` is ``(B, *input_shape)``.

    Memory is O(chunk_size · B · dim x) whatever K. ``noise`` (``(K, B, D)`` standard normal
    draws) fixes ε (common random numbers); then the draws do not depend on ``chunk_size``.
    """
    loc, scale = model.posterior_parameters(x)
    for start in range(0, k, chunk_size):
        size = min(chunk_size, k - start)
        eps = None if noise is None else noise[start : start + size]
        yield log_weights(model, x, reparameterise(loc, scale, size, eps, generator), loc, scale)


def log_px(
    model: VAE,
    x: torch.Tensor,
    k: int = 5000,
    chunk_size: int = 500,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """log p̂_K(x) for a batch ``x (B, *input_shape)``; returns ``(B,)`` in nats, with the
    logsumexp over all K samples accumulated exactly chunk by chunk (see
    :func:`iter_log_weights` for ``chunk_size``, ``noise`` and ``generator``). Refuses data
    outside the likelihood's support (e.g. grey levels under a Bernoulli)."""
    model.likelihood.check(x)
    total = None
    for chunk, _ in iter_log_weights(model, x, k, chunk_size, noise, generator):
        partial = torch.logsumexp(chunk, dim=0)
        total = partial if total is None else torch.logaddexp(total, partial)
    assert total is not None, "k must be positive"
    return total - math.log(k)
