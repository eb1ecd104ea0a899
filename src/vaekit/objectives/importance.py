"""Importance sampling with the posterior as proposal: the IWAE bound and log p̂_K(x).

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

from vaekit.checks import choice
from vaekit.data.batch import Batch, as_batch
from vaekit.objectives.elbo import ELBOTerms, LogWeights, log_weights, standard_noise

IWAE_GRADIENTS = ("reparam", "dreg")
"""Gradient estimators of the IWAE bound (see :func:`iwae_terms`)."""

if TYPE_CHECKING:
    from vaekit.model.vae import VAE


def log_mean_exp(log_w: torch.Tensor) -> torch.Tensor:
    """log (1/K) Σ_k exp(log w_k) over the first dimension ``(K, ...)``: one logsumexp."""
    return torch.logsumexp(log_w, dim=0) - math.log(len(log_w))


def iwae_bound(model: VAE, batch: torch.Tensor | Batch, k: int) -> torch.Tensor:
    """L_K(x) = logsumexp_k log w_k − log K with reparameterised samples; ``(B,)``.

    Differentiable: its gradient is Σ_k w̃_k ∇ log w_k with normalised weights w̃_k that
    autograd derives through the logsumexp (no detached or hand-signed weights needed).
    """
    return iwae_terms(model, batch, k)[0]


def iwae_terms(
    model: VAE,
    batch: torch.Tensor | Batch,
    k: int,
    noise: torch.Tensor | None = None,
    gradient: str = "reparam",
) -> tuple[torch.Tensor, ELBOTerms]:
    """``(L_K(x), ELBO terms)`` from the same K reparameterised draws (``noise`` ``(K, B,
    noise_dim)`` if given), each ``(B,)``: the ELBO's reconstruction is the mean of
    log p(x|z_k), its rate the model's (closed form, or the mean of log q − log p(z)).

    ``gradient``: ``"reparam"``, the reparameterised gradient of L_K (Burda et al. 2015); or
    ``"dreg"``, the doubly reparameterised one (Tucker et al. 2018): for the decoder and the
    prior the same Σ_k w̃_k ∇ log w_k; for the encoder Σ_k w̃_k² ∂log w_k/∂z_k ∂z_k/∂φ, with
    log q at stopped parameters (no score term) and the normalised weights w̃ detached. Unbiased
    for the same gradient, with a variance that does not grow with K. The values are the same.
    """
    choice("gradient", gradient, IWAE_GRADIENTS)
    batch = as_batch(batch)
    params = model.posterior_parameters(batch)
    if noise is None:
        noise = standard_noise(model, k, params[0])
    dreg = gradient == "dreg"
    z, log_q = model.sample_posterior(params, noise, stopped=dreg)
    weights = LogWeights(model.log_likelihood(z, batch), model.log_prior(z), log_q)
    log_w = weights.log_w
    if dreg and z.requires_grad:
        # autograd brings w̃_k ∂log w_k/∂z_k to z_k through the logsumexp; one more factor
        # w̃_k there, on the path to the encoder only, makes it w̃_k² (the decoder keeps w̃_k)
        normalised = torch.softmax(log_w.detach(), dim=0).unsqueeze(-1)
        z.register_hook(lambda grad: grad * normalised)
    reconstruction = weights.log_likelihood.mean(0)
    rate = model.rate(params, log_q, weights.log_prior)
    return log_mean_exp(log_w), ELBOTerms(reconstruction - rate, reconstruction, rate)


@torch.no_grad()
def iter_log_weights(
    model: VAE,
    batch: torch.Tensor | Batch,
    k: int,
    chunk_size: int = 500,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[LogWeights]:
    """Yield the :class:`LogWeights` (each ``(c, B)``) of K draws z ~ q(z|x), ``chunk_size``
    at a time, for ``batch`` (``x (B, *input_shape)`` or a :class:`Batch`).

    Memory is O(chunk_size · B · dim x) whatever K. ``noise`` (``(K, B, noise_dim)``
    standard-normal draws) fixes the draws (common random numbers); then they do not depend on
    ``chunk_size``.
    """
    batch = as_batch(batch)
    params = model.posterior_parameters(batch)
    for start in range(0, k, chunk_size):
        size = min(chunk_size, k - start)
        if noise is None:
            eps = standard_noise(model, size, params[0], generator)
        else:
            eps = noise[start : start + size]
        yield log_weights(model, batch, params, eps)[1]


def log_px(
    model: VAE,
    batch: torch.Tensor | Batch,
    k: int = 5000,
    chunk_size: int = 500,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """log p̂_K(x) for a batch ``x (B, *input_shape)``; returns ``(B,)`` in nats, with the
    logsumexp over all K samples accumulated exactly chunk by chunk (see
    :func:`iter_log_weights` for ``chunk_size``, ``noise`` and ``generator``). Refuses data
    outside the likelihood's support (e.g. grey levels under a Bernoulli)."""
    model.check_examples(batch)
    total = None
    for weights in iter_log_weights(model, batch, k, chunk_size, noise, generator):
        partial = torch.logsumexp(weights.log_w, dim=0)
        total = partial if total is None else torch.logaddexp(total, partial)
    assert total is not None, "k must be positive"
    return total - math.log(k)
