"""A real out-of-memory during evaluation on a GPU: cap this process's GPU memory and evaluate
a trained MNIST model on 200 test images at K = 5000. With its default chunks of 65,536 rows
the evaluation needs ~650 MB; capped at 300 MB it must halve its chunks until they fit, and
agree with the uncapped evaluation within the Monte Carlo noise. Then, with no memory left
at all, it must stop with one line.

    python benchmarks/eval_out_of_memory.py RUN --data-dir DIR   # needs CUDA
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import vaekit
from vaekit.data import fixed_binarization
from vaekit.evaluation.statistics import Mean


def capped(megabytes: float) -> None:
    """Let this process allocate at most ``megabytes`` of GPU memory from now on."""
    torch.cuda.empty_cache()  # else allocations are served from memory cached earlier
    torch.cuda.reset_peak_memory_stats()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(megabytes * 2**20 / total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a trained MNIST run directory")
    parser.add_argument("--data-dir", required=True, help="the folder with MNIST's .gz files")
    parser.add_argument("--cap-mb", type=float, default=300)
    args = parser.parse_args()
    data = vaekit.load_dataset("mnist", data_dir=Path(args.data_dir))
    x = fixed_binarization(data.test_x[:200]).cuda()
    model = vaekit.load(args.run).cuda()
    free = vaekit.evaluate(model, x, 5000)
    peak = torch.cuda.max_memory_allocated() / 2**20
    print(f"uncapped: {free.log_px.value:.3f} +- {free.log_px.stderr:.3f}; peak {peak:.0f} MB")
    capped(args.cap_mb)
    start = time.perf_counter()
    small = vaekit.evaluate(model, x, 5000)
    peak = torch.cuda.max_memory_allocated() / 2**20
    print(
        f"capped at {args.cap_mb:.0f} MB: {small.log_px.value:.3f} +- {small.log_px.stderr:.3f};"
        f" peak {peak:.0f} MB; {time.perf_counter() - start:.1f} s"
    )
    difference = Mean.of(small.per_example["log_px"] - free.per_example["log_px"])
    print(f"per-image difference {difference.value:.4f} +- {difference.stderr:.4f}")
    capped(0.001)
    try:
        vaekit.evaluate(model, x, 5000)
        print("no memory at all: evaluated (unexpected)")
    except vaekit.errors.VaekitError as err:
        print(f"no memory at all: {err}")


if __name__ == "__main__":
    main()
