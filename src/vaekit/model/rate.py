"""The rate KL(q(z|x) || p(z)): closed forms registered per (posterior, prior) pair, and the
Monte Carlo estimate where none is.

As ``torch.distributions.kl.register_kl``: a rule is registered for a pair of classes and the
most specific registered pair matching a model's posterior and prior serves it (ties are an
error at registration's use, never a silent pick). The rule is resolved once, when the model
is built; the training step calls it without dispatch.

    @register_rate(DiagonalGaussianPosterior, StandardNormalPrior)
    def _(posterior, prior, params) -> torch.Tensor:   # (B, D): per latent dimension
        ...
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vaekit.model.contract import Posterior, PosteriorParameters, Prior

ClosedForm = Callable[[Posterior, Prior, PosteriorParameters], torch.Tensor]
"""``(posterior, prior, params) -> (B, D)``: KL per latent dimension (their sum is the rate),
for a prior and posterior that factorise over the dimensions."""

_CLOSED_FORMS: dict[tuple[type, type], ClosedForm] = {}


def register_rate(posterior: type[Posterior], prior: type[Prior]) -> Callable:
    """Decorator: the closed-form KL per dimension of ``posterior`` to ``prior``."""

    def add(rule: ClosedForm) -> ClosedForm:
        _CLOSED_FORMS[posterior, prior] = rule
        return rule

    return add


class RateRule:
    """The rate for one model's posterior and prior. ``analytic``: a closed form (then
    :meth:`per_dimension` exists too); otherwise the Monte Carlo estimate
    (1/S) Σ_s [log q(z_s|x) − log p(z_s)] from the draws the objective made."""

    def __init__(self, posterior: Posterior, prior: Prior) -> None:
        self.posterior, self.prior = posterior, prior
        self.closed_form = _most_specific(type(posterior), type(prior))
        self.analytic = self.closed_form is not None
        self.label = "analytic" if self.analytic else "Monte Carlo"

    def per_dimension(self, params: PosteriorParameters) -> torch.Tensor:
        """KL per latent dimension ``(B, D)`` (closed form only)."""
        assert self.closed_form is not None, "no closed form: see RateRule.analytic"
        return self.closed_form(self.posterior, self.prior, params)

    def __call__(
        self,
        params: PosteriorParameters,
        log_q: torch.Tensor | None = None,
        log_prior: torch.Tensor | None = None,
        reduction: str = "none",
    ) -> torch.Tensor:
        """The rate per example ``(B,)`` (or its batch sum with ``reduction="sum"``, one
        reduction fewer: the training step): the closed form of ``params``, or the mean over
        the S draws of ``log_q − log_prior`` (each ``(S, B)``)."""
        if self.closed_form is not None:
            per_dimension = self.closed_form(self.posterior, self.prior, params)
            return per_dimension.sum() if reduction == "sum" else per_dimension.sum(-1)
        assert log_q is not None and log_prior is not None, "the Monte Carlo rate needs draws"
        return monte_carlo_rate(log_q, log_prior, reduction)


def monte_carlo_rate(
    log_q: torch.Tensor, log_prior: torch.Tensor, reduction: str = "none"
) -> torch.Tensor:
    """(1/S) Σ_s [log q(z_s|x) − log p(z_s)] per example ``(B,)`` from ``(S, B)`` each (or its
    batch sum with ``reduction="sum"``): unbiased for KL(q(z|x) || p(z)), for any pair."""
    rate = (log_q - log_prior).mean(0)
    return rate.sum() if reduction == "sum" else rate


def _most_specific(posterior: type, prior: type) -> ClosedForm | None:
    """The rule registered for the most specific pair of base classes of ``(posterior,
    prior)`` (the smallest sum of positions in the two method resolution orders)."""
    matches = [
        (posterior.__mro__.index(p) + prior.__mro__.index(q), (p, q))
        for p, q in _CLOSED_FORMS
        if issubclass(posterior, p) and issubclass(prior, q)
    ]
    if not matches:
        return None
    best = min(distance for distance, _ in matches)
    pairs = [pair for distance, pair in matches if distance == best]
    if len(pairs) > 1:
        names = " and ".join(f"({p.__name__}, {q.__name__})" for p, q in pairs)
        raise TypeError(f"ambiguous KL rules for {posterior.__name__}, {prior.__name__}: {names}")
    return _CLOSED_FORMS[pairs[0]]
