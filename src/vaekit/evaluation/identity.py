"""See log p(x) = ELBO + KL(q(z|x) || p(z|x)) hold, on a model where every term is exact.

For a linear-Gaussian VAE or hierarchy (see :mod:`vaekit.evaluation.linear_gaussian` and
:mod:`vaekit.evaluation.linear_gaussian_hierarchy`; fitted by
:func:`vaekit.training.linear_gaussian.fit_linear_gaussian`), compares the exact terms with
vaekit's Monte Carlo estimators on held-out examples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType

import torch

from vaekit.evaluation import linear_gaussian as lg
from vaekit.evaluation import linear_gaussian_hierarchy as lgh
from vaekit.evaluation.evaluate import evaluate
from vaekit.evaluation.statistics import Mean
from vaekit.model.hierarchy import HierarchicalVAE
from vaekit.model.vae import VAE
from vaekit.objectives.elbo import elbo


@dataclass
class IdentityCheck:
    """Exact and estimated terms, nats per example averaged over the evaluated examples."""

    sigma: float
    layers: tuple[int, ...]
    log_px: float
    elbo: float
    kl: float
    residual: float
    optimal_elbo: float | None
    optimal_kl: float | None
    monte_carlo_elbo: Mean
    monte_carlo_error: Mean
    iwae: list[tuple[int, Mean, Mean]]

    def table(self) -> str:
        kind = "VAE" if len(self.layers) == 1 else f"hierarchy (top-down, z of {self.layers})"
        rows = [
            f"linear-Gaussian {kind}, σ = {self.sigma:.4f} (probabilistic-PCA maximum "
            "likelihood); nats per example",
            f"  exact log p(x)                          {self.log_px:12.4f}",
            f"  exact ELBO                              {self.elbo:12.4f}",
            f"  exact KL(q(z|x) || p(z|x))              {self.kl:12.4f}",
            f"  max |ELBO + KL − log p(x)|              {self.residual:12.2e}",
            "  estimators (mean ± s.e. over examples; error = estimate − exact, paired):",
            f"  Monte Carlo ELBO, 1 sample    {self.monte_carlo_elbo!s:>16}   error vs ELBO "
            f"{self.monte_carlo_error!s:>14}",
        ]
        rows += [
            f"  IWAE log p̂_K(x), K = {k:<7} {estimate!s:>16}   error vs log p(x) {error!s:>10}"
            for k, estimate, error in self.iwae
        ]
        if self.optimal_elbo is None:
            return "\n".join(rows)
        rows += [
            "  with the encoder set to the best diagonal Gaussian for the true posterior:",
            f"  exact ELBO                              {self.optimal_elbo:12.4f}",
            f"  exact KL(q(z|x) || p(z|x))              {self.optimal_kl:12.4f}",
        ]
        return "\n".join(rows)


@torch.no_grad()
def identity_check(
    model: VAE, x: torch.Tensor, ks: tuple[int, ...] = (1, 10, 100, 1000), seed: int = 0
) -> IdentityCheck:
    """Exact terms and estimators on ``x (N, D)`` for a linear-Gaussian ``model``."""
    x = x.reshape(len(x), -1).double()
    closed = _closed_forms(model)
    exact = closed.exact_elbo(model, x)
    truth = closed.log_px(model, x)
    kl = closed.posterior_kl(model, x)
    torch.manual_seed(seed)
    monte_carlo = elbo(model, x).elbo
    iwae = []
    for k in ks:
        estimate = evaluate(model, x, k, seed=seed).per_example["log_px"]
        iwae.append((k, Mean.of(estimate), Mean.of(estimate - truth)))
    optimal = _optimal(model, x)
    return IdentityCheck(
        sigma=math.exp(float(model.likelihood.log_scale.flatten()[0])),
        layers=model.layer_sizes,
        log_px=float(truth.mean()),
        elbo=float(exact.elbo.mean()),
        kl=float(kl.mean()),
        residual=float((exact.elbo + kl - truth).abs().max()),
        optimal_elbo=None if optimal is None else float(lg.exact_elbo(optimal, x).elbo.mean()),
        optimal_kl=None if optimal is None else float(lg.posterior_kl(optimal, x).mean()),
        monte_carlo_elbo=Mean.of(monte_carlo),
        monte_carlo_error=Mean.of(monte_carlo - exact.elbo),
        iwae=iwae,
    )


def _closed_forms(model: VAE) -> ModuleType:
    """The module of closed forms for ``model``: the one-layer VAE's or the hierarchy's."""
    if isinstance(model, HierarchicalVAE):
        return lgh
    if type(model) is VAE:
        return lg
    raise TypeError(f"no closed forms for a {type(model).__name__}")


def _optimal(model: VAE, x: torch.Tensor) -> VAE | None:
    """The one-layer model with the encoder set to the best diagonal Gaussian for the true
    posterior (none for a hierarchy)."""
    if isinstance(model, HierarchicalVAE):
        return None
    optimal = lg.linear_gaussian_vae(x.shape[1], model.latent_dim).double()
    optimal.load_state_dict(model.state_dict())
    lg.set_optimal_encoder(optimal)
    return optimal
