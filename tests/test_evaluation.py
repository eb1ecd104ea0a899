"""Estimators of log p(x), the gap and the diagnostics against ground truth.

Ground truth is the linear-Gaussian VAE (exact log p(x), posterior and KL in float64) and
distributions whose KLs are known. Tolerances: 5 standard errors of the Monte Carlo mean
(false failure probability < 1e-6 per value), float64 round-off for exact identities.
"""

from __future__ import annotations

import importlib
import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from helpers import one_line_error

import vaekit
from vaekit.cli import main
from vaekit.errors import ConfigError
from vaekit.evaluation import linear_gaussian as lg
from vaekit.evaluation.diagnostics import active_units, aggregate_posterior_kl
from vaekit.evaluation.evaluate import ROWS_PER_CHUNK, rows_per_chunk
from vaekit.evaluation.identity import identity_check
from vaekit.model.gaussian import standard_log_density
from vaekit.objectives.importance import iwae_bound, log_px
from vaekit.training.linear_gaussian import fit_linear_gaussian

Z_TOL = 5.0
evaluate_module = importlib.import_module("vaekit.evaluation.evaluate")  # not the function


def _linear_model(seed: int = 0, orthogonal: bool = False) -> tuple[vaekit.VAE, torch.Tensor]:
    torch.manual_seed(seed)
    model = lg.linear_gaussian_vae(6, 3, sigma=0.6).double()
    if orthogonal:
        q, _ = torch.linalg.qr(torch.randn(6, 3, dtype=torch.float64))
        with torch.no_grad():
            model.decoder.weight.copy_(q * torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    return model, torch.randn(8, 6, dtype=torch.float64) * 1.5


def test_iwae_rises_with_k_stays_below_log_px_and_approaches_it() -> None:
    model, x = _linear_model()
    lg.set_optimal_encoder(model)  # a mean-field encoder (gap > 0: the posterior is correlated)
    with torch.no_grad():
        model.encoder.bias[:3] += 0.3  # ... and off the optimum
    truth = lg.log_px(model, x)
    generator = torch.Generator().manual_seed(0)
    means = []
    for k in (1, 10, 100, 1000):
        repeats = torch.stack([log_px(model, x, k, generator=generator) for _ in range(200)])
        mean, stderr = repeats.mean(0), repeats.std(0) / 200**0.5
        assert torch.all(mean <= truth + Z_TOL * stderr + 1e-9)  # a lower bound, up to noise
        means.append((mean, stderr))
    for (low, low_se), (high, high_se) in itertools.pairwise(means):
        assert torch.all(high - low > -Z_TOL * torch.hypot(low_se, high_se))  # rises with K
    gap_k1 = (truth - means[0][0]).mean()
    gap_k1000 = (truth - means[-1][0]).mean()
    assert gap_k1000 < 0.1 * gap_k1  # approaches log p(x)
    exact_elbo = lg.exact_elbo(model, x).elbo
    k1_mean, k1_se = means[0]
    assert torch.all((k1_mean - exact_elbo).abs() < Z_TOL * k1_se + 1e-9)  # L_1 = ELBO


def test_true_posterior_closes_the_gap() -> None:
    model, x = _linear_model(orthogonal=True)
    lg.set_optimal_encoder(model)
    truth = lg.log_px(model, x)
    with torch.no_grad():
        assert lg.posterior_kl(model, x).abs().max() < 1e-10
        assert (lg.exact_elbo(model, x).elbo - truth).abs().max() < 1e-10
        # every importance weight equals p(x): the estimate is exact for every K
        assert (log_px(model, x, k=7) - truth).abs().max() < 1e-10
        result = vaekit.evaluate(model, x, k=50)
    assert abs(result.gap.value) < 5 * result.gap.stderr + 1e-9


@pytest.mark.parametrize("chunk_rows", [1, 7, 50, 400, 65536])
def test_evaluate_places_every_draw_and_example_whatever_the_chunk(chunk_rows: int) -> None:
    """With q the exact posterior every weight is p(x): each example's log p̂_K is its own
    log p(x) (to float64 round-off) and its ESS is exactly K, so no example's draws land in
    another's row and none is dropped, from one row per chunk to the GPU's default."""
    model, x = _linear_model(orthogonal=True)
    lg.set_optimal_encoder(model)
    result = vaekit.evaluate(model, x, k=50, chunk_rows=chunk_rows)
    torch.testing.assert_close(
        result.per_example["log_px"], lg.log_px(model, x), rtol=0, atol=1e-10
    )
    torch.testing.assert_close(
        result.per_example["ess"], torch.full((len(x),), 50.0, dtype=torch.float64)
    )


def test_chunk_rows_by_device_and_data_size() -> None:
    """A CPU chunk is cache-sized; a GPU chunk holds ACCELERATOR_VALUES decoder outputs, so
    larger examples get fewer rows (65,536 for MNIST, 1,045 for 128x128 colour images)."""
    assert rows_per_chunk(torch.device("cpu"), 784) == ROWS_PER_CHUNK
    assert rows_per_chunk(torch.device("cuda"), 784) == 65536
    assert rows_per_chunk(torch.device("cuda"), 3 * 128 * 128) == 1045
    assert rows_per_chunk(torch.device("mps"), 10**9) == 1


def _out_of_memory_above(monkeypatch: pytest.MonkeyPatch, limit: int, calls: list[int]) -> None:
    """Make evaluation batches of more than ``limit`` decoder rows run out of GPU memory."""
    evaluate_batch = evaluate_module._evaluate_batch

    def batch_within_memory(model, batch, k, chunk, *args):  # type: ignore[no-untyped-def]
        calls.append(len(batch.x) * min(chunk, k))
        if calls[-1] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")
        return evaluate_batch(model, batch, k, chunk, *args)

    monkeypatch.setattr(evaluate_module, "_evaluate_batch", batch_within_memory)


def test_chunks_of_no_rows_are_refused() -> None:
    model, x = _linear_model()
    for option in ("chunk_rows", "chunk_size"):
        with pytest.raises(ConfigError, match=r"^chunk_size and chunk_rows must be >= 1"):
            vaekit.evaluate(model, x, k=5, **{option: 0})


def test_out_of_gpu_memory_halves_the_chunk_and_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch that runs out of memory is evaluated again in chunks half as large, until it
    fits: every example still gets its own K draws (exact log p(x), ESS = K)."""
    model, x = _linear_model(orthogonal=True)
    lg.set_optimal_encoder(model)
    calls: list[int] = []
    _out_of_memory_above(monkeypatch, 100, calls)
    result = vaekit.evaluate(model, x, k=50, chunk_rows=400)
    assert calls[:4] == [400, 200, 100, 100]
    torch.testing.assert_close(
        result.per_example["log_px"], lg.log_px(model, x), rtol=0, atol=1e-10
    )
    torch.testing.assert_close(
        result.per_example["ess"], torch.full((len(x),), 50.0, dtype=torch.float64)
    )


def test_out_of_gpu_memory_at_the_smallest_chunk_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, x = _linear_model()
    _out_of_memory_above(monkeypatch, 0, [])
    with pytest.raises(
        ConfigError,
        match=r"^out of GPU memory evaluating one example's chunk of 1 draws \(CUDA out of "
        r"memory\. Tried to allocate 9 GiB\); evaluate on the CPU \(--device cpu\)$",
    ):
        vaekit.evaluate(model, x, k=50)


def test_chunking_does_not_change_the_estimate() -> None:
    model, x = _linear_model(seed=4)
    noise = torch.randn(1000, len(x), 3, dtype=torch.float64)
    reference = log_px(model, x, 1000, chunk_size=1000, noise=noise)
    params = model.posterior_parameters(x)
    log_w = vaekit.objectives.log_weights(model, x, params, noise)[1].log_w
    assert torch.allclose(
        reference, torch.logsumexp(log_w, 0) - math.log(1000), rtol=0, atol=1e-10
    )  # one logsumexp over all K
    for chunk in (1, 7, 333, 999):
        assert torch.allclose(
            log_px(model, x, 1000, chunk_size=chunk, noise=noise), reference, rtol=0, atol=1e-10
        )


def test_iwae_bound_is_differentiable() -> None:
    model, x = _linear_model(seed=5)
    torch.manual_seed(0)
    bound = iwae_bound(model, x, k=64)
    bound.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert bound.shape == (len(x),)


def test_evaluate_reports_every_term(
    tmp_path: Path, trained_run: Path, digits: vaekit.Dataset
) -> None:
    model = vaekit.load(trained_run)
    result = vaekit.evaluate(model, digits, k=200, k_sweep=[1, 10, 200])
    assert result.n == len(digits.test_x)
    assert result.elbo.value == pytest.approx(result.reconstruction.value - result.rate.value)
    assert result.gap.value == pytest.approx(result.log_px.value - result.elbo.value)
    assert result.gap.value > 0
    sweep = [row["log_px"] for row in result.k_sweep]
    assert sweep[-1] == pytest.approx(result.log_px.value)
    assert sweep == sorted(sweep)
    assert result.bits_per_dim == pytest.approx(-result.log_px.value / (64 * 0.6931471805599453))
    assert sum(result.kl_per_dim) == pytest.approx(result.rate.value, rel=1e-5)
    assert result.mutual_information + result.marginal_kl == pytest.approx(result.rate.value)
    result.save(tmp_path / "e.json")
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["units"].startswith("nats per example") and saved["log_px"]["stderr"] > 0


def test_grey_levels_under_a_bernoulli_are_refused(digits: vaekit.Dataset) -> None:
    """Every measuring entry point refuses a "Bernoulli NLL" of grey levels; the binarised
    test set, the Dataset (binarised by the protocol) and a Gaussian model are measured."""
    model, grey = vaekit.VAE(digits.shape, 4, hidden=[8]), digits.test_x
    for measure in (
        lambda x: vaekit.elbo(model, x),
        lambda x: vaekit.log_px(model, x, 4),
        lambda x: vaekit.evaluate(model, x, 4),
    ):
        with pytest.raises(vaekit.VaekitError, match="values other than 0 and 1"):
            measure(grey)
        measure(vaekit.fixed_binarization(grey))
    assert vaekit.evaluate(model, digits, 4).n == len(grey)
    gaussian = vaekit.VAE(digits.shape, 4, hidden=[8], likelihood="gaussian")
    assert torch.isfinite(vaekit.elbo(gaussian, grey).elbo).all()


def test_elbo_surgery_on_a_known_aggregate_posterior() -> None:
    """N identical posteriors: q(z) = q(z|x), so I_q = 0 and KL(q(z)||p(z)) = the rate."""
    loc = torch.tensor([[0.5, -1.0]]).expand(400, 2)
    scale = torch.tensor([[0.7, 1.3]]).expand(400, 2)
    exact = float(
        torch.distributions.kl_divergence(
            torch.distributions.Normal(loc[0], scale[0]), torch.distributions.Normal(0.0, 1.0)
        ).sum()
    )
    generator = torch.Generator().manual_seed(0)
    estimates = torch.tensor(
        [aggregate_posterior_kl(loc, scale, standard_log_density, generator) for _ in range(20)]
    )
    stderr = estimates.std() / 20**0.5
    assert abs(float(estimates.mean()) - exact) < Z_TOL * stderr


def test_collapsed_posterior_is_flagged() -> None:
    model = vaekit.VAE((1, 8, 8), 4, hidden=[8])
    with torch.no_grad():
        model.encoder.layers[-1].weight.zero_()  # q(z|x) no longer depends on x
    x = torch.rand(50, 1, 8, 8).bernoulli()
    result = vaekit.evaluate(model, x, k=20)
    assert result.active_units == 0
    assert any("posterior collapse" in w for w in result.warnings)
    assert not active_units(torch.zeros(10, 3)).any()
    assert abs(result.mutual_information) < 0.5


def test_identity_check_on_digits(digits: vaekit.Dataset) -> None:
    model = fit_linear_gaussian(digits, latent_dim=4, epochs=30)
    check = identity_check(model, digits.test_x, ks=(1, 100))
    assert check.residual < 1e-9
    assert check.elbo <= check.log_px and check.optimal_kl <= check.kl + 1e-12
    assert abs(check.monte_carlo_error.value) < Z_TOL * check.monte_carlo_error.stderr
    (_, _, error_1), (_, _, error_100) = check.iwae
    assert error_1.value < error_100.value <= Z_TOL * error_100.stderr


def test_cli_evaluate_and_identity(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path = tmp_path / "per_example.csv"
    argv = [
        "evaluate",
        str(trained_run),
        "-k",
        "20",
        "--k-sweep",
        "1,20",
        "--per-example",
        str(csv_path),
        "--limit",
        "30",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "log p̂_K(x)" in out and "active units" in out
    rows = csv_path.read_text().splitlines()
    assert rows[0] == "index,row,file,label,class,elbo,reconstruction,rate,log_px,gap,ess,pareto_k"
    assert len(rows) == 31
    (saved,) = (trained_run / "evaluations").glob("test-n30-k20-seed0-*.json")
    assert json.loads(saved.read_text())["n"] == 30  # kept beside any fuller evaluation
    assert main(["identity", "--epochs", "5", "-k", "1,10", "--latent-dim", "3"]) == 0
    assert "ELBO + KL − log p(x)" in capsys.readouterr().out
    one_line_error(
        capsys,
        main(["evaluate", str(trained_run), "-k", "0"]),
        "K (-k) must be a positive integer, got 0",
    )
    status = main(["evaluate", str(trained_run), "-k", "10", "--k-sweep", "1,20"])
    one_line_error(capsys, status, "--k-sweep value must be within 1..10")
