"""``vaekit compare``: the identity's terms of several runs side by side, refused with one
line where the numbers would not be comparable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import TRAIN, copy_without_evaluations, one_line_error

from vaekit.cli import main
from vaekit.compare import paired_difference


def test_compare_prints_the_terms_side_by_side(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs on the same data: one column each, log p̂_K's difference to the first with
    the paired standard error of the per-example differences."""
    plain = copy_without_evaluations(trained_run, tmp_path / "plain")
    vamp = tmp_path / "vamp"
    argv = ["train", "--prior", "vamp", "--pseudo-inputs", "5", "--latent-dim", "4"]
    assert main([*argv, "--hidden", "32", "--epochs", "3", "--run-dir", str(vamp)]) == 0
    for run in (plain, vamp):
        assert main(["evaluate", str(run), "-k", "30", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["compare", str(plain), str(vamp / "model.safetensors")]) == 0
    table = capsys.readouterr().out
    header, model, prior = table.splitlines()[:3]
    assert header.split() == ["plain", "vamp"]
    assert model.split() == ["model", "vae", "vae"]
    assert prior.split() == ["prior", "standard-normal", "vamp"]
    for term in ("log p̂_K(x)", "reconstruction", "rate", "I_q(x; z)", "gap", "Pareto k̂"):
        assert term in table
    evaluations = [json.loads((run / "evaluation.json").read_text()) for run in (plain, vamp)]
    difference = paired_difference(evaluations[1], evaluations[0])
    assert difference is not None
    per_example = [
        torch.tensor(e["per_example"]["log_px"], dtype=torch.float64) for e in evaluations
    ]
    assert difference.value == pytest.approx(float((per_example[1] - per_example[0]).mean()))
    assert f"{difference.value:+.2f} ± {difference.stderr:.2f}" in table


def test_compare_refuses_what_is_not_comparable(
    trained_run: Path,
    tmp_path: Path,
    array_data: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain = copy_without_evaluations(trained_run, tmp_path / "plain")
    status = main(["compare", str(plain)])
    one_line_error(capsys, status, "has no evaluation (no readable, complete evaluation.json)")
    assert main(["evaluate", str(plain), "-k", "5", "--limit", "20", "--no-progress"]) == 0
    other = tmp_path / "other"
    argv = [*TRAIN, "--dataset", str(array_data), "--epochs", "1", "--run-dir", str(other)]
    assert main(argv) == 0
    assert main(["evaluate", str(other), "-k", "5", "--limit", "20", "--no-progress"]) == 0
    capsys.readouterr()
    status = main(["compare", str(plain), str(other)])
    one_line_error(capsys, status, "trained on different data")
    assert main(["train", "--resume", str(plain), "--epochs", "4", "--no-progress"]) == 0
    capsys.readouterr()
    status = main(["compare", str(plain)])
    one_line_error(capsys, status, "is not of its model (it was of other weights")
