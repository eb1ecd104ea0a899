"""IAF layers in a hierarchy against ground truth (float64).

With bottom-up or x-and-above inference each layer's q(z_l|its parents) can be an inverse
autoregressive flow on a diagonal Gaussian, its context computed with the Gaussian's parameters
by the network that reads the parents. The hierarchy's log q of a draw equals the log q found by
inverting every layer's flow; its log q at stopped parameters is a frozen copy's, in value and
in every weight's gradient. On the linear-Gaussian hierarchy the true posterior is a correlated
Gaussian over the layers: diagonal Gaussian layers fitted to it leave a gap, and one affine
autoregressive step per layer closes it. (The fits use noise draws whitened jointly over the
layers: for a q affine in the noise and log p(x, z) quadratic in z their average is the exact
expectation, so the fitted objective is the exact ELBO.)
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import assert_unbiased_against_plain, fit_by_lbfgs, flat_grads, whitened_noise

from vaekit.evaluation import linear_gaussian_hierarchy as lgh
from vaekit.model.hierarchy import HierarchicalVAE
from vaekit.objectives.elbo import elbo

DATA_DIM, SIZES = 5, [3, 2]
INFERENCES = ["bottom-up", "x-and-above"]
CONTEXT = 2


def _randomised(inference: str) -> HierarchicalVAE:
    """Networks between the layers with a hidden layer, so that every layer's mean, scale and
    context depend on its parents; every posterior weight perturbed."""
    torch.manual_seed(0)
    model = HierarchicalVAE(
        (DATA_DIM,),
        SIZES[0],
        model="hierarchy",
        upper_layers=SIZES[1:],
        layer_hidden=[6],
        activation="tanh",
        inference=inference,
        hidden=[7],
        likelihood="gaussian",
        gaussian_scale=0.7,
        posterior="iaf",
        flow_steps=2,
        flow_hidden=8,
        flow_context=CONTEXT,
    ).double()
    with torch.no_grad():
        for parameter in model.posterior.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return model


@pytest.mark.parametrize("inference", INFERENCES)
def test_log_q_of_a_draw_equals_log_q_by_inversion(inference: str) -> None:
    model = _randomised(inference)
    x = torch.randn(4, DATA_DIM, dtype=torch.float64)
    params = model.posterior_parameters(x)
    z, log_q = model.posterior.sample_and_log_prob(params, torch.randn(6, 4, 5).double())
    torch.testing.assert_close(model.posterior.log_prob(params, z), log_q, rtol=0, atol=1e-10)
    assert model.posterior.conditional_log_prob_dims(params, z).isnan().all()  # not factorised


@pytest.mark.parametrize("inference", INFERENCES)
def test_stopped_log_q_is_a_frozen_copy_s_log_q_by_inversion(inference: str) -> None:
    """log q at stopped parameters equals log q found by inverting each layer's flow in a copy
    whose weights take no gradient, at the same draws, the layers read by a layer's density
    left live: the same values, and the same gradients for every weight (through z only); the
    plain log q's differ (its score term)."""
    model = _randomised(inference)
    frozen = copy.deepcopy(model.posterior).requires_grad_(False)
    x = torch.randn(4, DATA_DIM, dtype=torch.float64)
    noise = torch.randn(3, 4, sum(SIZES), dtype=torch.float64)
    params = model.posterior_parameters(x)
    z, stopped = model.posterior.sample_and_stopped_log_prob(params, noise)
    reference = frozen.log_prob(tuple(p.detach() for p in params), z)
    torch.testing.assert_close(stopped, reference, rtol=0, atol=1e-10)
    weights = list(model.parameters())
    by_draw = torch.arange(12.0, dtype=torch.float64).reshape(3, 4)
    expected = flat_grads((reference * by_draw).sum(), weights)
    torch.testing.assert_close(
        flat_grads((stopped * by_draw).sum(), weights), expected, rtol=1e-9, atol=1e-11
    )
    _, plain = model.posterior.sample_and_log_prob(params, noise)
    assert not torch.allclose(flat_grads(plain.sum(), weights), flat_grads(stopped.sum(), weights))


@pytest.mark.parametrize("inference", INFERENCES)
@pytest.mark.parametrize(("gradient", "k"), [("stl", 1), ("dreg", 5)])
def test_stl_and_dreg_with_iaf_layers_are_unbiased(inference: str, gradient: str, k: int) -> None:
    """STL's ELBO gradient and DReG's IWAE gradient differ from the plain ones (same draws) by
    a term of mean zero: every parameter within 5 s.e. of 0 over 40 batches of 100 copies of 5
    examples (it catches an IAF layer's log-determinants left out of the stopped log q's
    gradient; a bias as small as the live context's missing term is the frozen-copy test's to
    catch). The values are the plain ones."""
    model = _randomised(inference)
    x = torch.randn(5, DATA_DIM, dtype=torch.float64).repeat(100, 1)
    assert_unbiased_against_plain(model, x, k, gradient)


def _fitted_gap(model: HierarchicalVAE, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """log p(x) − ELBO(x) after fitting q (encoder, networks, flows), the generative model
    held fixed; ``(B,)``."""
    model.decoder.requires_grad_(False)
    model.prior.requires_grad_(False)
    fit_by_lbfgs(model, x, noise)
    with torch.no_grad():
        return lgh.log_px(model, x) - elbo(model, x, noise=noise).elbo


@pytest.mark.parametrize("inference", INFERENCES)
def test_affine_flow_layers_close_the_gap_that_diagonal_layers_leave(inference: str) -> None:
    """The same generative model (linear, constant scales): diagonal Gaussian layers fitted to
    it leave KL(q || p(z|x)) > 0.01 nats (and the fitted objective's gap is that KL in closed
    form: the objective is exact); one affine autoregressive step on each layer (its context
    held constant, as the true conditionals' covariances are) closes it to round-off."""
    torch.manual_seed(1)
    diagonal = lgh.linear_gaussian_hierarchy(DATA_DIM, SIZES, inference, 0.7).double()
    flow = lgh.linear_gaussian_hierarchy(
        DATA_DIM,
        SIZES,
        inference,
        0.7,
        posterior="iaf",
        flow_steps=1,
        flow_hidden=0,
        flow_context=1,
    ).double()
    flow.prior.load_state_dict(diagonal.prior.state_dict())
    flow.decoder.load_state_dict(diagonal.decoder.state_dict())
    x = torch.randn(8, DATA_DIM, dtype=torch.float64) * 2
    noise = whitened_noise(16, len(x), sum(SIZES))
    gap = _fitted_gap(diagonal, x, noise)
    torch.testing.assert_close(gap, lgh.posterior_kl(diagonal, x), rtol=0, atol=1e-10)
    assert gap.mean() > 0.01
    assert _fitted_gap(flow, x, noise).abs().max() < 1e-8
