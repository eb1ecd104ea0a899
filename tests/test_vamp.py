"""The VampPrior: its density is the mixture of the model's own posterior at the
pseudo-inputs (torch.distributions' mixture, float64 round-off), and sampling goes through
that learned mixture at the requested temperature (5 standard errors of the moments)."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

import vaekit

Z_TOL = 5.0


def _model() -> vaekit.VAE:
    torch.manual_seed(0)
    model = vaekit.VAE((6,), 2, hidden=[8], likelihood="gaussian", prior="vamp", pseudo_inputs=3)
    model = model.double()
    with torch.no_grad():
        model.prior.pseudo_inputs.copy_(torch.randn(3, 6) * 2)
    return model


def _reference(model: vaekit.VAE, temperature: float = 1.0) -> MixtureSameFamily:
    """(1/C) Σ_c q(z | u_c) from the encoder's output, as torch.distributions builds it."""
    loc, scale = model.posterior_parameters(model.prior.pseudo_inputs)
    components = Independent(Normal(loc, temperature * scale), 1)
    return MixtureSameFamily(Categorical(logits=torch.zeros(3, dtype=loc.dtype)), components)


def test_vamp_density_is_the_posterior_mixture_at_the_pseudo_inputs() -> None:
    model = _model()
    z = torch.randn(5, 4, 2, dtype=torch.float64) * 2
    with torch.no_grad():
        torch.testing.assert_close(model.log_prior(z), _reference(model).log_prob(z))


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_vamp_draws_follow_the_learned_mixture(temperature: float) -> None:
    model = _model()
    draws = model.prior.sample(200_000, temperature, torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = _reference(model, temperature)
        mean, second = reference.mean, reference.variance + reference.mean**2
    for values, truth in ((draws, mean), (draws**2, second)):
        stderr = values.std(0) / len(values) ** 0.5
        assert torch.all((values.mean(0) - truth).abs() <= Z_TOL * stderr), (values.mean(0), truth)


def test_samples_decode_the_vamp_mixture_means_at_zero_temperature() -> None:
    """``VAE.sample`` draws z from the VampPrior (the PyTorch-VAE #9 failure: sampling N(0, I)
    whatever the learned prior): at T = 0 every z is one pseudo-input's posterior mean."""
    model = _model()
    seen = []
    model.decoder.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    model.sample(20, temperature=0.0, generator=torch.Generator().manual_seed(0))
    means = model.posterior_parameters(model.prior.pseudo_inputs)[0]
    assert all(any(torch.equal(z, mean) for mean in means) for z in seen[0])


def test_the_pseudo_inputs_are_learned_and_saved(tmp_path) -> None:
    """The pseudo-inputs are a parameter of the model: trained, saved, loaded bit for bit;
    the encoder is not duplicated into the prior's state."""
    model = _model().float()
    assert [n for n in model.state_dict() if n.startswith("prior.")] == ["prior.pseudo_inputs"]
    data = vaekit.Dataset("toy", torch.randn(64, 6), torch.randn(16, 6))
    before = model.prior.pseudo_inputs.detach().clone()
    vaekit.fit(model, data, run_dir=tmp_path / "run", epochs=2, batch_size=16, progress=False)
    assert not torch.equal(model.prior.pseudo_inputs.detach(), before)
    loaded = vaekit.load(tmp_path / "run")
    assert torch.equal(loaded.prior.pseudo_inputs, model.prior.pseudo_inputs.detach())
    z = torch.randn(3, 2)
    assert torch.equal(loaded.log_prior(z), model.log_prior(z).detach())


def test_vamp_density_in_float32_is_within_its_round_off() -> None:
    """The components' log-densities come from a matrix-product expansion of
    Σ_j (z_j − μ_j)²/σ_j², which cancels terms of size M = Σ_j (z_j² + 2|z_j μ_j| + μ_j²)/σ_j²:
    in float32 the error is a few units of M·2⁻²⁴ (here M ~ 10³: ~10⁻⁴ nats), held to
    16 M·2⁻²⁴ against the float64 model."""
    model = _model()
    z = torch.randn(50, 2, dtype=torch.float64) * 2
    loc, scale = model.posterior_parameters(model.prior.pseudo_inputs)
    with torch.no_grad():
        exact = model.log_prior(z)
        single = model.float().log_prior(z.float()).double()
        terms = (z[:, None].square() + 2 * (z[:, None] * loc).abs() + loc.square()) / scale.square()
    bound = 16 * terms.sum(-1).max() * 2.0**-24
    assert (single - exact).abs().max() <= bound, ((single - exact).abs().max(), bound)
