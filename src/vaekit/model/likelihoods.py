"""Likelihoods p(x|z): turn the decoder's output into a distribution over one example.

Each likelihood is a module so that a learned parameter (the Gaussian's or the logistic's
scale) is saved with the model. ``likelihood(params)`` returns a torch distribution whose
``log_prob(x)`` sums over all dimensions of an example, giving nats per example;
``likelihood.log_prob(params, x)`` computes the same numbers with one fused operation, for the
training and evaluation loops.

``discrete`` likelihoods (Bernoulli, discretised logistic) give probabilities of the data, so
their log p(x) is a log-likelihood in the usual sense and has a bits/dim; the Gaussian gives a
density of x, whose value depends on the data's scale and is not comparable with them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal, constraints

from vaekit.checks import boolean, option, positive_float
from vaekit.data.dataset import Dataset, binarize, fixed_binarization, is_binary
from vaekit.errors import ConfigError, DataError
from vaekit.model.draws import random_like
from vaekit.model.gaussian import HALF_LOG_2PI
from vaekit.registry import Registry

LIKELIHOODS: Registry[type[_Likelihood]] = Registry("likelihood")

BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""What a training batch becomes before the step (e.g. a fresh binarisation): ``(x, gen)``."""


class _Likelihood(nn.Module):
    """What every likelihood offers: ``forward`` (a torch distribution), ``log_prob`` (fused),
    ``draw`` (seeded draws), ``discrete``, and its data protocol: ``check`` (the data's
    support), ``training_transform`` (what a training batch is), ``evaluation_examples`` (what
    the evaluated data are). Built as ``cls(event_shape, options)``."""

    discrete = False
    evaluation_binarization = "no"
    """How evaluated data are binarised (for the record of an evaluation)."""
    vmapped = False
    """True on a sweep's stacked copy of a model (run under torch.func.vmap over the members,
    :func:`prepare_for_vmap`): a likelihood may then compute a form that batches faster."""

    def __init__(self, event_shape: tuple[int, ...], options: Any = None) -> None:
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.event_dims = len(event_shape)

    @property
    def param_shape(self) -> tuple[int, ...]:
        """The decoder's output per example: the likelihood's parameters."""
        return self.event_shape

    def check(self, x: torch.Tensor) -> None:
        """Raise :class:`DataError` if ``x`` is outside this likelihood's support (called by
        the measuring entry points, not by the training step, whose data are checked once)."""

    def training_transform(
        self, data: Dataset, binarization: str | None
    ) -> tuple[str, BatchTransform | None]:
        """Check that ``data`` can be trained on with ``binarization`` (``dynamic``, ``none``
        or ``None``: this likelihood's default); return the binarisation chosen and what each
        training batch goes through (``None``: nothing)."""
        if binarization == "dynamic":
            raise ConfigError("--binarize dynamic goes with --likelihood bernoulli only")
        try:
            for x in (data.train_x, data.test_x):
                self.check(x)
        except DataError as err:
            raise DataError(f"{data.name}: {err}") from None
        return "none", None

    def evaluation_examples(self, x: torch.Tensor) -> torch.Tensor:
        """The examples ``x`` as they are evaluated (the standard protocol)."""
        return x

    def initial_output_bias(self, train_x: torch.Tensor) -> torch.Tensor:
        """The decoder's output bias that predicts the training data's marginals."""
        raise ConfigError("--output-bias needs a Bernoulli likelihood")

    def advice(self, data: Dataset) -> str | None:
        """A note for the run's header about this likelihood on ``data``, if one is due."""
        return None

    def draw(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x ~ p(x|z) for the decoder's ``params (..., *event)``, with ``generator``'s draws
        (torch.distributions' ``sample`` takes no generator)."""
        raise NotImplementedError

    def _reduce(self, elementwise: torch.Tensor, reduction: str) -> torch.Tensor:
        if reduction == "sum":
            return elementwise.sum()
        return elementwise.sum(tuple(range(-self.event_dims, 0)))


def prepare_for_vmap(module: nn.Module) -> None:
    """Mark every likelihood in ``module`` as computed under torch.func.vmap (``vmapped``)."""
    for part in module.modules():
        if isinstance(part, _Likelihood):
            part.vmapped = True


@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(_Likelihood):
    """For binary data; the decoder outputs logits.

    p(x|z) = ∏_d Bernoulli(x_d; sigmoid(logits_d)). Only a likelihood of binary data: on grey
    levels its log_prob is not a log-density of the data, so vaekit binarises grey levels (a
    fresh draw of every training batch; the test set once, with a fixed seed) or refuses them.
    """

    discrete = True
    evaluation_binarization = "fixed seed"

    def training_transform(
        self, data: Dataset, binarization: str | None
    ) -> tuple[str, BatchTransform | None]:
        binarization = binarization or "dynamic"
        if not data.in_unit_interval:
            raise DataError(
                f"{data.name}: values outside [0, 1] cannot have a Bernoulli likelihood; use "
                "--likelihood gaussian"
            )
        if binarization == "none":
            if not data.is_binary:
                raise DataError(
                    f"{data.name}: grey-level data with a Bernoulli likelihood would not give a "
                    "log-likelihood of the data; use --binarize dynamic or --likelihood gaussian"
                )
            return binarization, None
        return binarization, binarize

    def advice(self, data: Dataset) -> str | None:
        if data.is_binary:
            return None
        kind = "colour" if data.is_image and data.shape[0] == 3 else "grey-level"
        return (
            f"the {kind} values are binarised for the Bernoulli likelihood (a fresh draw of "
            "every training batch, the test set once with seed 0); for the values themselves "
            "use --likelihood discretized-logistic (8-bit images) or gaussian"
        )

    def evaluation_examples(self, x: torch.Tensor) -> torch.Tensor:
        """Grey levels binarised once with the fixed test seed; binary data unchanged."""
        return x if is_binary(x) else fixed_binarization(x)

    def initial_output_bias(self, train_x: torch.Tensor) -> torch.Tensor:
        """logit(mean training example): the untrained model predicts each pixel's marginal
        frequency (Burda et al. 2015)."""
        return torch.logit(train_x.mean(0).flatten().clamp(1e-3, 1 - 1e-3))

    def check(self, x: torch.Tensor) -> None:
        if not is_binary(x):
            raise DataError(
                "the data have values other than 0 and 1: a Bernoulli log-likelihood of grey "
                "levels is not a log-probability of the data; binarise them first "
                "(vaekit.fixed_binarization(x), the standard test-set draw) or evaluate a "
                "vaekit.Dataset"
            )

    def forward(self, params: torch.Tensor) -> Distribution:
        return Independent(Bernoulli(logits=params, validate_args=False), self.event_dims)

    def draw(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x ~ p(x|z): 1[u < sigmoid(l)], u ~ U[0, 1) from ``generator``."""
        return (_uniform(params, generator) < torch.sigmoid(params)).to(params.dtype)

    def log_prob(
        self, params: torch.Tensor, x: torch.Tensor, reduction: str = "none"
    ) -> torch.Tensor:
        """log p(x|z) = Σ_d [x_d l_d − log(1 + e^{l_d})] = −BCE-with-logits(l, x) for logits
        ``params (..., *event)`` and ``x`` broadcastable to them, in nats: ``(...)`` per
        example, or the sum over everything with ``reduction="sum"``.

        Two forms, equal to float rounding. One model's step uses the fused
        F.binary_cross_entropy_with_logits (one operation forward and one backward: 70 µs
        against 160 µs for x·l − softplus(l) at batch 20 on one CPU thread, where per-operation
        overhead dominates). Under torch.func.vmap (a sweep's stacked step, ``vmapped``) the
        BCE is decomposed into a dozen operations, and x·l − softplus(l) trains an 8-model sweep
        18% faster at batch 128 and 5-7% at batch 20 on 2 CPU cores (paired runs,
        benchmarks/results/sweep-cpu.log)."""
        if self.vmapped:
            return self._reduce(x * params - F.softplus(params), reduction)
        x = x.expand_as(params)
        if reduction == "sum":  # one fused operation for the whole batch
            return -F.binary_cross_entropy_with_logits(params, x, reduction="sum")
        elementwise = -F.binary_cross_entropy_with_logits(params, x, reduction="none")
        return self._reduce(elementwise, reduction)


@dataclass
class ScaleOptions:
    """gaussian_scale: the Gaussian's standard deviation or the logistic's scale (fixed, or
    where learning starts); learn_scale: learn it per data dimension; decoded_scale: decode it
    from z per example and dimension, as gaussian_scale · e^{decoder output}."""

    gaussian_scale: float = option(
        0.1, "the Gaussian's standard deviation, or the logistic's scale (where learning starts)"
    )
    learn_scale: bool = option(False, "learn that scale per data dimension")
    decoded_scale: bool = option(
        False, "decode that scale from z, per example and dimension (the decoder outputs it)"
    )

    def __post_init__(self) -> None:
        positive_float("gaussian_scale", self.gaussian_scale)
        boolean("learn_scale", self.learn_scale)
        boolean("decoded_scale", self.decoded_scale)
        if self.decoded_scale and self.learn_scale:
            raise ConfigError(
                "choose --learn-scale (a scale per dimension) or --decoded-scale (per example "
                "and dimension), not both"
            )


class _ScaledLikelihood(_Likelihood):
    """A location per dimension (the decoder's output) and a scale that is fixed (``scale``),
    learned per dimension (``learn_scale``), or decoded from z (``decoded_scale``: the decoder
    also outputs a log-scale per dimension, added to log ``scale`` and kept ≥ −7)."""

    def __init__(self, event_shape: tuple[int, ...], options: ScaleOptions) -> None:
        super().__init__(event_shape)
        log_scale = torch.full(event_shape, math.log(options.gaussian_scale))
        if options.learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.decoded_scale = options.decoded_scale

    @property
    def param_shape(self) -> tuple[int, ...]:
        """``event_shape``, or ``(2, *event_shape)`` (location, then log-scale) with a decoded
        scale."""
        return (2, *self.event_shape) if self.decoded_scale else self.event_shape

    def location_and_log_scale(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``params (..., *event)``, or ``(..., 2, *event)`` with a decoded scale: the location
        and the log-scale, broadcastable to ``(..., *event)``."""
        if not self.decoded_scale:
            return params, self.log_scale
        location, log_scale = params.unbind(-self.event_dims - 1)
        return location, (log_scale + self.log_scale).clamp(min=MIN_LOG_SCALE)


MIN_LOG_SCALE = -7.0
"""Floor of a decoded log-scale (σ ≥ 9e-4): keeps a density from growing without bound where
the data never vary (as PixelCNN++ and VDVAE do for their logistics)."""


@LIKELIHOODS.register("gaussian", ScaleOptions)
class GaussianLikelihood(_ScaledLikelihood):
    """For continuous data (a density of x); the decoder outputs the means.

    p(x|z) = ∏_d N(x_d; μ_d, σ_d²); ``params`` are the means μ (and the log-scales, with a
    decoded scale; see :class:`_ScaledLikelihood`)."""

    def advice(self, data: Dataset) -> str | None:
        if data.is_image and on_8bit_levels(data.train_x):
            return (
                "a Gaussian likelihood of 8-bit images is a density, not comparable with "
                "discrete log-likelihoods (and unbounded with --learn-scale where pixels never "
                "change); --likelihood discretized-logistic gives probabilities, bits/dim"
            )
        return None

    def forward(self, params: torch.Tensor) -> Distribution:
        loc, log_scale = self.location_and_log_scale(params)
        scale = log_scale.exp().expand_as(loc)
        return Independent(Normal(loc, scale, validate_args=False), self.event_dims)

    def draw(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x ~ p(x|z): μ + σ ε, ε ~ N(0, I) from ``generator``."""
        loc, log_scale = self.location_and_log_scale(params)
        return loc + log_scale.exp() * random_like(torch.randn, loc.shape, loc, generator)

    def log_prob(
        self, params: torch.Tensor, x: torch.Tensor, reduction: str = "none"
    ) -> torch.Tensor:
        """log p(x|z) = −Σ_d [½ ((x_d − μ_d)/σ_d)² + log σ_d + ½ log 2π]: ``(...)`` per
        example, or the total with ``"sum"``."""
        loc, log_scale = self.location_and_log_scale(params)
        standardised = (x - loc) * torch.exp(-log_scale)
        elementwise = -(0.5 * standardised.square() + log_scale + HALF_LOG_2PI)
        return self._reduce(elementwise, reduction)


LEVELS = 256
"""The discretised logistic's levels: 8-bit data, k/255 for k = 0..255."""
HALF_LEVEL = 0.5 / (LEVELS - 1)


class DiscretizedLogistic(Distribution):
    """A logistic(μ, s) rounded to the 256 levels k/255 of 8-bit data in [0, 1], the lowest
    and highest level taking the tails (Salimans et al. 2017, PixelCNN++): elementwise,

        P(x) = σ((x + h − μ)/s) − σ((x − h − μ)/s),   h = 1/510 (half a level),

    with σ(·) → 0 below level 0 and → 1 above level 255. Batch shape = ``loc``'s. (Our own:
    torch.distributions has no discretised distribution; this one follows its interface.)"""

    arg_constraints: ClassVar = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = False

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        super().__init__(self.loc.shape, validate_args=False)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return discretized_logistic_log_prob(x, self.loc, self.scale.log())

    @property
    def mean(self) -> torch.Tensor:
        """E[x] = Σ_{k=1..255} P(x ≥ k/255) / 255, one level at a time (memory: one tensor)."""
        total = torch.zeros_like(self.loc)
        for level in range(1, LEVELS):
            total += torch.sigmoid((self.loc - (level / (LEVELS - 1) - HALF_LEVEL)) / self.scale)
        return total / (LEVELS - 1)

    @torch.no_grad()
    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        return draw_discretized_logistic(self.loc.expand(shape), self.scale.expand(shape))


def draw_discretized_logistic(
    loc: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A logistic draw μ + s·log(u / (1 − u)), u ~ U(0, 1) from ``generator``, rounded to the
    nearest level and clipped to [0, 1]: a draw of :class:`DiscretizedLogistic`."""
    u = _uniform(loc, generator).clamp_(1e-6, 1 - 1e-6)
    y = loc + scale * (u.log() - (-u).log1p())
    return (y * (LEVELS - 1)).round_().clamp_(0, LEVELS - 1) / (LEVELS - 1)


def on_8bit_levels(x: torch.Tensor) -> bool:
    """Whether every value of ``x`` is one of the levels k/255, k = 0..255 (8-bit data)."""
    scaled = x * (LEVELS - 1)
    return bool(
        ((scaled - scaled.round()).abs() < 1e-3).all() and (x >= 0).all() and (x <= 1).all()
    )


def discretized_logistic_log_prob(
    x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """Elementwise log P(x) of :class:`DiscretizedLogistic`, stable for any μ and s: with
    a = (x + h − μ)/s and b = (x − h − μ)/s (so b − a = −2h/s),

        log[σ(a) − σ(b)] = log σ(a) + log σ(−b) + log(1 − e^{b−a})
                         = logsigmoid(a) + logsigmoid(−b) + log(−expm1(−2h/s)),

    of which level 0 keeps only log σ(a) and level 255 only log σ(−b) (masks of ``x``, which
    is not broadcast to the samples: ~20% faster than ``torch.where`` on the full size)."""
    inverse_scale = torch.exp(-log_scale)
    centred = x - loc
    upper = F.logsigmoid((centred + HALF_LEVEL) * inverse_scale)  # log σ(a)
    lower = F.logsigmoid((HALF_LEVEL - centred) * inverse_scale)  # log σ(−b)
    width = torch.log(-torch.expm1(-2 * HALF_LEVEL * inverse_scale))
    below_top = (x < 1 - HALF_LEVEL).to(upper.dtype)
    above_bottom = (x > HALF_LEVEL).to(upper.dtype)
    return upper * below_top + lower * above_bottom + width * (below_top * above_bottom)


@LIKELIHOODS.register("discretized-logistic", ScaleOptions)
class DiscretizedLogisticLikelihood(_ScaledLikelihood):
    """For 8-bit data (levels k/255; a probability, with bits/dim); the decoder outputs
    the means.

    p(x|z) = ∏_d DiscretizedLogistic(x_d; μ_d, s_d) for 8-bit data (values k/255);
    ``params`` are the means μ (and the log-scales, with a decoded scale; see
    :class:`_ScaledLikelihood`). A probability of the data's 256 levels: a log-likelihood with
    bits/dim, comparable across models, unlike a Gaussian density."""

    discrete = True

    def check(self, x: torch.Tensor) -> None:
        if not on_8bit_levels(x):
            raise DataError(
                "the discretized-logistic likelihood needs 8-bit data (values k/255 in [0, 1], "
                "as uint8 images load); use --likelihood gaussian"
            )

    def forward(self, params: torch.Tensor) -> Distribution:
        loc, log_scale = self.location_and_log_scale(params)
        return Independent(DiscretizedLogistic(loc, log_scale.exp()), self.event_dims)

    def draw(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x ~ p(x|z), a level k/255 per dimension, from ``generator``."""
        loc, log_scale = self.location_and_log_scale(params)
        return draw_discretized_logistic(loc, log_scale.exp(), generator)

    def log_prob(
        self, params: torch.Tensor, x: torch.Tensor, reduction: str = "none"
    ) -> torch.Tensor:
        """log p(x|z) = Σ_d log P(x_d; μ_d, s_d): ``(...)`` per example, or the total with
        ``"sum"``."""
        loc, log_scale = self.location_and_log_scale(params)
        return self._reduce(discretized_logistic_log_prob(x, loc, log_scale), reduction)


def _uniform(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return random_like(torch.rand, like.shape, like, generator)
