"""What ``--track mlflow`` costs a training run: the same MNIST run (784-400-20, batch 128)
with and without it, alternating in one process, against a local MLflow store (SQLite) made
before the timing, as every run after a user's first finds it. Wall time of the whole fit
(training, held-out ELBO, checkpoints, figures, and for the tracked run its metrics, figures
and model logged); the overhead per step is the difference of the medians over the steps.

    python benchmarks/tracking.py [--examples 12000] [--epochs 4] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import torch
from common import mnist_or_synthetic

import vaekit


def one_run(data: vaekit.Dataset, folder: Path, epochs: int, track: bool, uri: str) -> float:
    torch.manual_seed(0)
    model = vaekit.VAE(data.shape, 20, hidden=[400])
    options = {"track": "mlflow", "track_uri": uri} if track else {}
    start = time.perf_counter()
    vaekit.fit(model, data, run_dir=folder, epochs=epochs, progress=False, compile="off", **options)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=12_000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = mnist_or_synthetic(args.examples)
    data.test_x = data.test_x[:2000]
    steps = args.epochs * -(-len(data.train_x) // 128)
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)  # MLflow keeps the artifacts in ./mlruns
        uri = f"sqlite:///{scratch}/mlflow.db"
        mlflow.MlflowClient(uri).create_experiment("vaekit")  # the store, made untimed
        times: dict[bool, list[float]] = {False: [], True: []}
        for repeat in range(args.repeats):
            for track in (False, True):
                folder = Path(scratch) / f"run-{repeat}-{track}"
                times[track].append(one_run(data, folder, args.epochs, track, uri))
    plain, tracked = statistics.median(times[False]), statistics.median(times[True])
    per_step_ms = 1000 * (tracked - plain) / steps
    print(
        f"torch {torch.__version__}, mlflow {mlflow.__version__}, {args.threads} thread(s), "
        f"{data.name}, {len(data.train_x)} examples, {args.epochs} epochs = {steps} steps, "
        f"median of {args.repeats}"
    )
    print("| | wall s | per step ms |\n|---|---|---|")
    print(f"| plain | {plain:.2f} | {1000 * plain / steps:.2f} |")
    print(f"| --track mlflow | {tracked:.2f} | {1000 * tracked / steps:.2f} |")
    overhead = 100 * (tracked / plain - 1)
    print(f"overhead: {per_step_ms:+.3f} ms per step, {overhead:+.2f}% (target ≤ 2%)")


if __name__ == "__main__":
    main()
