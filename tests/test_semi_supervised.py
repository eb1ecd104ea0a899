"""M2 (Kingma et al. 2014) against ground truth: with linear networks, the model given a class
y is a linear-Gaussian VAE (see ``helpers.for_class``), so its unlabelled bound can be built by
hand class by class and every term of its identity is exact."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import for_class, linear_conditional, one_line_error
from torch.distributions import Categorical, kl_divergence

import vaekit
from vaekit.cli import _run_notes, main
from vaekit.data.labelled import MISSING, LabelledWeights, labelled_subset, semi_supervised_set
from vaekit.errors import ConfigError, DataError
from vaekit.evaluation import linear_gaussian as lg
from vaekit.evaluation.codes import CodeOptions, codes_as_data, latent_codes
from vaekit.evaluation.evaluate import evaluation_batch
from vaekit.model import ConditionalVAE, HierarchicalVAE
from vaekit.model.contract import MODELS
from vaekit.objectives.elbo import elbo, semi_supervised_elbo
from vaekit.objectives.training import OBJECTIVES
from vaekit.training.config import TrainConfig
from vaekit.training.trainer import Trainer

Z_TOL = 5.0  # standard errors

CLASSES = 3


def _m2(weight: float = 50.0) -> vaekit.VAE:
    model = linear_conditional(classes=CLASSES, model="semi-supervised")
    model.config.model.options.classification_weight = weight
    return model


def test_unlabelled_bound_is_the_sum_over_classes_by_hand() -> None:
    """U(x) = Σ_y q(y|x) ELBO(x|y) − KL(q(y|x) || p(y)) with each class's ELBO from its own
    linear-Gaussian VAE at the same draws (1e-10): the sum over y exact, no sampling of y."""
    model = _m2()
    x = torch.randn(7, 5, dtype=torch.float64)
    noise = torch.randn(3, 7, model.noise_dim, dtype=torch.float64)
    got = semi_supervised_elbo(model, vaekit.Batch(x), noise=noise)[0]
    q = torch.softmax(model.label_logits(x), -1)
    per_class = torch.stack(
        [torch.stack(elbo(for_class(model, c), x, noise=noise)) for c in range(CLASSES)], -1
    )  # (3 terms, B, C)
    label_kl = kl_divergence(
        Categorical(q), Categorical(torch.full((CLASSES,), 1 / CLASSES, dtype=torch.float64))
    )
    reconstruction = (q * per_class[1]).sum(-1)
    rate = (q * per_class[2]).sum(-1) + label_kl
    torch.testing.assert_close(got.reconstruction, reconstruction, rtol=0, atol=1e-10)
    torch.testing.assert_close(got.rate, rate, rtol=0, atol=1e-10)
    torch.testing.assert_close(got.elbo, reconstruction - rate, rtol=0, atol=1e-10)


def test_identity_with_the_label_a_latent_variable() -> None:
    """In closed form: log p(x) = U(x) + KL(q(y|x) || p(y|x)) + Σ_y q(y|x) KL(q(z|x,y) ||
    p(z|x,y)), with log p(x) = logsumexp_y [log p(y) + log p(x|y)] (1e-10); and the Monte
    Carlo U(x) is within 5 standard errors of its exact value."""
    model = _m2()
    x = torch.randn(4, 5, dtype=torch.float64)
    plains = [for_class(model, c) for c in range(CLASSES)]
    log_prior = math.log(1 / CLASSES)
    log_px_given = torch.stack([lg.log_px(p, x) for p in plains], -1)  # (B, C)
    log_px = torch.logsumexp(log_prior + log_px_given, -1)
    exact_elbo = torch.stack([lg.exact_elbo(p, x).elbo for p in plains], -1)
    z_gap = torch.stack([lg.posterior_kl(p, x) for p in plains], -1)
    log_q_y = torch.log_softmax(model.label_logits(x).detach(), -1)
    q = log_q_y.exp()
    exact_u = (q * exact_elbo).sum(-1) - (q * (log_q_y - log_prior)).sum(-1)
    log_p_y_given_x = log_prior + log_px_given - log_px[:, None]
    label_gap = (q * (log_q_y - log_p_y_given_x)).sum(-1)
    torch.testing.assert_close(
        log_px, exact_u + label_gap + (q * z_gap).sum(-1), rtol=0, atol=1e-10
    )
    draws = torch.stack(
        [semi_supervised_elbo(model, vaekit.Batch(x))[0].elbo.detach() for _ in range(4000)]
    )
    error = (draws.mean(0) - exact_u).abs() / (draws.std(0) / math.sqrt(len(draws)))
    assert bool((error < 5).all()), error


def test_with_every_label_m2_is_the_conditional_elbo_plus_the_classifier() -> None:
    """Every label given: M2's objective = Σ [ELBO(x|y) + log p(y)] + α Σ log q(y|x), with
    ELBO(x|y) a conditional VAE's of the same weights at the same draws (1e-10)."""
    model = _m2(weight=7.0)
    conditional = linear_conditional(classes=CLASSES)
    conditional.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith("classifier")}
    )
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 2, 1, 0])
    batch, noise = vaekit.Batch(x, y), torch.randn(2, 6, model.noise_dim, dtype=torch.float64)
    objective = OBJECTIVES["elbo"].builder()
    total, sums = objective(model, batch, noise, 1.0)
    plain, _ = objective(conditional, batch, noise, 1.0)
    log_q_y = torch.log_softmax(model.label_logits(x), -1).gather(1, y[:, None]).sum()
    expected = plain + 6 * math.log(1 / CLASSES) + 7.0 * log_q_y
    torch.testing.assert_close(total, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(sums[0], plain.detach() + 6 * math.log(1 / CLASSES))


def test_the_classifier_learns_from_both_terms() -> None:
    """q(y|x) gets a gradient from unlabelled examples (through U(x)) and, of labelled ones,
    only from the α term: none at α = 0."""
    x = torch.randn(4, 5, dtype=torch.float64)
    for weight, y, moves in ((0.0, torch.full((4,), MISSING), True), (0.0, torch.arange(4) % 3,
                             False), (1.0, torch.arange(4) % 3, True)):  # fmt: skip
        model = _m2(weight)
        noise = torch.randn(1, 4, model.noise_dim, dtype=torch.float64)
        total, _ = OBJECTIVES["elbo"].builder()(model, vaekit.Batch(x, y), noise, 1.0)
        total.backward()
        grad = sum(float(p.grad.abs().sum()) for p in model.classifier.parameters())
        assert (grad > 0) == moves, (weight, y, grad)


def test_labelled_subset_is_seeded_and_class_balanced() -> None:
    labels = torch.arange(1000) % 10
    first = labelled_subset(labels, 104, 10, seed=3)
    assert torch.equal(first, labelled_subset(labels, 104, 10, seed=3))
    assert not torch.equal(first, labelled_subset(labels, 104, 10, seed=4))
    counts = torch.bincount(labels[first], minlength=10)
    assert int(counts.sum()) == 104 and set(counts.tolist()) == {10, 11}
    assert len(set(first.tolist())) == 104
    with pytest.raises(ConfigError, match="class 1, which has 90"):
        labelled_subset(torch.cat([labels, torch.zeros(500, dtype=torch.long)])[100:], 1000, 10, 0)
    with pytest.raises(ConfigError, match="from 1 to"):
        labelled_subset(labels, 1001, 10, 0)


def test_semi_supervised_set_hides_labels_and_repeats_the_labelled() -> None:
    x, y = torch.arange(1000.0)[:, None], torch.arange(1000) % 10  # x: each example's row
    train, rows, weights = semi_supervised_set(vaekit.Batch(x, y), 20, 10, seed=0)
    assert train.x is x  # not copied: the rows repeat the labelled
    kept = train.y[rows] != MISSING
    assert torch.equal(rows[:1000], torch.arange(1000))  # every example once, 20 labelled
    assert int(kept[:1000].sum()) == 20
    assert len(rows) == 1000 + 20 * 48  # the labelled repeated: about half of all
    assert torch.equal(y[rows[kept]], train.y[rows][kept])  # their own labels
    # an epoch counts each labelled example's bound once and its log q(y|x) N/N_l = 50 times,
    # as Kingma et al.'s J^α does
    counts = torch.bincount(rows, minlength=1000)[train.y != MISSING].double()
    assert torch.allclose(counts * weights.bound, torch.ones(20).double())
    assert torch.allclose(counts * weights.classification, torch.full((20,), 50.0).double())
    every = semi_supervised_set(vaekit.Batch(x, y), None, 10, 0)
    assert every == (vaekit.Batch(x, y), None, LabelledWeights(1.0, 1.0))


def test_a_labelled_row_weighs_its_bound_and_classifier_term_as_told() -> None:
    """With labelled weights (b, c): objective = Σ_unlabelled U(x) + Σ_labelled [b L(x, y) +
    c α log q(y|x)] at the same draws (1e-10); the reported sums weigh the bounds alike
    (Σ_unlabelled U(x) + b Σ_labelled L(x, y)). The IWAE objective, which has no labelled
    term, refuses the weights."""
    model = _m2(weight=7.0)
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.tensor([0, MISSING, 2, MISSING, 1, 0])
    batch, noise = vaekit.Batch(x, y), torch.randn(2, 6, model.noise_dim, dtype=torch.float64)
    terms, log_q_y = semi_supervised_elbo(model, batch, 2, noise)
    labelled = y >= 0
    expected = (
        terms.elbo[~labelled].sum() + 0.25 * terms.elbo[labelled].sum() + 3 * 7.0 * log_q_y.sum()
    )
    weights = LabelledWeights(bound=0.25, classification=3.0)
    total, sums = OBJECTIVES["elbo"].builder(labelled=weights)(model, batch, noise, 1.0)
    torch.testing.assert_close(total, expected, rtol=0, atol=1e-10)
    reported = terms.elbo[~labelled].sum() + 0.25 * terms.elbo[labelled].sum()
    torch.testing.assert_close(sums[0], reported.detach(), rtol=0, atol=1e-10)
    with pytest.raises(ConfigError, match="no labelled term"):
        OBJECTIVES["iwae"].builder(labelled=weights)


def test_an_epochs_train_elbo_counts_each_example_once(digits: vaekit.Dataset) -> None:
    """With the labelled examples repeated to half of every row, an epoch's train ELBO is
    still (Σ_labelled L(x, y) + Σ_unlabelled U(x)) / N over the N training examples: at a
    learning rate too small to move the model, within 5 s.e. of that mean estimated from 40
    fresh draws per example (s.e. from the draws' spread: the epoch's own one draw per row,
    a repeated row weighing 1/R, and the estimate's). The rows' plain mean, where the
    labelled are half, differs by more than 1 nat (L is below U by about log 10 here)."""
    torch.manual_seed(0)
    model = MODELS["semi-supervised"].builder(
        digits.shape, 2, model="semi-supervised", classes=10, hidden=[8], likelihood="gaussian"
    )  # Gaussian: no binarised draws, the same x in both
    trainer = Trainer(model, digits, TrainConfig(labelled=30, lr=1e-12, epochs=1), progress=False)
    record = trainer.run()[0]
    draws = 40
    with torch.no_grad():
        bounds = torch.stack(
            [semi_supervised_elbo(model, trainer.train)[0].elbo for _ in range(draws)]
        ).double()  # (draws, N)
    repeats = torch.bincount(trainer.rows, minlength=len(bounds.T)).double()
    per_example = bounds.mean(0)
    expected = float(per_example.mean())
    variance = bounds.var(0)  # of one draw
    epoch_variance = (variance / repeats).sum() / len(per_example) ** 2  # R draws, each 1/R
    stderr = float((epoch_variance + variance.sum() / draws / len(per_example) ** 2) ** 0.5)
    assert abs(record["train_elbo"] - expected) < Z_TOL * stderr, (record, expected, stderr)
    rows_mean = float((per_example * repeats).sum() / repeats.sum())
    assert abs(rows_mean - expected) > 1.0


def test_a_semi_supervised_run_says_how_its_labels_weigh(digits: vaekit.Dataset) -> None:
    """The run's header names the labelled examples kept and the objective they enter."""
    model = MODELS["semi-supervised"].builder(
        digits.shape, 2, model="semi-supervised", classes=10, hidden=[8]
    )
    notes = _run_notes(model, digits, TrainConfig(labelled=30))
    assert any("30 of the 1617 training examples keep their labels" in n for n in notes), notes
    assert any("J^α, α = 50" in n for n in notes)
    assert not any("keep their labels" in n for n in _run_notes(model, digits, TrainConfig()))


def test_missing_labels_are_allowed_only_in_a_semi_supervised_model() -> None:
    x = torch.randn(2, 5, dtype=torch.float64)
    _m2().check_examples(vaekit.Batch(x, torch.tensor([MISSING, 1])))
    _m2().check_examples(x)
    with pytest.raises(DataError, match="or −1"):
        _m2().check_examples(vaekit.Batch(x, torch.tensor([-2, 1])))
    with pytest.raises(DataError):
        linear_conditional().check_examples(vaekit.Batch(x, torch.tensor([MISSING, 1])))
    assert isinstance(_m2(), ConditionalVAE)


def test_train_evaluate_and_refusals_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "m2"
    common = ["--threads", "1"]
    args = [
        "train",
        "--model",
        "semi-supervised",
        "--labelled",
        "30",
        "--epochs",
        "2",
        "--no-progress",
    ]
    assert main([*common, *args, "--latent-dim", "4", "--run-dir", str(run)]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["test_error"] <= 1 for r in records)
    assert "test error" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["labelled"] == 30 and config["model"]["model"]["classes"] == 10
    assert main([*common, "evaluate", str(run), "-k", "10", "--no-progress"]) == 0
    assert "classifier q(y|x)" in capsys.readouterr().out
    saved = json.loads((run / "evaluation.json").read_text())
    assert 0 <= saved["classifier_error"] <= 1
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "log p̂_K(x|y)" in page and "classifier q(y|x) test error" in page
    assert main([*common, "train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    one_line_error(capsys, main([*common, "train", "--labelled", "30", "--epochs", "1"]),
                   "--model semi-supervised")  # fmt: skip
    refused = main([*common, *args, "--objective", "iwae", "--samples", "2"])
    one_line_error(capsys, refused, "--objective elbo")


def test_m1_m2_trains_on_the_codes_of_a_trained_vae(
    tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``encode --as-data`` writes both splits' latent means with their labels as a dataset,
    on which M2 trains (M1+M2)."""
    codes = tmp_path / "codes.npz"
    assert main(["encode", str(trained_run), "--as-data", "-o", str(codes)]) == 0
    data = vaekit.load_dataset(str(codes))
    model = vaekit.load(trained_run)
    assert data.shape == (model.latent_dim,) and data.train_y is not None
    assert len(data.train_x) + len(data.test_x) == 1797  # every digit, in its split
    args = ["train", "--dataset", str(codes), "--model", "semi-supervised", "--labelled", "20"]
    options = ["--likelihood", "gaussian", "--epochs", "1", "--no-progress"]
    assert main([*args, *options, "--run-dir", str(tmp_path / "m2")]) == 0
    assert "test error" in capsys.readouterr().out
    refused = main(["encode", str(trained_run), "--as-data", "--split", "train"])
    one_line_error(capsys, refused, "leave out --split")


def test_codes_carry_their_scales_and_training_draws_from_them(
    tmp_path: Path,
    trained_run: Path,
    digits: vaekit.Dataset,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``encode --as-data`` writes q(z|x)'s standard deviations of the training split beside
    its means (a fixed draw, ``--draw``, has none); each training batch is then a fresh draw
    x ~ N(mean, scale²): over 16,170 standardised draws, mean 0 and variance 1 within 5 s.e.
    (s.e. 1/√n and √(2/n)); ``--no-draw-codes`` trains on the means themselves; scales that
    are not one per value, negative or integers are refused in one line."""
    codes = tmp_path / "codes.npz"
    assert main(["encode", str(trained_run), "--as-data", "-o", str(codes)]) == 0
    data = vaekit.load_dataset(str(codes))
    model = vaekit.load(trained_run)
    with torch.no_grad():
        _, scale = model.posterior_parameters(evaluation_batch(model, digits, "train"))
    torch.testing.assert_close(data.train_scale, scale, rtol=1e-6, atol=1e-6)
    m2 = vaekit.VAE(data.shape, 2, likelihood="gaussian", hidden=[8])
    trainer = Trainer(m2, data, TrainConfig(batch_size=len(data.train_x)))
    order = torch.arange(len(data.train_x))
    drawn = torch.cat([trainer._batch(order, 0)[0].x for _ in range(10)])
    standardised = (drawn - data.train_x.repeat(10, 1)) / data.train_scale.repeat(10, 1)
    n = standardised.numel()
    assert abs(float(standardised.mean())) < Z_TOL / n**0.5
    assert abs(float(standardised.var()) - 1) < Z_TOL * (2 / n) ** 0.5
    means = Trainer(m2, data, TrainConfig(batch_size=len(data.train_x), draw_codes=False))
    assert torch.equal(means._batch(order, 0)[0].x, data.train_x)
    fixed = tmp_path / "drawn.npz"
    assert main(["encode", str(trained_run), "--as-data", "--draw", "-o", str(fixed)]) == 0
    assert vaekit.load_dataset(str(fixed)).train_scale is None
    capsys.readouterr()
    arrays = dict(np.load(codes))
    for name, bad, message in [
        ("short", arrays["x_train_scale"][:-1], "one standard deviation per value"),
        ("negative", -arrays["x_train_scale"], "must be non-negative"),
        ("integers", arrays["x_train_scale"].astype(np.int64), "floating-point"),
    ]:
        np.savez(tmp_path / f"{name}.npz", **{**arrays, "x_train_scale": bad})
        status = main(["train", "--dataset", str(tmp_path / f"{name}.npz"), "--epochs", "1"])
        one_line_error(capsys, status, message)


def test_codes_of_the_active_units_only(
    tmp_path: Path,
    trained_run: Path,
    digits: vaekit.Dataset,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``encode --as-data --active-only`` keeps the columns whose training means vary with x
    (Cov_x E_q[z_d] > 0.01), in every array and in order, also for draws (chosen from the
    means): here unit 1, made constant, is dropped; without --as-data it is refused in one
    line."""
    model = vaekit.load(trained_run)
    with torch.no_grad():  # unit 1's mean no longer depends on x
        model.encoder.layers[-1].weight[1] = 0.0
    generator = torch.Generator().manual_seed(0)
    full, _ = codes_as_data(model, digits, CodeOptions(), generator)
    kept, note = codes_as_data(model, digits, CodeOptions(active_only=True), generator)
    keep = full["x_train"].astype(np.float64).var(0, ddof=1) > 0.01
    assert not keep[1] and keep.sum() == 3, keep
    assert note == "; kept the 3 active units of 4"
    for name in ("x_train", "x_test", "x_train_scale"):
        np.testing.assert_array_equal(kept[name], full[name][:, keep])
    for name in ("y_train", "y_test"):
        np.testing.assert_array_equal(kept[name], full[name])
    drawn, _ = codes_as_data(model, digits, CodeOptions(draw=True, active_only=True), generator)
    assert drawn["x_train"].shape == (len(digits.train_x), 3)
    with torch.no_grad():  # no unit's mean depends on x: refused, not an empty dataset
        model.encoder.layers[-1].weight[: model.latent_dim] = 0.0
    with pytest.raises(DataError, match="none of the 4 latent units is active"):
        codes_as_data(model, digits, CodeOptions(active_only=True), generator)
    active = tmp_path / "active.npz"
    assert main(["encode", str(trained_run), "--as-data", "--active-only", "-o", str(active)]) == 0
    assert "active units of 4" in capsys.readouterr().out
    status = main(["encode", str(trained_run), "--active-only", "-o", str(tmp_path / "z.npy")])
    one_line_error(capsys, status, "add --as-data")


@pytest.mark.parametrize("inference", ["top-down", "x-and-above", "bottom-up"])
def test_codes_of_one_layer_of_a_hierarchy(inference: str, digits: vaekit.Dataset) -> None:
    """``encode --layer N`` writes z_N's columns of the codes. The layer that q draws first,
    given x alone (z_L of top-down and x-and-above inference, z_1 of bottom-up), comes with
    q's scales, checked against 400 draws of it: (z − mean) / scale has mean 0 and variance 1
    within 5 s.e. (1/√n and √(2/n)); a layer that depends on a draw of another has none."""
    torch.manual_seed(0)
    model = HierarchicalVAE(
        digits.shape, 3, model="hierarchy", upper_layers=[2], hidden=[16], inference=inference
    )
    batch = evaluation_batch(model, digits, "test")
    generator = torch.Generator().manual_seed(0)
    every = latent_codes(model, batch, CodeOptions(), generator)
    assert every.scales is None  # q of all of z is no diagonal Gaussian
    first = 0 if inference == "bottom-up" else 1
    for layer, columns in ((0, slice(0, 3)), (1, slice(3, 5))):
        codes = latent_codes(model, batch, CodeOptions(layer=layer), generator)
        np.testing.assert_array_equal(codes.means, every.means[:, columns])
        assert (codes.scales is not None) == (layer == first)
    codes = latent_codes(model, batch, CodeOptions(layer=first), generator)
    drawn = CodeOptions(draw=True, layer=first)
    draws = np.stack([latent_codes(model, batch, drawn, generator).values for _ in range(400)])
    standardised = torch.from_numpy((draws - codes.means) / codes.scales).double()
    n = standardised.numel()
    assert abs(float(standardised.mean())) < Z_TOL / n**0.5
    assert abs(float(standardised.var()) - 1) < Z_TOL * (2 / n) ** 0.5


def test_standardized_codes(
    tmp_path: Path,
    trained_run: Path,
    digits: vaekit.Dataset,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``encode --as-data --standardize``: every unit of the training codes at mean 0 and
    standard deviation 1 (to float32's rounding), the test codes and the scales mapped by the
    ``x_mean`` and ``x_std`` the file keeps; a unit the same for every example is refused in one
    line, as are --standardize without --as-data and a --layer the model does not have."""
    raw, standard = tmp_path / "raw.npz", tmp_path / "standard.npz"
    as_data = ["encode", str(trained_run), "--as-data"]
    assert main([*as_data, "-o", str(raw)]) == 0
    assert main([*as_data, "--standardize", "-o", str(standard)]) == 0
    assert "standardised" in capsys.readouterr().out
    a, b = np.load(raw), np.load(standard)
    np.testing.assert_allclose(b["x_train"].astype(np.float64).mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(b["x_train"].astype(np.float64).std(0), 1, rtol=1e-6)
    mapped = (a["x_test"] - b["x_mean"]) / b["x_std"]
    np.testing.assert_allclose(b["x_test"], mapped, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b["x_train_scale"], a["x_train_scale"] / b["x_std"], rtol=1e-6)
    assert vaekit.load_dataset(str(standard)).train_scale is not None
    model = vaekit.load(trained_run)
    with torch.no_grad():  # unit 1's mean no longer depends on x
        model.encoder.layers[-1].weight[1] = 0.0
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(DataError, match="unit 1 of the codes is the same"):
        codes_as_data(model, digits, CodeOptions(standardize=True), generator)
    both = CodeOptions(active_only=True, standardize=True)
    kept, _ = codes_as_data(model, digits, both, generator)
    assert kept["x_train"].shape[1] == 3
    out = str(tmp_path / "z.npy")
    one_line_error(capsys, main(["encode", str(trained_run), "--standardize", "-o", out]),
                   "--standardize changes --as-data's codes")  # fmt: skip
    one_line_error(capsys, main(["encode", str(trained_run), "--layer", "2", "-o", out]),
                   "--layer 2: the model has 1 latent layer;")  # fmt: skip
    one_line_error(capsys, main(["encode", str(trained_run), "--layer", "0", "-o", out]),
                   "--layer must be")  # fmt: skip
