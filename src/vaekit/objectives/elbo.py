"""The evidence lower bound and the log importance weights it is the average of.

All quantities are per example, in nats, summed over the data and latent dimensions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch.distributions import Distribution, kl_divergence

if TYPE_CHECKING:
    from vaekit.model.vae import VAE


class ELBOTerms(NamedTuple):
    """Per-example terms, each of shape ``(B,)``, in nats.

    elbo = reconstruction − rate, with reconstruction = E_q[log p(x|z)] and
    rate = KL(q(z|x) || p(z)).
    """

    elbo: torch.Tensor
    reconstruction: torch.Tensor
    rate: torch.Tensor

    def objective(self, beta: float = 1.0) -> torch.Tensor:
        """The β-weighted training objective reconstruction − β·rate, shape ``(B,)``."""
        return self.reconstruction - beta * self.rate


def log_weights(
    model: VAE, x: torch.Tensor, z: torch.Tensor, posterior: Distribution
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log w, log p(x|z))`` with log w = log p(x|z) + log p(z) − log q(z|x), for samples
    ``z (S, B, D)`` and ``x (B, *input_shape)``; each ``(S, B)``.

    E_q[log w] is the ELBO and log E_q[w] = log p(x).
    """
    log_likelihood = model.decode(z).log_prob(x)
    return log_likelihood + model.prior().log_prob(z) - posterior.log_prob(z), log_likelihood


def rate(posterior: Distribution, prior: Distribution, z: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || p(z)) per example, ``(B,)``: analytic when torch.distributions has the
    pair's closed form, else the Monte Carlo mean of log q(z|x) − log p(z) over ``z (S, B, D)``."""
    try:
        return kl_divergence(posterior, prior)
    except NotImplementedError:
        return (posterior.log_prob(z) - prior.log_prob(z)).mean(0)


def reparameterise(
    posterior: Distribution, n_samples: int, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """z = μ + σ ⊙ ε, ``(n_samples, B, D)``, with ε = ``noise`` or fresh standard normal draws."""
    if noise is None:
        return posterior.rsample((n_samples,))
    return posterior.mean + posterior.stddev * noise


def elbo(
    model: VAE, x: torch.Tensor, n_samples: int = 1, noise: torch.Tensor | None = None
) -> ELBOTerms:
    """ELBO(x) = E_q[log p(x|z)] − KL(q(z|x) || p(z)), with the expectation estimated by
    ``n_samples`` reparameterised draws z = μ + σ ⊙ ε (unbiased, differentiable).

    ``x``: ``(B, *input_shape)``; ``noise``: the draws ε ``(n_samples, B, D)``, if given
    (else they come from torch's global generator). Returns :class:`ELBOTerms`, ``(B,)`` each.
    """
    posterior = model.encode(x)
    z = reparameterise(posterior, n_samples, noise)
    reconstruction = model.decode(z).log_prob(x).mean(0)
    kl = rate(posterior, model.prior(), z)
    return ELBOTerms(reconstruction - kl, reconstruction, kl)
