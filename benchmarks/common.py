"""Shared pieces of the benchmarks: data, FLOP counts, a matmul peak, medians."""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path

import torch

import vaekit

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def mnist_or_synthetic(n_train: int | None = None) -> vaekit.Dataset:
    """Real MNIST when ../shared has it, else random images of the same shape."""
    if (SHARED_MNIST / "train-images-idx3-ubyte.gz").exists():
        data = vaekit.load_dataset("mnist", data_dir=SHARED_MNIST)
    else:
        generator = torch.Generator().manual_seed(0)
        data = vaekit.Dataset(
            "synthetic",
            torch.rand(60_000, 1, 28, 28, generator=generator),
            torch.rand(10_000, 1, 28, 28, generator=generator),
        )
    if n_train is not None:
        data.train_x = data.train_x[:n_train]
        data.train_y = None if data.train_y is None else data.train_y[:n_train]
    return data


def mlp_flops(sizes: list[int], backward: bool = True) -> float:
    """Multiply-add FLOPs per example of an MLP with layer widths ``sizes``: 2·Σ n_in·n_out
    forward; backward adds 2× that, less the first layer's input gradient (not needed)."""
    forward = 2 * sum(a * b for a, b in itertools.pairwise(sizes))
    if not backward:
        return forward
    return 3 * forward - 2 * sizes[0] * sizes[1]


def vae_flops(hidden: list[int], latent: int, backward: bool = True) -> float:
    """Encoder 784-hidden-2L plus decoder L-reversed(hidden)-784."""
    encoder = mlp_flops([784, *hidden, 2 * latent], backward)
    decoder_sizes = [latent, *reversed(hidden), 784]
    decoder = 2 * sum(a * b for a, b in itertools.pairwise(decoder_sizes))
    return encoder + (3 * decoder if backward else decoder)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so a timer can stop."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device | str = "cpu", size: int = 2048, repeats: int = 5) -> float:
    """Measured GFLOP/s of a large float32 matmul on ``device`` (the arithmetic ceiling)."""
    device = torch.device(device)
    if device.type == "cuda":
        size *= 4
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def describe(device: torch.device) -> str:
    """``torch X, N threads`` on the CPU, or the GPU's name."""
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{torch.get_num_threads()} threads"
    )
    return f"torch {torch.__version__}, {where}"


def bare_rate(
    model: torch.nn.Module, data: vaekit.Dataset, batch: int, device: torch.device
) -> float:
    """Examples/s of a bare loop over ``data``'s training images for ``model`` (with a
    ``loss(x)``, the negative ELBO summed over the batch): tensors on ``device``, random
    batches, a Bernoulli draw of each, forward, backward and fused Adam; nothing else."""
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    x_all = data.train_x.reshape(-1, 784).to(device)
    n = len(x_all)
    synchronize(device)
    start = time.perf_counter()
    order = torch.randperm(n, device=device)
    for i in range(0, n, batch):
        x = torch.bernoulli(x_all[order[i : i + batch]])
        optimizer.zero_grad(set_to_none=True)
        (model.loss(x) / len(x)).backward()
        optimizer.step()
    synchronize(device)
    return n / (time.perf_counter() - start)
