"""Evaluation: every term of log p(x) = ELBO + KL(q(z|x) || p(z|x)) and the diagnostics."""

from vaekit.evaluation.evaluate import Evaluation, evaluate
from vaekit.evaluation.statistics import Mean

__all__ = ["Evaluation", "Mean", "evaluate"]
