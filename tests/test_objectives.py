"""The ELBO's maths against closed forms (tolerances: 5 standard errors of the Monte Carlo
mean, i.e. a false failure probability below 1e-6 per compared value; float64 round-off
for exact identities)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal, kl_divergence

from vaekit.model import linear_gaussian as lg
from vaekit.model.likelihoods import BernoulliLikelihood
from vaekit.objectives.elbo import elbo

Z_TOL = 5.0


def _within(estimates: torch.Tensor, truth: torch.Tensor) -> None:
    """``estimates``: (N, ...) independent draws whose mean estimates ``truth`` (...)."""
    mean = estimates.mean(0)
    stderr = estimates.std(0) / estimates.shape[0] ** 0.5
    assert torch.all((mean - truth).abs() <= Z_TOL * stderr + 1e-9), (mean, truth, stderr)


def _model(seed: int = 0, data_dim: int = 5, latent_dim: int = 3, sigma: float = 0.7):
    torch.manual_seed(seed)
    model = lg.linear_gaussian_vae(data_dim, latent_dim, sigma).double()
    x = torch.randn(6, data_dim, dtype=torch.float64) * 2
    return model, x


def test_analytic_kl_equals_monte_carlo_kl() -> None:
    torch.manual_seed(1)
    q = Independent(Normal(torch.randn(4, 3), torch.rand(4, 3) + 0.3), 1)
    p = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    z = q.sample((200_000,))
    _within(q.log_prob(z) - p.log_prob(z), kl_divergence(q, p))


def test_identity_holds_exactly_for_linear_gaussian() -> None:
    model, x = _model()
    with torch.no_grad():
        gap = lg.exact_elbo(model, x).elbo + lg.posterior_kl(model, x) - lg.log_px(model, x)
    assert gap.abs().max() < 1e-10


def test_monte_carlo_elbo_matches_exact_elbo() -> None:
    model, x = _model()
    n = 20_000
    with torch.no_grad():
        terms = elbo(model, x.repeat(n, 1))  # n independent one-sample estimates per example
        exact = lg.exact_elbo(model, x)
    _within(terms.elbo.reshape(n, len(x)), exact.elbo)
    assert torch.allclose(terms.rate.reshape(n, len(x))[0], exact.rate, atol=1e-10)


def test_elbo_is_below_exact_log_px() -> None:
    model, x = _model(seed=3)
    with torch.no_grad():
        exact = lg.exact_elbo(model, x).elbo
        truth = lg.log_px(model, x)
        monte_carlo = elbo(model, x, n_samples=5000).elbo
    assert torch.all(exact <= truth + 1e-12)
    assert torch.all(lg.posterior_kl(model, x) >= -1e-12)
    # ELBO + KL = log p(x) and the KL is far larger than the MC error here: the bound is visible.
    assert torch.all(monte_carlo < truth)


def test_reparameterised_gradients_are_unbiased() -> None:
    """Mean of one-sample gradients of the MC ELBO = gradient of the exact ELBO."""
    model, x = _model(seed=2, data_dim=3, latent_dim=2)
    params = list(model.parameters())
    exact = torch.autograd.grad(lg.exact_elbo(model, x).elbo.sum(), params)
    draws = []
    for _ in range(2000):
        grads = torch.autograd.grad(elbo(model, x).elbo.sum(), params)
        draws.append(torch.cat([g.flatten() for g in grads]))
    _within(torch.stack(draws), torch.cat([g.flatten() for g in exact]))


def test_bernoulli_likelihood_is_summed_binary_cross_entropy() -> None:
    logits = torch.randn(4, 1, 8, 8)
    x = torch.rand(4, 1, 8, 8).bernoulli()
    log_prob = BernoulliLikelihood((1, 8, 8))(logits).log_prob(x)
    expected = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
    assert log_prob.shape == (4,)
    assert torch.allclose(log_prob, expected, atol=1e-5)
