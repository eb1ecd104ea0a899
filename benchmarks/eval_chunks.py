"""The standard protocol (all MNIST test images, K = 5000) at several decoder chunk sizes: the
estimates must agree within their Monte Carlo noise, and the time shows what each size costs.

    python benchmarks/eval_chunks.py RUN --data-dir DIR --device cuda   # GPU default, then 1,024

Prints each size's log p̂_K(x), ELBO and seconds, and the per-image difference of the first
two sizes' estimates (independent draws: its mean is 0 within a few standard errors).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import describe, synchronize

import vaekit
from vaekit.evaluation.statistics import Mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a trained MNIST run directory")
    parser.add_argument("--data-dir", required=True, help="the folder with MNIST's .gz files")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--chunk-rows", type=int, nargs="+", default=[65536, 1024])
    parser.add_argument("-k", type=int, default=5000)
    args = parser.parse_args()
    device = torch.device(args.device)
    data = vaekit.load_dataset("mnist", data_dir=Path(args.data_dir))
    model = vaekit.load(args.run).to(device)
    print(f"{describe(device)}; {args.run}, all {len(data.test_x):,} test images, K = {args.k}")
    results = {}
    for rows in args.chunk_rows:
        synchronize(device)
        start = time.perf_counter()
        result = vaekit.evaluate(model, data, args.k, chunk_rows=rows)
        synchronize(device)
        results[rows] = result
        print(
            f"chunk_rows {rows}: log p(x) {result.log_px.value:.3f} +- {result.log_px.stderr:.3f}"
            f", ELBO {result.elbo.value:.3f}, {time.perf_counter() - start:.1f} s",
            flush=True,
        )
    first, second = (results[rows].per_example["log_px"] for rows in args.chunk_rows[:2])
    difference = first - second
    mean = Mean.of(difference)
    print(
        f"per-image difference: mean {mean.value:.4f}, sd {difference.std():.4f}, "
        f"s.e. of the mean {mean.stderr:.4f} nats"
    )


if __name__ == "__main__":
    main()
