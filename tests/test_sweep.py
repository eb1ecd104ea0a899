"""``vaekit sweep``: each member trains as its single run would (in float64, where round-off
is ~1e-16 per operation, to 1e-9 after hundreds of steps), stops, resumes and catches up as a
whole, and is a normal run directory; the summary holds each member's numbers."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_line_error
from safetensors.torch import load_file

import vaekit
from vaekit.cli import main
from vaekit.model import ModelConfig, build_model
from vaekit.training.config import TrainConfig
from vaekit.training.sweep import StackedStep, Sweep, SweepPlan, member_name

MODEL = {"hidden": [32], "latent_dim": 4}
SMALL = ["--hidden", "32", "--latent-dim", "4", "--batch-size", "20", "--no-progress"]


@pytest.fixture
def float64() -> Iterator[None]:
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _sweep_and_single_runs(
    plan: SweepPlan, data: vaekit.Dataset, folder: Path
) -> Iterator[tuple[str, dict[str, torch.Tensor], torch.nn.Module, list[dict]]]:
    """Train ``plan`` as a sweep in ``folder/sweep``, then each member alone; yield each
    member's name and saved weights, and its single run's model and records."""
    sweep = Sweep(folder / "sweep", plan, data, progress=False)
    sweep.create()
    sweep.run()
    for name, config in plan.members():
        torch.manual_seed(config.seed)
        model = build_model(ModelConfig.from_options(data.shape, **plan.model))
        single = vaekit.fit(model, data, config, folder / name, progress=False)
        yield name, load_file(folder / "sweep" / name / "model.safetensors"), model, single


def test_each_member_trains_as_its_single_run(
    float64: None, digits: vaekit.Dataset, tmp_path: Path
) -> None:
    """243 steps (3 epochs of 81), β × warm-up × seed, with clipping: each member's weights
    and records are its single run's, to float64 round-off."""
    data = vaekit.Dataset("digits64", digits.train_x.double(), digits.test_x.double())
    train = TrainConfig(epochs=3, batch_size=20, clip_grad_norm=5.0)
    plan = SweepPlan(MODEL, train, betas=[0.5, 2.0], seeds=[0, 1], warmups=[0, 1])
    assert [name for name, _ in plan.members()][:3] == [
        "beta0.5-warmup0-seed0",
        "beta0.5-warmup0-seed1",
        "beta0.5-warmup1-seed0",
    ]
    for name, weights, model, single in _sweep_and_single_runs(plan, data, tmp_path):
        member = tmp_path / "sweep" / name
        for key, value in model.state_dict().items():
            torch.testing.assert_close(weights[key], value, rtol=1e-9, atol=1e-12)
        records = [json.loads(line) for line in (member / "metrics.jsonl").read_text().splitlines()]
        for record, reference in zip(records, single, strict=True):
            for key in ("train_elbo", "train_rate", "test_elbo", "beta", "clipped_steps"):
                assert record[key] == pytest.approx(reference[key], rel=1e-9), (name, key)
    assert any(r["clipped_steps"] for r in single)  # the clip was exercised


@pytest.mark.parametrize(
    "options",
    [
        {"model": "hierarchy", "upper_layers": [2]},
        {"posterior": "iaf", "flow_steps": 2},
        {"prior": "vamp", "pseudo_inputs": 10},
        {"network": "conv"},
    ],
    ids=["hierarchy", "iaf", "vamp", "conv"],
)
def test_every_model_family_sweeps(
    options: dict[str, object], float64: None, digits: vaekit.Dataset, tmp_path: Path
) -> None:
    """A member of each family trains as its single run, to float64 round-off (81 steps; in
    float32 a hierarchy's round-off grows to ~1e-3 in as many steps, either way)."""
    digits = vaekit.Dataset("digits64", digits.train_x.double(), digits.test_x.double())
    model_options = {**MODEL, "hidden": [16], **options}
    train = TrainConfig(epochs=1, batch_size=20)
    plan = SweepPlan(model_options, train, betas=[0.5, 1.0], seeds=[1])
    for _, weights, model, _ in _sweep_and_single_runs(plan, digits, tmp_path):
        for key, value in model.state_dict().items():
            torch.testing.assert_close(weights[key], value, rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sweep-data") / "binary.npy"
    rng = np.random.default_rng(0)
    np.save(path, (rng.random((2000, 16)) < 0.3).astype(np.float32))
    return path


def _sweep(binary: Path, folder: Path, *options: str) -> list[str]:
    return ["sweep", "--dataset", str(binary), *SMALL, "--beta", "0.5,1", "--seeds", "0",
            "--run-dir", str(folder), *options]  # fmt: skip


def _same(a: Path, b: Path, atol: float = 0.0) -> None:
    for name in ("beta0.5-seed0", "beta1-seed0"):
        first, second = (
            load_file(a / name / "model.safetensors"),
            load_file(b / name / "model.safetensors"),
        )
        for key, value in first.items():
            torch.testing.assert_close(second[key], value, rtol=0, atol=atol)


def test_a_sweep_stops_resumes_and_catches_up(
    binary: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reference = tmp_path / "reference"
    assert main(_sweep(binary, reference, "--epochs", "4")) == 0
    # Ctrl-C in the middle of epoch 2 (step 150 of 100 per epoch), then --resume: bit for bit
    step, calls = StackedStep.step, []

    def interrupted(self: StackedStep, *args: object) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 150:
            os.kill(os.getpid(), signal.SIGINT)
        return step(self, *args)

    monkeypatch.setattr(StackedStep, "step", interrupted)
    stopped = tmp_path / "stopped"
    assert main(_sweep(binary, stopped, "--epochs", "4")) == 130
    assert f"continue with 'vaekit sweep --resume {stopped}'" in capsys.readouterr().err
    monkeypatch.setattr(StackedStep, "step", step)
    resumed = ["sweep", "--resume", str(stopped), "--device", "cpu", "--no-progress"]
    assert main(resumed) == 0  # --device may be given again
    _same(reference, stopped)
    # a kill between the members' checkpoints: one member an epoch behind catches up alone
    behind = tmp_path / "behind"
    assert main(_sweep(binary, behind, "--epochs", "2")) == 0
    saved = (behind / "beta1-seed0" / "checkpoint.safetensors").read_bytes()
    assert main(["sweep", "--resume", str(behind), "--epochs", "3", "--no-progress"]) == 0
    (behind / "beta1-seed0" / "checkpoint.safetensors").write_bytes(saved)
    assert main(["sweep", "--resume", str(behind), "--epochs", "4", "--no-progress"]) == 0
    _same(reference, behind, atol=1e-5)  # one epoch trained alone: float32 round-off apart
    # killed before a member's config was written: it starts at resume and catches up
    lost = tmp_path / "lost"
    assert main(_sweep(binary, lost, "--epochs", "1")) == 0
    shutil.rmtree(lost / "beta1-seed0")
    assert main(["sweep", "--resume", str(lost), "--epochs", "4", "--no-progress"]) == 0
    _same(reference, lost, atol=1e-5)
    # each member is a normal run: it loads and resumes alone
    member = behind / "beta0.5-seed0"
    assert vaekit.load(member).latent_dim == 4
    assert main(["train", "--resume", str(member), "--epochs", "5", "--no-progress"]) == 0


def test_the_summary_holds_each_members_numbers(
    binary: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "sweep"
    assert main(_sweep(binary, folder, "--epochs", "2")) == 0
    assert main(["evaluate", str(folder / "beta1-seed0"), "-k", "20", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["sweep", "--summarize", str(folder)]) == 0
    table = capsys.readouterr().out
    summary = json.loads((folder / "summary.json").read_text())["members"]
    for point in summary:
        last = json.loads((folder / point["member"] / "metrics.jsonl").read_text().splitlines()[-1])
        assert point["distortion"] == -last["test_reconstruction"]
        assert point["rate"] == last["test_rate"] and point["elbo"] == last["test_elbo"]
        assert point["member"] in table
    evaluated = {p["member"]: p["log_px"] for p in summary}
    assert evaluated["beta0.5-seed0"] is None and evaluated["beta1-seed0"] < 0
    assert (folder / "rate_distortion.png").read_bytes()[:4] == b"\x89PNG"
    evaluate = ["--evaluate", "5", "--evaluate-limit", "40", "--no-progress"]
    assert main(["sweep", "--resume", str(folder), "--epochs", "3", *evaluate]) == 0
    summary = json.loads((folder / "summary.json").read_text())["members"]
    assert all(p["log_px"] < 0 and (p["k"], p["n"]) == (5, 40) for p in summary)
    assert main(["report", str(folder / "beta1-seed0"), "-k", "10", "--limit", "50"]) == 0
    assert "This run in its sweep" in (folder / "beta1-seed0" / "report.html").read_text()


def test_sweep_refusals(binary: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "sweep"
    assert main(_sweep(binary, folder, "--epochs", "1")) == 0
    capsys.readouterr()
    one_line_error(capsys, main(_sweep(binary, folder, "--epochs", "1")), "already holds a sweep")
    status = main(["sweep", "--resume", str(folder), "--lr", "0.1"])
    one_line_error(capsys, status, "only --epochs, --device, --precision,")
    status = main(_sweep(binary, tmp_path / "b", "--on-nan", "rollback"))
    one_line_error(capsys, status, "not in a sweep")
    iwae = ["--objective", "iwae", "--samples", "2", "--gradient", "dreg", "--beta", "1"]
    status = main([*_sweep(binary, tmp_path / "c", "--epochs", "1"), *iwae])
    one_line_error(capsys, status, "--gradient dreg reweights")
    one_line_error(capsys, main(["sweep", "--summarize", str(tmp_path)]), "is not a sweep")
    one = tmp_path / "one-warm-up"  # one warm-up is not swept: the names stay short
    assert main(_sweep(binary, one, "--epochs", "1", "--warmup-epochs", "1")) == 0
    config = json.loads((one / "beta0.5-seed0" / "config.json").read_text())
    assert config["train"]["warmup_epochs"] == 1
    member = folder / member_name(0.5, 0)
    shutil.copytree(member, tmp_path / "occupied" / member.name)
    status = main(_sweep(binary, tmp_path / "occupied", "--epochs", "1"))
    one_line_error(capsys, status, "already holds a run")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_sweep_on_cuda_trains_as_single_runs(digits: vaekit.Dataset, tmp_path: Path) -> None:
    """On a GPU too (float32: its round-off, over 2 epochs of 81 steps)."""
    train = TrainConfig(epochs=2, batch_size=20, device="cuda")
    plan = SweepPlan(MODEL, train, betas=[0.5, 2.0], seeds=[0])
    for _, weights, model, _ in _sweep_and_single_runs(plan, digits, tmp_path):
        for key, value in model.state_dict().items():
            torch.testing.assert_close(weights[key], value.cpu(), rtol=1e-3, atol=1e-4)
