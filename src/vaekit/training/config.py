"""How a run trains: ``TrainConfig``, stored in every run's ``config.json``.

Each field carries its command-line help (``vaekit train --help`` is generated from it), and
the names it takes come from the registries (objectives, schedules). It validates itself and
raises :class:`~vaekit.errors.ConfigError` with a one-line message on nonsense values, and
refuses unknown keys (a file written by a newer vaekit).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from vaekit.checks import boolean, choice, option, positive_float, positive_int, seed
from vaekit.errors import ConfigError
from vaekit.objectives.training import OBJECTIVES
from vaekit.training.schedule import SCHEDULES
from vaekit.training.tracking import TRACKERS

BINARIZE = ("dynamic", "none")
ON_NAN = ("stop", "rollback")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
COMPILE = ("auto", "on", "off")
GRADIENTS = tuple(
    dict.fromkeys(g for name in OBJECTIVES.names() for g in OBJECTIVES[name].builder.gradients)
)
"""Every objective's gradient estimators (each objective takes some of them)."""


@dataclass
class TrainConfig:
    """How a run trains: data, optimiser, schedule, KL weight, seed, device (see each field's
    help). ``batch_size`` is the global batch under torchrun (see
    :mod:`vaekit.training.distributed`)."""

    dataset: str = option("digits", "digits, mnist, fashion-mnist, a .npy/.npz file or a folder")
    data_dir: str | None = option(None, "folder of the MNIST-style .gz IDX files")
    image_size: int | None = option(None, "resize every image of a folder to N x N")
    binarize: str | None = option(
        None,
        "dynamic: a fresh Bernoulli draw of each training batch (the Bernoulli likelihood's "
        "default), none: the data as they are",
        BINARIZE,
    )
    epochs: int = option(100, "epochs in all (with --resume: the total to reach)")
    batch_size: int = option(128, "examples per step (the global batch under torchrun)")
    lr: float = option(1e-3, "Adam's learning rate (at the start of a schedule)")
    lr_schedule: str = option(
        "constant", "how the learning rate changes over the epochs", SCHEDULES.names()
    )
    lr_final: float = option(1e-4, "the last learning rate of cosine/exponential schedules")
    adam_eps: float = option(1e-8, "Adam's epsilon")
    objective: str = option(
        "elbo",
        "elbo, or iwae (the importance-weighted bound with K = --samples)",
        OBJECTIVES.names(),
    )
    samples: int = option(1, "draws of z per example and step (K of the IWAE bound)")
    gradient: str = option(
        "reparam",
        "the gradient estimator: reparam (plain reparameterisation), stl (sticking the "
        "landing; the ELBO) or dreg (doubly reparameterised; the IWAE bound)",
        GRADIENTS,
    )
    output_bias: bool = option(
        False, "start the decoder's output bias at logit(mean training image)"
    )
    beta: float = option(1.0, "weight β of the rate in the objective (1: the ELBO)")
    warmup_epochs: int = option(0, "epochs of linear KL warm-up from β = 0")
    layer_warmup_epochs: list[int] = option(
        list,
        "a hierarchy's KL warm-up layer by layer, bottom to top: the epochs of each layer's "
        "linear ramp from 0 to β (e.g. 10,50: the upper layer's rate weighs in later); "
        "instead of --warmup-epochs (it replaces a recipe's or a config file's)",
    )
    draw_codes: bool = option(
        True,
        "for codes written with their scales ('vaekit encode --as-data' of a VAE): train on a "
        "fresh draw x ~ N(mean, scale²) of every batch, as Kingma et al.'s M1+M2 trained M2 "
        "on draws of M1's z (--no-draw-codes: on the means)",
    )
    free_bits: float = option(
        0.0,
        "nats per example of each latent layer's rate left unpenalised (free bits, Kingma et "
        "al. 2016; 0: none)",
    )
    clip_grad_norm: float = option(
        0.0,
        "scale each step's gradient (of the batch-mean objective) down to this norm where it "
        "is larger (0: never); each epoch's record counts the steps clipped",
    )
    labelled: int | None = option(
        None,
        "a semi-supervised model: keep the labels of N training examples (class-balanced, "
        "chosen by --seed) and hide the others (default: every label)",
    )
    seed: int = option(0, "seed of the weights, the data order and every draw")
    eval_batch_size: int = option(1000, "examples per batch of the held-out ELBO")
    checkpoint_every: int = option(1, "write a checkpoint every N epochs (and at the end)")
    on_nan: str = option(
        "stop",
        "at a NaN/Inf: stop, or roll back to the last epoch end with half the learning rate",
        ON_NAN,
    )
    tensorboard: bool = option(False, "also write TensorBoard event files into RUN/tensorboard")
    track: str | None = option(
        None,
        "also log to an experiment tracker: mlflow (the configuration, each epoch's metrics, "
        "the figures and the model; pip install 'vaekit[mlflow]')",
        TRACKERS,
    )
    track_uri: str | None = option(
        None, "the tracker's store (default: $MLFLOW_TRACKING_URI, else MLflow's default here)"
    )
    device: str = option("auto", "auto: CUDA, else MPS, else CPU", DEVICES)
    precision: str = option("fp32", "fp32, or bf16/fp16 (CUDA) under torch.autocast", PRECISIONS)
    data_on_device: bool = option(False, "keep the whole dataset on the device (GPU)")
    compile: str = option(
        "auto",
        "torch.compile the training objective (~10% faster steps after a start-up of ~7 s); "
        "auto: for single-process runs of 50,000 steps or more",
        COMPILE,
    )
    recipe: str | None = option(None, "the recipe this run started from")

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "checkpoint_every", "samples"):
            positive_int(name, getattr(self, name))
        for name in ("lr", "lr_final", "adam_eps"):
            positive_float(name, getattr(self, name))
        positive_float("beta", self.beta, allow_zero=True)
        positive_float("free_bits", self.free_bits, allow_zero=True)
        positive_float("clip_grad_norm", self.clip_grad_norm, allow_zero=True)
        positive_int("warmup_epochs", self.warmup_epochs, allow_zero=True)
        self._check_layer_warmup()
        seed("seed", self.seed)
        for name in ("image_size", "labelled"):
            if getattr(self, name) is not None:
                positive_int(name, getattr(self, name))
        if isinstance(self.compile, bool):  # older config.json files: a flag, false by default
            self.compile = "on" if self.compile else "auto"
        for f in fields(self):
            if f.metadata["choices"] and getattr(self, f.name) is not None:
                choice(f.name, getattr(self, f.name), f.metadata["choices"])
            if isinstance(f.default, bool):
                boolean(f.name, getattr(self, f.name))
        if not OBJECTIVES[self.objective].builder.takes_beta:
            self._refuse_rate_weights()
        if self.track_uri is not None and self.track is None:
            raise ConfigError("--track-uri names a tracker's store: give --track too")
        for flag, given in (
            ("--free-bits", self.free_bits),
            ("--layer-warmup-epochs", self.layer_warmup_epochs),
        ):  # each weighs the rate of each layer (objectives.elbo.elbo_per_layer): no STL there
            if given and self.gradient != "reparam":
                raise ConfigError(f"{flag} takes the plain gradient: use --gradient reparam")

        gradients = OBJECTIVES[self.objective].builder.gradients
        if self.gradient not in gradients:
            raise ConfigError(
                f"--gradient {self.gradient} is not an estimator of the {self.objective.upper()} "
                f"objective's gradient: use one of {', '.join(gradients)}"
            )

    def _refuse_rate_weights(self) -> None:
        """A bound on log p(x) weighs the rate by 1 throughout: name each option that does not
        (a recipe's warm-up too, so the user sees what to set)."""
        weights = {
            f"--beta 1 (not {self.beta})": self.beta != 1,
            f"--warmup-epochs 0 (not {self.warmup_epochs})": self.warmup_epochs,
            "no --layer-warmup-epochs": self.layer_warmup_epochs,
            f"--free-bits 0 (not {self.free_bits})": self.free_bits,
        }
        wrong = [option for option, given in weights.items() if given]
        if wrong:
            raise ConfigError(
                f"the {self.objective.upper()} objective is a bound on log p(x), its rate "
                f"weighed by 1: use {', '.join(wrong)}"
            )

    def _check_layer_warmup(self) -> None:
        if not isinstance(self.layer_warmup_epochs, list):
            raise ConfigError(
                f"layer_warmup_epochs must be a list of epochs, got {self.layer_warmup_epochs!r}"
            )
        for epochs in self.layer_warmup_epochs:
            positive_int("every layer_warmup_epochs entry", epochs, allow_zero=True)
        if self.layer_warmup_epochs and self.warmup_epochs:
            raise ConfigError(
                "--layer-warmup-epochs gives each layer its own warm-up: drop --warmup-epochs"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        if not isinstance(data, dict):
            raise ConfigError("the 'train' section of config.json must be an object")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(
                f"config.json's 'train' section has unknown keys {unknown}: "
                "it was written by a newer vaekit; upgrade vaekit"
            )
        return cls(**data)
