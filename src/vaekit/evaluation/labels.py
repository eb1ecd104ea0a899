"""What a label is worth to a conditional model, and the classifier the model implies.

For every example and every class c, log p̂_K(x|y=c) from K draws of q(z|x, c); with p(y) the
classes' frequencies (the training labels'),

    log p̂(x)    = logsumexp_c [log p(c) + log p̂_K(x|c)]          (the model's own marginal)
    log p(y|x)  = log p(y) + log p̂_K(x|y) − log p̂(x)
    worth(x, y) = log p̂_K(x|y) − log p̂(x) = log p(y|x) − log p(y)  ≤ −log p(y)

so within one model a label is worth at most −log p(y) nats (log 10 for ten balanced
classes), and argmax_c p(c|x) is a generative classifier of x. Each log p̂_K is a
lower bound; their differences are estimates, not bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vaekit.data.batch import Batch
from vaekit.evaluation.statistics import Mean
from vaekit.objectives.importance import log_px


@dataclass
class LabelWorth:
    """The label's worth (nats per example, mean ± s.e.), its ceiling E[−log p(y)], and the
    test error of argmax_c p(c|x) (a share of the examples)."""

    worth: Mean
    ceiling: float
    error: float
    k: int

    def table(self) -> str:
        return "\n".join(
            [
                f"  label's worth     {self.worth!s:>18}   log p̂(x|y) − log p̂(x), at most "
                f"{self.ceiling:.2f} (−log p(y)); every class's log p̂_K(x|y), K = {self.k}",
                f"  classifier        {100 * self.error:.2f}% test error (argmax_y p(y|x))",
            ]
        )


@torch.no_grad()
def class_evidence(
    model: torch.nn.Module, batch: Batch, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """log p̂_K(x|y=c) for every example and class, ``(B, classes)``, in nats."""
    model.eval()
    columns = []
    for label in range(model.classes):
        given = Batch(batch.x, torch.full_like(batch.y, label))
        columns.append(log_px(model, given, k, generator=generator).double())
    return torch.stack(columns, dim=1)


@torch.no_grad()
def classification_error(model: torch.nn.Module, batch: Batch, batch_size: int = 1000) -> float:
    """The share of ``batch``'s examples whose label the model's classifier q(y|x) gets wrong
    (argmax_y q(y|x) ≠ y)."""
    wrong = sum(
        int((model.predict(batch.x[i : i + batch_size]) != batch.y[i : i + batch_size]).sum())
        for i in range(0, len(batch.x), batch_size)
    )
    return wrong / len(batch.x)


def label_worth(
    evidence: torch.Tensor, labels: torch.Tensor, class_frequencies: torch.Tensor, k: int
) -> LabelWorth:
    """:class:`LabelWorth` from :func:`class_evidence` ``(B, C)``, the true labels ``(B,)``
    and p(y) ``(C,)``."""
    log_prior = class_frequencies.double().log()
    joint = evidence + log_prior
    marginal = torch.logsumexp(joint, dim=1)
    true = evidence.gather(1, labels.long().unsqueeze(1)).squeeze(1)
    error = float((joint.argmax(1) != labels).double().mean())
    ceiling = float(-log_prior[labels.long()].mean())
    return LabelWorth(Mean.of(true - marginal), ceiling, error, k)
