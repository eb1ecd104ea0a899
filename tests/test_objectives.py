"""The ELBO's maths against closed forms (tolerances: 5 standard errors of the Monte Carlo
mean, i.e. a false failure probability below 1e-6 per compared value; float64 round-off
for exact identities)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal, kl_divergence

from vaekit.evaluation import linear_gaussian as lg
from vaekit.model import gaussian
from vaekit.model.likelihoods import BernoulliLikelihood, GaussianLikelihood, ScaleOptions
from vaekit.objectives.elbo import elbo, log_weights
from vaekit.objectives.importance import iwae_bound, iwae_terms

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
    loc, scale = torch.randn(4, 3), torch.rand(4, 3) + 0.3
    z = Independent(Normal(loc, scale), 1).sample((200_000,))
    log_ratio = gaussian.log_density(z, loc, scale) - gaussian.standard_log_density(z)
    _within(log_ratio, gaussian.kl_to_standard(loc, scale))


def test_gaussian_closed_forms_equal_torch_distributions() -> None:
    """Float64 round-off (1e-12) between vaekit's closed forms and torch.distributions."""
    torch.manual_seed(7)
    loc = torch.randn(5, 4, dtype=torch.float64)
    scale = torch.rand(5, 4, dtype=torch.float64) + 0.05
    z = torch.randn(3, 5, 4, dtype=torch.float64) * 2
    q = Independent(Normal(loc, scale), 1)
    p = Independent(Normal(torch.zeros(4, dtype=torch.float64), 1.0), 1)
    torch.testing.assert_close(
        gaussian.log_density(z, loc, scale), q.log_prob(z), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(gaussian.standard_log_density(z), p.log_prob(z), rtol=0, atol=1e-12)
    kl = kl_divergence(q, p)
    torch.testing.assert_close(gaussian.kl_to_standard(loc, scale), kl, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        gaussian.kl_to_standard(loc, scale, "sum"), kl.sum(), rtol=0, atol=1e-12
    )
    per_dim = kl_divergence(Normal(loc, scale), Normal(0.0, 1.0))
    torch.testing.assert_close(
        gaussian.kl_to_standard(loc, scale, "dims"), per_dim, rtol=0, atol=1e-12
    )


def test_pairwise_log_density_equals_broadcast_density() -> None:
    """The matrix-product expansion = the direct formula, in float64, with scales down to 1e-3
    (cancellation error ~ 1e-16 · D (|z| + |μ|)² / σ² ≈ 2e-8 at most here)."""
    torch.manual_seed(10)
    loc = torch.randn(7, 5, dtype=torch.float64) * 2
    scale = torch.rand(7, 5, dtype=torch.float64) + 1e-3
    z = loc[:4] + scale[:4] * torch.randn(4, 5, dtype=torch.float64)
    direct = gaussian.log_density(z[:, None, :], loc, scale)
    torch.testing.assert_close(
        gaussian.pairwise_log_density(z, loc, scale), direct, rtol=0, atol=1e-7
    )


@pytest.mark.parametrize(
    "likelihood",
    [
        BernoulliLikelihood((1, 4, 4)),
        GaussianLikelihood((1, 4, 4), ScaleOptions(0.3, learn_scale=True)),
    ],
)
def test_likelihood_log_prob_equals_its_distribution(likelihood) -> None:
    """``log_prob(params, x)`` (the loops' fused form) = the torch distribution's log_prob, per
    example and summed, with samples ``(S, B, ...)`` broadcast against data ``(B, ...)``."""
    torch.manual_seed(8)
    likelihood = likelihood.double()
    with torch.no_grad():
        for parameter in likelihood.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
    params = torch.randn(3, 6, 1, 4, 4, dtype=torch.float64)
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64).bernoulli()
    expected = likelihood(params).log_prob(x)
    assert expected.shape == (3, 6)
    torch.testing.assert_close(likelihood.log_prob(params, x), expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(
        likelihood.log_prob(params, x, "sum"), expected.sum(), rtol=0, atol=1e-9
    )


def test_summed_elbo_equals_the_sum_of_per_example_terms() -> None:
    model, x = _model(seed=9)
    noise = torch.randn(4, len(x), 3, dtype=torch.float64)
    per_example = elbo(model, x, 4, noise)
    summed = elbo(model, x, 4, noise, reduction="sum")
    for total, terms in zip(summed, per_example, strict=True):
        torch.testing.assert_close(total, terms.sum(), rtol=0, atol=1e-10)


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


def _flat_grad(output: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(output, params, retain_graph=True)
    return torch.cat([g.flatten() for g in grads])


def test_iwae_gradient_is_the_normalised_weighted_score() -> None:
    """∇L_K = Σ_k w̃_k ∇ log w_k with w̃ = softmax(log w), held constant (exactly, for the same
    draws); the two classic mistakes — weights not held constant, or the sign flipped — give
    another gradient, so this identity tells them apart."""
    model, x = _model(seed=4)
    params, k = list(model.parameters()), 16
    noise = torch.randn((k, len(x), 3), dtype=torch.float64)
    bound, _ = iwae_terms(model, x, k, noise)
    log_w = log_weights(model, x, model.posterior_parameters(x), noise)[1].log_w
    weights = torch.softmax(log_w, dim=0)
    right = _flat_grad((weights.detach() * log_w).sum(), params)
    ours = _flat_grad(bound.sum(), params)
    assert torch.allclose(ours, right, rtol=1e-10, atol=1e-12)
    undetached = _flat_grad((weights * log_w).sum(), params)
    assert (undetached - right).abs().max() > 1e-3 * right.abs().max()
    assert not torch.allclose(ours, -right)


def test_iwae_decoder_gradient_approaches_the_gradient_of_log_px() -> None:
    """E ∇_θ L_K → ∇_θ log p(x) as K grows (the decoder's θ; exact for the linear-Gaussian
    model): at K = 1000 within 5 standard errors of the mean of 200 draws (the self-normalised
    weights' bias is O(1/K): 7 s.e. at K = 10, 4 at K = 100, 2.5 at K = 1000 here), and the
    error is a tenth of the ELBO's (K = 1), which is biased towards ∇ ELBO."""
    model, x = _model(seed=0, data_dim=6)
    lg.set_optimal_encoder(model)  # mean-field: the posterior is correlated, the gap > 0
    with torch.no_grad():
        model.encoder.bias[:3] += 0.3  # ... and off the optimum
    decoder = list(model.decoder.parameters())
    truth = _flat_grad(lg.log_px(model, x).sum(), decoder)
    errors = []
    for k in (1, 1000):
        draws = torch.stack(
            [_flat_grad(iwae_bound(model, x, k).sum(), decoder) for _ in range(200)]
        )
        errors.append((draws.mean(0) - truth).abs().max())
    _within(draws, truth)
    assert errors[1] < 0.1 * errors[0]


@pytest.mark.parametrize("temperature", [0.0, 0.5, 2.0])
def test_sampler_draws_from_the_tempered_prior(temperature: float) -> None:
    """model.sample(n, T, mean=False) for the linear-Gaussian model is x = Wz + b + σε with
    z ~ N(0, T² I): covariance T² WWᵀ + σ² I. Each sample covariance entry has standard error
    sqrt((Σ_ij² + Σ_ii Σ_jj) / n) (Gaussian data), the tolerance is 5 of them."""
    model, _ = _model(seed=1, data_dim=4, latent_dim=2, sigma=0.3)
    n = 20_000
    x = model.sample(n, temperature, mean=False, generator=torch.Generator().manual_seed(0))
    weight, bias = model.decoder.weight.detach(), model.decoder.bias.detach()
    cov = temperature**2 * weight @ weight.T + 0.09 * torch.eye(4, dtype=torch.float64)
    stderr = ((cov.square() + torch.outer(cov.diag(), cov.diag())) / n).sqrt()
    assert torch.all((x.T.cov() - cov).abs() <= Z_TOL * stderr)
    assert torch.all((x.mean(0) - bias).abs() <= Z_TOL * (cov.diag() / n).sqrt())
