"""Semi-supervised learning with a VAE: Kingma et al. (2014)'s M2.

The label y is a latent variable where it is missing: the conditional VAE's p(x|z, y) p(z)
and q(z|x, y) (see :mod:`vaekit.model.conditional`) with p(y) uniform over the classes and a
classifier q(y|x). For an example with its label the bound is on log p(x, y); without it, y is
summed out exactly:

    L(x, y) = ELBO(x|y) + log p(y)                                   ≤ log p(x, y)
    U(x)    = Σ_y q(y|x) L(x, y) + H(q(y|x))
            = Σ_y q(y|x) ELBO(x|y) − KL(q(y|x) || p(y))              ≤ log p(x)

and training maximises Kingma et al.'s J^α = Σ_labelled [L(x, y) + α (N/N_l) log q(y|x)] +
Σ_unlabelled U(x) over the N training examples, N_l of them labelled, α the
``classification_weight`` (see :func:`vaekit.objectives.elbo.semi_supervised_elbo` and
:class:`vaekit.data.labelled.LabelledWeights`). A
missing label is written −1. The classifier q(y|x) is the model's prediction of y.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vaekit.checks import choice, option, positive_float, sizes
from vaekit.data.batch import Batch, as_batch
from vaekit.data.labelled import MISSING
from vaekit.errors import DataError
from vaekit.model.conditional import ConditionalOptions, ConditionalVAE
from vaekit.model.contract import MODELS
from vaekit.nets.mlp import ACTIVATIONS, MLP


@dataclass
class SemiSupervisedOptions(ConditionalOptions):
    """classes: the labels' classes; the classifier q(y|x): an MLP of ``classifier_hidden``
    units with ``classifier_activation``; ``classification_weight`` α: log q(y|x) of each
    labelled example weighs α N / N_labelled in the training objective."""

    classifier_hidden: list[int] = option(
        lambda: [500], "hidden units of the classifier q(y|x) (a semi-supervised model)"
    )
    classifier_activation: str = option(
        "softplus", "the classifier's activation (a semi-supervised model)", ACTIVATIONS
    )
    classification_weight: float = option(
        50.0,
        "α: each labelled example's log q(y|x) weighs α N / N_labelled in a semi-supervised "
        "model's objective, N the training examples (Kingma et al. 2014: 0.1; with 100 labels "
        "of MNIST's codes, 78 epochs: 7.25% test error at 50, 27.21% at 0.083; see the README)",
    )

    def describe(self, latent_dim: int) -> str:
        return f"{super().describe(latent_dim)} inferred where missing, classifier q(y|x)"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.classifier_hidden = sizes("classifier_hidden", self.classifier_hidden)
        choice("classifier_activation", self.classifier_activation, ACTIVATIONS)
        positive_float("classification_weight", self.classification_weight, allow_zero=True)


@MODELS.register("semi-supervised", SemiSupervisedOptions)
class SemiSupervisedVAE(ConditionalVAE):
    """M2: a conditional VAE whose labels may be missing (−1), with a classifier q(y|x).

    Trained with ``vaekit train --model semi-supervised --labelled N`` (N labelled training
    examples, the rest unlabelled); ``predict(x)`` gives the classifier's labels."""

    infers_labels = True

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        options = self.config.model.options
        self.classifier = MLP(
            self.input_shape,
            list(options.classifier_hidden),
            (self.classes,),
            options.classifier_activation,
        )

    @property
    def classification_weight(self) -> float:
        return self.config.model.options.classification_weight

    def log_label_prior(self) -> float:
        """log p(y) of every class: p(y) is uniform (nats)."""
        return -math.log(self.classes)

    def label_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's unnormalised log q(y|x) for ``x (B, *input_shape)``; ``(B, C)``."""
        return self.classifier(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """argmax_y q(y|x) for ``x (B, *input_shape)``; ``(B,)``."""
        self._check_shape(x)
        return self.label_logits(x).argmax(-1)

    def check_examples(self, batch: torch.Tensor | Batch) -> None:
        """As the conditional model's, with missing labels (−1) allowed, and no labels at
        all (every label missing)."""
        batch = as_batch(batch)
        if batch.y is None:
            batch = Batch(batch.x, torch.full((len(batch.x),), MISSING))
        super().check_examples(Batch(batch.x, batch.y.clamp_min(0)))
        if bool((batch.y < MISSING).any()):
            raise DataError(f"labels must be integers from 0 to {self.classes - 1}, or −1 (none)")
