"""Helpers shared by the tests: real runs in subprocesses, a full disk, one-line errors."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from vaekit.evaluation import linear_gaussian as lg
from vaekit.model import MODELS, VAE
from vaekit.objectives.elbo import elbo
from vaekit.objectives.importance import iwae_terms
from vaekit.training.run_dir import WEIGHTS

TRAIN = [
    "train",
    "--hidden",
    "32",
    "--latent-dim",
    "4",
    "--batch-size",
    "16",
    "--epochs",
    "4",
    "--no-progress",
]


def same_run(a: Path, b: Path) -> None:
    """The two runs ended with the same weights and the same per-epoch numbers."""
    weights_a, weights_b = load_file(a / WEIGHTS), load_file(b / WEIGHTS)
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)

    def deterministic(run: Path) -> list[dict]:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        drop = ("train_time_s", "examples_per_s", "elapsed_s")
        return [{k: v for k, v in row.items() if k not in drop} for row in rows]

    assert deterministic(a) == deterministic(b)


def start(array_data: Path, run: Path, *options: str) -> subprocess.Popen:
    argv = [*TRAIN, "--dataset", str(array_data), "--run-dir", str(run), *options]
    return subprocess.Popen(
        [sys.executable, "-m", "vaekit", *argv],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )


def wait_until(ready: Callable[[], bool], process: subprocess.Popen, what: str) -> None:
    """Poll ``ready`` until it holds, while ``process`` runs (2 minutes at most)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if ready():
            return
        time.sleep(0.01)
    raise AssertionError(f"training did not reach {what}")


def wait_for_epochs(run: Path, n: int, process: subprocess.Popen) -> None:
    metrics = run / "metrics.jsonl"
    wait_until(
        lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= n,
        process,
        f"epoch {n}",
    )


def signal_during_epoch_2(
    array_data: Path, run: Path, signum: int, *options: str
) -> subprocess.Popen:
    process = start(array_data, run, *options)
    wait_for_epochs(run, 1, process)
    # epoch 1's checkpoint ends with model.safetensors, written after its metrics line: on a
    # busy machine 50 ms after that line may still be before it (CI at 725e768, kill -9)
    wait_until((run / WEIGHTS).exists, process, "epoch 1's checkpoint")
    time.sleep(0.05)  # somewhere inside epoch 2 (or its checkpoint)
    process.send_signal(signum)
    return process


def one_line_error(capsys: pytest.CaptureFixture[str], status: int, message: str) -> None:
    """The command failed with status 2 and one line on stderr that says ``message``."""
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaekit: error:"), err
    assert message in lines[0], lines[0]


class FullDisk:
    """A file whose writes stop half way with ENOSPC, like a full disk."""

    def __init__(self, file) -> None:
        self.file = file

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def write(self, data: bytes) -> int:
        self.file.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str):
        return getattr(self.file, name)


def copy_without_evaluations(run: Path, to: Path) -> Path:
    """A copy of ``run`` at ``to`` without the evaluations that other tests left in it."""
    shutil.copytree(run, to)
    (to / "evaluation.json").unlink(missing_ok=True)
    shutil.rmtree(to / "evaluations", ignore_errors=True)
    return to


def linear_conditional(
    data_dim: int = 5, latent_dim: int = 2, classes: int = 3, model: str = "conditional"
) -> VAE:
    """A conditional (or semi-supervised) model with linear networks, Gaussian p(x|z, y) of
    scale 0.7, in float64: given y, a linear-Gaussian VAE (see :func:`for_class`)."""
    torch.manual_seed(0)
    built = (
        MODELS[model]
        .builder(
            (data_dim,),
            latent_dim,
            model=model,
            classes=classes,
            likelihood="gaussian",
            gaussian_scale=0.7,
            encoder=nn.Linear(data_dim, 2 * latent_dim),
            decoder=nn.Linear(latent_dim + classes, data_dim),
        )
        .double()
    )
    with torch.no_grad():
        built.label_embedding.weight.normal_()
    return built


def for_class(model: VAE, label: int) -> VAE:
    """The one-layer linear-Gaussian VAE that ``model`` is given y = ``label``."""
    latent = model.config.latent_dim
    data_dim = model.input_shape[0]
    plain = lg.linear_gaussian_vae(data_dim, latent, sigma=0.7).double()
    with torch.no_grad():
        plain.encoder.weight.copy_(model.encoder.weight)
        plain.encoder.bias.copy_(model.encoder.bias + model.label_embedding.weight[:, label])
        plain.decoder.weight.copy_(model.decoder.weight[:, :latent])
        plain.decoder.bias.copy_(model.decoder.bias + model.decoder.weight[:, latent + label])
    return plain


def flat_grads(output: torch.Tensor, weights: Iterable[torch.Tensor]) -> torch.Tensor:
    """d output / d each of ``weights``, flat (zero where it does not reach)."""
    weights = list(weights)
    grads = torch.autograd.grad(output, weights, allow_unused=True, retain_graph=True)
    return torch.cat(
        [
            (torch.zeros_like(w) if g is None else g).flatten()
            for w, g in zip(weights, grads, strict=True)
        ]
    )


def whitened_noise(draws: int, batch: int, dim: int) -> torch.Tensor:
    """Standard-normal noise ``(draws, batch, dim)`` made to have, for each example, zero mean
    and identity covariance over its draws exactly (the exact expectation of a quadratic in
    it, for a q affine in the noise)."""
    noise = torch.randn(draws, batch, dim, dtype=torch.float64)
    noise = noise - noise.mean(0)
    covariance = torch.einsum("sbi,sbj->bij", noise, noise) / draws
    factor = torch.linalg.cholesky(covariance)
    return torch.linalg.solve_triangular(factor, noise.permute(1, 2, 0), upper=False).permute(
        2, 0, 1
    )


def fit_by_lbfgs(model: nn.Module, x: torch.Tensor, noise: torch.Tensor) -> None:
    """Maximise Σ ELBO(x) with the fixed ``noise`` over the model's parameters that take a
    gradient, by L-BFGS to convergence (float64 round-off)."""
    optimizer = torch.optim.LBFGS(
        [p for p in model.parameters() if p.requires_grad],
        max_iter=2000,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def negative_elbo() -> torch.Tensor:
        optimizer.zero_grad()
        loss = -elbo(model, x, noise=noise).elbo.sum()
        loss.backward()
        return loss

    optimizer.step(negative_elbo)


Z_TOL = 5.0
"""Standard errors within which an unbiased estimator's mean difference must lie."""


def paired_gradient_difference(
    model: nn.Module, x: torch.Tensor, k: int, objective: Callable, gradient: str, repeats: int = 40
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error over ``repeats`` batches of the gradient of Σ objective with
    ``gradient`` minus the plain one, each pair from the same draws: ``(P,)`` each."""
    differences = []
    for _ in range(repeats):
        noise = torch.randn(k, len(x), model.noise_dim, dtype=torch.float64)
        new = flat_grads(objective(model, x, noise, gradient).sum(), model.parameters())
        differences.append(
            new - flat_grads(objective(model, x, noise, "reparam").sum(), model.parameters())
        )
    stacked = torch.stack(differences)
    return stacked.mean(0), stacked.std(0) / len(stacked) ** 0.5


def elbo_of(model: nn.Module, x: torch.Tensor, noise: torch.Tensor, gradient: str) -> torch.Tensor:
    """The ELBO per example with ``len(noise)`` draws and the ``gradient`` estimator."""
    return elbo(model, x, len(noise), noise, gradient=gradient).elbo


def iwae_of(model: nn.Module, x: torch.Tensor, noise: torch.Tensor, gradient: str) -> torch.Tensor:
    """The IWAE bound per example with K = ``len(noise)`` and the ``gradient`` estimator."""
    return iwae_terms(model, x, len(noise), noise, gradient)[0]


def assert_unbiased_against_plain(model: nn.Module, x: torch.Tensor, k: int, gradient: str) -> None:
    """``gradient`` (STL of the ELBO with ``k`` draws, DReG of the IWAE bound with K = ``k``)
    differs from the plain gradient at the same draws by a term of mean zero: every parameter
    within ``Z_TOL`` standard errors of 0 over 40 batches (and draw by draw it does differ);
    its objective's values are the plain ones."""
    objective = elbo_of if gradient == "stl" else iwae_of
    mean, stderr = paired_gradient_difference(model, x, k, objective, gradient)
    assert stderr.max() > 1e-3  # the estimators differ draw by draw
    assert (mean.abs() <= Z_TOL * stderr + 1e-12).all(), (mean / stderr).abs().max()
    noise = torch.randn(k, len(x), model.noise_dim, dtype=torch.float64)
    values = objective(model, x, noise, gradient), objective(model, x, noise, "reparam")
    torch.testing.assert_close(*values, rtol=1e-12, atol=1e-12)
