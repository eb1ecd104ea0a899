"""The evidence lower bound and the log importance weights it is the average of.

All quantities are per example, in nats, summed over the data and latent dimensions. The
densities are the model's closed forms on plain tensors (see ``vaekit.model.gaussian``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from vaekit.model.draws import random_like
from vaekit.model.gaussian import log_density

if TYPE_CHECKING:
    from vaekit.model.vae import VAE


class ELBOTerms(NamedTuple):
    """Per-example terms, each of shape ``(B,)`` (or their batch sums, scalars), in nats.

    elbo = reconstruction − rate, with reconstruction = E_q[log p(x|z)] and
    rate = KL(q(z|x) || p(z)).
    """

    elbo: torch.Tensor
    reconstruction: torch.Tensor
    rate: torch.Tensor

    def objective(self, beta: float = 1.0) -> torch.Tensor:
        """The β-weighted training objective reconstruction − β·rate (the ELBO at β = 1, to the
        bit). No branch on β, so a compiled step is not recompiled as β warms up."""
        return self.reconstruction - beta * self.rate


def log_weights(
    model: VAE, x: torch.Tensor, z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log w, log p(x|z))`` with log w = log p(x|z) + log p(z) − log q(z|x), for samples
    ``z (S, B, D)`` of q(z|x) = N(``loc``, diag ``scale``²) and ``x (B, *input_shape)``; each
    ``(S, B)``.

    E_q[log w] is the ELBO and log E_q[w] = log p(x).
    """
    log_likelihood = model.log_likelihood(z, x)
    log_q = log_density(z, loc, scale)
    return log_likelihood + model.prior.log_prob(z) - log_q, log_likelihood


def reparameterise(
    loc: torch.Tensor,
    scale: torch.Tensor,
    n_samples: int,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """z = μ + σ ⊙ ε, ``(n_samples, B, D)``, with ε = ``noise`` or fresh standard normal draws
    from ``generator`` (torch's global one if None)."""
    if noise is None:
        noise = random_like(torch.randn, (n_samples, *loc.shape), loc, generator)
    return loc + scale * noise


def elbo(
    model: VAE,
    x: torch.Tensor,
    n_samples: int = 1,
    noise: torch.Tensor | None = None,
    reduction: str = "none",
) -> ELBOTerms:
    """ELBO(x) = E_q[log p(x|z)] − KL(q(z|x) || p(z)), with the expectation estimated by
    ``n_samples`` reparameterised draws z = μ + σ ⊙ ε (unbiased, differentiable) and the KL in
    closed form.

    ``x``: ``(B, *input_shape)``; ``noise``: the draws ε ``(n_samples, B, D)``, if given.
    Returns :class:`ELBOTerms`, ``(B,)`` each, or their sums over the batch (scalars) with
    ``reduction="sum"`` (what the training loop needs, with fewer operations).
    """
    loc, scale = model.posterior_parameters(x)
    z = reparameterise(loc, scale, n_samples, noise)
    log_likelihood = model.log_likelihood(z, x, reduction)
    reconstruction = log_likelihood / n_samples if reduction == "sum" else log_likelihood.mean(0)
    kl = model.prior.kl(loc, scale, reduction)
    return ELBOTerms(reconstruction - kl, reconstruction, kl)
