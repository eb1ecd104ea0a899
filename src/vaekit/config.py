"""Configuration of a model and of a training run, stored as ``config.json`` in every run.

``ModelConfig`` holds everything needed to rebuild the networks; ``TrainConfig`` everything
needed to repeat (or resume) the run. Both validate themselves and raise
:class:`~vaekit.errors.ConfigError` with a one-line message on nonsense values.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from vaekit.errors import ConfigError

FORMAT_VERSION = 1

NETWORKS = ("mlp", "conv")
ACTIVATIONS = ("relu", "tanh", "elu", "gelu", "silu", "softplus", "leaky_relu")
LIKELIHOODS = ("bernoulli", "gaussian", "discretized-logistic")
BINARIZE = ("dynamic", "none")
LR_SCHEDULES = ("constant", "cosine", "exponential", "burda")
OBJECTIVES = ("elbo", "iwae")
ON_NAN = ("stop", "rollback")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
COMPILE = ("auto", "on", "off")
INITS = ("default", "glorot")


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _positive_float(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{name} must be a {bound} finite number, got {value!r}")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass
class ModelConfig:
    """The VAE's architecture.

    input_shape: shape of one example, ``(C, H, W)`` for images or ``(D,)`` for vectors.
    latent_dim: size of z. hidden: widths of the MLP hidden layers (encoder; the decoder
    mirrors them), or the width of the dense layer of the conv nets.
    likelihood: ``bernoulli`` (logits; binary data), ``gaussian`` (continuous data) with
    standard deviation ``gaussian_scale``, or ``discretized-logistic`` (8-bit data, levels
    k/255) with scale ``gaussian_scale``; the scale of these two is fixed, learned per dimension
    (``learn_scale``), or ``decoded_scale``: decoded from z per example and dimension, as
    ``gaussian_scale`` · e^{decoder output} (log-scale at least −7).
    init: ``default`` (PyTorch's) or ``glorot`` (Glorot-uniform weights, zero biases).
    """

    input_shape: tuple[int, ...]
    latent_dim: int = 20
    network: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [400])
    activation: str = "relu"
    likelihood: str = "bernoulli"
    gaussian_scale: float = 0.1
    learn_scale: bool = False
    decoded_scale: bool = False
    init: str = "default"

    def __post_init__(self) -> None:
        self.input_shape = tuple(self.input_shape)
        self.hidden = list(self.hidden)
        if not self.input_shape:
            raise ConfigError("input_shape must have at least one dimension")
        for size in self.input_shape:
            _positive_int("every input dimension", size)
        _positive_int("latent_dim", self.latent_dim)
        for width in self.hidden:
            _positive_int("every hidden layer size", width)
        _choice("network", self.network, NETWORKS)
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("likelihood", self.likelihood, LIKELIHOODS)
        _choice("init", self.init, INITS)
        _positive_float("gaussian_scale", self.gaussian_scale)
        if self.decoded_scale and self.likelihood == "bernoulli":
            raise ConfigError(
                "--decoded-scale goes with a gaussian or discretized-logistic likelihood"
            )
        if self.decoded_scale and self.learn_scale:
            raise ConfigError(
                "choose --learn-scale (a scale per dimension) or --decoded-scale (per example "
                "and dimension), not both"
            )
        if self.network == "conv":
            if len(self.input_shape) != 3:
                raise ConfigError(
                    f"the conv network needs image data (C, H, W), got shape {self.input_shape}; "
                    "use --network mlp"
                )
            _, height, width = self.input_shape
            if height % 4 or width % 4:
                raise ConfigError(
                    f"the conv network needs height and width divisible by 4 (e.g. 28 or 32), "
                    f"got {height}x{width}; use --image-size or --network mlp"
                )
            if len(self.hidden) != 1:
                raise ConfigError("the conv network takes one --hidden width (its dense layer)")

    @property
    def param_shape(self) -> tuple[int, ...]:
        """The decoder's output per example: ``input_shape``, or ``(2, *input_shape)`` (location,
        then log-scale) with ``decoded_scale``."""
        return (2, *self.input_shape) if self.decoded_scale else self.input_shape

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_shape"] = list(self.input_shape)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(**_known_fields(cls, data, "model"))


@dataclass
class TrainConfig:
    """How a run trains: data, optimiser, schedule, KL weight and seed.

    ``binarize``: ``dynamic`` (a fresh Bernoulli(intensity) draw of every training batch, and
    one fixed-seed binarisation of the test set), ``none``, or ``None`` for the likelihood's
    default (dynamic for Bernoulli, none for Gaussian). ``objective``: ``elbo`` (estimated with
    ``samples`` draws, weighted by β) or ``iwae`` (the bound L_K with K = ``samples``).
    ``output_bias``: start the decoder's output bias at logit(mean training image) (MLP,
    Bernoulli). ``on_nan``: ``stop`` at a NaN/Inf loss, or ``rollback`` to the last epoch end
    with half the learning rate (at most 3 times). The KL weight and learning rate follow
    :mod:`vaekit.training.schedule`. ``device``: ``auto`` picks CUDA, else MPS, else CPU;
    ``precision``: ``bf16``/``fp16`` run the forward pass under torch.autocast (fp16 with a
    gradient scaler, CUDA only); ``data_on_device`` keeps the whole dataset on the device.
    ``batch_size`` is the global batch under torchrun (see :mod:`vaekit.training.distributed`).
    ``compile``: run the training objective through ``torch.compile``: ``on``, ``off``, or
    ``auto`` (on for runs long enough to repay its start-up, see
    :data:`vaekit.training.trainer.COMPILE_MIN_STEPS`; off if compiling fails).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    image_size: int | None = None
    binarize: str | None = None
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"
    lr_final: float = 1e-4
    adam_eps: float = 1e-8
    objective: str = "elbo"
    samples: int = 1
    output_bias: bool = False
    beta: float = 1.0
    warmup_epochs: int = 0
    seed: int = 0
    eval_batch_size: int = 1000
    checkpoint_every: int = 1
    on_nan: str = "stop"
    tensorboard: bool = False
    device: str = "auto"
    precision: str = "fp32"
    data_on_device: bool = False
    compile: str = "auto"
    recipe: str | None = None

    def __post_init__(self) -> None:
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        _positive_int("eval_batch_size", self.eval_batch_size)
        _positive_int("checkpoint_every", self.checkpoint_every)
        _positive_float("lr", self.lr)
        _positive_float("lr_final", self.lr_final)
        _positive_float("adam_eps", self.adam_eps)
        _positive_float("beta", self.beta, allow_zero=True)
        if self.binarize is not None:
            _choice("binarize", self.binarize, BINARIZE)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("objective", self.objective, OBJECTIVES)
        _choice("on_nan", self.on_nan, ON_NAN)
        _choice("device", self.device, DEVICES)
        _choice("precision", self.precision, PRECISIONS)
        if isinstance(self.compile, bool):  # older config.json files: a flag, false by default
            self.compile = "on" if self.compile else "auto"
        _choice("compile", self.compile, COMPILE)
        _positive_int("samples", self.samples)
        if not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs must be >= 0, got {self.warmup_epochs!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.image_size is not None:
            _positive_int("image_size", self.image_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return cls(**_known_fields(cls, data, "train"))


def _known_fields(cls: type, data: dict[str, Any], section: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"the '{section}' section of config.json must be an object")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"config.json's '{section}' section has unknown keys {unknown}: "
            "it was written by a newer vaekit; upgrade vaekit"
        )
    return dict(data)
