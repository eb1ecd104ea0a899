"""The IAF's stopped log q solves with each step's Jacobian: how many blocks to solve by.

One step of ``fast`` + IAF's flow (D = 50, 2 steps of 320 hidden units, context 50), weights at
their trained scale (normal, std 1/√D). ``_Step.solve_jacobian`` computes J⁻¹ v and its
gradient (J⁻ᵀ u) by forward substitution in a number of blocks of dimensions; with one block it
forms all of J from the units and solves once (what vaekit did before blocks: B·D²·H
multiplications). Times forward and backward, for the STL setting (batch 128) and the DReG
one (K = 5 draws of batch 20), against one pass of the step's MADE (forward and backward);
block counts alternated, medians of several rounds; ratios against one block in the same run.

    python benchmarks/iaf_solve.py [--threads 2] [--rounds 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from vaekit.model.posteriors.iaf import _Step

DIM, HIDDEN, CONTEXT = 50, 320, 50
BLOCK_COUNTS = (1, 2, 3, 4, 5, 7, 10)
SETTINGS = {"STL, batch 128": (128,), "DReG, K = 5 × batch 20": (5, 20)}


def timings(lead: tuple[int, ...], rounds: int) -> dict[str, float]:
    """Median seconds of each block count's solve (forward and backward) and of a MADE pass."""
    torch.manual_seed(0)
    steps = {count: _Step(DIM, HIDDEN, CONTEXT, blocks=count) for count in BLOCK_COUNTS}
    with torch.no_grad():
        for weight in steps[1].parameters():
            weight.normal_(std=DIM**-0.5)
    for step in steps.values():
        step.load_state_dict(steps[1].state_dict())
    z, context = torch.randn(*lead, DIM), torch.randn(*lead, CONTEXT)
    shift, gate = (output.detach() for output in steps[1](z, context))
    made_input = z.clone().requires_grad_()

    def solve(step: _Step) -> Callable[[], None]:
        def run() -> None:
            vector = torch.randn(*lead, DIM, requires_grad=True)
            step.solve_jacobian(z, shift, gate, context, vector).sum().backward()

        return run

    def made_pass() -> None:
        shift, gate = steps[1](made_input, context)
        (shift.sum() + gate.sum()).backward()

    runs = {f"{count} blocks": solve(step) for count, step in steps.items()}
    runs["MADE pass"] = made_pass
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds + 3):  # the first 3 rounds warm up
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values[3:]) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.rounds} rounds")
    default = len(_Step(DIM, HIDDEN, CONTEXT).blocks)
    for setting, lead in SETTINGS.items():
        median = timings(lead, args.rounds)
        print(f"\n{setting} (vaekit's default: {default} blocks)")
        print("| solve | ms | / one block | / MADE pass |")
        print("|---|---|---|---|")
        for name, value in median.items():
            print(
                f"| {name} | {1000 * value:.2f} | {value / median['1 blocks']:.2f} | "
                f"{value / median['MADE pass']:.2f} |"
            )


if __name__ == "__main__":
    main()
