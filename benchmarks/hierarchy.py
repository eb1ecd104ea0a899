"""Training throughput of hierarchies: vaekit's two-layer step against a bare loop of the same
networks, and the ladder's step against the one-layer step it extends.

- burda-2l: Burda et al.'s 784-(200-200)-100-(100-100)-50 tanh, inferred bottom-up, as
  ``--recipe burda-vae-2l`` builds it (batch 20, and 128); bare: the same networks written out
  as one function (tensors in memory, random batches, a Bernoulli draw of each, forward,
  backward, fused Adam), the loss the same negative ELBO with the Monte Carlo rate.
- fast-ladder: ``--recipe fast-ladder``'s networks (784-512-512 ELU, z1 = 50, z2 = 32 top-down,
  256-unit layer networks) against ``fast``'s one-layer 784-512-512-50 at batch 128.

vaekit's rates are its training loop's own examples/s in epoch 2 (eager and compiled), as in
``train_throughput.py``; medians of several alternating runs.

    python benchmarks/hierarchy.py              # 20,000 training examples per run, 3 repeats
    python benchmarks/hierarchy.py --device cuda
"""

from __future__ import annotations

import argparse
import collections
import itertools
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import bare_rate, describe, mnist_or_synthetic
from train_throughput import vaekit_rates

import vaekit

BURDA_2L = {
    "model": "hierarchy",
    "upper_layers": [50],
    "layer_hidden": [100, 100],
    "inference": "bottom-up",
}
LADDER = {
    "model": "hierarchy",
    "upper_layers": [32],
    "layer_hidden": [256],
    "inference": "top-down",
}


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


class BareTwoLayer(nn.Module):
    """q(z1|x) q(z2|z1), p(z2) p(z1|z2) p(x|z1), Burda et al.'s sizes, written out."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _mlp([784, 200, 200, 200])  # (μ1, s1)
        self.up = _mlp([100, 100, 100, 100])  # (μ2, s2)
        self.down = _mlp([50, 100, 100, 200])  # p(z1|z2)'s (μ, s)
        self.decoder = _mlp([100, 200, 200, 784])

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        def gaussian(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            loc, raw = h.chunk(2, -1)
            return loc, F.softplus(raw) + 1e-6

        loc1, scale1 = gaussian(self.encoder(x))
        noise1 = torch.randn_like(loc1)
        z1 = loc1 + scale1 * noise1
        loc2, scale2 = gaussian(self.up(z1))
        noise2 = torch.randn_like(loc2)
        z2 = loc2 + scale2 * noise2
        log_q = -(0.5 * noise1.square() + scale1.log()).sum(-1)
        log_q = log_q - (0.5 * noise2.square() + scale2.log()).sum(-1)
        loc_p, scale_p = gaussian(self.down(z2))
        log_p = -(0.5 * ((z1 - loc_p) / scale_p).square() + scale_p.log()).sum(-1)
        log_p = log_p - 0.5 * z2.square().sum(-1)
        log_likelihood = -F.binary_cross_entropy_with_logits(
            self.decoder(z1), x, reduction="none"
        ).sum(-1)
        return -(log_likelihood + log_p - log_q).sum()


def burda_row(data: vaekit.Dataset, batch: int, repeats: int, device: torch.device) -> str:
    rates: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(repeats):
        for compile in ("off", "on"):
            loop = vaekit_rates(data, [200, 200], 100, "tanh", batch, compile, device, BURDA_2L)
            rates[compile].append(loop[1])
        torch.manual_seed(0)
        rates["bare"].append(bare_rate(BareTwoLayer(), data, batch, device))
    eager, compiled, bare = (statistics.median(rates[k]) for k in ("off", "on", "bare"))
    return (
        f"| burda-2l, bottom-up | {batch} | {bare:,.0f} | {eager:,.0f} | {compiled:,.0f} | "
        f"{eager / bare:.2f} | {compiled / bare:.2f} |"
    )


def ladder_row(data: vaekit.Dataset, repeats: int, device: torch.device) -> str:
    rates: dict[str, list[float]] = collections.defaultdict(list)
    net = ([512, 512], 50, "elu")
    for _ in range(repeats):
        for compile in ("off", "on"):
            one = vaekit_rates(data, *net, 128, compile, device)[1]
            ladder = vaekit_rates(data, *net, 128, compile, device, LADDER)[1]
            rates[f"one {compile}"].append(one)
            rates[f"ladder {compile}"].append(ladder)
    median = {key: statistics.median(values) for key, values in rates.items()}
    return (
        f"| fast-ladder vs fast | 128 | {median['one off']:,.0f} / {median['ladder off']:,.0f} | "
        f"{median['one on']:,.0f} / {median['ladder on']:,.0f} | "
        f"{median['ladder off'] / median['one off']:.2f} | "
        f"{median['ladder on'] / median['one on']:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000, help="training examples per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()
    data = mnist_or_synthetic(args.examples)
    device = torch.device(args.device)
    print(
        f"{describe(device)}, {data.name}, {args.examples} examples per run, median of "
        f"{args.repeats}; vaekit: its training loop's own ex/s in epoch 2"
    )
    print(
        "| model | batch | bare ex/s | vaekit eager | vaekit compiled | eager/bare | "
        "compiled/bare |"
    )
    print("|---|---|---|---|---|---|---|")
    for batch in (20, 128):
        print(burda_row(data, batch, args.repeats, device), flush=True)
    print(
        "\n| model | batch | eager ex/s: one layer / ladder | compiled ex/s: one layer / "
        "ladder | eager ladder/one | compiled ladder/one |"
    )
    print("|---|---|---|---|---|---|")
    print(ladder_row(data, args.repeats, device), flush=True)


if __name__ == "__main__":
    main()
