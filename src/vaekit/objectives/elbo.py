"""The evidence lower bound and the log importance weights it is the average of.

All quantities are per example, in nats, summed over the data and latent dimensions. The
objectives see a model only through its contract (:mod:`vaekit.model.vae`): posterior
parameters, draws of z with log q(z|x), the rate, log p(z), log p(x|z).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from vaekit.checks import choice
from vaekit.data.batch import Batch, as_batch
from vaekit.data.labelled import MISSING
from vaekit.model.draws import random_like
from vaekit.model.rate import monte_carlo_rate

if TYPE_CHECKING:
    from vaekit.model.contract import PosteriorParameters
    from vaekit.model.vae import VAE

ELBO_GRADIENTS = ("reparam", "stl")
"""Gradient estimators of the ELBO (see :func:`elbo`)."""


class ELBOTerms(NamedTuple):
    """Per-example terms, each of shape ``(B,)`` (or their batch sums, scalars), in nats.

    elbo = reconstruction − rate, with reconstruction = E_q[log p(x|z)] and
    rate = KL(q(z|x) || p(z)).
    """

    elbo: torch.Tensor
    reconstruction: torch.Tensor
    rate: torch.Tensor

    def objective(self, beta: float = 1.0) -> torch.Tensor:
        """The β-weighted training objective reconstruction − β·rate (the ELBO at β = 1, to the
        bit). No branch on β, so a compiled step is not recompiled as β warms up."""
        return self.reconstruction - beta * self.rate


class LogWeights(NamedTuple):
    """For S draws z_s ~ q(z|x) of B examples, each ``(S, B)``: log p(x|z), log p(z) and
    log q(z|x). Their combination log w = log p(x|z) + log p(z) − log q(z|x) has E_q[log w] =
    ELBO and log E_q[w] = log p(x)."""

    log_likelihood: torch.Tensor
    log_prior: torch.Tensor
    log_q: torch.Tensor

    @property
    def log_w(self) -> torch.Tensor:
        return self.log_likelihood + self.log_prior - self.log_q


def standard_noise(
    model: VAE, n_samples: int, like: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Standard-normal noise ``(n_samples, B, model.noise_dim)`` for the B examples of
    ``like``, from ``generator`` (torch's global one if None)."""
    return random_like(torch.randn, (n_samples, len(like), model.noise_dim), like, generator)


def log_weights(
    model: VAE, batch: torch.Tensor | Batch, params: tuple, noise: torch.Tensor
) -> tuple[torch.Tensor, LogWeights]:
    """``(z, log weights)`` of the draws z = q's reparameterisation of ``noise (S, B, N)``,
    given the posterior's ``params`` for ``batch``."""
    z, log_q = model.sample_posterior(params, noise)
    return z, LogWeights(model.log_likelihood(z, batch), model.log_prior(z), log_q)


def elbo(
    model: VAE,
    batch: torch.Tensor | Batch,
    n_samples: int = 1,
    noise: torch.Tensor | None = None,
    reduction: str = "none",
    check: bool = True,
    gradient: str = "reparam",
) -> ELBOTerms:
    """ELBO(x) = E_q[log p(x|z)] − KL(q(z|x) || p(z)), with the expectation estimated by
    ``n_samples`` reparameterised draws (unbiased, differentiable) and the KL in closed form
    where the model has one, else by the same draws' log q(z|x) − log p(z).

    ``batch``: ``x (B, *input_shape)`` or a :class:`Batch`; ``noise``: standard-normal draws
    ``(n_samples, B, noise_dim)``, if given. Returns :class:`ELBOTerms`, ``(B,)`` each, or
    their sums over the batch (scalars) with ``reduction="sum"`` (what the training loop
    needs, with fewer operations). Refuses data outside the likelihood's support (e.g. grey
    levels under a Bernoulli) unless ``check=False`` (the training loop, whose data are checked
    once).

    ``gradient``: ``"reparam"``, the reparameterised gradient of this estimate; or ``"stl"``,
    "sticking the landing" (Roeder et al. 2017): the rate by the draws' log q − log p(z) with
    log q at stopped parameters, so the encoder's gradient has no score term and vanishes
    for every draw when q(z|x) = p(z|x). The same values either way, up to the Monte Carlo
    rate in place of a closed form.
    """
    choice("gradient", gradient, ELBO_GRADIENTS)
    batch = as_batch(batch)
    if check:
        model.check_examples(batch)
    if model.infers_labels:
        return semi_supervised_elbo(model, batch, n_samples, noise, reduction, gradient)[0]
    return _elbo_given_labels(model, batch, n_samples, noise, reduction, gradient)


def _elbo_given_labels(
    model: VAE,
    batch: Batch,
    n_samples: int,
    noise: torch.Tensor | None,
    reduction: str,
    gradient: str,
    params: PosteriorParameters | None = None,
) -> ELBOTerms:
    """:func:`elbo` of a model whose labels, if it reads any, are all given (``params``:
    q's parameters for ``batch``, if computed already)."""
    if params is None:
        params = model.posterior_parameters(batch)
    if noise is None:
        noise = standard_noise(model, n_samples, params[0])
    if gradient == "stl":
        z, log_q = model.sample_posterior(params, noise, stopped=True)
        rate = monte_carlo_rate(log_q, model.log_prior(z), reduction)
    elif model.rate_rule.analytic:  # no log q needed: fewer operations per step
        z = model.posterior.rsample(params, noise)
        rate = model.rate(params, reduction=reduction)
    else:
        z, log_q = model.sample_posterior(params, noise)
        rate = model.rate(params, log_q, model.log_prior(z), reduction)
    log_likelihood = model.log_likelihood(z, batch, reduction)
    reconstruction = log_likelihood / n_samples if reduction == "sum" else log_likelihood.mean(0)
    return ELBOTerms(reconstruction - rate, reconstruction, rate)


def semi_supervised_elbo(
    model: VAE,
    batch: Batch,
    n_samples: int = 1,
    noise: torch.Tensor | None = None,
    reduction: str = "none",
    gradient: str = "reparam",
) -> tuple[ELBOTerms, torch.Tensor]:
    """The bounds of a model that infers missing labels (M2, Kingma et al. 2014; see
    :mod:`vaekit.model.semi_supervised`) and the log q(y|x) of the given labels.

    An example with its label y has the bound L(x, y) = ELBO(x|y) + log p(y) on log p(x, y):
    reconstruction E_q[log p(x|z, y)], rate KL(q(z|x, y) || p(z)) − log p(y). Without one
    (y = −1) it has U(x) = Σ_y q(y|x) ELBO(x|y) − KL(q(y|x) || p(y)) on log p(x), the sum over
    the classes exact: reconstruction Σ_y q(y|x) E_q[log p(x|z, y)], rate Σ_y q(y|x)
    KL(q(z|x, y) || p(z)) + KL(q(y|x) || p(y)). Every class of an unlabelled example is
    decoded from the same ``noise`` draws. Returns the :class:`ELBOTerms` (``(B,)`` each, or
    sums with ``reduction="sum"``) and log q(y|x) of the labelled examples (0 for the others;
    ``(B,)``, or its sum).
    """
    x, classes = batch.x, model.classes
    y = torch.full((len(x),), MISSING, device=x.device) if batch.y is None else batch.y
    known = y >= 0
    labelled, unlabelled = known.nonzero().squeeze(1), (~known).nonzero().squeeze(1)
    rows = torch.cat([labelled, unlabelled.repeat(classes)])
    given = torch.arange(classes, device=x.device).repeat_interleave(len(unlabelled))
    if noise is None:
        noise = standard_noise(model, n_samples, x)
    labels = torch.cat([y[labelled], given])
    # x through the encoder once, not once per class: 1.25-1.31x faster M2 steps on MNIST, batch
    # 200, one thread (benchmarks/semi_supervised.py; results/semi-supervised-cpu.log)
    params = model.posterior_parameters_from(model.encoder(x)[rows], labels)
    terms = _elbo_given_labels(
        model, Batch(x[rows], labels), n_samples, noise[:, rows], "none", gradient, params
    )
    log_q_y = torch.log_softmax(model.label_logits(x), dim=-1)  # (B, C)
    log_p_y = model.log_label_prior()
    q = log_q_y[unlabelled].exp()
    split = len(labelled)

    def weighted(values: torch.Tensor) -> torch.Tensor:  # Σ_y q(y|x) values(x, y)
        return (q * values[split:].reshape(classes, -1).T).sum(1)

    label_rate = (q * (log_q_y[unlabelled] - log_p_y)).sum(1)  # KL(q(y|x) || p(y))
    reconstruction = torch.cat([terms.reconstruction[:split], weighted(terms.reconstruction)])
    rate = torch.cat([terms.rate[:split] - log_p_y, weighted(terms.rate) + label_rate])
    back = torch.cat([labelled, unlabelled]).argsort()  # to the batch's order
    reconstruction, rate = reconstruction[back], rate[back]
    classification = torch.where(known, log_q_y.gather(1, y.clamp_min(0)[:, None])[:, 0], 0.0)
    result = ELBOTerms(reconstruction - rate, reconstruction, rate)
    if reduction == "sum":
        return ELBOTerms(*(t.sum() for t in result)), classification.sum()
    return result, classification


def elbo_per_layer(
    model: VAE, batch: Batch, noise: torch.Tensor, free_bits: float = 0.0
) -> tuple[ELBOTerms, torch.Tensor]:
    """The ELBO's terms summed over the batch, from the draws of ``noise (S, B, noise_dim)``,
    and the rate of each latent layer that the objective penalises, ``(L,)``: Σ_b rate_{b,l},
    or with free bits (Kingma et al. 2016, one group per latent layer) max(λ B, Σ_b rate_{b,l}),
    i.e. a layer whose rate averages under λ = ``free_bits`` nats per example over the batch
    costs λ and gets no gradient from the rate. The objective is reconstruction − Σ_l β_l ·
    that (one β for all layers, or one each under a warm-up per layer); the ELBO reported is
    the true one."""
    params = model.posterior_parameters(batch)
    z, rates = model.sample_and_rate_per_layer(params, noise)  # (B, L)
    reconstruction = model.log_likelihood(z, batch, "sum") / len(noise)
    rate = rates.sum()
    penalised = rates.sum(0).clamp_min(free_bits * len(rates))
    return ELBOTerms(reconstruction - rate, reconstruction, rate), penalised


@torch.no_grad()
def elbo_in_batches(
    model: VAE, batch: torch.Tensor | Batch, batch_size: int = 1000, n_samples: int = 1
) -> ELBOTerms:
    """ELBO terms of every example of ``batch`` (N examples), computed ``batch_size`` at a time
    in evaluation mode; ``(N,)`` each. The data are not checked here (the trainer checked them
    once; elsewhere, check them with ``model.likelihood.check``)."""
    batch = as_batch(batch)
    was_training = model.training
    model.eval()
    parts = [
        elbo(model, batch.select(slice(i, i + batch_size)), n_samples, check=False)
        for i in range(0, len(batch.x), batch_size)
    ]
    model.train(was_training)
    return ELBOTerms(*(torch.cat(column) for column in zip(*parts, strict=True)))
