"""Shared fixtures: small data and a small trained run, all offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vaekit

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
