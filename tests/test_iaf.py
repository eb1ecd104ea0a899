"""The inverse autoregressive flow posterior against ground truth (float64).

Its log q(z|x) is exact: the density of a draw (base density minus the log-determinants) equals
the density found by inverting the flow, and an affine flow's equals the Gaussian it is. On
the linear-Gaussian model, whose true posterior is a correlated Gaussian, the best diagonal q
leaves a gap; one affine autoregressive step can represent p(z|x) exactly, and fitting it
closes the gap to round-off. (The fit uses a fixed set of noise draws whitened to zero mean
and identity covariance: for an affine q and log p(x, z) quadratic in z, their average is the
exact expectation, so the fitted objective is the exact ELBO.)
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from helpers import fit_by_lbfgs, flat_grads, whitened_noise
from torch import nn
from torch.distributions import MultivariateNormal

import vaekit
from vaekit.cli import main
from vaekit.errors import ConfigError
from vaekit.evaluation import linear_gaussian as lg
from vaekit.model.posteriors.diagonal_gaussian import MIN_SCALE
from vaekit.model.posteriors.iaf import _Step
from vaekit.objectives.elbo import elbo

DATA_DIM, LATENT_DIM = 5, 3


def _linear_gaussian(posterior: str, **options: int) -> vaekit.VAE:
    torch.manual_seed(0)
    context = options.get("flow_context", 0) if posterior == "iaf" else 0
    return vaekit.VAE(
        (DATA_DIM,),
        LATENT_DIM,
        likelihood="gaussian",
        gaussian_scale=0.7,
        posterior=posterior,
        encoder=nn.Linear(DATA_DIM, 2 * LATENT_DIM + context),
        decoder=nn.Linear(LATENT_DIM, DATA_DIM),
        **options,
    ).double()


def _randomised(model: vaekit.VAE) -> vaekit.VAE:
    with torch.no_grad():
        for parameter in model.posterior.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return model


def test_log_q_of_a_draw_equals_log_q_by_inversion() -> None:
    model = _randomised(_linear_gaussian("iaf", flow_steps=2, flow_hidden=8, flow_context=2))
    x = torch.randn(4, DATA_DIM, dtype=torch.float64)
    params = model.posterior_parameters(x)
    z, log_q = model.posterior.sample_and_log_prob(params, torch.randn(6, 4, LATENT_DIM).double())
    torch.testing.assert_close(model.posterior.log_prob(params, z), log_q, rtol=0, atol=1e-10)
    assert not torch.allclose(z, params[0] + params[1] * 0)  # the flow moved the draws


def test_an_affine_flow_is_the_gaussian_it_maps_to() -> None:
    """With affine steps, q(z|x) = N(f(μ), A Aᵀ) with A = ∂z/∂ε: log q of draws equals that
    Gaussian's log-density."""
    model = _randomised(_linear_gaussian("iaf", flow_steps=2, flow_hidden=0, flow_context=2))
    x = torch.randn(1, DATA_DIM, dtype=torch.float64)
    params = model.posterior_parameters(x)

    def flow(noise: torch.Tensor) -> torch.Tensor:
        return model.posterior.rsample(params, noise.reshape(1, 1, LATENT_DIM)).reshape(-1)

    zero = torch.zeros(LATENT_DIM, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(flow, zero)
    gaussian = MultivariateNormal(flow(zero), covariance_matrix=jacobian @ jacobian.T)
    noise = torch.randn(10, 1, LATENT_DIM, dtype=torch.float64)
    z, log_q = model.posterior.sample_and_log_prob(params, noise)
    torch.testing.assert_close(log_q[:, 0], gaussian.log_prob(z[:, 0]), rtol=0, atol=1e-10)


def test_one_affine_autoregressive_step_closes_the_mean_field_gap() -> None:
    """The decoder held fixed: the best diagonal q leaves KL(q || p(z|x)) ≈ 0.07 nats here; the
    IAF step fitted by maximising the (exact) ELBO leaves under 1e-8."""
    model = _linear_gaussian("iaf", flow_steps=1, flow_hidden=0, flow_context=1)
    x = torch.randn(8, DATA_DIM, dtype=torch.float64) * 2
    diagonal = _linear_gaussian("diagonal-gaussian")
    diagonal.decoder.load_state_dict(model.decoder.state_dict())
    lg.set_optimal_encoder(diagonal)
    assert lg.posterior_kl(diagonal, x).mean() > 0.01
    noise = whitened_noise(64, len(x), LATENT_DIM)
    model.decoder.requires_grad_(False)
    fit_by_lbfgs(model, x, noise)
    with torch.no_grad():
        gap = lg.log_px(model, x) - elbo(model, x, noise=noise).elbo
    assert gap.abs().max() < 1e-8


@torch.no_grad()
def _set_to_the_true_posterior(model: vaekit.VAE) -> None:
    """One affine step (gate 0: s = 1/2, context unused) and the encoder set so that
    q(z|x) = N(m(x), Σ) = p(z|x): z_1 = A z_0 with A = (I + W_d)/2 and A diag(σ) = chol(Σ),
    z_0's mean A⁻¹ m(x)."""
    weight, bias, sigma = lg.linear_decoder(model)
    precision = torch.eye(LATENT_DIM, dtype=torch.float64) + weight.T @ weight / sigma**2
    covariance = torch.linalg.inv(precision)
    factor = torch.linalg.cholesky(covariance)
    scale = 2 * factor.diagonal()
    step = model.posterior.steps[0]
    for layer in (step.direct, step.from_context):
        layer.weight.zero_()
        layer.bias.zero_()
    step.direct.weight[:LATENT_DIM] = 2 * factor.tril(-1) / scale
    flow = (torch.eye(LATENT_DIM, dtype=torch.float64) + step.direct.weight[:LATENT_DIM]) / 2
    gain = torch.linalg.solve(flow, covariance @ weight.T) / sigma**2  # A⁻¹ Σ Wᵀ / σ²
    raw_scale = scale - MIN_SCALE
    encoder = model.encoder
    encoder.weight.zero_()
    encoder.bias.zero_()
    encoder.weight[:LATENT_DIM] = gain
    encoder.bias[:LATENT_DIM] = -gain @ bias
    encoder.bias[LATENT_DIM : 2 * LATENT_DIM] = raw_scale + torch.log(-torch.expm1(-raw_scale))


def test_stl_gradient_of_the_flow_vanishes_for_every_draw_at_the_true_posterior() -> None:
    """With q(z|x) = p(z|x) every draw's log weight is log p(x): the STL gradient of the
    encoder and the flow is zero for every draw (float64 round-off), the plain one is not."""
    model = _linear_gaussian("iaf", flow_steps=1, flow_hidden=0, flow_context=1)
    _set_to_the_true_posterior(model)
    x = torch.randn(4, DATA_DIM, dtype=torch.float64) * 2
    noise = torch.randn(64, len(x), LATENT_DIM, dtype=torch.float64)
    _, log_q = model.posterior.sample_and_log_prob(model.posterior_parameters(x), noise)
    torch.testing.assert_close(
        log_q,
        lg.posterior(model, x).log_prob(
            model.posterior.rsample(model.posterior_parameters(x), noise)
        ),
        rtol=0,
        atol=1e-10,
    )
    encoder_and_flow = [*model.encoder.parameters(), *model.posterior.parameters()]
    for draw in noise.split(1):
        stl = flat_grads(elbo(model, x, noise=draw, gradient="stl").elbo.sum(), encoder_and_flow)
        plain = flat_grads(elbo(model, x, noise=draw).elbo.sum(), encoder_and_flow)
        assert stl.abs().max() < 1e-10
        assert plain.abs().max() > 1e-3  # zero only in expectation


@pytest.mark.parametrize("hidden", [0, 8])
def test_stopped_log_q_is_a_frozen_copy_s_log_q_by_inversion(hidden: int) -> None:
    """log q at stopped parameters equals log q found by inverting the flow of a copy whose
    weights take no gradient, at the same draws: the same values, and the same gradients for
    every weight (they reach the encoder and the steps through z only); the plain log q's
    differ (its score term)."""
    model = _randomised(_linear_gaussian("iaf", flow_steps=2, flow_hidden=hidden, flow_context=2))
    frozen = copy.deepcopy(model.posterior).requires_grad_(False)
    x = torch.randn(4, DATA_DIM, dtype=torch.float64)
    noise = torch.randn(3, 4, LATENT_DIM, dtype=torch.float64)
    params = model.posterior_parameters(x)
    z, stopped = model.posterior.sample_and_stopped_log_prob(params, noise)
    reference = frozen.log_prob(tuple(p.detach() for p in params), z)
    torch.testing.assert_close(stopped, reference, rtol=0, atol=1e-10)
    weights = list(model.parameters())
    expected = flat_grads((reference * torch.arange(12.0).reshape(3, 4)).sum(), weights)
    actual = flat_grads((stopped * torch.arange(12.0).reshape(3, 4)).sum(), weights)
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-11)
    _, plain = model.posterior.sample_and_log_prob(params, noise)
    assert not torch.allclose(flat_grads(plain.sum(), weights), flat_grads(stopped.sum(), weights))


def test_iaf_trains_evaluates_and_reports_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "iaf"
    argv = ["train", "--posterior", "iaf", "--flow-steps", "2", "--flow-hidden", "16"]
    argv += ["--flow-context", "4", "--latent-dim", "3", "--hidden", "32", "--epochs", "2"]
    assert main([*argv, "--run-dir", str(run), "--no-progress"]) == 0
    model = vaekit.load(run)
    assert not model.rate_rule.analytic and model.posterior.steps[1].hidden == 16
    assert main(["evaluate", str(run), "-k", "30", "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "(Monte Carlo, K draws)" in table and "rate = I_q(x;z)" not in table
    assert main(["report", str(run)]) == 0
    assert main(["encode", str(run), "-o", str(tmp_path / "z.npy")]) == 0
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.png")]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    for gradient in (
        ["--gradient", "stl"],
        ["--objective", "iwae", "--samples", "3", "--gradient", "dreg"],
    ):
        assert (
            main([*argv, "--run-dir", str(tmp_path / gradient[1]), *gradient, "--no-progress"]) == 0
        )
        assert vaekit.load(tmp_path / gradient[1]).posterior.steps[1].hidden == 16
    with pytest.raises(ConfigError, match="use --posterior diagonal-gaussian with --prior vamp"):
        vaekit.VAE((4,), 2, posterior="iaf", prior="vamp")


@pytest.mark.parametrize(("dim", "hidden"), [(10, 37), (3, 8), (1, 4), (6, 0)])
def test_a_step_s_jacobian_is_autograd_s(dim: int, hidden: int) -> None:
    """The flow's Jacobian ∂z_t/∂z_{t−1} that the stopped log q solves with, built from the
    MADE's masked weights, equals autograd's Jacobian of the step and is lower triangular
    (float64, weights randomised so that every mask matters; affine and with hidden units)."""
    torch.manual_seed(0)
    step = _Step(dim, hidden, 2).double()
    with torch.no_grad():
        for weight in step.parameters():
            weight.normal_()
    z, context = torch.randn(5, dim, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)

    def forward(z: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return step.update(z, *step(z, context))

    jacobian = torch.autograd.functional.jacobian
    expected = torch.stack([jacobian(forward, (z[i], context[i]))[0] for i in range(5)])
    shift, gate = step(z, context)
    actual = step.flow_jacobian(z, shift, gate, context)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(actual.triu(1), torch.zeros_like(actual))
