"""DDP through torchrun (gloo, 2 CPU processes) against one process; devices and precision.

CUDA tests run only where a GPU is present.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import linear_conditional
from safetensors.torch import load_file

import vaekit
from vaekit.cli import main
from vaekit.errors import ConfigError
from vaekit.model import MODELS, HierarchicalVAE
from vaekit.objectives.training import OBJECTIVES
from vaekit.training.run_dir import WEIGHTS

COMMON = ["train", "--hidden", "32", "--latent-dim", "4", "--batch-size", "32", "--no-progress"]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ddp") / "data.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.random((1000, 64)).astype(np.float32))  # grey levels: binarised per batch
    return path


def _torchrun(*argv: str) -> None:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "vaekit",
        *argv,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def _assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_file(a / WEIGHTS), load_file(b / WEIGHTS)
    for key, value in first.items():
        # the same global batches and draws: only the order of float additions differs
        difference = float((value - second[key]).abs().max())
        assert torch.allclose(value, second[key], rtol=1e-4, atol=1e-5), (key, difference)


def test_two_processes_train_like_one(tmp_path: Path, data_file: Path) -> None:
    data = ["--dataset", str(data_file), "--epochs", "2"]
    assert main([*COMMON, *data, "--run-dir", str(tmp_path / "one")]) == 0
    _torchrun(*COMMON, *data, "--run-dir", str(tmp_path / "two"))
    _assert_same_weights(tmp_path / "one", tmp_path / "two")
    one = (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()
    two = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(one) == len(two) == 2
    # a DDP checkpoint resumes in one process, and a one-process checkpoint under torchrun
    assert main(["train", "--resume", str(tmp_path / "two"), "--epochs", "3", "--no-progress"]) == 0
    _torchrun("train", "--resume", str(tmp_path / "one"), "--epochs", "3", "--no-progress")
    _assert_same_weights(tmp_path / "one", tmp_path / "two")


def test_bf16_autocast_on_cpu_and_fp16_needs_cuda(digits: vaekit.Dataset) -> None:
    model = vaekit.VAE(digits.shape, 4, hidden=[16])
    history = vaekit.fit(model, digits, epochs=2, precision="bf16", device="cpu", progress=False)
    assert np.isfinite(history[-1]["test_elbo"])
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fp16 needs CUDA"):
            vaekit.fit(model, digits, epochs=1, precision="fp16", progress=False)
        with pytest.raises(ConfigError, match="no CUDA device"):
            vaekit.fit(model, digits, epochs=1, device="cuda", progress=False)


@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_training_with_data_on_device(
    tmp_path: Path, digits: vaekit.Dataset, precision: str
) -> None:
    model = vaekit.VAE(digits.shape, 4, hidden=[64])
    history = vaekit.fit(
        model,
        digits,
        run_dir=tmp_path / precision,
        epochs=3,
        device="cuda",
        data_on_device=True,
        precision=precision,
        progress=False,
    )
    assert history[-1]["test_elbo"] > history[0]["test_elbo"]
    reloaded = vaekit.load(tmp_path / precision)  # CUDA-trained weights load on the CPU
    assert next(reloaded.parameters()).device.type == "cpu"


@cuda
def test_a_run_moves_to_cuda_and_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--resume --device moves a run between a CPU and a GPU, whose generators' states differ:
    each move says so in a note, and the run goes on."""
    run = tmp_path / "run"
    assert main([*COMMON, "--epochs", "1", "--device", "cpu", "--run-dir", str(run)]) == 0
    for epochs, device in ((2, "cuda"), (3, "cpu")):
        capsys.readouterr()
        argv = ["train", "--resume", str(run), "--epochs", str(epochs), "--device", device]
        assert main([*argv, "--no-progress"]) == 0
        assert f"on another type of device than {device}" in capsys.readouterr().out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert all(np.isfinite(row["test_elbo"]) for row in rows)


@cuda
def test_cuda_evaluation_matches_cpu(trained_run: Path, digits: vaekit.Dataset) -> None:
    model = vaekit.load(trained_run)
    on_cpu = vaekit.evaluate(model, digits, k=500)
    on_gpu = vaekit.evaluate(model.cuda(), digits, k=500)
    stderr = (on_cpu.log_px.stderr**2 + on_gpu.log_px.stderr**2) ** 0.5
    assert abs(on_cpu.log_px.value - on_gpu.log_px.value) < 5 * stderr


@cuda
def test_cuda_hierarchy_trains_and_evaluates_like_cpu(
    tmp_path: Path, digits: vaekit.Dataset
) -> None:
    """A top-down hierarchy trains on CUDA (compiled where vaekit compiles); its evaluation,
    per-layer rates included, agrees with the CPU's within 5 standard errors."""
    torch.manual_seed(0)
    model = HierarchicalVAE(
        digits.shape, 8, model="hierarchy", upper_layers=[4], hidden=[64], layer_hidden=[32]
    )
    history = vaekit.fit(
        model,
        digits,
        run_dir=tmp_path / "h",
        epochs=4,
        device="cuda",
        data_on_device=True,
        compile="on",
        progress=False,
    )
    assert history[-1]["test_elbo"] > history[0]["test_elbo"]
    reloaded = vaekit.load(tmp_path / "h")
    on_cpu = vaekit.evaluate(reloaded, digits, k=500)
    on_gpu = vaekit.evaluate(reloaded.cuda(), digits, k=500)
    stderr = (on_cpu.log_px.stderr**2 + on_gpu.log_px.stderr**2) ** 0.5
    assert abs(on_cpu.log_px.value - on_gpu.log_px.value) < 5 * stderr
    for cpu_layer, gpu_layer in zip(on_cpu.layers, on_gpu.layers, strict=True):
        spread = (cpu_layer["rate"].stderr ** 2 + gpu_layer["rate"].stderr ** 2) ** 0.5
        assert abs(cpu_layer["rate"].value - gpu_layer["rate"].value) < 5 * spread


@cuda
def test_cuda_conditional_step_never_waits_for_the_host() -> None:
    """A conditional model's training step (forward and backward) queues all its work on the
    GPU: its labels are checked where data comes in, not read back every step."""
    model = linear_conditional().float().cuda()
    x = torch.randn(8, 5, device="cuda")
    batch = vaekit.Batch(x, torch.arange(8, device="cuda") % 3)
    noise = torch.randn(1, 8, model.noise_dim, device="cuda")
    objective = OBJECTIVES["elbo"].builder()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        total, _ = objective(model, batch, noise, 1.0)
        total.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@cuda
def test_cuda_semi_supervised_training(tmp_path: Path, digits: vaekit.Dataset) -> None:
    """M2 with 100 labels trains on CUDA; its classifier's test error falls below chance."""
    model = MODELS["semi-supervised"].builder(digits.shape, 8, model="semi-supervised",
                                              classes=10, hidden=[64])  # fmt: skip
    history = vaekit.fit(
        model, digits, run_dir=tmp_path / "m2", epochs=3, device="cuda", labelled=100,
        progress=False,
    )  # fmt: skip
    assert history[-1]["test_error"] < 0.5


@cuda
def test_cuda_evaluate_command(trained_run: Path, tmp_path: Path) -> None:
    """``vaekit evaluate --device cuda`` gives what the CPU gives, within 5 standard errors."""
    results = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.json"
        argv = ["evaluate", str(trained_run), "-k", "200", "--device", device, "-o", str(out)]
        assert main([*argv, "--no-progress"]) == 0
        results[device] = json.loads(out.read_text())["log_px"]
    stderr = (results["cpu"]["stderr"] ** 2 + results["cuda"]["stderr"] ** 2) ** 0.5
    assert abs(results["cpu"]["value"] - results["cuda"]["value"]) < 5 * stderr
