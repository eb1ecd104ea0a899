"""Measure every term of log p(x) = ELBO(x) + KL(q(z|x) || p(z|x)) for a trained model.

Per example, from the same K draws z_k ~ q(z|x):
    reconstruction = (1/K) Σ_k log p(x|z_k)          rate = KL(q(z|x) || p(z))  (analytic)
    ELBO           = reconstruction − rate
    log p̂_K(x)     = logsumexp_k log w_k − log K,   log w = log p(x|z) + log p(z) − log q(z|x)
    gap            = log p̂_K(x) − ELBO   (an estimate, from below, of KL(q(z|x) || p(z|x)))
and for a K sweep, L_K' = E[log p̂_K'(x)] estimated by the mean of log p̂_K' over the K / K'
disjoint groups of the K draws (unbiased for L_K'; log p̂_K itself is always one logsumexp
over all K).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vaekit.data.dataset import Dataset, protocol_examples
from vaekit.errors import ConfigError
from vaekit.evaluation.diagnostics import (
    ACTIVE_THRESHOLD,
    active_units,
    aggregate_posterior_kl,
    kl_per_dimension,
)
from vaekit.evaluation.statistics import Mean
from vaekit.objectives.importance import iter_log_weights
from vaekit.training.io import atomic_write_bytes, atomic_write_json

ROWS_PER_CHUNK = 1024
"""Decoder rows (samples x examples) per chunk. Small chunks keep the decoder's output in cache
for the likelihood and logsumexp that read it: on 2 CPU cores (784-400-20, K = 5000) 1,024 rows
ran at 47 images/s against 21 images/s for 32,768 rows (benchmarks/eval_throughput.py)."""


@dataclass
class Evaluation:
    """Every term of the identity, averaged over the evaluated examples (nats per example)."""

    n: int
    k: int
    likelihood: str
    data_dim: int
    elbo: Mean
    reconstruction: Mean
    rate: Mean
    log_px: Mean
    gap: Mean
    bits_per_dim: float | None
    k_sweep: list[dict[str, Any]]
    kl_per_dim: list[float]
    active: list[bool]
    active_units: int
    mutual_information: float
    marginal_kl: float
    seconds: float
    warnings: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    per_example: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["per_example"] = {
            name: [round(v, 4) for v in self.per_example[name].tolist()]
            for name in ("elbo", "log_px")
        }
        for name in ("elbo", "reconstruction", "rate", "log_px", "gap"):
            out[name] = asdict(getattr(self, name))
        out["units"] = "nats per example, summed over dimensions"
        out["active_threshold"] = ACTIVE_THRESHOLD
        return out

    def table(self) -> str:
        """A plain-text table of the identity and the diagnostics."""
        density = self.bits_per_dim is None  # a density of x, not a probability of it
        bpd = "" if density else f"  ({self.bits_per_dim:.4f} bits/dim)"
        kind = " (a density of x, not comparable with discrete likelihoods)" if density else ""
        rows = [
            f"{self.n} examples, K = {self.k}, {self.likelihood} likelihood{kind}; nats per "
            "example (mean ± standard error)",
            f"  log p̂_K(x)        {self.log_px!s:>18}{bpd}",
            f"  ELBO              {self.elbo!s:>18}",
            f"    reconstruction  {self.reconstruction!s:>18}",
            f"    rate (KL to p(z)) {self.rate!s:>16}",
            f"  gap log p̂ − ELBO  {self.gap!s:>18}   (≈ KL(q(z|x) || p(z|x)))",
            f"  rate = I_q(x;z) {self.mutual_information:.2f} + KL(q(z) || p(z)) "
            f"{self.marginal_kl:.2f}",
            f"  active units      {self.active_units} of {len(self.kl_per_dim)} "
            f"(Cov_x E_q[z_d] > {ACTIVE_THRESHOLD})",
            "  KL per dimension  " + " ".join(f"{v:.2f}" for v in self.kl_per_dim),
        ]
        if self.k_sweep:
            rows.append("  K sweep:          K    log p̂_K(x)            gap")
            rows += [
                f"                {s['k']:>7}  {s['log_px']:>10.2f} ± {s['stderr']:.2f}  "
                f"{s['gap']:>9.2f}"
                for s in self.k_sweep
            ]
        rows += [f"  warning: {w}" for w in self.warnings]
        rows.append(f"  ({self.seconds:.1f} s)")
        return "\n".join(rows)

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    def save_per_example(self, path: str | Path, labels: torch.Tensor | None = None) -> None:
        """CSV with one row per example: index, label, elbo, log_px, gap."""
        columns = ["elbo", "reconstruction", "rate", "log_px", "gap"]
        lines = [["index", "label", *columns]]
        values = torch.stack([self.per_example[c] for c in columns], 1).tolist()
        for i, row in enumerate(values):
            label = "" if labels is None else int(labels[i])
            lines.append([i, label, *(f"{v:.4f}" for v in row)])
        text = "\n".join(",".join(map(str, line)) for line in lines) + "\n"
        atomic_write_bytes(path, text.encode())


def _warnings(active: int, latent_dim: int, mean_rate: float) -> list[str]:
    if active == 0:
        return [
            f"posterior collapse: none of the {latent_dim} latent dimensions is active and the "
            f"rate is {mean_rate:.2f} nats: the decoder ignores z (try KL warm-up, a smaller "
            "decoder, or a lower β)"
        ]
    if active < max(2, latent_dim // 10):
        return [f"only {active} of {latent_dim} latent dimensions are active: most of z is unused"]
    return []


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: torch.Tensor | Dataset,
    k: int = 5000,
    *,
    split: str = "test",
    k_sweep: list[int] | tuple[int, ...] = (),
    chunk_size: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Evaluation:
    """Evaluate ``model`` with K importance samples on examples ``(N, *input_shape)``, or on
    the ``split`` of a :class:`Dataset` (binarised with the fixed test seed under a Bernoulli
    likelihood: the standard protocol).

    Examples are processed in batches and samples in chunks of at most ``ROWS_PER_CHUNK``
    decoder rows, so memory stays bounded whatever K. Random draws come from a generator
    seeded with ``seed``.
    """
    if k < 1 or any(s < 1 or s > k for s in k_sweep):
        raise ConfigError(f"K must be >= 1 and every --k-sweep value within 1..{k}")
    x = (
        protocol_examples(data, split, model.config.likelihood)[0]
        if isinstance(data, Dataset)
        else data
    )
    model.likelihood.check(x)
    model.eval()
    start_time = time.perf_counter()
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    chunk = chunk_size or max(1, min(k, ROWS_PER_CHUNK))
    batch = max(1, min(len(x), ROWS_PER_CHUNK // chunk))
    columns: dict[str, list[torch.Tensor]] = {
        n: [] for n in ("elbo", "reconstruction", "rate", "log_px", "loc", "scale")
    }
    sweep: dict[int, list[torch.Tensor]] = {s: [] for s in k_sweep}
    for begin in tqdm(
        range(0, len(x), batch), disable=not progress or None, unit="batch", leave=False
    ):
        xb = x[begin : begin + batch].to(device)
        loc, scale = model.posterior_parameters(xb)
        log_w, log_lik = zip(
            *iter_log_weights(model, xb, k, chunk, generator=generator), strict=True
        )
        log_w_all = torch.cat(log_w).double()  # (K, b)
        reconstruction = torch.cat(log_lik).double().mean(0)
        kl = model.prior.kl(loc, scale).double()
        columns["reconstruction"].append(reconstruction)
        columns["rate"].append(kl)
        columns["elbo"].append(reconstruction - kl)
        columns["log_px"].append(torch.logsumexp(log_w_all, 0) - math.log(k))
        columns["loc"].append(loc)
        columns["scale"].append(scale)
        for size, parts in sweep.items():
            groups = log_w_all[: (k // size) * size].reshape(k // size, size, -1)
            parts.append((torch.logsumexp(groups, 1) - math.log(size)).mean(0))
    per = {name: torch.cat(parts) for name, parts in columns.items()}
    loc, scale = per.pop("loc"), per.pop("scale")
    per = {name: values.cpu() for name, values in per.items()}
    per["gap"] = per["log_px"] - per["elbo"]
    kl_dims = kl_per_dimension(loc, scale)
    active_mask = active_units(loc)
    active = int(active_mask.sum())
    marginal_kl = aggregate_posterior_kl(loc, scale, generator)
    mean_rate = float(per["rate"].mean())
    data_dim = math.prod(x.shape[1:])
    likelihood = model.config.likelihood
    log_px_mean = Mean.of(per["log_px"])
    return Evaluation(
        n=len(x),
        k=k,
        likelihood=likelihood,
        data_dim=data_dim,
        elbo=Mean.of(per["elbo"]),
        reconstruction=Mean.of(per["reconstruction"]),
        rate=Mean.of(per["rate"]),
        log_px=log_px_mean,
        gap=Mean.of(per["gap"]),
        bits_per_dim=(-log_px_mean.value / (data_dim * math.log(2)))
        if model.likelihood.discrete
        else None,
        k_sweep=[
            {
                "k": size,
                "log_px": bound.value,
                "stderr": bound.stderr,
                "gap": bound.value - float(per["elbo"].double().mean()),
            }
            for size, bound in sorted(
                (size, Mean.of(torch.cat(parts))) for size, parts in sweep.items()
            )
        ],
        kl_per_dim=kl_dims.tolist(),
        active=active_mask.tolist(),
        active_units=active,
        mutual_information=mean_rate - marginal_kl,
        marginal_kl=marginal_kl,
        seconds=time.perf_counter() - start_time,
        warnings=_warnings(active, len(kl_dims), mean_rate),
        per_example=per,
    )
