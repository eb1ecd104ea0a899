"""Shared fixtures: small data and a small trained run, all offline."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TRAIN

import vaekit
from vaekit.cli import main

# pytest-xdist runs one worker per core (addopts in pyproject.toml): each worker, and each
# command it runs, takes one thread, without looking for busy ones (0.2 s a command;
# tests/test_newcomer.py tests the default). Two threads per worker oversubscribe the
# cores: beside busy processes, 2 epochs of a 64-32-4 VAE took 20.0 s with two threads,
# 4.9 s with one (on a quiet machine one thread is as fast: 1.7-2.0 s against 2.1 s).
os.environ.setdefault("VAEKIT_THREADS", "1")
torch.set_num_threads(1)

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def digits() -> vaekit.Dataset:
    return vaekit.load_dataset("digits")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, digits: vaekit.Dataset) -> Path:
    """A 3-epoch digits run (small networks) written to a run directory."""
    run_dir = tmp_path_factory.mktemp("runs") / "digits"
    torch.manual_seed(0)
    model = vaekit.VAE(digits.shape, latent_dim=4, hidden=[32])
    vaekit.fit(model, digits, run_dir=run_dir, epochs=3, progress=False)
    return run_dir


@pytest.fixture
def mnist_dir() -> Path:
    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST files not present")
    return SHARED_MNIST


@pytest.fixture(scope="session")
def array_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Binary vectors, large enough that an epoch takes a noticeable fraction of a second."""
    path = tmp_path_factory.mktemp("data") / "binary.npy"
    rng = np.random.default_rng(0)
    np.save(path, (rng.random((6_000, 64)) < 0.3).astype(np.float32))
    return path


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, array_data: Path) -> Path:
    """The 4-epoch run of ``runs.TRAIN`` on ``array_data``, never interrupted."""
    run = tmp_path_factory.mktemp("runs") / "whole"
    assert main([*TRAIN, "--dataset", str(array_data), "--run-dir", str(run)]) == 0
    return run
