"""The importance weights' diagnostics against weights of known distribution.

Generalized Pareto weights have the same tail index ξ above any threshold, so the fitted k̂
must recover ξ (tolerance: 5 standard errors of the mean over independent examples, after
undoing the prior's known pull towards 0.5). Log-normal weights have E[w]² / E[w²] =
exp(−s²), which ESS / K estimates (tolerance from the delta method).
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from vaekit.evaluation import linear_gaussian as lg
from vaekit.evaluation.evaluate import evaluate
from vaekit.evaluation.weights import (
    effective_sample_size,
    largest_log_weights,
    pareto_k,
    tail_size,
)
from vaekit.model.posteriors.diagonal_gaussian import MIN_SCALE


@pytest.mark.parametrize("xi", [0.2, 0.5, 0.7, 1.0])
def test_pareto_k_recovers_a_known_tail_index(xi: float) -> None:
    """Weights w = (U^−ξ − 1) / ξ ~ GPD(ξ, 1), K = 5000 per example, 400 examples."""
    torch.manual_seed(0)
    k, examples = 5000, 400
    uniform = torch.rand(k, examples, dtype=torch.float64)
    log_w = torch.log((uniform.pow(-xi) - 1) / xi)
    k_hat = pareto_k(largest_log_weights(log_w))
    m = tail_size(k)
    fitted = (k_hat * (m + 10) - 10 * 0.5) / m  # the prior's 10 pseudo-observations undone
    stderr = fitted.std() / math.sqrt(examples)
    assert abs(float(fitted.mean()) - xi) < 5 * stderr, (float(fitted.mean()), xi)


def test_pareto_k_is_undefined_for_short_or_flat_tails() -> None:
    assert pareto_k(largest_log_weights(torch.randn(20, 3))).isnan().all()  # K < 25
    assert pareto_k(largest_log_weights(torch.zeros(100, 3))).isnan().all()  # equal weights


@pytest.mark.parametrize("s", [0.5, 1.0])
def test_effective_sample_size_of_log_normal_weights(s: float) -> None:
    """ESS / K → (E w)² / E w² = exp(−s²) for log w ~ N(0, s²); its relative error has
    standard deviation at most √((4(e^{s²} − 1) + e^{4s²} − 1) / K) (delta method, the
    covariance of the two means dropped: it only shrinks the error)."""
    torch.manual_seed(1)
    k = 200_000
    ess = effective_sample_size(torch.randn(k, 5, dtype=torch.float64) * s) / k
    truth = math.exp(-s * s)
    relative = math.sqrt((4 * math.expm1(s * s) + math.expm1(4 * s * s)) / k)
    assert torch.all((ess / truth - 1).abs() < 5 * relative)
    assert effective_sample_size(torch.zeros(50, 2)).tolist() == pytest.approx([50, 50])
    assert float(effective_sample_size(torch.tensor([[0.0], [-50.0], [-60.0]]))) == (
        pytest.approx(1.0)
    )


def _one_dimensional_model(variance_ratio: float):
    """A linear-Gaussian model with one latent dimension and q(z|x) centred on the exact
    posterior with ``variance_ratio`` times its variance: the weights p(z|x)/q(z|x) grow like
    exp(a z²) with a tail index 1 − ratio (heavy for a narrow q, bounded for a wide one)."""
    torch.manual_seed(0)
    model = lg.linear_gaussian_vae(3, 1, sigma=0.5).double()
    lg.set_optimal_encoder(model)
    x = torch.randn(100, 3, dtype=torch.float64)
    posterior_scale = float(lg.posterior(model, x).covariance_matrix[0, 0, 0].detach().sqrt())
    scale = math.sqrt(variance_ratio) * posterior_scale - MIN_SCALE
    with torch.no_grad():
        model.encoder.bias[1] = math.log(math.expm1(scale))  # softplus⁻¹
    return model, x


def test_evaluate_flags_a_posterior_that_is_too_narrow(tmp_path) -> None:
    """k̂ orders the proposals by how heavy the weights' tail is: a q with a tenth of the
    posterior's variance (tail index 0.9) is flagged for most examples, one with twice it
    (bounded weights) for none; the table, the JSON and the CSV carry the diagnostics."""
    medians = {}
    for ratio in (0.1, 0.5, 2.0):
        model, x = _one_dimensional_model(ratio)
        result = evaluate(model, x, k=2000)
        medians[ratio] = float(result.per_example["pareto_k"].median())
        if ratio == 0.1:
            narrow = result
    assert medians[0.1] > medians[0.5] > medians[2.0]
    assert narrow.weights["pareto_k_unreliable_share"] > 0.5
    assert medians[2.0] < 0  # bounded weights: a negative shape
    assert "weights' Pareto k̂" in narrow.table() and "unreliable" in narrow.table()
    narrow.save(tmp_path / "evaluation.json")
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert len(saved["per_example"]["pareto_k"]) == len(x)
    assert (
        saved["weights"]["pareto_k_unreliable_share"] == narrow.weights["pareto_k_unreliable_share"]
    )
    narrow.save_per_example(tmp_path / "per_example.csv")
    with open(tmp_path / "per_example.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["pareto_k"]) == pytest.approx(
        float(narrow.per_example["pareto_k"][0]), abs=1e-4
    )
    assert float(rows[0]["ess"]) == pytest.approx(float(narrow.per_example["ess"][0]), rel=1e-4)
