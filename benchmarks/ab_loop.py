"""A/B of the training loop between two checkouts of vaekit (e.g. before and after a change),
alternating runs so that the machine's drift hits both alike: the loop's examples/s (the best
epoch after the first) of a 784-400-20 relu and a 784-200-200-50 tanh MLP on MNIST (20,000
examples), compiled and eager, and the median ratio B/A.

    git worktree add /tmp/before <commit>
    python benchmarks/ab_loop.py /tmp/before . --batch 20 --pairs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import sys, tempfile
from pathlib import Path
import torch
sys.path.insert(0, sys.argv[1] + "/benchmarks")
from common import mnist_or_synthetic
import vaekit
from vaekit.training.trainer import Trainer
try:
    from vaekit.training.config import TrainConfig
except ImportError:  # checkouts before the latent-variable contract
    from vaekit.config import TrainConfig
data = mnist_or_synthetic(20000)
for hidden, latent, activation in (([400], 20, "relu"), ([200, 200], 50, "tanh")):
    for compile in ("on", "off"):
        torch.manual_seed(0)
        model = vaekit.VAE((1, 28, 28), latent, hidden=hidden, activation=activation)
        config = TrainConfig(epochs=3, batch_size=int(sys.argv[2]), compile=compile)
        with tempfile.TemporaryDirectory() as run:
            history = Trainer(model, data, config, Path(run), progress=False).run()
        rate = max(r["examples_per_s"] for r in history[1:])
        print(f"{activation}-{'compiled' if compile == 'on' else 'eager'} {rate:.1f}", flush=True)
"""


def rates(tree: Path, batch: int) -> dict[str, float]:
    command = [sys.executable, "-c", CHILD, str(tree), str(batch)]
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    output = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    return {name: float(value) for name, value in (line.split() for line in output.splitlines())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="checkout A (the reference)")
    parser.add_argument("b", type=Path, help="checkout B")
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    for pair in range(args.pairs):
        for side in ("a", "b"):
            runs[side].append(rates(getattr(args, side).resolve(), args.batch))
            print(f"pair {pair + 1} {side}: {runs[side][-1]}", flush=True)
    print(f"batch {args.batch}, {args.pairs} alternating pairs; loop ex/s, median")
    print(f"{'setting':<16} {'A':>9} {'B':>9} {'B/A':>6}")
    for name in runs["a"][0]:
        a = statistics.median(r[name] for r in runs["a"])
        b = statistics.median(r[name] for r in runs["b"])
        print(f"{name:<16} {a:>9,.0f} {b:>9,.0f} {b / a:>6.3f}")


if __name__ == "__main__":
    main()
