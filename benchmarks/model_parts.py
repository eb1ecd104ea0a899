"""The training step's cost with each prior and posterior, against the plain VAE's step.

``fast``'s networks (784-512-512-50 ELU, batch 128, the ELBO): the VampPrior (500 and 100
pseudo-inputs; its q(z|u) log-densities by matrix products, and, for reference, by the
broadcast formula every posterior has), the mixture-of-Gaussians prior and the IAF posterior
(2 steps of 320 hidden units); the plain VAE and the IAF also with ``--gradient stl`` (log q at
stopped parameters: for the IAF the flow run backwards). Forward, backward and the trainer's
Adam (fused) on random binary images, the models alternated, medians of several rounds; ratios
to the plain step measured in the same run.

    python benchmarks/model_parts.py [--threads 2] [--rounds 7]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

import vaekit
from vaekit.model.contract import Posterior
from vaekit.objectives.elbo import elbo
from vaekit.training.trainer import make_optimizer

NETWORKS = {"hidden": [512, 512], "activation": "elu"}
VARIANTS = {  # name: (the model's options, the ELBO's gradient)
    "plain (standard-normal prior, diagonal Gaussian)": ({}, "reparam"),
    "plain, --gradient stl": ({}, "stl"),
    "vamp, 500 pseudo-inputs": ({"prior": "vamp", "pseudo_inputs": 500}, "reparam"),
    "vamp, 500 pseudo-inputs, broadcast densities": (
        {"prior": "vamp", "pseudo_inputs": 500},
        "reparam",
    ),
    "vamp, 100 pseudo-inputs": ({"prior": "vamp", "pseudo_inputs": 100}, "reparam"),
    "mog, 10 components": ({"prior": "mog", "components": 10}, "reparam"),
    "iaf, 2 steps of 320": ({"posterior": "iaf"}, "reparam"),
    "iaf, 2 steps of 320, --gradient stl": ({"posterior": "iaf"}, "stl"),
}


def build(name: str, options: dict) -> vaekit.VAE:
    torch.manual_seed(0)
    model = vaekit.VAE((1, 28, 28), 50, **NETWORKS, **options)
    if name.endswith("broadcast densities"):
        model.posterior.log_prob_each = functools.partial(Posterior.log_prob_each, model.posterior)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10, help="steps per model and round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.rand(128, 1, 28, 28, generator=torch.Generator().manual_seed(0)).bernoulli()
    models = {name: build(name, options) for name, (options, _) in VARIANTS.items()}
    optimizers = {name: make_optimizer(m.parameters(), 1e-3) for name, m in models.items()}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            gradient = VARIANTS[name][1]
            start = time.perf_counter()
            for _ in range(args.steps):
                loss = -elbo(model, x, check=False, gradient=gradient).elbo.sum()
                optimizers[name].zero_grad()
                loss.backward()
                optimizers[name].step()
            seconds[name].append((time.perf_counter() - start) / args.steps)
    plain = statistics.median(next(iter(seconds.values())))
    print(
        f"{args.threads} threads, batch 128, median of {args.rounds} rounds of {args.steps} steps"
    )
    print("| model | ms per step | step / plain step |")
    print("|---|---|---|")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"| {name} | {1000 * median:.1f} | {median / plain:.2f} |")


if __name__ == "__main__":
    main()
