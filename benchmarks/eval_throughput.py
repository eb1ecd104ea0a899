"""Throughput of the importance-weighted log p̂_K(x) (K = 5000) against a bare loop.

The bare loop does only the arithmetic: encode each image once, decode K samples in one
block, Bernoulli log-likelihood, prior and posterior densities, one logsumexp. Both run on the
same model and images, alternating, in this process; medians of several runs.

    python benchmarks/eval_throughput.py            # 784-400-20, 100 images x 3 runs
    python benchmarks/eval_throughput.py --quick    # 20 images x 2 runs, < 1 minute
    python benchmarks/eval_throughput.py --device cuda
    python benchmarks/eval_throughput.py --device cuda --chunk-rows 1024 65536   # each size
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from common import describe, matmul_peak, mnist_or_synthetic, synchronize

import vaekit
from vaekit.data import fixed_binarization
from vaekit.evaluation.evaluate import rows_per_chunk


@torch.no_grad()
def bare_log_px(model: vaekit.VAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """log p̂_K(x) for ``x (N, 784)``, one image and one block of K samples at a time."""
    dec1, dec2 = model.decoder.layers[0], model.decoder.layers[2]
    out = []
    for xi in x:
        h = model.encoder(xi.reshape(1, 1, 28, 28))
        mu, raw = h.chunk(2, -1)
        sigma = F.softplus(raw) + 1e-6
        eps = torch.randn(k, 20, device=x.device)
        z = mu + sigma * eps
        logits = dec2(torch.relu(dec1(z)))
        log_lik = -F.binary_cross_entropy_with_logits(
            logits, xi.expand_as(logits), reduction="none"
        ).sum(-1)
        log_w = log_lik - 0.5 * (z**2).sum(-1) + 0.5 * (eps**2).sum(-1) + sigma.log().sum()
        out.append(torch.logsumexp(log_w, 0) - math.log(k))
    return torch.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--run", help="a trained 784-400-20 run (default: train one, 2 epochs)")
    parser.add_argument("-k", type=int, default=5000)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--chunk-rows",
        type=int,
        nargs="+",
        help="decoder rows per chunk, each measured (default: the device's, rows_per_chunk)",
    )
    parser.add_argument(
        "--all", action="store_true", help="then all 10,000 test images once, timed"
    )
    args = parser.parse_args()
    n, repeats = (20, 2) if args.quick else (100, 3)
    data = mnist_or_synthetic()
    if args.run:
        model = vaekit.load(args.run)
    else:
        torch.manual_seed(0)
        model = vaekit.VAE((1, 28, 28), 20, hidden=[400])
        vaekit.fit(model, data, epochs=2, progress=False)
    device = torch.device(args.device)
    model.to(device)
    x = fixed_binarization(data.test_x[:n]).to(device)

    def vaekit_rate(chunk_rows: int) -> float:
        start = time.perf_counter()
        vaekit.evaluate(model, x, args.k, chunk_rows=chunk_rows)
        synchronize(device)
        return n / (time.perf_counter() - start)

    def bare_rate() -> float:
        start = time.perf_counter()
        bare_log_px(model, x.reshape(n, 784), args.k)
        synchronize(device)
        return n / (time.perf_counter() - start)

    sizes = args.chunk_rows or [rows_per_chunk(device, x[0].numel())]
    ours: dict[int, list[float]] = {size: [] for size in sizes}
    bare = []
    for _ in range(repeats):  # alternate, so all see the same machine state
        for size in sizes:
            ours[size].append(vaekit_rate(size))
        bare.append(bare_rate())
    bare_median = statistics.median(bare)
    peak = matmul_peak(device)
    flops = args.k * 2 * (20 * 400 + 400 * 784)  # decoder forward per image: the bulk
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{describe(device)}, matmul peak "
        f"{peak:.0f} GFLOP/s; K = {args.k}, {n} images, median of {repeats}"
    )
    print(f"  bare loop        {bare_median:7.1f} images/s")
    for size, rates in ours.items():
        rate = statistics.median(rates)
        print(
            f"  vaekit evaluate  {rate:7.1f} images/s with {size} rows per chunk "
            f"({rate * flops / 1e9:.0f} GFLOP/s of decoder arithmetic); "
            f"vaekit/bare {rate / bare_median:.2f}"
        )
    print(f"  peak memory (process RSS) {peak_rss_mb:.0f} MB")
    if device.type == "cuda":
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB")
    if args.all:
        start = time.perf_counter()
        vaekit.evaluate(model, fixed_binarization(data.test_x).to(device), args.k)
        synchronize(device)
        print(f"  all {len(data.test_x):,} test images: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
