"""A sweep of N models trained together against the same N trained one after another.

N = 8 models of 784-400-20 (β 0.25 … 4 and two seeds, as a β sweep would be) on MNIST (else
random images of its shape), at batch 20 (Burda et al.'s) and 128. Both ways run vaekit's own
loop with its per-epoch held-out ELBO and checkpoints; the rate is the training examples of
all N models per second of training time (``train_time_s`` of the second epoch, so start-up
is left out), medians over repeats. Also: the achieved GFLOP/s against a measured matmul peak,
and the training state a sweep holds (its stacked parameters, gradients and Adam moments,
counted by storage) against N single models' (the members' own tensors are views of the
stacks, so they add nothing).

The floor: the part of a sweep's step no implementation can leave out, timed alone on the
same stacks: the networks' forward and backward (the encoder, the decoder on the posterior
means, a plain sum as the loss: no sampling, likelihood, KL or clipping) and one fused Adam
step over the stacked parameters. Its examples/s bound any sweep of these models from above,
so ``floor / sequential`` is the most a sweep can gain on this device. On the CPU both halves
are bound by memory traffic: Adam reads and writes 7 numbers per parameter (8 models: 5.2
million parameters, 146 MB a step) and a weight gradient at batch 20 is 20 multiply-adds per
number written.

    python benchmarks/sweep.py [--examples 6000] [--batches 20,128] [--repeats 2]
                               [--threads 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import describe, matmul_peak, mnist_or_synthetic, synchronize, vae_flops
from torch.func import functional_call, vmap

import vaekit
from vaekit.model import ModelConfig, build_model
from vaekit.training.config import TrainConfig
from vaekit.training.sweep import StackedStep, Sweep, SweepPlan, _contiguous

MODEL = {"hidden": [400], "latent_dim": 20}
BETAS, SEEDS = [0.25, 0.5, 1.0, 4.0], [0, 1]


def sequential_rate(data: vaekit.Dataset, plan: SweepPlan, folder: Path) -> float:
    """Examples/s of the N members trained one after another (epoch 2 of each)."""
    seconds = 0.0
    for name, config in plan.members():
        torch.manual_seed(config.seed)
        model = build_model(ModelConfig.from_options(data.shape, **plan.model))
        history = vaekit.fit(model, data, config, folder / name, progress=False)
        seconds += history[-1]["train_time_s"]
    return len(plan.members()) * len(data.train_x) / seconds


def sweep_rate(data: vaekit.Dataset, plan: SweepPlan, folder: Path) -> tuple[float, float, int]:
    """Examples/s of the N members trained together (epoch 2), the floor's (see above), and
    the bytes of the sweep's training state."""
    sweep = Sweep(folder, plan, data, progress=False)
    sweep.create()
    sweep.run()
    history = sweep.members[0].run_dir.read_metrics()  # type: ignore[union-attr]
    stacked = StackedStep(sweep.members)
    stacked.step(*_one_batch(sweep))  # Adam's moments exist after a step
    state = _bytes(
        [*stacked.params.values(), *(p.grad for p in stacked.params.values())],
        [t for s in stacked.optimizer.state.values() for t in s.values()],
    )
    floor = floor_rate(sweep, plan.train.batch_size, torch.device(plan.train.device))
    return len(sweep.members) * len(data.train_x) / history[-1]["train_time_s"], floor, state


def floor_rate(sweep: Sweep, batch: int, device: torch.device, steps: int = 60) -> float:
    """Examples/s of the sweep's networks (forward and backward) and Adam alone (see above)."""
    stacked = StackedStep(sweep.members)
    encoder, decoder = stacked.base.model.encoder, stacked.base.model.decoder
    latent = MODEL["latent_dim"]

    def networks(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k.removeprefix(prefix): v for k, v in params.items() if k.startswith(prefix)}

        features = functional_call(encoder, part("model.encoder."), (x,))
        return functional_call(decoder, part("model.decoder."), (features[..., :latent],)).sum()

    x = torch.rand(len(sweep.members), batch, *sweep.members[0].train.x.shape[1:], device=device)

    def step() -> None:
        for param in stacked.params.values():
            param.grad = None
        vmap(networks)(stacked.params, x).sum().backward()
        for name, param in stacked.params.items():
            stacked.aliases[name].grad = _contiguous(param.grad)
        stacked.optimizer.step()

    for _ in range(5):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps * x.shape[0] * batch / (time.perf_counter() - start)


def _one_batch(sweep: Sweep) -> tuple[list[vaekit.Batch], list[torch.Tensor], list[float]]:
    order = torch.arange(len(sweep.members[0].train.x))
    drawn = [member._batch(order, 0) for member in sweep.members]
    return [d[0] for d in drawn], [d[1] for d in drawn], [1.0] * len(drawn)


def _bytes(*groups: list[torch.Tensor | None]) -> int:
    seen: dict[int, int] = {}
    for tensor in (t for group in groups for t in group if t is not None):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def single_state_bytes(data: vaekit.Dataset) -> int:
    """One model's parameters, gradients and Adam moments (float32)."""
    model = build_model(ModelConfig.from_options(data.shape, **MODEL))
    return 4 * 4 * sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=6000)
    parser.add_argument("--batches", default="20,128")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = mnist_or_synthetic(args.examples)
    data.test_x = data.test_x[:1000]
    peak = matmul_peak(device)
    flops = vae_flops(MODEL["hidden"], MODEL["latent_dim"])
    n = len(BETAS) * len(SEEDS)
    print(
        f"{describe(device)}, {data.name}, {len(data.train_x)} examples, {n} models of "
        f"784-400-20, matmul peak {peak:.0f} GFLOP/s, medians of {args.repeats}"
    )
    print(
        "| batch | one after another ex/s | sweep ex/s | sweep / sequential | sweep % of peak "
        "| floor ex/s | floor / sequential | floor % of peak |"
    )
    print("|---|---|---|---|---|---|---|---|")
    state = 0
    for batch in (int(b) for b in args.batches.split(",")):
        train = TrainConfig(epochs=2, batch_size=batch, device=args.device, compile="off")
        plan = SweepPlan(MODEL, train, BETAS, SEEDS)
        rates: dict[str, list[float]] = {"sequential": [], "sweep": [], "floor": []}
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as scratch:
                rates["sequential"].append(sequential_rate(data, plan, Path(scratch) / "one"))
                rate, floor, state = sweep_rate(data, plan, Path(scratch) / "sweep")
                rates["sweep"].append(rate)
                rates["floor"].append(floor)
        one, together, floor = (statistics.median(rates[k]) for k in rates)
        percent = [100 * rate * flops / 1e9 / peak for rate in (together, floor)]
        print(
            f"| {batch} | {one:,.0f} | {together:,.0f} | {together / one:.2f} | {percent[0]:.0f}% "
            f"| {floor:,.0f} | {floor / one:.2f} | {percent[1]:.0f}% |"
        )
    single = single_state_bytes(data)
    print(
        f"training state: sweep {state / 2**20:.1f} MiB, {n} single models "
        f"{n * single / 2**20:.1f} MiB (ratio {state / (n * single):.2f}; data shared, once)"
    )


if __name__ == "__main__":
    main()
