"""The labels a semi-supervised run trains with: a fixed, seeded, class-balanced subset kept,
every other label hidden (−1)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from vaekit.data.batch import Batch
from vaekit.errors import ConfigError

MISSING = -1
"""A hidden label."""


def labelled_subset(labels: torch.Tensor, n: int, classes: int, seed: int) -> torch.Tensor:
    """The indices (sorted) of ``n`` examples, n // classes of each class and one more of the
    first n % classes classes in a seeded order, each class's drawn at random: the same for
    the same labels, n and seed."""
    if not 0 < n <= len(labels):
        raise ConfigError(f"--labelled must be from 1 to the {len(labels)} training examples")
    generator = torch.Generator().manual_seed(seed)
    extra = torch.randperm(classes, generator=generator)[: n % classes]
    chosen = []
    for label in range(classes):
        members = (labels == label).nonzero().squeeze(1)
        wanted = n // classes + int(bool((extra == label).any()))
        if len(members) < wanted:
            raise ConfigError(
                f"--labelled {n} takes {wanted} examples of class {label}, which has "
                f"{len(members)}; label fewer"
            )
        chosen.append(members[torch.randperm(len(members), generator=generator)[:wanted]])
    return torch.cat(chosen).sort().values


class LabelledWeights(NamedTuple):
    """What a labelled row weighs in a semi-supervised epoch's objective, where the N_l
    labelled examples of N are each repeated R times an epoch: its bound ``bound`` = 1/R
    times, its α log q(y|x) ``classification`` = N / (N_l R) times. An epoch then counts each
    labelled example's bound once and its log q(y|x) α N/N_l times: Kingma et al. (2014)'s
    J^α = Σ_labelled L(x, y) + Σ_unlabelled U(x) + α N E_labelled[log q(y|x)] (their α 0.1),
    with R times less variance than one row each (their code gives every batch its share of
    the labelled examples)."""

    bound: float = 1.0
    classification: float = 1.0


ONCE_EACH = LabelledWeights()
"""A labelled row's weights where each example is one row an epoch (every label given)."""


def semi_supervised_set(
    train: Batch, n: int | None, classes: int, seed: int
) -> tuple[Batch, torch.Tensor | None, LabelledWeights]:
    """The training set of a semi-supervised run: every example, with only the labels of
    :func:`labelled_subset` kept (every label, with ``n`` None), the rows an epoch goes
    through, every example once and the labelled ones repeated so that they are about half of
    every batch, and the :class:`LabelledWeights` of a labelled row. The rows index the
    examples (None: each once), so the repeats cost no copy of x."""
    assert train.y is not None
    if n is None:
        return train, None, ONCE_EACH
    index = labelled_subset(train.y.cpu(), n, classes, seed).to(train.y.device)
    hidden = torch.full_like(train.y, MISSING)
    hidden[index] = train.y[index]
    repeats = max(1, round((len(train.y) - n) / n))
    rows = torch.cat([torch.arange(len(train.y), device=train.y.device), index.repeat(repeats - 1)])
    weights = LabelledWeights(1 / repeats, len(train.y) / (n * repeats))
    return Batch(train.x, hidden), rows, weights
