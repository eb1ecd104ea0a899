"""The variational autoencoder: encoder q_φ(z|x), decoder p_θ(x|z), prior p(z).

log p_θ(x) = ELBO(x) + KL(q_φ(z|x) || p_θ(z|x))
ELBO(x)    = E_q[log p_θ(x|z)] − KL(q_φ(z|x) || p(z))        (reconstruction − rate)

The VAE is what the objectives, the trainer and ``evaluate`` see of a latent-variable model
(see :mod:`vaekit.model.contract` for its parts): posterior parameters from a batch, draws of
z with log q(z|x) from given noise, the rate (its rule resolved once, here), log p(z) and
log p(x|z). It knows nothing of the objectives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from vaekit.data.batch import Batch, as_batch
from vaekit.errors import ConfigError, DataError, first_line
from vaekit.model.config import COMPONENTS, ModelConfig
from vaekit.model.contract import MODELS, Posterior, PosteriorParameters, Prior
from vaekit.model.rate import RateRule
from vaekit.nets.factory import NetworkShapes


@MODELS.register("vae")
class VAE(nn.Module):
    """A VAE with one latent layer z of ``latent_dim`` dimensions.

    Build it from options (``VAE((1, 28, 28), latent_dim=20, hidden=[400], prior="mog")``;
    see :meth:`ModelConfig.from_options`), from a :class:`ModelConfig`
    (``VAE.from_config``), or with your own networks: ``encoder`` maps ``(B, *input_shape)``
    to ``(B, width)`` (the posterior's features: ``2 * latent_dim`` for the diagonal Gaussian,
    mean and unconstrained scale) and ``decoder`` maps ``(B, latent_dim)`` to ``(B,
    *input_shape)`` (the likelihood's parameters: logits for Bernoulli, means for the Gaussian
    and the logistic), or with ``decoded_scale`` to ``(B, 2, *input_shape)``.
    """

    uses_labels = False
    """Whether the model reads a batch's labels y (the trainer then carries them)."""

    infers_labels = False
    """Whether the model infers missing labels (−1) with a classifier q(y|x) (a
    semi-supervised model; it then ``uses_labels`` too)."""

    classes: int | None = None
    """The classes of the labels that the model generates from (a conditional model's), or
    None."""

    def __init__(
        self,
        input_shape: tuple[int, ...] | list[int],
        latent_dim: int = 20,
        *,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        config: ModelConfig | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if config is None:
            config = ModelConfig.from_options(tuple(input_shape), latent_dim, **options)
        elif options:
            raise ConfigError("pass a ModelConfig or options, not both")
        if not issubclass(type(self), MODELS[config.model.name].builder):
            raise ConfigError(
                f"a {type(self).__name__} cannot be built as model {config.model.name!r}"
            )
        self.config = config
        if (encoder is None) != (decoder is None):
            raise ConfigError("pass both encoder and decoder, or neither")
        self.custom_networks = encoder is not None
        self.likelihood = _build("likelihood", config, config.input_shape)
        self.posterior, self.prior = self._latent_parts(config)
        if encoder is None:
            network = config.network
            shapes = NetworkShapes(
                config.input_shape,
                self.posterior.encoder_width(config.latent_dim, config.posterior.options),
                self.decoder_input_dim,
                self.likelihood.param_shape,
            )
            encoder, decoder = COMPONENTS["network"][network.name].builder(network.options, shapes)
        self.encoder = encoder
        self.decoder = decoder
        if self.custom_networks:
            self._check_networks()
        self.prior.bind(self)
        self.rate_rule = RateRule(self.posterior, self.prior)

    def _latent_parts(self, config: ModelConfig) -> tuple[Posterior, Prior]:
        """The posterior and the prior of z: the configured ones, of ``latent_dim``."""
        return _build("posterior", config, config.latent_dim), _build(
            "prior", config, config.latent_dim
        )

    @torch.no_grad()
    def _check_networks(self) -> None:
        """Refuse, with one line, your own networks whose output does not fit the model: a
        forward pass of two zero examples through each."""
        config, width = (
            self.config,
            self.posterior.encoder_width(self.config.latent_dim, self.config.posterior.options),
        )
        expected = {
            "encoder": ((2, *config.input_shape), (2, width)),
            "decoder": ((2, self.decoder_input_dim), (2, *self.likelihood.param_shape)),
        }
        for name, (given, wanted) in expected.items():
            network = getattr(self, name)
            dtype = next(network.parameters(), torch.zeros(())).dtype
            try:
                out = network(torch.zeros(given, dtype=dtype))
            except (RuntimeError, ValueError, TypeError) as err:
                reason = first_line(err)
                raise ConfigError(
                    f"your {name} fails on input {given} ({reason}); it must map {given} to "
                    f"{wanted}"
                ) from None
            if not isinstance(out, torch.Tensor) or out.numel() != math.prod(wanted):
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ConfigError(
                    f"your {name} maps {given} to {shape}; this model needs {wanted} "
                    f"(latent_dim {config.latent_dim}, {config.posterior.name} posterior, "
                    f"{config.likelihood.name} likelihood)"
                )

    def check_examples(self, batch: torch.Tensor | Batch) -> None:
        """Refuse, with one line, examples of the wrong shape or dtype, and data outside the
        likelihood's support (the measuring entry points call it; the training step, whose
        data are checked once, does not)."""
        x = as_batch(batch).x
        if not isinstance(x, torch.Tensor):
            raise DataError(f"the examples must be a torch tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise DataError(
                f"the examples are {x.dtype}; convert them to floats first (8-bit images: "
                "x.float() / 255)"
            )
        if tuple(x.shape[1:]) != self.input_shape:
            raise DataError(
                f"the examples have shape {tuple(x.shape[1:])} but the model expects "
                f"{self.input_shape} (a batch is (N, {', '.join(map(str, self.input_shape))}))"
            )
        self.likelihood.check(x)

    @classmethod
    def from_config(cls, config: ModelConfig, **networks: nn.Module) -> VAE:
        return cls(config.input_shape, config.latent_dim, config=config, **networks)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.config.input_shape

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """The sizes of z's layers, bottom (the one the decoder reads) to top: one here."""
        return (self.config.latent_dim,)

    @property
    def latent_dim(self) -> int:
        """The size of z, all its layers together (``D``)."""
        return sum(self.layer_sizes)

    @property
    def decoder_input_dim(self) -> int:
        """What the decoder reads per example: z's bottom layer (all of z in one layer)."""
        return self.config.latent_dim

    @property
    def noise_dim(self) -> int:
        """Standard-normal draws per sample of z: the trainer draws noise ``(S, B, noise_dim)``."""
        return self.posterior.noise_dim

    # ------------------------------------------------------------ the contract, on tensors
    def posterior_parameters(self, batch: torch.Tensor | Batch) -> PosteriorParameters:
        """q(z|x)'s parameters for ``x (B, *input_shape)`` (or a :class:`Batch`): for the
        diagonal Gaussian ``(μ, σ)``, ``(B, D)`` each."""
        return self.posterior.parameters_from(self.encoder(as_batch(batch).x))

    def decoder_input(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """What the decoder reads for ``z (..., D)``: ``(..., decoder_input_dim)``, z's bottom
        layer (``labels`` are for a conditional model; this one has none to read)."""
        return z[..., : self.config.latent_dim]

    def sample_posterior(
        self, params: PosteriorParameters, noise: torch.Tensor, stopped: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, log q(z|x))`` from ``noise (S, B, noise_dim)``: ``(S, B, D)`` and ``(S, B)``;
        ``stopped``: log q at stopped parameters (its gradient reaches the encoder only
        through z: see :meth:`Posterior.sample_and_stopped_log_prob`)."""
        if stopped:
            return self.posterior.sample_and_stopped_log_prob(params, noise)
        return self.posterior.sample_and_log_prob(params, noise)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) for ``z (..., D)``; ``(...)``."""
        return self.prior.log_prob(z)

    def sample_and_rate_per_layer(
        self, params: PosteriorParameters, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z ``(S, B, D)`` from ``noise (S, B, noise_dim)``, and the rate split by latent layer,
        ``(B, L)`` in nats: for each layer the mean over the draws of log q(z_l|its parents) −
        log p(z_l|its parents), their sum the rate. One layer here: the model's rate (its
        closed form where it has one)."""
        if self.rate_rule.analytic:
            return self.posterior.rsample(params, noise), self.rate(params).unsqueeze(-1)
        z, log_q = self.sample_posterior(params, noise)
        return z, self.rate(params, log_q, self.log_prior(z)).unsqueeze(-1)

    def rate_per_layer(self, params: PosteriorParameters, noise: torch.Tensor) -> torch.Tensor:
        """The rate split by latent layer, ``(B, L)`` (see :meth:`sample_and_rate_per_layer`)."""
        return self.sample_and_rate_per_layer(params, noise)[1]

    def rate(
        self,
        params: PosteriorParameters,
        log_q: torch.Tensor | None = None,
        log_prior: torch.Tensor | None = None,
        reduction: str = "none",
    ) -> torch.Tensor:
        """KL(q(z|x) || p(z)) per example ``(B,)`` (or summed over the batch with ``"sum"``):
        closed form, or the Monte Carlo mean of ``log_q − log_prior`` over the draws (see
        :class:`RateRule`; ``rate_rule.label``)."""
        return self.rate_rule(params, log_q, log_prior, reduction)

    def decoder_output(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The likelihood's parameters for ``z (..., latent_dim)``: ``(..., *param_shape)``,
        from :meth:`decoder_input` (z's bottom layer; with a conditional model's labels)."""
        params = self.decoder(self.decoder_input(z, labels).reshape(-1, self.decoder_input_dim))
        return params.reshape(*z.shape[:-1], *self.likelihood.param_shape)

    def log_likelihood(
        self, z: torch.Tensor, batch: torch.Tensor | Batch, reduction: str = "none"
    ) -> torch.Tensor:
        """log p(x|z) in nats per example for ``z (..., latent_dim)`` and ``x (B,
        *input_shape)`` (``B`` the last of ``...``): ``(...)``, or the total with
        ``reduction="sum"``."""
        batch = as_batch(batch)
        return self.likelihood.log_prob(self.decoder_output(z, batch.y), batch.x, reduction)

    # ------------------------------------------------------------ for users and figures
    def encode(self, batch: torch.Tensor | Batch) -> Distribution:
        """q(z|x) as a torch distribution: batch shape ``(B,)``, event shape ``(latent_dim,)``."""
        self._check_shape(batch)
        return self.posterior.distribution(self.posterior_parameters(batch))

    def representative(self, batch: torch.Tensor | Batch) -> torch.Tensor:
        """One latent point per example, E_q[z|x]: ``(B, latent_dim)``."""
        self._check_shape(batch)
        return self.posterior.representative(self.posterior_parameters(batch))

    def _check_shape(self, batch: torch.Tensor | Batch) -> None:
        x = as_batch(batch).x
        if not x.is_floating_point() or tuple(x.shape[1:]) != self.input_shape:
            self.check_examples(batch)  # says what is wrong

    def descend(self, z: torch.Tensor, level: int) -> torch.Tensor:
        """z ``(..., D)`` with the layers below layer ``level`` (0: the bottom) replaced, going
        down, by their prior means given the layer above: what the layers from ``level`` up
        say of x (for traversals of a layer). One layer here: z itself."""
        return z

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> Distribution:
        """p(x|z) for ``z (..., latent_dim)``: batch shape ``(...)``, event ``input_shape``
        (``labels``: a conditional model's y, one per z)."""
        return self.likelihood(self.decoder_output(z, labels))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        temperature: float | Sequence[float] = 1.0,
        mean: bool = True,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Generate ``(n, *input_shape)``: z from the prior at temperature T (one for every
        latent layer, or one per layer, bottom to top), then the mean of p(x|z) (or a draw
        from it with ``mean=False``); every draw from ``generator``. ``labels``: a
        conditional model's y, one per sample."""
        if not isinstance(temperature, (int, float)):
            temperature = [float(t) for t in temperature]
            if len(temperature) != len(self.layer_sizes):
                raise ConfigError(
                    f"give one temperature, or one per latent layer ({len(self.layer_sizes)}), "
                    f"not {len(temperature)}"
                )
            if len(temperature) == 1:
                (temperature,) = temperature
        z = self.prior.sample(n, temperature, generator)
        labels = self.sample_labels(n, labels, z.device)
        if mean:
            return self.decode(z, labels).mean
        return self.likelihood.draw(self.decoder_output(z, labels), generator)

    def sample_labels(
        self, n: int, labels: torch.Tensor | None, device: torch.device
    ) -> torch.Tensor | None:
        """The labels ``n`` samples are generated with: none for a model without labels (and
        ``labels`` given to it are refused)."""
        if labels is not None:
            raise ConfigError(f"a {type(self).__name__} reads no labels: sample it without them")
        return None

    @torch.no_grad()
    def reconstruct(self, batch: torch.Tensor | Batch, mean: bool = True) -> torch.Tensor:
        """x -> z = E_q[z|x] (or a draw with ``mean=False``) -> E[x|z]; ``(B, *input_shape)``."""
        self._check_shape(batch)
        params = self.posterior_parameters(batch)
        if mean:
            z = self.posterior.representative(params)
        else:
            noise = torch.randn((1, len(params[0]), self.noise_dim), dtype=params[0].dtype)
            z = self.posterior.rsample(params, noise.to(params[0].device))[0]
        return self.decode(z, as_batch(batch).y).mean


def _build(kind: str, config: ModelConfig, size: Any) -> Any:
    component = getattr(config, kind)
    return COMPONENTS[kind][component.name].builder(size, component.options)
