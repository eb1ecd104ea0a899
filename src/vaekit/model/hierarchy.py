"""A hierarchy of latent layers z = (z_1, ..., z_L), bottom to top. The generative model is

    p(x, z) = p(x|z_1) p(z_1|z_2) ... p(z_{L−1}|z_L) p(z_L)

with p(z_L) the configured prior (``--prior``) and each p(z_l|z_{l+1}) = N(μ_l(z_{l+1}),
diag σ_l(z_{l+1})²), a network of ``layer_hidden`` units computing its parameters. The
inference model is one of:

- ``bottom-up`` (the stacked VAE of Burda et al. 2015, §5): q(z|x) = q(z_1|x) q(z_2|z_1) ...
  q(z_L|z_{L−1}), each computed from the layer below;
- ``top-down`` (the ladder VAE, Sønderby et al. 2016): a deterministic bottom-up pass gives
  each layer an estimate N(μ̂_l(x), σ̂_l(x)²); q(z_L|x) is the top one, and going down
  q(z_l|z_{l+1}, x) merges the estimate with the generative path's p(z_l|z_{l+1}) = N(μ_p,
  σ_p²) by precision weighting: σ_q⁻² = σ̂⁻² + σ_p⁻², μ_q = σ_q² (μ̂ σ̂⁻² + μ_p σ_p⁻²). The
  generative networks are shared by p and q;
- ``x-and-above`` (Tomczak & Welling 2018's HVAE): q(z_L|x), then going down q(z_l|x,
  z_{l+1}), each a network of its own reading the encoder's features of x (and the layer
  above).

Bottom-up and x-and-above, each layer's q(z_l|its parents) is the configured posterior of
d_l dimensions (``--posterior``): a diagonal Gaussian, or an inverse autoregressive flow on
one (Kingma et al. 2016 put IAF layers in a hierarchy), its context computed with the
Gaussian's parameters by the network that reads the parents. log q(z|x) = Σ_l log q(z_l|its
parents) stays exact. Top-down inference merges Gaussian estimates, so its layers are
Gaussian.

The decoder reads z_1 (``decoder_reads`` bottom) or every layer (all: p(x|z_1, ..., z_L), as
in Tomczak & Welling's HVAE).

z is the layers concatenated bottom to top, ``(..., d_1 + ... + d_L)``; the decoder reads z_1
(or all of z; ``--latent-dim`` is z_1's size, ``--upper-layers`` the sizes above it). Every
log-density is in nats, summed over the dimensions of all layers. The rate KL(q(z|x) || p(z))
has no closed form: the Monte Carlo rate serves it, and
:meth:`HierarchicalVAE.sample_and_rate_per_layer` splits it into each layer's
E_q[log q(z_l|·) − log p(z_l|z_{l+1})].

A prior of the top layer that reads the model (the VampPrior, p(z_L) = (1/C) Σ_c q(z_L|u_c);
Tomczak & Welling's HVAE) sees the top layer as a model of its own (:class:`TopLayer`): with
top-down or x-and-above inference q(z_L|x) is a function of x alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from vaekit.checks import choice, option, sizes
from vaekit.errors import ConfigError
from vaekit.model.config import COMPONENTS, Component, ModelConfig
from vaekit.model.contract import (
    MODELS,
    Posterior,
    PosteriorParameters,
    Prior,
    call_stopped,
)
from vaekit.model.draws import random_like
from vaekit.model.gaussian import log_density_dims
from vaekit.model.posteriors.as_distribution import PosteriorDistribution
from vaekit.model.posteriors.diagonal_gaussian import DiagonalGaussianPosterior, gaussian_parameters
from vaekit.model.vae import VAE
from vaekit.nets.mlp import MLP

INFERENCES = ("top-down", "bottom-up", "x-and-above")
DECODER_READS = ("bottom", "all")

Gaussian = tuple[torch.Tensor, torch.Tensor]
"""``(μ, σ)`` of a diagonal Gaussian layer, each ``(..., d_l)``."""


@dataclass
class HierarchyOptions:
    """upper_layers: the sizes of z_2, ..., z_L; layer_hidden: the hidden widths of the networks
    between latent layers; inference: bottom-up or top-down (see :mod:`vaekit.model.hierarchy`)."""

    upper_layers: list[int] = option(
        lambda: [32], "sizes of the latent layers above z_1, bottom to top (e.g. 50, or 32,16)"
    )
    layer_hidden: list[int] = option(
        lambda: [100, 100], "hidden layer sizes of the networks between latent layers"
    )
    inference: str = option(
        "top-down",
        "q(z|x) of the hierarchy: top-down (ladder VAE, sharing the generative path), "
        "bottom-up (stacked, Burda et al.) or x-and-above (q(z_l|x, z_{l+1}), Tomczak & "
        "Welling's HVAE)",
        INFERENCES,
    )
    decoder_reads: str = option(
        "bottom",
        "what p(x|z) reads: bottom (z_1) or all (every latent layer, as Tomczak & Welling's HVAE)",
        DECODER_READS,
    )

    def describe(self, latent_dim: int) -> str:
        sizes = " + ".join(map(str, [latent_dim, *self.upper_layers]))
        reads = "" if self.decoder_reads == "bottom" else ", all read by the decoder"
        return f"latent layers of {sizes} dimensions inferred {self.inference}{reads}"

    def __post_init__(self) -> None:
        for name in ("upper_layers", "layer_hidden"):
            setattr(self, name, sizes(name, getattr(self, name)))
        if not self.upper_layers:
            raise ConfigError("a hierarchy needs at least one upper layer (one layer: --model vae)")
        choice("inference", self.inference, INFERENCES)
        choice("decoder_reads", self.decoder_reads, DECODER_READS)


class LayerNetwork(nn.Module):
    """A network between latent layers: ``(..., n_in) -> (..., width)`` features (of a layer's
    posterior, see :class:`HierarchicalPosterior`)."""

    def __init__(self, n_in: int, width: int, hidden: list[int], activation: str) -> None:
        super().__init__()
        self.net = MLP((n_in,), hidden, (width,), activation)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class GaussianLayer(LayerNetwork):
    """A diagonal Gaussian computed by a network: ``(..., n_in) -> (μ, σ)``, each ``(..., d)``."""

    def __init__(self, n_in: int, d: int, hidden: list[int], activation: str) -> None:
        super().__init__(n_in, 2 * d, hidden, activation)

    def forward(self, h: torch.Tensor) -> Gaussian:  # type: ignore[override]
        return gaussian_parameters(self.net(h))


def encoder_features(latent_dim: int, inference: str, layer: Component) -> int:
    """What a hierarchy's encoder outputs per example: bottom-up, q(z_1|x)'s features (those of
    the layer's posterior, ``layer``); top-down, z_1's Gaussian estimate; x-and-above, 2 d_1
    features of x that every layer's network reads."""
    if inference == "bottom-up":
        return COMPONENTS["posterior"][layer.name].builder.encoder_width(latent_dim, layer.options)
    return 2 * latent_dim


def _apply(network: nn.Module, inputs: torch.Tensor, stopped: bool) -> Any:
    """``network(inputs)``; ``stopped``: with the network's weights detached, so that the
    gradient reaches them only through ``inputs`` (log q at stopped parameters)."""
    return call_stopped(network, inputs) if stopped else network(inputs)


def _precision_weighted(estimate: Gaussian, prior: Gaussian) -> Gaussian:
    """The product of two Gaussians, normalised: σ⁻² = σ̂⁻² + σ_p⁻², μ = σ² (μ̂ σ̂⁻² + μ_p σ_p⁻²)."""
    precision_hat, precision_p = estimate[1].pow(-2), prior[1].pow(-2)
    variance = (precision_hat + precision_p).reciprocal()
    return variance * (estimate[0] * precision_hat + prior[0] * precision_p), variance.sqrt()


class HierarchicalPrior(Prior):
    """p(z) = p(z_L) Π_{l<L} p(z_l|z_{l+1}): the ``top`` prior and the generative networks."""

    def __init__(self, sizes: Sequence[int], top: Prior, hidden: list[int], activation: str):
        super().__init__()
        self.sizes = tuple(sizes)
        self.top = top
        self.conditionals = nn.ModuleList(
            GaussianLayer(above, below, hidden, activation)
            for below, above in zip(self.sizes[:-1], self.sizes[1:], strict=True)
        )

    def bind(self, model: nn.Module) -> None:
        """A top prior that reads the model reads the top layer's (see :class:`TopLayer`)."""
        if self.top.reads_the_model:
            self.top.bind(TopLayer(model))

    def split(self, z: torch.Tensor) -> list[torch.Tensor]:
        """z ``(..., D)`` as its layers, bottom to top."""
        return list(z.split(self.sizes, dim=-1))

    def log_prob_layers(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z_l|z_{l+1}) per layer (log p(z_L) on top) for ``z (..., D)``; ``(..., L)``."""
        layers = self.split(z)
        below = [terms.sum(-1) for terms in self._conditional_dims(layers)]
        return torch.stack([*below, self.top.log_prob(layers[-1])], dim=-1)

    def conditional_log_prob_dims(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z_{l,d}|z_{l+1}) of each dimension d of each layer below the top (a diagonal
        Gaussian given z_{l+1}), then the top prior's log p(z_{L,d}), or NaN for those where it
        does not factorise (a mixture, a VampPrior); ``(..., D)`` for ``z (..., D)``."""
        layers = self.split(z)
        top = self.top.log_prob_dims(layers[-1])
        unknown = torch.full_like(layers[-1], float("nan"))
        return torch.cat([*self._conditional_dims(layers), unknown if top is None else top], -1)

    def _conditional_dims(self, layers: list[torch.Tensor]) -> list[torch.Tensor]:
        """log p(z_l|z_{l+1}) per dimension, for each layer below the top."""
        return [
            log_density_dims(layers[level], *conditional(layers[level + 1]))
            for level, conditional in enumerate(self.conditionals)
        ]

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.log_prob_layers(z).sum(-1)

    def sample(
        self,
        n: int,
        temperature: float | Sequence[float] = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """z_L from the top prior, then each z_l = μ_l + T_l σ_l ε down the hierarchy; a
        temperature for all layers or one per layer (bottom to top); ``(n, D)``."""
        if isinstance(temperature, (int, float)):
            temperatures = [float(temperature)] * len(self.sizes)
        else:
            temperatures = [float(t) for t in temperature]
        layers = [self.top.sample(n, temperatures[-1], generator)]
        for level in reversed(range(len(self.conditionals))):
            loc, scale = self.conditionals[level](layers[0])
            noise = random_like(torch.randn, loc.shape, loc, generator)
            layers.insert(0, loc + temperatures[level] * scale * noise)
        return torch.cat(layers, dim=-1)


class TopLayer:
    """The top layer z_L of a hierarchy inferred top-down or x-and-above, seen as a one-layer
    model: its inputs, its posterior (the top layer's, of d_L dimensions) and q(z_L|x)'s
    parameters. What a prior that reads the model needs (``bind``); it keeps the model as a
    plain reference."""

    def __init__(self, model: nn.Module) -> None:
        self.input_shape = model.input_shape
        self.config = model.config
        self.posterior = model.posterior.layer_posteriors[-1]
        self._model = model

    def posterior_parameters(self, x: torch.Tensor) -> PosteriorParameters:
        """q(z_L|x)'s parameters (for a diagonal Gaussian ``(μ_L, σ_L)``, each ``(B, d_L)``)."""
        return self._model.posterior.top_parameters(self._model.posterior_parameters(x))


class HierarchicalPosterior(Posterior):
    """q(z|x) of a hierarchy, inferred bottom-up, top-down or x-and-above (see the module's
    docstring), one layer at a time: each layer's q(z_l|its parents) is the configured
    posterior of d_l dimensions (``layer_posteriors``; a diagonal Gaussian, or bottom-up and
    x-and-above an IAF on top of one), its parameters computed by a network from the parents.

    Its parameters: bottom-up, q(z_1|x)'s (e.g. ``(μ_1, σ_1)``); top-down, every layer's
    Gaussian estimate ``(μ̂_1, σ̂_1, ..., μ̂_L, σ̂_L)``; x-and-above, the encoder's features of
    x. All come from the encoder's output and, top-down, networks of their own going up;
    top-down inference also runs the prior's generative networks (kept as a plain reference:
    they belong to the prior)."""

    def __init__(
        self,
        sizes: Sequence[int],
        inference: str,
        networks: tuple[list[int], str],
        prior: HierarchicalPrior,
        layer: Component,
    ) -> None:
        super().__init__()
        self.sizes, self.inference = tuple(sizes), inference
        self.noise_dim = sum(self.sizes)
        builder = COMPONENTS["posterior"][layer.name].builder
        self.layer_posteriors = nn.ModuleList(builder(d, layer.options) for d in self.sizes)
        widths = [builder.encoder_width(d, layer.options) for d in self.sizes]
        self.feature_width = encoder_features(self.sizes[0], inference, layer)
        pairs = list(zip(self.sizes[:-1], self.sizes[1:], strict=True))
        if inference == "x-and-above":
            self.top = LayerNetwork(self.feature_width, widths[-1], *networks)
            self.given_above = nn.ModuleList(
                LayerNetwork(self.feature_width + above, width, *networks)
                for (_, above), width in zip(pairs, widths[:-1], strict=True)
            )
        elif inference == "bottom-up":
            self.upward = nn.ModuleList(
                LayerNetwork(below, width, *networks)
                for (below, _), width in zip(pairs, widths[1:], strict=True)
            )
        else:  # top-down: Gaussian estimates (μ̂, σ̂) go up
            self.upward = nn.ModuleList(
                GaussianLayer(2 * below, above, *networks) for below, above in pairs
            )
        object.__setattr__(self, "_prior", prior)  # not a submodule of the posterior
        self._prior: HierarchicalPrior

    def encoder_width(self, latent_dim: int, options: Any = None) -> int:  # type: ignore[override]
        """See :func:`encoder_features`."""
        return self.feature_width

    @property
    def log_prob_is_cheap(self) -> bool:  # type: ignore[override]
        return all(layer.log_prob_is_cheap for layer in self.layer_posteriors)

    def parameters_from(self, features: torch.Tensor) -> PosteriorParameters:
        if self.inference == "x-and-above":
            return (features,)  # every layer's network reads them
        if self.inference == "bottom-up":
            return self.layer_posteriors[0].parameters_from(features)
        estimates = [gaussian_parameters(features)]
        for network in self.upward:
            estimates.append(network(torch.cat(estimates[-1], dim=-1)))
        return tuple(part for estimate in estimates for part in estimate)

    def draw_layers(
        self, params: PosteriorParameters, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z ``(S, B, D)`` from ``noise (S, B, D)``, and log q of each layer given its parents,
        ``(S, B, L)``."""
        noises = noise.split(self.sizes, dim=-1)
        layers: list[torch.Tensor] = [torch.empty(0)] * len(self.sizes)
        log_q: list[torch.Tensor] = [torch.empty(0)] * len(self.sizes)
        for level in self._order():
            layers[level], log_q[level] = self.layer_posteriors[level].sample_and_log_prob(
                self._layer(params, layers, level), noises[level]
            )
        return torch.cat(layers, dim=-1), torch.stack(log_q, dim=-1)

    def log_prob_layers(self, params: PosteriorParameters, z: torch.Tensor) -> torch.Tensor:
        """log q of each layer of ``z (..., B, D)`` given its parents; ``(..., B, L)``."""
        layers = self._prior.split(z)
        return torch.stack(
            [
                posterior.log_prob(self._layer(params, layers, level), layers[level])
                for level, posterior in enumerate(self.layer_posteriors)
            ],
            dim=-1,
        )

    def conditional_log_prob_dims(
        self, params: PosteriorParameters, z: torch.Tensor
    ) -> torch.Tensor:
        """log q(z_{l,d}|the parents of z_l) of each dimension of each layer that is a diagonal
        Gaussian given them, NaN for those of a layer that is not (an IAF's); ``(..., B, D)``."""
        layers = self._prior.split(z)
        terms = []
        for level, posterior in enumerate(self.layer_posteriors):
            gaussian = posterior.gaussian_layers(self._layer(params, layers, level))
            terms.append(
                torch.full_like(layers[level], float("nan"))
                if gaussian is None
                else log_density_dims(layers[level], *gaussian[0])
            )
        return torch.cat(terms, dim=-1)

    def _order(self) -> range:
        """The layers in the order q draws them."""
        if self.inference == "bottom-up":
            return range(len(self.sizes))
        return range(len(self.sizes) - 1, -1, -1)

    def _layer(
        self,
        params: PosteriorParameters,
        layers: list[torch.Tensor],
        level: int,
        stopped: bool = False,
    ) -> PosteriorParameters:
        """q(z_level | its parents)'s parameters given the layers drawn before it
        (``stopped``: with every network's weights detached, the generative ones that top-down
        inference shares too)."""
        if self.inference == "bottom-up":
            if level == 0:
                return params
            features = _apply(self.upward[level - 1], layers[level - 1], stopped)
            return self.layer_posteriors[level].parameters_from(features)
        if level == len(self.sizes) - 1:
            return self.top_parameters(params, stopped)
        above = layers[level + 1]
        if self.inference == "x-and-above":
            features = params[0].expand(*above.shape[:-1], params[0].shape[-1])
            inputs = torch.cat([features, above], dim=-1)
            return self.layer_posteriors[level].parameters_from(
                _apply(self.given_above[level], inputs, stopped)
            )
        estimate = (params[2 * level], params[2 * level + 1])
        return _precision_weighted(
            estimate, _apply(self._prior.conditionals[level], above, stopped)
        )

    def top_parameters(
        self, params: PosteriorParameters, stopped: bool = False
    ) -> PosteriorParameters:
        """q(z_L|x)'s parameters, top-down or x-and-above (bottom-up has none: z_L depends on
        the layers below it); ``stopped``: with the network's weights detached."""
        if self.inference == "x-and-above":
            return self.layer_posteriors[-1].parameters_from(_apply(self.top, params[0], stopped))
        if self.inference == "top-down":
            return params[-2], params[-1]
        raise ConfigError("bottom-up inference has no q(z_L|x): z_L depends on the layers below")

    def layer_given_x(self, params: PosteriorParameters, level: int) -> Gaussian | None:
        """z_1 of bottom-up inference and z_L of top-down or x-and-above inference, where that
        layer is a diagonal Gaussian: the layer q draws first, given x alone (every other layer
        depends on a draw of another)."""
        first = 0 if self.inference == "bottom-up" else len(self.sizes) - 1
        if level != first:
            return None
        own = params if self.inference == "bottom-up" else self.top_parameters(params)
        return self.layer_posteriors[level].layer_given_x(own, 0)

    def sample_and_log_prob(
        self, params: PosteriorParameters, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z, log_q = self.draw_layers(params, noise)
        return z, log_q.sum(-1)

    def log_prob(self, params: PosteriorParameters, z: torch.Tensor) -> torch.Tensor:
        return self.log_prob_layers(params, z).sum(-1)

    @property
    def has_stopped_log_prob(self) -> bool:
        return True  # its networks' weights are detached for it (see _apply)

    def sample_and_stopped_log_prob(
        self, params: PosteriorParameters, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z drawn layer by layer as :meth:`sample_and_log_prob` draws it, and log q(z|x) =
        Σ_l log q(z_l|its parents) at stopped parameters: the encoder's output and every
        network's weights detached (each layer's posterior's own too), the layers that a
        layer's density reads left live. Its gradient reaches the parameters only through z;
        the score term that STL and DReG drop is E_q of each layer's ∂ log q(z_l|parents)/∂φ
        at fixed z, zero in expectation."""
        z, _ = self.draw_layers(params, noise)
        stopped = tuple(p.detach() for p in params)
        layers, noises = self._prior.split(z), noise.split(self.sizes, dim=-1)
        log_q = [
            posterior.stopped_log_prob(
                self._layer(stopped, layers, level, stopped=True), layers[level], noises[level]
            )
            for level, posterior in enumerate(self.layer_posteriors)
        ]
        return z, torch.stack(log_q, dim=-1).sum(-1)

    def representative(self, params: PosteriorParameters) -> torch.Tensor:
        """The means along the chain: each layer's representative given its parents at theirs
        (for a diagonal Gaussian its mean: the exact E_q[z] for the top layer drawn first; a
        point estimate below it)."""
        like = params[0]
        return self.draw_layers(params, like.new_zeros(*like.shape[:-1], self.noise_dim))[0]

    def distribution(self, params: PosteriorParameters) -> Distribution:
        return PosteriorDistribution(self, params)


@MODELS.register("hierarchy", HierarchyOptions)
class HierarchicalVAE(VAE):
    """Latent layers z_1 (--latent-dim) ... z_L (--upper-layers), inferred top-down (ladder) or
    bottom-up (stacked).

    Built as any VAE, e.g. ``HierarchicalVAE((1, 28, 28), 64, model="hierarchy",
    upper_layers=[32, 16])``, or from a ``ModelConfig`` whose model is ``hierarchy``."""

    def _latent_parts(self, config: ModelConfig) -> tuple[Posterior, Prior]:
        options: HierarchyOptions = config.model.options
        gaussian = (
            COMPONENTS["posterior"][config.posterior.name].builder is DiagonalGaussianPosterior
        )
        if options.inference == "top-down" and not gaussian:
            raise ConfigError(
                f"top-down inference merges Gaussian estimates of each layer by precision "
                f"weighting: --posterior {config.posterior.name} needs --inference bottom-up or "
                "x-and-above"
            )
        sizes = (config.latent_dim, *options.upper_layers)
        top = COMPONENTS["prior"][config.prior.name].builder(sizes[-1], config.prior.options)
        if top.reads_the_model and options.inference == "bottom-up":
            raise ConfigError(
                f"the {config.prior.name} prior of the top layer reads q(z_L|x), which "
                "bottom-up inference does not have (z_L depends on the draws below it): use "
                "--inference top-down or x-and-above"
            )
        activation = config.network.options.activation
        prior = HierarchicalPrior(sizes, top, options.layer_hidden, activation)
        posterior = HierarchicalPosterior(
            sizes, options.inference, (options.layer_hidden, activation), prior, config.posterior
        )
        return posterior, prior

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return self.posterior.sizes

    @property
    def decoder_input_dim(self) -> int:
        if self.config.model.options.decoder_reads == "all":
            return self.config.latent_dim + sum(self.config.model.options.upper_layers)
        return self.config.latent_dim

    def decoder_input(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z_1, or all of z (``decoder_reads`` all)."""
        if self.config.model.options.decoder_reads == "all":
            return z
        return super().decoder_input(z, labels)

    def descend(self, z: torch.Tensor, level: int) -> torch.Tensor:
        layers = self.prior.split(z)
        for below in reversed(range(level)):
            layers[below] = self.prior.conditionals[below](layers[below + 1])[0]
        return torch.cat(layers, dim=-1)

    def sample_and_rate_per_layer(
        self, params: PosteriorParameters, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z, log_q = self.posterior.draw_layers(params, noise)
        return z, (log_q - self.prior.log_prob_layers(z)).mean(0)

    def kl_per_dimension(self, params: PosteriorParameters, noise: torch.Tensor) -> torch.Tensor:
        """Each latent dimension's share of the rate in nats,
        E_q[log q(z_{l,d}|·) − log p(z_{l,d}|z_{l+1})], the Monte Carlo mean over the draws of
        ``noise (S, B, D)``: ``(B, D)``. Where both densities are diagonal Gaussians given
        their parents, a layer's dimensions sum to its rate of
        :meth:`sample_and_rate_per_layer` with the same noise. NaN where one does not
        factorise over them: the top layer's under a mixture or VampPrior, an IAF layer's."""
        z, _ = self.posterior.draw_layers(params, noise)
        log_q = self.posterior.conditional_log_prob_dims(params, z)
        return (log_q - self.prior.conditional_log_prob_dims(z)).mean(0)
