"""The contract of a latent-variable model's parts: what a posterior q(z|x) and a prior p(z)
offer to the objectives, the trainer, ``evaluate``, the diagnostics and the figures.

Tensors in, tensors out: the training step builds no torch.distributions objects. The trainer
owns every random draw (their seeding, their sharding over ranks); a posterior turns given
standard-normal ``noise`` into z. Shapes: ``B`` examples, ``S`` draws per example, ``D`` the
size of z (all latent layers, concatenated), ``N`` the noise per draw (``noise_dim``). Every
log-density is in nats, summed over the latent dimensions.

A new posterior or prior is one module in ``model/posteriors/`` or ``model/priors/``: a class
with these methods, registered with ``POSTERIORS.register(name, Options)`` or
``PRIORS.register(name, Options)``. Its KL to the other side is a closed form registered with
:func:`vaekit.model.rate.register_rate`, or else the Monte Carlo estimate, automatically.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from vaekit.errors import ConfigError
from vaekit.registry import Registry

PosteriorParameters = tuple[torch.Tensor, ...]
"""What a posterior computes from the encoder's output, e.g. ``(loc, scale)``, each ``(B, ·)``."""


def call_stopped(module: nn.Module, *inputs: torch.Tensor) -> Any:
    """``module(*inputs)`` with the module's weights detached (its buffers as they are), so that
    the gradient reaches them only through ``inputs``: log q at stopped parameters."""
    weights = {name: weight.detach() for name, weight in module.named_parameters()}
    return torch.func.functional_call(module, weights, inputs)


class Posterior(nn.Module):
    """The approximate posterior q(z|x) on top of the encoder.

    Built as ``cls(latent_dim, options)``; the encoder outputs ``encoder_width(latent_dim)``
    features per example, from which :meth:`parameters_from` computes the posterior's
    parameters.
    """

    noise_dim: int
    """Standard-normal draws per sample of z (``N``)."""

    log_prob_is_cheap: bool = True
    """Whether :meth:`log_prob` at any z costs about one pass (a flow's inverts itself one
    dimension at a time): a VampPrior evaluates it at every step."""

    @staticmethod
    def encoder_width(latent_dim: int, options: Any) -> int:
        """Features the encoder outputs per example."""
        raise NotImplementedError

    def parameters_from(self, features: torch.Tensor) -> PosteriorParameters:
        """The posterior's parameters from the encoder's ``features (B, width)``."""
        raise NotImplementedError

    def rsample(self, params: PosteriorParameters, noise: torch.Tensor) -> torch.Tensor:
        """z ``(S, B, D)`` from ``noise (S, B, N)``, differentiable in the parameters (the
        reparameterisation)."""
        return self.sample_and_log_prob(params, noise)[0]

    def sample_and_log_prob(
        self, params: PosteriorParameters, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, log q(z|x))``: z ``(S, B, D)`` and its log-density ``(S, B)``."""
        raise NotImplementedError

    def sample_and_stopped_log_prob(
        self, params: PosteriorParameters, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, log q(z|x))`` as :meth:`sample_and_log_prob` (the same values), but with
        log q evaluated at stopped (detached) parameters: its gradient reaches the encoder
        only through z, the path derivative of "sticking the landing" (Roeder et al. 2017) and
        of DReG (Tucker et al. 2018): :meth:`stopped_log_prob` at the detached ``params``."""
        z = self.rsample(params, noise)
        return z, self.stopped_log_prob(tuple(p.detach() for p in params), z, noise)

    def stopped_log_prob(
        self, params: PosteriorParameters, z: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """log q(z | ``params``) ``(S, B)`` with the posterior's own weights stopped and
        ``params`` as given: detached ones (one layer: the encoder's output) take no gradient,
        live ones pass it on (a hierarchy's layer: functions of the layers it reads, computed
        by networks with stopped weights). ``z (S, B, D)`` is the draw that ``noise`` gave at
        these parameters' values. This default is :meth:`log_prob`, for a posterior without
        learned parameters of its own; one with them (a flow) must override it, and is
        refused here."""
        if not self.has_stopped_log_prob:
            raise ConfigError(
                f"the {type(self).__name__} has parameters of its own, and no stopped log q "
                "for --gradient stl/dreg: train it with --gradient reparam"
            )
        return self.log_prob(params, z)

    def log_prob_each(self, params: PosteriorParameters, z: torch.Tensor) -> torch.Tensor:
        """log q(z | each of C parameter sets) for ``params`` ``(C, ·)`` and ``z (..., D)``;
        ``(..., C)`` (a VampPrior's components). By default ``log_prob`` broadcast."""
        return self.log_prob(params, z.unsqueeze(-2))

    @property
    def has_stopped_log_prob(self) -> bool:
        """Whether :meth:`sample_and_stopped_log_prob` is available (the default's: for a
        posterior without learned parameters of its own)."""
        return not any(p.requires_grad for p in self.parameters())

    def log_prob(self, params: PosteriorParameters, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x) for ``z (..., B, D)``; ``(..., B)``."""
        raise NotImplementedError

    def representative(self, params: PosteriorParameters) -> torch.Tensor:
        """One point per example ``(B, D)`` for ``encode`` and the figures: E_q[z]."""
        raise NotImplementedError

    def gaussian_layers(self, params: PosteriorParameters) -> list[PosteriorParameters] | None:
        """``[(loc, scale), ...]``, one diagonal Gaussian ``(B, D_l)`` per latent layer, where
        q is one (for the per-dimension diagnostics and ELBO surgery); ``None`` otherwise."""
        return None

    def layer_given_x(self, params: PosteriorParameters, level: int) -> PosteriorParameters | None:
        """q(z_level|x) as one diagonal Gaussian ``(loc, scale)``, each ``(B, D_level)``, where
        it depends on x alone and not on a draw of another layer (``level`` 0 is z_1, the
        layer the decoder reads); ``None`` otherwise (for the scales of ``encode --as-data``)."""
        return None

    def distribution(self, params: PosteriorParameters) -> Distribution:
        """q(z|x) as a torch distribution, batch ``(B,)``, event ``(D,)`` (for users; never
        in the training step)."""
        raise NotImplementedError


class Prior(nn.Module):
    """The prior p(z), built as ``cls(latent_dim, options)``; it may have learned parameters
    (saved with the model). ``anchor`` is an empty tensor on the prior's device and in its
    dtype, for making draws there."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("anchor", torch.zeros(0), persistent=False)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) for ``z (..., D)``; ``(...)``."""
        raise NotImplementedError

    def log_prob_dims(self, z: torch.Tensor) -> torch.Tensor | None:
        """log p(z_d) of each dimension ``(..., D)`` for a prior that factorises over them
        (log p(z) is their sum); ``None`` (the default) for one that does not."""
        return None

    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``n`` draws ``(n, D)`` from the prior at temperature T (T < 1: closer to the modes;
        each prior says what T scales), every draw from ``generator``."""
        raise NotImplementedError

    @property
    def reads_the_model(self) -> bool:
        """Whether the prior uses the model's other parts (overrides :meth:`bind`)."""
        return type(self).bind is not Prior.bind

    def bind(self, model: nn.Module) -> None:
        """Called once by the model when it is built, for a prior that needs the model's other
        parts (a VampPrior's q(z|u) uses the encoder and the posterior). Keep what it needs
        as plain attributes, not as submodules (they belong to the model). By default,
        nothing."""


POSTERIORS: Registry[type[Posterior]] = Registry("posterior")
PRIORS: Registry[type[Prior]] = Registry("prior")
MODELS: Registry[type[nn.Module]] = Registry("model")
"""Latent-variable models, each with ``from_config(config, **networks)`` and registered with
the dataclass of its own options (e.g. a hierarchy's layers): ``vaekit.load`` builds the one
a configuration names."""


def build_model(config: Any, **networks: nn.Module) -> nn.Module:
    """The registered model that ``config`` (a ``ModelConfig``) names, built from it. Sizes
    whose weights could not be allocated are one line (the networks' and the flow's are
    refused before allocating: ``fits_in_memory``)."""
    try:
        return MODELS[config.model.name].builder.from_config(config, **networks)
    except RuntimeError as err:  # torch's allocators: "can't allocate memory", out of memory
        if "allocate" not in str(err) and not isinstance(err, torch.OutOfMemoryError):
            raise
        asked = re.search(r"allocate (\d+) bytes", str(err))
        size = f" {int(asked[1]) / 2**30:,.1f} GiB at once" if asked else ""
        raise ConfigError(
            f"the model's weights could not be allocated (torch asked for{size or ' memory'} "
            "and was refused); make it smaller"
        ) from err
