"""The likelihoods beyond their log-probabilities (tested in test_objectives): the discretised
logistic of 8-bit data against its definition, the decoded scale, seeded draws on any device.

Exact properties are checked in float64 to round-off; sampling against the probabilities with
5 binomial standard errors per level (false failure probability < 1e-6 per level).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import vaekit
from vaekit.model.draws import random_like
from vaekit.model.likelihoods import (
    LEVELS,
    LIKELIHOODS,
    MIN_LOG_SCALE,
    DiscretizedLogistic,
    DiscretizedLogisticLikelihood,
    ScaleOptions,
    discretized_logistic_log_prob,
    prepare_for_vmap,
)

GRID = torch.arange(LEVELS, dtype=torch.float64) / (LEVELS - 1)
# means inside and far outside [0, 1], scales from a hundredth of a level to several units
LOC = torch.tensor([-3.0, -0.01, 0.0, 0.2, 0.5, 0.731, 1.0, 1.3, 40.0], dtype=torch.float64)
SCALE = torch.tensor([1e-5, 1e-3, 0.02, 0.3, 5.0], dtype=torch.float64)


def _all_levels() -> torch.Tensor:
    """log P(k/255) for every (μ, s) pair: (levels, len(LOC), len(SCALE))."""
    loc, scale = LOC[:, None], SCALE[None, :]
    return discretized_logistic_log_prob(GRID[:, None, None], loc, scale.log())


def test_probabilities_of_the_256_levels_sum_to_one() -> None:
    log_p = _all_levels()
    assert torch.isfinite(log_p).all() and (log_p <= 1e-12).all()
    torch.testing.assert_close(log_p.exp().sum(0), torch.ones(9, 5, dtype=torch.float64))


def test_log_prob_is_the_difference_of_logistic_cdfs() -> None:
    """P(k/255) = F(k/255 + h) − F(k/255 − h), F the logistic CDF, with F = 0 below level 0 and
    F = 1 above level 255; compared where the plain difference is not lost to round-off."""
    loc, scale, half = LOC[:, None], SCALE[None, :], 0.5 / (LEVELS - 1)
    grid = GRID[:, None, None]
    upper = torch.where(grid == 1, 1.0, torch.sigmoid((grid + half - loc) / scale))
    lower = torch.where(grid == 0, 0.0, torch.sigmoid((grid - half - loc) / scale))
    plain = upper - lower
    usable = plain > 1e-6
    torch.testing.assert_close(_all_levels().exp()[usable], plain[usable], rtol=1e-8, atol=0)


def test_float32_is_finite_with_finite_gradients_at_the_extremes() -> None:
    x = torch.tensor([0.0, 1 / 255, 0.5, 1.0]).repeat(4)
    loc = torch.tensor([-50.0, 0.5, 50.0, 1.0]).repeat_interleave(4).requires_grad_()
    log_scale = torch.tensor([-12.0, 3.0]).repeat(8).requires_grad_()
    log_p = discretized_logistic_log_prob(x, loc, log_scale)
    log_p.sum().backward()
    assert torch.isfinite(log_p).all() and torch.isfinite(loc.grad).all()
    assert torch.isfinite(log_scale.grad).all()


def test_mean_is_the_expectation_over_the_levels() -> None:
    distribution = DiscretizedLogistic(LOC[:, None], SCALE[None, :])
    expected = (GRID[:, None, None] * _all_levels().exp()).sum(0)
    torch.testing.assert_close(distribution.mean, expected, rtol=0, atol=1e-12)


def test_samples_follow_the_probabilities() -> None:
    torch.manual_seed(0)
    loc, scale, n = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.01), 200_000
    draws = DiscretizedLogistic(loc, scale.double()).sample((n,))
    counts = torch.bincount((draws * (LEVELS - 1)).round().long(), minlength=LEVELS)
    p = discretized_logistic_log_prob(GRID, loc, scale.double().log()).exp()
    stderr = (p * (1 - p) / n).sqrt()
    assert torch.all((counts / n - p).abs() <= 5 * stderr + 1e-12)


def test_check_refuses_data_off_the_8bit_levels() -> None:
    likelihood = DiscretizedLogisticLikelihood((4,), ScaleOptions(0.1, learn_scale=True))
    likelihood.check(torch.tensor([[0.0, 1 / 255, 254 / 255, 1.0]]))
    for bad in ([[0.5 / 255, 0, 0, 0]], [[1.2, 0, 0, 0]], [[-1 / 255, 0, 0, 0]]):
        with pytest.raises(vaekit.VaekitError, match="8-bit"):
            likelihood.check(torch.tensor(bad))


def test_trains_and_evaluates_8bit_images_with_bits_per_dim(
    tmp_path: Path, digits: vaekit.Dataset
) -> None:
    """8-bit images (digits' 17 grey levels stored as uint8) train and evaluate; digits as
    loaded (levels k/16) are refused with one line naming the remedy."""
    with pytest.raises(vaekit.VaekitError, match="8-bit data"):
        model = vaekit.VAE(digits.shape, 4, hidden=[32], likelihood="discretized-logistic")
        vaekit.fit(model, digits, epochs=1, progress=False)
    images = np.round(digits.train_x.numpy() * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    np.save(tmp_path / "digits8.npy", images)
    data = vaekit.load_dataset(str(tmp_path / "digits8.npy"))
    torch.manual_seed(0)
    model = vaekit.VAE(
        data.shape, 4, hidden=[32], likelihood="discretized-logistic", learn_scale=True
    )
    history = vaekit.fit(model, data, epochs=5, progress=False)
    assert history[-1]["test_elbo"] > history[0]["test_elbo"]
    result = vaekit.evaluate(model, data, k=20)
    assert result.bits_per_dim == pytest.approx(-result.log_px.value / (64 * np.log(2)))
    assert result.log_px.value >= result.elbo.value - 5 * result.gap.stderr
    samples = model.sample(3, mean=False)
    assert torch.equal(samples, (samples * 255).round() / 255)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "discretized-logistic"])
def test_drawn_samples_come_from_the_generator(likelihood: str) -> None:
    """x ~ p(x|z) with every draw (z and x) from the generator: the same seed, the same
    samples; and the draws have the likelihood's support."""
    torch.manual_seed(0)
    model = vaekit.VAE((1, 4, 4), 2, hidden=[8], likelihood=likelihood)

    def draw(seed: int) -> torch.Tensor:
        return model.sample(500, mean=False, generator=torch.Generator().manual_seed(seed))

    first = draw(1)
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(first, draw(1)) and not torch.equal(first, draw(2))
    if likelihood == "bernoulli":
        assert set(first.unique().tolist()) <= {0.0, 1.0}
    if likelihood == "discretized-logistic":
        assert torch.equal(first, (first * 255).round() / 255) and first.min() >= 0


def test_bernoulli_draws_have_the_decoded_probabilities() -> None:
    """Frequencies of 1 over 20,000 draws at fixed logits are within 5 binomial standard errors
    of sigmoid(logits)."""
    likelihood = vaekit.VAE((6,), 2, hidden=[4]).likelihood
    logits = torch.linspace(-3, 3, 6).expand(20_000, 6)
    draws = likelihood.draw(logits, torch.Generator().manual_seed(0))
    p = torch.sigmoid(logits[0])
    assert torch.all((draws.mean(0) - p).abs() <= 5 * (p * (1 - p) / 20_000).sqrt())


@pytest.mark.parametrize("vmapped", [False, True], ids=["fused-bce", "vmap-form"])
def test_bernoulli_log_prob_is_log_sigmoid_to_float32_rounding(vmapped: bool) -> None:
    """Both forms of log p(x|z) (one model's, a sweep's under vmap): of one value it is
    log σ(l) for x = 1 and log σ(−l) for x = 0 (float64 ground truth) within 2 float32
    rounding units of max(1, |l|) (softplus's rounding and the subtraction's), for logits from
    −100 to 100; its gradient is x − σ(l); under torch.func.vmap each member gets its own
    (vmap runs the fused BCE decomposed: the same to rounding)."""
    likelihood = vaekit.VAE((1,), 2, hidden=[4]).likelihood
    if vmapped:
        prepare_for_vmap(likelihood)
    values = torch.cat([torch.linspace(-100, 100, 41), torch.tensor([-1e-3, 1e-3, 15, 17, 30])])
    logits = values.repeat(2)[:, None].requires_grad_()  # (92, 1): each value with x = 0, 1
    x = torch.arange(2).repeat_interleave(len(values)).float()[:, None]
    log_px = likelihood.log_prob(logits, x)
    exact = torch.nn.functional.logsigmoid((2 * x - 1).double() * logits.double())[:, 0]
    tolerance = 2 * 2.0**-23 * logits.detach()[:, 0].abs().clamp(min=1).double()
    assert torch.all((log_px.double() - exact).abs() <= tolerance)
    (gradient,) = torch.autograd.grad(log_px.sum(), logits)
    torch.testing.assert_close(gradient, x - torch.sigmoid(logits.detach()), rtol=0, atol=1e-7)
    members = torch.func.vmap(likelihood.log_prob)(logits.detach().view(2, -1, 1), x.view(2, -1, 1))
    assert torch.all((members.flatten() - log_px.detach()).double().abs() <= 2 * tolerance)


def test_a_cpu_generator_serves_a_model_on_another_device() -> None:
    """Draws are made on the generator's device, then moved to the model's: a CPU generator
    serves a CUDA model (CUDA's randn refuses a CPU generator; here "meta" stands in for CUDA,
    and the draw's device is recorded)."""
    made_on = []

    def randn(shape, generator, dtype, device):
        made_on.append(torch.device(device))
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)

    like = torch.empty(0, dtype=torch.float64, device="meta")
    draws = random_like(randn, (3, 2), like, torch.Generator().manual_seed(0))
    assert made_on == [torch.device("cpu")]
    assert draws.device.type == "meta" and draws.dtype == torch.float64 and draws.shape == (3, 2)
    random_like(randn, (3, 2), like, None)  # no generator: drawn where the model is
    assert made_on[-1].type == "meta"


@pytest.mark.parametrize("name", ["gaussian", "discretized-logistic"])
def test_decoded_scale_is_the_per_dimension_scale_given_per_example(name: str) -> None:
    """With params (..., 2, *event) = (μ, r), the decoded-scale likelihood is the one whose
    log-scale is log(scale) + r (float64, to round-off), and r below the floor acts as the
    floor."""
    torch.manual_seed(0)
    event, scale = (1, 3, 3), 0.2
    build = LIKELIHOODS[name].builder
    decoded = build(event, ScaleOptions(scale, decoded_scale=True)).double()
    per_dimension = build(event, ScaleOptions(scale, learn_scale=True)).double()
    offset = torch.randn(event, dtype=torch.float64) * 0.5
    with torch.no_grad():
        per_dimension.log_scale.add_(offset)
    loc = torch.rand(4, 5, *event, dtype=torch.float64)
    params = torch.stack([loc, offset.expand_as(loc)], dim=2)  # (4, 5, 2, *event)
    x = torch.randint(0, 256, (5, *event)).double() / 255
    for reduction in ("none", "sum"):
        torch.testing.assert_close(
            decoded.log_prob(params, x, reduction), per_dimension.log_prob(loc, x, reduction)
        )
    torch.testing.assert_close(decoded(params).log_prob(x), per_dimension(loc).log_prob(x))
    torch.testing.assert_close(decoded(params).mean, per_dimension(loc).mean)
    same_draws = [
        likelihood.draw(p, torch.Generator().manual_seed(3))
        for likelihood, p in ((decoded, params), (per_dimension, loc))
    ]
    torch.testing.assert_close(*same_draws)
    floor = torch.full_like(loc, MIN_LOG_SCALE - math.log(scale))
    below = torch.stack([loc, floor - 5], dim=2)
    at = torch.stack([loc, floor], dim=2)
    torch.testing.assert_close(decoded.log_prob(below, x), decoded.log_prob(at, x))


@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_decoded_scale_trains_evaluates_and_reloads(
    tmp_path: Path, digits: vaekit.Dataset, network: str
) -> None:
    images = np.round(digits.train_x.numpy() * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    np.save(tmp_path / "digits8.npy", images)
    data = vaekit.load_dataset(str(tmp_path / "digits8.npy"))
    torch.manual_seed(0)
    options = {"likelihood": "discretized-logistic", "decoded_scale": True, "network": network}
    model = vaekit.VAE(data.shape, 4, hidden=[32], **options)
    assert model.decoder_output(torch.zeros(7, 4)).shape == (7, 2, *data.shape)
    history = vaekit.fit(model, data, epochs=4, run_dir=tmp_path / "run", progress=False)
    assert history[-1]["test_elbo"] > history[0]["test_elbo"]
    assert model.sample(3).shape == model.sample(3, mean=False).shape == (3, *data.shape)
    reloaded = vaekit.load(tmp_path / "run")
    x = data.test_x[:16]
    torch.testing.assert_close(vaekit.elbo(reloaded, x).rate, vaekit.elbo(model, x).rate)
    assert vaekit.evaluate(reloaded, data, k=10).bits_per_dim is not None


def test_decoded_scale_options_that_do_not_go_together() -> None:
    with pytest.raises(
        vaekit.VaekitError, match="--likelihood gaussian or --likelihood discretized-logistic"
    ):
        vaekit.VAE((4,), 2, decoded_scale=True)
    with pytest.raises(vaekit.VaekitError, match="not both"):
        vaekit.VAE((4,), 2, likelihood="gaussian", decoded_scale=True, learn_scale=True)
