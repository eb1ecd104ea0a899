"""The conditional VAE against ground truth: with linear networks, conditioning on a class y is
a linear-Gaussian VAE per class (the label's columns shift the decoder's and the encoder's
biases), whose terms are exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import for_class, linear_conditional

import vaekit
from vaekit.cli import main
from vaekit.errors import ConfigError, DataError
from vaekit.evaluation import linear_gaussian as lg
from vaekit.evaluation.labels import class_evidence, label_worth
from vaekit.model import ConditionalVAE, ModelConfig, build_model
from vaekit.objectives.elbo import elbo
from vaekit.objectives.importance import log_px

Z_TOL = 5.0


def test_conditioning_is_a_linear_gaussian_vae_per_class() -> None:
    """z, log q(z|x, y) and log p(x|z, y) at the same draws equal those of each class's own
    linear-Gaussian VAE (1e-10), and so do ELBO(x|y) and log p̂_K(x|y); the Monte Carlo
    ELBO(x|y) is within 5 s.e. of that VAE's exact ELBO."""
    model = linear_conditional()
    x = torch.randn(6, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    batch = vaekit.Batch(x, y)
    noise = torch.randn(4000, 6, model.noise_dim, dtype=torch.float64)
    z, log_q = model.sample_posterior(model.posterior_parameters(batch), noise)
    log_likelihood = model.log_likelihood(z, batch)
    for label in range(3):
        rows = y == label
        plain = for_class(model, label)
        z_plain, log_q_plain = plain.sample_posterior(
            plain.posterior_parameters(x[rows]), noise[:, rows]
        )
        torch.testing.assert_close(z[:, rows], z_plain, rtol=0, atol=1e-10)
        torch.testing.assert_close(log_q[:, rows], log_q_plain, rtol=0, atol=1e-10)
        torch.testing.assert_close(
            log_likelihood[:, rows], plain.log_likelihood(z_plain, x[rows]), rtol=0, atol=1e-10
        )
        given = vaekit.Batch(x[rows], y[rows])
        estimate = elbo(model, given, noise=noise[:, rows]).elbo
        torch.testing.assert_close(estimate, elbo(plain, x[rows], noise=noise[:, rows]).elbo)
        stderr = log_likelihood[:, rows].std(0) / len(noise) ** 0.5
        assert ((estimate - lg.exact_elbo(plain, x[rows]).elbo).abs() < Z_TOL * stderr).all()
        draws = noise[:1000, rows]
        torch.testing.assert_close(
            log_px(model, given, 1000, noise=draws), log_px(plain, x[rows], 1000, noise=draws)
        )


def test_labels_are_required_and_checked() -> None:
    model = ConditionalVAE((4,), 2, model="conditional", classes=3, likelihood="gaussian")
    x = torch.randn(2, 4)
    with pytest.raises(DataError, match="needs the labels y"):
        elbo(model, x)
    with pytest.raises(DataError, match="labels must be integers from 0 to 2"):
        elbo(model, vaekit.Batch(x, torch.tensor([0, 3])))
    with pytest.raises(ConfigError, match="one label, or one per sample"):
        model.sample(3, labels=torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="reads no labels"):
        vaekit.VAE((4,), 2, likelihood="gaussian").sample(2, labels=1)
    for model_name in ("conditional", "semi-supervised"):
        refusal = f"without labels: a {model_name} model takes --prior standard-normal or mog"
        with pytest.raises(ConfigError, match=refusal):
            build_model(
                ModelConfig.from_options(
                    (4,), 2, model=model_name, prior="vamp", likelihood="gaussian"
                )
            )


def test_samples_follow_the_given_class() -> None:
    """A class's samples are decoded with that class: the decoder reads its one-hot."""
    model = ConditionalVAE((4,), 2, model="conditional", classes=3, likelihood="gaussian")
    seen = []
    model.decoder.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    model.sample(5, labels=2)
    model.sample(4)
    assert torch.equal(seen[0][:, 2:], torch.tensor([[0.0, 0.0, 1.0]]).expand(5, 3))
    assert seen[1][:, 2:].argmax(1).tolist() == [0, 1, 2, 0]


def test_train_evaluate_sample_and_report_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``vaekit train --model conditional`` takes the data's classes; evaluate reports
    log p̂_K(x|y) (and with --classify the label's worth and the classifier's error); sample
    --label; the report; --label and --classify refused for a model without labels."""
    run = tmp_path / "cvae"
    argv = ["train", "--model", "conditional", "--latent-dim", "3", "--hidden", "32"]
    assert main([*argv, "--epochs", "2", "--run-dir", str(run), "--no-progress"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["model"] == {"name": "conditional", "classes": 10}
    assert main(["evaluate", str(run), "-k", "20", "--classify", "5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "log p̂_K(x|y)" in out and "label's worth" in out and "% test error" in out
    assert json.loads((run / "evaluation.json").read_text())["conditional"] is True
    out = tmp_path / "three.npy"
    assert main(["sample", str(run), "--label", "3", "-n", "4", "-o", str(out)]) == 0
    assert main(["sample", str(run), "-o", str(tmp_path / "grid.png")]) == 0
    assert main(["report", str(run)]) == 0
    assert isinstance(vaekit.load(run), ConditionalVAE)
    capsys.readouterr()
    plain = tmp_path / "plain"
    assert main(["train", "--epochs", "1", "--run-dir", str(plain), "--no-progress"]) == 0
    assert main(["sample", str(plain), "--label", "3", "-o", str(tmp_path / "p.png")]) == 2
    assert "reads no labels" in capsys.readouterr().err
    assert main(["evaluate", str(plain), "-k", "5", "--classify", "5", "--no-progress"]) == 2
    assert "--classify needs a conditional model" in capsys.readouterr().err


def test_label_worth_and_classifier_from_every_class_evidence() -> None:
    """log p̂_K(x|y=c) of every class equals each class's own linear-Gaussian VAE's (the same
    draws, 1e-10); from the exact evidence, the worth log p(x|y) − log p(x) is log p(y|x) −
    log p(y) ≤ −log p(y) for every example, and the error is argmax_c p(c|x)'s, by hand."""
    model = linear_conditional()
    x = torch.randn(8, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0])
    estimated = class_evidence(model, vaekit.Batch(x, y), 300, torch.Generator().manual_seed(4))
    generator = torch.Generator().manual_seed(4)
    plains = [for_class(model, c) for c in range(3)]
    by_class = [log_px(plain, x, 300, generator=generator) for plain in plains]
    torch.testing.assert_close(estimated, torch.stack(by_class, 1), rtol=0, atol=1e-10)
    with torch.no_grad():
        exact = torch.stack([lg.log_px(plain, x) for plain in plains], 1)
    frequencies = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    result = label_worth(exact, y, frequencies, 300)
    joint = exact + frequencies.log()
    worth = exact[torch.arange(8), y] - torch.logsumexp(joint, 1)
    assert (worth <= -frequencies.log()[y] + 1e-12).all()
    assert abs(result.worth.value - float(worth.mean())) < 1e-12
    assert result.error == float((joint.argmax(1) != y).double().mean())
    assert abs(result.ceiling - float(-frequencies.log()[y].mean())) < 1e-12
