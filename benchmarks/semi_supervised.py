"""One M2 training step (forward and backward of the objective) on MNIST-sized inputs: the
encoder run once per example and its features shared by the classes of an unlabelled one (as
``semi_supervised_elbo`` does), against the encoder run once per (example, class) row (what
the conditional ELBO of the expanded batch would do). Same model, same batch, same draws:
the values agree; the ratio is of the medians of alternating repeats in one process.

    python benchmarks/semi_supervised.py [--batch 200] [--repeats 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import mnist_or_synthetic

import vaekit
from vaekit.data.labelled import semi_supervised_set
from vaekit.model import SemiSupervisedVAE
from vaekit.objectives.elbo import _elbo_given_labels, semi_supervised_elbo


def per_row_encoder(model: vaekit.VAE, batch: vaekit.Batch, noise: torch.Tensor) -> torch.Tensor:
    """The expensive part of the bound the slow way: every (example, class) row encoded."""
    known = batch.y >= 0
    labelled, unlabelled = known.nonzero().squeeze(1), (~known).nonzero().squeeze(1)
    rows = torch.cat([labelled, unlabelled.repeat(model.classes)])
    given = torch.arange(model.classes).repeat_interleave(len(unlabelled))
    expanded = vaekit.Batch(batch.x[rows], torch.cat([batch.y[labelled], given]))
    terms = _elbo_given_labels(model, expanded, 1, noise[:, rows], "sum", "reparam")
    return terms.elbo + model.label_logits(batch.x).logsumexp(-1).sum()


def shared_encoder(model: vaekit.VAE, batch: vaekit.Batch, noise: torch.Tensor) -> torch.Tensor:
    terms, log_q_y = semi_supervised_elbo(model, batch, 1, noise, "sum")
    return terms.elbo + log_q_y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = mnist_or_synthetic(20_000)
    x = (data.train_x > 0.5).float()  # one fixed binarisation
    train, rows, _ = semi_supervised_set(vaekit.Batch(x, data.train_y), 100, 10, seed=0)
    assert rows is not None
    batch = train.select(rows[torch.randperm(len(rows))[: args.batch]])
    model = SemiSupervisedVAE(
        (1, 28, 28), 50, model="semi-supervised", classes=10, hidden=[500], activation="softplus"
    )
    noise = torch.randn(1, args.batch, model.noise_dim)
    times: dict[str, list[float]] = {"per row": [], "shared": []}
    steps = {"per row": per_row_encoder, "shared": shared_encoder}
    for _ in range(args.repeats):
        for name, step in steps.items():
            model.zero_grad()
            start = time.perf_counter()
            step(model, batch, noise).backward()
            times[name].append(time.perf_counter() - start)
    labelled = int((batch.y >= 0).sum())
    print(f"batch {args.batch} ({labelled} labelled), {torch.get_num_threads()} threads")
    for name, values in times.items():
        print(f"  encoder {name:8} {1000 * statistics.median(values):7.1f} ms a step")
    ratio = statistics.median(times["per row"]) / statistics.median(times["shared"])
    print(f"  shared encoder is {ratio:.2f}x faster")


if __name__ == "__main__":
    main()
