"""The training objectives, registered by name (``OBJECTIVES``): what one step maximises.

Each is built as ``cls(gradient, free_bits, layer_betas, labelled)`` with one of its
``gradients`` (the estimator of the objective's gradient; the first is the plain
reparameterised one), the nats of rate per latent layer left unpenalised (ELBO only; 0: none),
whether β comes as one weight per latent layer (a warm-up per layer) and the weights of a
labelled row for a model that infers missing labels (ELBO only; see
:class:`vaekit.data.labelled.LabelledWeights`), and called as
``objective(model, batch, noise, beta)`` with ``noise (S, B, noise_dim)`` and β a number, or
a tensor ``(L,)`` with ``layer_betas``, and returns ``(total, sums)``: the objective summed
over the batch (to be maximised) and the detached sums of (ELBO, reconstruction, rate) over
the batch, for the running averages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from vaekit.checks import choice
from vaekit.data.batch import Batch
from vaekit.data.labelled import ONCE_EACH, LabelledWeights
from vaekit.errors import ConfigError
from vaekit.objectives.elbo import (
    ELBO_GRADIENTS,
    elbo,
    elbo_per_layer,
    semi_supervised_elbo,
)
from vaekit.objectives.importance import IWAE_GRADIENTS, iwae_terms
from vaekit.registry import Registry

if TYPE_CHECKING:
    from vaekit.model.vae import VAE

OBJECTIVES: Registry[type] = Registry("objective")


class _Objective:
    """What every objective shares: its gradient estimator, one of ``gradients``, its free
    bits, its β per layer (for an objective that ``takes_beta``, a weighted rate) and the
    weights of a labelled row (for one that ``takes_labels``)."""

    gradients: tuple[str, ...] = ("reparam",)
    takes_beta: bool
    takes_labels: bool

    def __init__(
        self,
        gradient: str = "reparam",
        free_bits: float = 0.0,
        layer_betas: bool = False,
        labelled: LabelledWeights = ONCE_EACH,
    ) -> None:
        choice("gradient", gradient, self.gradients)
        if (free_bits or layer_betas) and not self.takes_beta:
            raise ConfigError(f"{type(self).__name__} has no rate term to weight per layer")
        if labelled != ONCE_EACH and not self.takes_labels:
            raise ConfigError(f"{type(self).__name__} has no labelled term to weight")
        self.gradient, self.free_bits, self.layer_betas = gradient, free_bits, layer_betas
        self.labelled = labelled


@OBJECTIVES.register("elbo")
class ELBOObjective(_Objective):
    """The ELBO, reconstruction − β·rate, estimated with S = --samples draws per example;
    gradient ``reparam`` or ``stl`` (see :func:`vaekit.objectives.elbo`); with free bits, the
    rate of each latent layer counted as at least λ per example, and with ``layer_betas`` each
    layer's rate weighted by its own β (see :func:`~vaekit.objectives.elbo.elbo_per_layer`).
    For a model that infers missing
    labels, Kingma et al. (2014)'s M2 objective: each example's bound (see
    :func:`~vaekit.objectives.elbo.semi_supervised_elbo`) plus α log q(y|x) of each given
    label, α the model's ``classification_weight``, a labelled row's two terms weighted by
    ``labelled`` (see :class:`~vaekit.data.labelled.LabelledWeights`); the sums it reports
    weigh a labelled row's bound as the objective does, so an epoch's sums count each
    training example's bound once: Σ_labelled L(x, y) + Σ_unlabelled U(x)."""

    takes_beta = True
    takes_labels = True
    gradients = ELBO_GRADIENTS

    def __call__(
        self, model: VAE, batch: Batch, noise: torch.Tensor, beta: float | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if model.infers_labels:  # labels summed out where missing, and the classifier's term
            terms, log_q_y = semi_supervised_elbo(
                model, batch, len(noise), noise, "none", self.gradient
            )
            y = batch.y  # None: every label missing
            bound = 1.0 if y is None else torch.where(y >= 0, self.labelled.bound, 1.0)
            alpha = model.classification_weight * self.labelled.classification
            objective = (bound * terms.objective(beta)).sum() + alpha * log_q_y.sum()
            return objective, torch.stack([(bound * t).sum() for t in terms]).detach()
        if self.free_bits or self.layer_betas:
            terms, penalised = elbo_per_layer(model, batch, noise, self.free_bits)
            objective = terms.reconstruction - (beta * penalised).sum()
            return objective, torch.stack(terms).detach()
        terms = elbo(model, batch, len(noise), noise, "sum", check=False, gradient=self.gradient)
        return terms.objective(beta), torch.stack(terms).detach()


@OBJECTIVES.register("iwae")
class IWAEObjective(_Objective):
    """The importance-weighted bound L_K with K = --samples (Burda et al. 2015); gradient
    ``reparam`` or ``dreg`` (see :func:`vaekit.objectives.importance.iwae_terms`)."""

    takes_beta = False
    takes_labels = False
    gradients = IWAE_GRADIENTS

    def __call__(
        self, model: VAE, batch: Batch, noise: torch.Tensor, beta: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        bound, terms = iwae_terms(model, batch, len(noise), noise, self.gradient)
        return bound.sum(), torch.stack(terms).detach().sum(1, dtype=torch.float64)
