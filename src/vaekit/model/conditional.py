"""The conditional VAE (Sohn et al. 2015; Kingma et al. 2014's M2 with y observed): a class
label y, one-hot over ``classes``, conditions both sides,

    p(x, z | y) = p(x|z, y) p(z),    q(z|x, y),
    log p(x|y) = ELBO(x|y) + KL(q(z|x, y) || p(z|x, y)),

with ELBO(x|y) = E_q[log p(x|z, y)] − KL(q(z|x, y) || p(z)). The decoder reads [z, onehot(y)];
the encoder's output is shifted by a learned embedding of y, features = encoder(x) + E
onehot(y), so any network kind serves. Everything the objectives, ``evaluate`` and the trainer
compute is then conditioned on each batch's labels: the same identity, of log p(x|y).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vaekit.checks import option, positive_int
from vaekit.data.batch import Batch, as_batch
from vaekit.errors import ConfigError, DataError
from vaekit.model.contract import MODELS, PosteriorParameters
from vaekit.model.vae import VAE


@dataclass
class ConditionalOptions:
    """classes: the number of classes of the labels y (their one-hot size)."""

    classes: int = option(10, "the number of classes of the labels y (a conditional model)")

    def describe(self, latent_dim: int) -> str:
        return f"{latent_dim}-dimensional z and a label of {self.classes} classes"

    def __post_init__(self) -> None:
        positive_int("classes", self.classes)


@MODELS.register("conditional", ConditionalOptions)
class ConditionalVAE(VAE):
    """q(z|x, y) and p(x|z, y) with y a class label: log p(x|y), samples of a chosen class.

    Built as any VAE, e.g. ``ConditionalVAE((1, 28, 28), 20, model="conditional",
    classes=10)``; its batches carry labels (``vaekit.Batch(x, y)``)."""

    uses_labels = True

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if self.prior.reads_the_model:
            raise ConfigError(
                f"the {self.config.prior.name} prior encodes inputs without labels: a "
                f"{self.config.model.name} model takes --prior standard-normal or mog"
            )
        width = self.posterior.encoder_width(self.config.latent_dim, self.config.posterior.options)
        self.label_embedding = nn.Linear(self.classes, width, bias=False)
        nn.init.zeros_(self.label_embedding.weight)  # starts as the unconditional encoder

    @property
    def classes(self) -> int:  # type: ignore[override]
        return self.config.model.options.classes

    @property
    def decoder_input_dim(self) -> int:
        return self.config.latent_dim + self.classes

    def one_hot(self, labels: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """onehot(y) ``(B, classes)`` in ``like``'s dtype, refusing missing labels. Their range
        is checked where data comes in (:meth:`check_labels`), not here: that check reads the
        labels back to the host, a stall of every step on an accelerator."""
        return F.one_hot(_given(labels).long(), self.classes).to(like.dtype)

    def check_labels(self, labels: torch.Tensor | None) -> None:
        """Refuses missing labels, and labels that are not integers from 0 to classes − 1."""
        labels = _given(labels)
        if labels.dtype.is_floating_point or bool(((labels < 0) | (labels >= self.classes)).any()):
            raise DataError(f"labels must be integers from 0 to {self.classes - 1}")

    def check_examples(self, batch: torch.Tensor | Batch) -> None:
        super().check_examples(batch)
        batch = as_batch(batch)
        self.check_labels(batch.y)
        if len(batch.y) != len(batch.x):  # type: ignore[arg-type]
            raise DataError(f"{len(batch.x)} examples but {len(batch.y)} labels")  # type: ignore[arg-type]

    def posterior_parameters(self, batch: torch.Tensor | Batch) -> PosteriorParameters:
        batch = as_batch(batch)
        return self.posterior_parameters_from(self.encoder(batch.x), batch.y)

    def posterior_parameters_from(
        self, features: torch.Tensor, labels: torch.Tensor | None
    ) -> PosteriorParameters:
        """q(z|x, y)'s parameters from the encoder's ``features (B, width)`` of x and the
        labels ``(B,)``: one encoder pass serves every label of an example."""
        shift = self.label_embedding(self.one_hot(labels, features))
        return self.posterior.parameters_from(features + shift)

    def decoder_input(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """[z's bottom layer, onehot(y)], the labels ``(B,)`` broadcast over z's draws."""
        bottom = super().decoder_input(z)
        condition = self.one_hot(labels, z).expand(*z.shape[:-1], self.classes)
        return torch.cat([bottom, condition], dim=-1)

    def sample_labels(
        self, n: int, labels: torch.Tensor | int | None, device: torch.device
    ) -> torch.Tensor:
        """The given labels (one for all, or one per sample), or each class in turn."""
        if labels is None:
            return torch.arange(n, device=device) % self.classes
        labels = torch.as_tensor(labels, device=device)
        if labels.dim() == 0:
            labels = labels.expand(n)
        if labels.shape != (n,):
            raise ConfigError(f"give one label, or one per sample ({n}), not {tuple(labels.shape)}")
        self.check_labels(labels)
        return labels


def _given(labels: torch.Tensor | None) -> torch.Tensor:
    if labels is None:
        raise DataError(
            "this conditional model needs the labels y of its examples (a Batch(x, y), or --label)"
        )
    return labels
