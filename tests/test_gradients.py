"""Gradient estimators against ground truth on the linear-Gaussian model (float64).

STL (Roeder et al. 2017) and DReG (Tucker et al. 2018) drop the score term of log q; both are
checked where the truth is known: with q(z|x) = p(z|x) every draw's log weight is log p(x),
so the path derivative is exactly zero; and DReG's expectation is the plain IWAE gradient's
(both unbiased for ∇_φ L_K). Statistical tolerances: 5 standard errors (a false failure below
1e-6 per compared value); exact identities: float64 round-off.
"""

from __future__ import annotations

import pytest
import torch
from helpers import Z_TOL, assert_unbiased_against_plain, flat_grads

import vaekit
from vaekit.errors import ConfigError
from vaekit.evaluation import linear_gaussian as lg
from vaekit.evaluation import linear_gaussian_hierarchy as lgh
from vaekit.objectives.elbo import elbo
from vaekit.objectives.importance import iwae_terms
from vaekit.training.config import TrainConfig


def _exact_posterior_model(data_dim: int = 5, latent_dim: int = 3):
    """A linear-Gaussian model whose decoder has orthogonal columns (WᵀW diagonal): its true
    posterior is a diagonal Gaussian, and the encoder is set to it exactly."""
    torch.manual_seed(0)
    model = lg.linear_gaussian_vae(data_dim, latent_dim, sigma=0.7).double()
    columns, _ = torch.linalg.qr(torch.randn(data_dim, latent_dim, dtype=torch.float64))
    with torch.no_grad():
        model.decoder.weight.copy_(columns * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64))
    lg.set_optimal_encoder(model)
    x = torch.randn(4, data_dim, dtype=torch.float64) * 2
    assert lg.posterior_kl(model, x).abs().max() < 1e-12  # q(z|x) = p(z|x)
    return model, x


def test_stl_gradient_vanishes_for_every_draw_at_the_true_posterior() -> None:
    model, x = _exact_posterior_model()
    for _ in range(20):
        noise = torch.randn(1, len(x), 3, dtype=torch.float64)
        stl = flat_grads(
            elbo(model, x, noise=noise, gradient="stl").elbo.sum(), model.encoder.parameters()
        )
        plain = flat_grads(elbo(model, x, noise=noise).elbo.sum(), model.encoder.parameters())
        assert stl.abs().max() < 1e-10
        assert plain.abs().max() > 1e-3  # zero only in expectation


def test_stl_changes_the_gradient_not_the_values() -> None:
    model, x = lg.linear_gaussian_vae(4, 2).double(), torch.randn(3, 4, dtype=torch.float64)
    noise = torch.randn(7, 3, 2, dtype=torch.float64)
    stl, plain = elbo(model, x, noise=noise, gradient="stl"), elbo(model, x, noise=noise)
    assert torch.equal(stl.reconstruction, plain.reconstruction)
    # the rate is the Monte Carlo one of the same draws (with log q's plain value)
    z, log_q = model.sample_posterior(model.posterior_parameters(x), noise)
    assert torch.allclose(stl.rate, (log_q - model.log_prior(z)).mean(0), rtol=1e-12)


class _Replicates:
    """R copies of one example under a mean-field q near its optimum (where training brings
    it; far from it, with the means and scales shifted by 0.4, DReG's scale gradients had
    twice the plain variance here, its means' still less): the encoder's output for each copy
    is captured, so the gradient with respect to it is one draw of the encoder gradient per
    copy (the copies do not interact)."""

    def __init__(self, copies: int = 4000) -> None:
        torch.manual_seed(3)
        self.model = lg.linear_gaussian_vae(4, 2, sigma=0.6).double()
        lg.set_optimal_encoder(self.model)  # WᵀW is not diagonal: q ≠ p(z|x)
        with torch.no_grad():
            self.model.encoder.bias[:2] += torch.tensor([0.1, -0.075], dtype=torch.float64)
            self.model.encoder.bias[2:] -= 0.1
        self.x = torch.randn(1, 4, dtype=torch.float64).expand(copies, 4)
        self.features: list[torch.Tensor] = []
        self.model.encoder.register_forward_hook(lambda m, i, out: self.features.append(out))

    def gradients(self, k: int, gradient: str, noise: torch.Tensor | None = None):
        """``(encoder gradient per copy (R, 4), decoder gradient (flat))``."""
        self.features.clear()
        if noise is None:
            noise = torch.randn(k, len(self.x), 2, dtype=torch.float64)
        bound, _ = iwae_terms(self.model, self.x, k, noise, gradient)
        decoder = list(self.model.decoder.parameters())
        grads = torch.autograd.grad(bound.sum(), [self.features[0], *decoder])
        return grads[0], torch.cat([g.flatten() for g in grads[1:]])

    def by_hand(self, k: int, noise: torch.Tensor, power: float, sign: float = 1.0):
        """The encoder gradient sign · Σ_k w̃_k^power ∂log w_k/∂z_k ∂z_k/∂φ, built without
        hooks: power 2 is DReG; power 1 drops the score term alone (IWAE-STL, biased);
        sign −1 flips it."""
        self.features.clear()
        model = self.model
        params = model.posterior_parameters(self.x)
        z = model.posterior.rsample(params, noise)
        free = z.detach().requires_grad_(True)
        stopped = tuple(p.detach() for p in params)
        log_w = (
            model.log_likelihood(free, self.x)
            + model.log_prior(free)
            - model.posterior.log_prob(stopped, free)
        )
        (path,) = torch.autograd.grad(log_w.sum(), free)  # ∂log w_k/∂z_k for each k
        weight = torch.softmax(log_w.detach(), dim=0).pow(power).unsqueeze(-1)
        (grad,) = torch.autograd.grad((z * (sign * weight * path)).sum(), self.features[0])
        return grad


def _same_mean(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two sets of independent draws ``(R, n)`` have equal means within 5 s.e."""
    stderr = (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()
    return bool(torch.all((a.mean(0) - b.mean(0)).abs() <= Z_TOL * stderr))


def test_dreg_is_the_squared_weight_path_gradient_for_the_same_draws() -> None:
    """Per draw, DReG = Σ_k w̃_k² ∂log w_k/∂z_k ∂z_k/∂φ (computed here without hooks), and its
    decoder gradient is the plain IWAE one."""
    replicates = _Replicates(copies=50)
    noise = torch.randn(5, 50, 2, dtype=torch.float64)
    dreg, dreg_decoder = replicates.gradients(5, "dreg", noise)
    plain, plain_decoder = replicates.gradients(5, "reparam", noise)
    assert torch.allclose(dreg, replicates.by_hand(5, noise, power=2), rtol=1e-10, atol=1e-13)
    assert torch.allclose(dreg_decoder, plain_decoder, rtol=1e-10, atol=1e-13)
    assert not torch.allclose(dreg, plain)


@pytest.mark.parametrize("k", [5, 20])
def test_dreg_is_unbiased_with_lower_variance(k: int) -> None:
    """E[DReG] = E[plain IWAE encoder gradient] (both are ∇_φ L_K), with a lower variance for
    K ≥ 5; the two classic mistakes (weights not squared, sign flipped) fail the same test."""
    replicates = _Replicates()
    plain = replicates.gradients(k, "reparam")[0]
    dreg = replicates.gradients(k, "dreg")[0]
    assert _same_mean(dreg, plain)
    assert torch.all(dreg.var(0) < plain.var(0))
    noise = torch.randn(k, len(replicates.x), 2, dtype=torch.float64)
    assert not _same_mean(replicates.by_hand(k, noise, power=1), plain)
    assert not _same_mean(replicates.by_hand(k, noise, power=2, sign=-1), plain)


def test_each_objective_takes_only_its_own_estimators() -> None:
    TrainConfig(objective="iwae", samples=5, gradient="dreg")
    TrainConfig(gradient="stl")
    with pytest.raises(ConfigError, match="not an estimator of the ELBO"):
        TrainConfig(gradient="dreg")
    with pytest.raises(ConfigError, match="not an estimator of the IWAE"):
        TrainConfig(objective="iwae", gradient="stl")


@pytest.mark.parametrize(("objective", "gradient"), [("elbo", "stl"), ("iwae", "dreg")])
def test_training_with_each_estimator(digits, objective: str, gradient: str) -> None:
    """A short run with each estimator trains (the held-out ELBO rises), eager and compiled
    alike up to float32 round-off."""
    history = {}
    for compiled in ("off", "on"):
        torch.manual_seed(0)
        model = vaekit.VAE(digits.shape, latent_dim=4, hidden=[32])
        options = {"objective": objective, "samples": 3, "gradient": gradient}
        history[compiled] = vaekit.fit(
            model, digits, epochs=3, progress=False, compile=compiled, **options
        )
    eager, compiled = history["off"], history["on"]
    assert eager[-1]["test_elbo"] > eager[0]["test_elbo"]
    assert compiled[-1]["test_elbo"] == pytest.approx(eager[-1]["test_elbo"], abs=1e-2)


# Hierarchies: log q(z|x) = Σ_l log q(z_l|parents), every layer's network a parameter of q.
HIERARCHIES = [("top-down", [3, 2]), ("bottom-up", [3, 2]), ("x-and-above", [3, 2, 2])]


def _hierarchy(inference: str, sizes: list[int]) -> tuple[vaekit.VAE, torch.Tensor]:
    """A linear-Gaussian hierarchy (float64) and a batch of 5 examples."""
    torch.manual_seed(1)
    reads = "all" if inference == "x-and-above" else "bottom"
    model = lgh.linear_gaussian_hierarchy(6, sizes, inference, 0.8, reads).double()
    return model, torch.randn(5, 6, dtype=torch.float64)


@pytest.mark.parametrize(("inference", "sizes"), HIERARCHIES)
def test_a_hierarchy_s_stopped_log_q_is_a_frozen_copy_s(inference: str, sizes: list[int]) -> None:
    """log q at stopped parameters is the log q of a copy of the model whose parameters take
    no gradient, at the same draws: the same values and gradients (float64 round-off). Every
    layer's network is stopped (top-down inference's shared generative ones too), and the
    layers read by each layer's density are not; the plain log q's gradient differs (its
    score term)."""
    model, x = _hierarchy(inference, sizes)
    frozen, _ = _hierarchy(inference, sizes)
    frozen.load_state_dict(model.state_dict())
    frozen.requires_grad_(False)
    noise = torch.randn(4, len(x), sum(sizes), dtype=torch.float64)
    params = model.posterior_parameters(x)
    z, log_q = model.sample_posterior(params, noise, stopped=True)
    expected = frozen.posterior.log_prob(frozen.posterior_parameters(x), z)
    assert torch.allclose(log_q, expected, rtol=0, atol=1e-12)
    stl = flat_grads(log_q.sum(), model.parameters())
    by_copy = flat_grads(expected.sum(), model.parameters())
    assert torch.allclose(stl, by_copy, rtol=0, atol=1e-10)
    _, plain = model.sample_posterior(model.posterior_parameters(x), noise)
    assert (flat_grads(plain.sum(), model.parameters()) - stl).abs().max() > 1e-3


@pytest.mark.parametrize(("inference", "sizes"), HIERARCHIES)
@pytest.mark.parametrize(("gradient", "k"), [("stl", 1), ("dreg", 5)])
def test_stl_and_dreg_of_a_hierarchy_are_unbiased(
    inference: str, sizes: list[int], gradient: str, k: int
) -> None:
    """STL's ELBO gradient and DReG's IWAE gradient differ from the plain ones (same draws) by
    a term of mean zero: every parameter within 5 s.e. of 0 over 40 batches of 200 copies of
    5 examples (the copies do not interact). The values are the plain ones."""
    model, x = _hierarchy(inference, sizes)
    x = x.repeat(200, 1)
    assert_unbiased_against_plain(model, x, k, gradient)
