"""``vaekit compare RUN1 RUN2 ...``: the identity's terms of several runs side by side.

Each run's ``evaluation.json`` (its fullest evaluation of its current weights) gives log p̂_K,
the ELBO, its reconstruction and rate, the gap, the split of the rate into I_q(x; z) and
KL(q(z) || p(z)) where it was computed, and the share of examples with Pareto k̂ > 0.7. The
runs must have trained on the same data (the SHA-256 their config.json records). Where two
evaluations are of the same examples, the difference of log p̂_K to the first run is given
with its paired standard error (the per-example differences' spread, smaller than either
run's own: the examples' difficulty cancels).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from vaekit.errors import ConfigError
from vaekit.evaluation.statistics import Mean
from vaekit.training.run_dir import RunDirectory


def read_evaluations(paths: list[str]) -> dict[str, dict[str, Any]]:
    """Each run's evaluation of its current weights on its test split, by run name; one-line
    errors for a run without one, with a stale one, or trained on other data."""
    evaluations: dict[str, dict[str, Any]] = {}
    first_data: tuple[str, str] | None = None
    for path in paths:
        run = RunDirectory(path)
        model = run.load_model()
        evaluation, reason = run.evaluation_of(model)
        if evaluation is None:
            raise ConfigError(
                f"{path} has no evaluation (no readable, complete evaluation.json): run "
                f"'vaekit evaluate {path}' first"
            )
        if reason is not None:
            raise ConfigError(
                f"{path}'s evaluation.json is not of its model ({reason}): run "
                f"'vaekit evaluate {path}'"
            )
        digest = run.config.data.get("sha256", "")
        if first_data is None:
            first_data = (path, digest)
        elif digest != first_data[1]:
            raise ConfigError(
                f"{path} and {first_data[0]} trained on different data (SHA-256 "
                f"{digest[:12] or 'unknown'} and {first_data[1][:12] or 'unknown'}): their "
                "numbers are not comparable"
            )
        evaluation["model_parts"] = {
            "model": model.config.model.name,
            "prior": model.config.prior.name,
            "posterior": model.config.posterior.name,
        }
        evaluations[_unique_name(Path(path), evaluations)] = evaluation
    return evaluations


def _unique_name(path: Path, taken: dict[str, Any]) -> str:
    name = path.name if path.name != "model.safetensors" else path.parent.name
    return name if name not in taken else str(path)


def paired_difference(
    evaluation: dict[str, Any], reference: dict[str, Any], name: str = "log_px"
) -> Mean | None:
    """The mean per-example difference of ``name`` between two evaluations of the same
    examples, with its paired standard error; None if they are not of the same examples."""
    same = evaluation["n"] == reference["n"] and evaluation.get("info", {}).get(
        "split", "test"
    ) == reference.get("info", {}).get("split", "test")
    if not same:
        return None
    values = torch.tensor(evaluation["per_example"][name], dtype=torch.float64)
    base = torch.tensor(reference["per_example"][name], dtype=torch.float64)
    return Mean.of(values - base)


def comparison_table(evaluations: dict[str, dict[str, Any]]) -> str:
    """The terms (rows) of every run (columns), nats per example."""
    names, runs = list(evaluations), list(evaluations.values())
    conditional = any(e.get("conditional") for e in runs)
    terms = {
        "model": lambda e: e["model_parts"]["model"],
        "prior": lambda e: e["model_parts"]["prior"],
        "posterior": lambda e: e["model_parts"]["posterior"],
        "examples, K": lambda e: f"{e['n']}, K = {e['k']}",
        "log p̂_K(x), or (x|y) given labels" if conditional else "log p̂_K(x)": lambda e: (
            _mean(e["log_px"]) + (" (x|y)" if e.get("conditional") else "")
        ),
        "ELBO": lambda e: _mean(e["elbo"]),
        "  reconstruction": lambda e: _mean(e["reconstruction"]),
        "  rate": lambda e: _mean(e["rate"]),
        "    I_q(x; z)": lambda e: _number(e.get("mutual_information")),
        "    KL(q(z) || p(z))": lambda e: _number(e.get("marginal_kl")),
        "gap log p̂ − ELBO": lambda e: _mean(e["gap"]),
        "Pareto k̂ > 0.7": _unreliable,
        f"log p̂_K − {names[0]}'s (paired)": lambda e: (
            "(reference)" if e is runs[0] else _signed(paired_difference(e, runs[0]))
        ),
    }
    rows = [(label, [str(term(e)) for e in runs]) for label, term in terms.items()]
    width = max(len(label) for label in terms)
    columns = [
        max(len(name), *(len(values[i]) for _, values in rows)) for i, name in enumerate(names)
    ]
    lines = [_line("", names, width, columns)]
    lines += [_line(label, values, width, columns) for label, values in rows]
    lines.append("nats per example, summed over dimensions; mean ± standard error")
    return "\n".join(lines)


def _line(label: str, values: list[str], width: int, columns: list[int]) -> str:
    cells = (value.rjust(column) for value, column in zip(values, columns, strict=True))
    return label.ljust(width) + "  " + "  ".join(cells)


def _mean(value: dict[str, float]) -> str:
    return str(Mean(value["value"], value["stderr"]))


def _signed(mean: Mean | None) -> str:
    """A difference with its standard error; a dash where there is none."""
    return "—" if mean is None else f"{mean.value:+.2f} ± {mean.stderr:.2f}"


def _number(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.2f}"


def _unreliable(evaluation: dict[str, Any]) -> str:
    share = evaluation.get("weights", {}).get("pareto_k_unreliable_share")
    return "—" if share is None else f"{100 * share:.1f}% of examples"


REPRODUCED_WITHIN = 0.01
"""Nats allowed beyond 3 standard errors when an evaluation is checked against a saved one
(round-off between machines; the same draws on the same machine agree exactly)."""


def check_claim(claim: dict[str, Any], new: dict[str, Any]) -> str:
    """Whether evaluation ``new`` reproduces ``claim`` (a saved evaluation: a model card's),
    in one line: the paired difference of log p̂_K over the same examples, within 3 standard
    errors (+ 0.01 nats)."""
    said = f"the saved evaluation (K = {claim['k']}, {claim['n']} examples)"
    if claim["k"] != new["k"]:
        return f"{said} is of another K: not compared (log p̂_K rises with K)"
    difference = paired_difference(new, claim)
    if difference is None:
        return f"{said} is of other examples: not compared"
    claimed = claim["log_px"]["value"]
    verdict = (
        "reproduced"
        if abs(difference.value) <= 3 * difference.stderr + REPRODUCED_WITHIN
        else "NOT reproduced"
    )
    return (
        f"{said} claims log p̂_K({'x|y' if claim.get('conditional') else 'x'}) = "
        f"{claimed:.2f}: {verdict} (this evaluation differs by "
        f"{difference.value:+.3f} ± {difference.stderr:.3f} nats, paired over the examples)"
    )
