"""The variational autoencoder: encoder q_φ(z|x), decoder p_θ(x|z), prior p(z).

log p_θ(x) = ELBO(x) + KL(q_φ(z|x) || p_θ(z|x))
ELBO(x)    = E_q[log p_θ(x|z)] − KL(q_φ(z|x) || p(z))        (reconstruction − rate)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Distribution

from vaekit.config import ModelConfig
from vaekit.errors import ConfigError
from vaekit.model.draws import random_like
from vaekit.model.likelihoods import build_likelihood
from vaekit.model.posterior import diagonal_gaussian, posterior_parameters
from vaekit.model.priors import StandardNormalPrior
from vaekit.nets.factory import build_networks
from vaekit.objectives.elbo import ELBOTerms, elbo
from vaekit.objectives.importance import log_px


class VAE(nn.Module):
    """A VAE with a diagonal-Gaussian encoder and a standard normal prior.

    Build it from options (``VAE((1, 28, 28), latent_dim=20, hidden=[400])``), from a
    :class:`ModelConfig`, or with your own networks: ``encoder`` maps ``(B, *input_shape)`` to
    ``(B, 2 * latent_dim)`` and ``decoder`` maps ``(B, latent_dim)`` to ``(B, *input_shape)``
    (the likelihood's parameters: logits for Bernoulli, means for the Gaussian and the
    logistic), or with ``decoded_scale`` to ``(B, 2, *input_shape)`` (means, then log-scales).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        latent_dim: int = 20,
        *,
        network: str = "mlp",
        hidden: Sequence[int] = (400,),
        activation: str = "relu",
        likelihood: str = "bernoulli",
        gaussian_scale: float = 0.1,
        learn_scale: bool = False,
        decoded_scale: bool = False,
        init: str = "default",
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.config = ModelConfig(
            input_shape=tuple(input_shape),
            latent_dim=latent_dim,
            network=network,
            hidden=list(hidden),
            activation=activation,
            likelihood=likelihood,
            gaussian_scale=gaussian_scale,
            learn_scale=learn_scale,
            decoded_scale=decoded_scale,
            init=init,
        )
        if (encoder is None) != (decoder is None):
            raise ConfigError("pass both encoder and decoder, or neither")
        self.custom_networks = encoder is not None
        if encoder is None:
            encoder, decoder = build_networks(self.config)
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = build_likelihood(
            likelihood, self.config.input_shape, gaussian_scale, learn_scale, decoded_scale
        )
        self.prior = StandardNormalPrior(latent_dim)

    @classmethod
    def from_config(cls, config: ModelConfig, **networks: nn.Module) -> VAE:
        options = config.to_dict()
        return cls(options.pop("input_shape"), options.pop("latent_dim"), **options, **networks)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.config.input_shape

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z|x) for ``x (B, *input_shape)``: a diagonal Gaussian with batch shape ``(B,)``
        and event shape ``(latent_dim,)``."""
        return diagonal_gaussian(self.encoder(x))

    def posterior_parameters(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, σ)`` of q(z|x) = N(μ, diag σ²) for ``x (B, *input_shape)``; ``(B, D)`` each."""
        return posterior_parameters(self.encoder(x))

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for ``z (..., latent_dim)``: batch shape ``(...)``, event shape
        ``input_shape``."""
        return self.likelihood(self.decoder_output(z))

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        """The likelihood's parameters for ``z (..., latent_dim)``: ``(..., *param_shape)``
        (``input_shape``, or ``(2, *input_shape)`` with a decoded scale)."""
        params = self.decoder(z.reshape(-1, self.latent_dim))
        return params.reshape(*z.shape[:-1], *self.config.param_shape)

    def log_likelihood(
        self, z: torch.Tensor, x: torch.Tensor, reduction: str = "none"
    ) -> torch.Tensor:
        """log p(x|z) in nats per example for ``z (..., latent_dim)`` and ``x (B,
        *input_shape)`` (``B`` the last of ``...``): ``(...)``, or the total with
        ``reduction="sum"``."""
        return self.likelihood.log_prob(self.decoder_output(z), x, reduction)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        mean: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Generate ``(n, *input_shape)``: z ~ N(0, T² I), then the mean of p(x|z) (or a draw
        from it with ``mean=False``); every draw from ``generator``."""
        noise = random_like(torch.randn, (n, self.latent_dim), self.prior.loc, generator)
        z = temperature * noise
        if mean:
            return self.decode(z).mean
        return self.likelihood.draw(self.decoder_output(z), generator)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """x -> z = E_q[z|x] (or a draw with ``mean=False``) -> E[x|z]; ``(B, *input_shape)``."""
        posterior = self.encode(x)
        z = posterior.mean if mean else posterior.sample()
        return self.decode(z).mean

    def elbo(self, x: torch.Tensor, n_samples: int = 1) -> ELBOTerms:
        """Per-example ELBO, reconstruction, rate, ``(B,)`` each; see ``objectives.elbo``.
        Refuses data outside the likelihood's support (e.g. grey levels under a Bernoulli)."""
        self.likelihood.check(x)
        return elbo(self, x, n_samples)

    def log_px(self, x: torch.Tensor, k: int = 5000, chunk_size: int = 500) -> torch.Tensor:
        """Importance-sampled log p̂_K(x), ``(B,)``; see :func:`vaekit.objectives.log_px`."""
        return log_px(self, x, k, chunk_size)

    def forward(self, x: torch.Tensor) -> ELBOTerms:
        return self.elbo(x)
