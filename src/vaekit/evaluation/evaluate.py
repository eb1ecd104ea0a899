"""Measure every term of log p(x) = ELBO(x) + KL(q(z|x) || p(z|x)) for a trained model.

Per example, from the same K draws z_k ~ q(z|x) (the objectives' log weights):
    reconstruction = (1/K) Σ_k log p(x|z_k)
    rate           = KL(q(z|x) || p(z)): the closed form where the model has one, else the
                     Monte Carlo mean (1/K) Σ_k [log q(z_k|x) − log p(z_k)]
    ELBO           = reconstruction − rate
    log p̂_K(x)     = logsumexp_k log w_k − log K,   log w = log p(x|z) + log p(z) − log q(z|x)
    gap            = log p̂_K(x) − ELBO   (an estimate, from below, of KL(q(z|x) || p(z|x)))
with the weights' effective sample size and Pareto k̂ (how far log p̂_K can be trusted:
:mod:`vaekit.evaluation.weights`), and for a K sweep, L_K' = E[log p̂_K'(x)] estimated by the
mean of log p̂_K' over the K / K' disjoint groups of the K draws (unbiased for L_K'; log p̂_K
itself is always one logsumexp over all K).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vaekit.checks import is_number, positive_int
from vaekit.data.batch import Batch, as_batch
from vaekit.data.dataset import Dataset
from vaekit.errors import ConfigError, first_line
from vaekit.evaluation.diagnostics import ACTIVE_THRESHOLD, active_units, aggregate_posterior_kl
from vaekit.evaluation.labels import classification_error
from vaekit.evaluation.layers import layer_starts
from vaekit.evaluation.statistics import Mean
from vaekit.evaluation.weights import (
    UNRELIABLE_K,
    effective_sample_size,
    largest_log_weights,
    pareto_k,
)
from vaekit.files import atomic_write_bytes, atomic_write_json
from vaekit.objectives.elbo import standard_noise
from vaekit.objectives.importance import iter_log_weights, log_mean_exp

PER_EXAMPLE_SAVED = ("elbo", "log_px", "ess", "pareto_k")
"""The per-example values an evaluation's JSON keeps (the report's worst examples)."""

LAYER_DRAWS = 100
"""Draws per example for the rate of each latent layer of a hierarchy (its Monte Carlo
estimate; the K draws give the total rate)."""

ROWS_PER_CHUNK = 1024
"""Decoder rows (samples x examples) per chunk on a CPU. Small chunks keep the decoder's output
in cache for the likelihood and logsumexp that read it: on 2 CPU cores (784-400-20,
K = 5000) 1,024 rows ran at 47 images/s against 21 images/s for 32,768 rows
(benchmarks/eval_throughput.py)."""

ACCELERATOR_VALUES = 65536 * 784
"""Decoder output values per chunk on a GPU, where a small chunk leaves the device waiting for
the host to launch its many small kernels: on an H200 (784-400-20, K = 5000, torch 2.11) chunks
of 1,024 MNIST rows ran at 249 images/s, 8,192 at 482, 65,536 at 4,278 and 262,144 at 4,550,
with a peak of 2.4 GB of GPU memory at the largest (benchmarks/results/eval-throughput-h200.log).
So 65,536 rows of MNIST's 784 values, ~205 MB a float32 buffer of the decoder's output; data
of more values an example gets proportionally fewer rows. Should the GPU still run out of
memory, the evaluation halves the chunk and evaluates the batch again."""


def rows_per_chunk(device: torch.device, data_dim: int) -> int:
    """Decoder rows per chunk of an evaluation on ``device`` of examples of ``data_dim``
    values: cache-sized on a CPU (``ROWS_PER_CHUNK``), ``ACCELERATOR_VALUES`` values on an
    accelerator."""
    if device.type == "cpu":
        return ROWS_PER_CHUNK
    return max(1, ACCELERATOR_VALUES // data_dim)


@dataclass
class Evaluation:
    """Every term of the identity, averaged over the evaluated examples (nats per example)."""

    n: int
    k: int
    likelihood: str
    rate_estimator: str
    data_dim: int
    elbo: Mean
    reconstruction: Mean
    rate: Mean
    log_px: Mean
    gap: Mean
    bits_per_dim: float | None
    k_sweep: list[dict[str, Any]]
    kl_per_dim: list[float | None]
    active: list[bool]
    active_units: int
    mutual_information: float | None
    marginal_kl: float | None
    seconds: float
    warnings: list[str] = field(default_factory=list)
    weights: dict[str, Any] = field(default_factory=dict)
    """The importance weights' diagnostics (see :func:`weight_summary`)."""
    conditional: bool = False
    """Whether the model was conditioned on the examples' labels y: every term is then of
    x given y (log p̂_K(x|y), ELBO(x|y))."""
    classifier_error: float | None = None
    """The share of the examples whose label the model's classifier q(y|x) gets wrong (a
    semi-supervised model's; None for the others)."""
    layers: list[dict[str, Any]] = field(default_factory=list)
    """A hierarchy's latent layers, bottom (z_1) to top: each one's ``size``, ``rate``
    (E_q[log q(z_l|·) − log p(z_l|z_{l+1})], a :class:`Mean`) and ``active_units``."""
    info: dict[str, Any] = field(default_factory=dict)
    per_example: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["per_example"] = {
            name: [None if math.isnan(v) else round(v, 4) for v in self.per_example[name].tolist()]
            for name in PER_EXAMPLE_SAVED
            if name in self.per_example
        }
        for name in ("elbo", "reconstruction", "rate", "log_px", "gap"):
            out[name] = asdict(getattr(self, name))
        out["units"] = "nats per example, summed over dimensions"
        out["active_threshold"] = ACTIVE_THRESHOLD
        return out

    def describe(self) -> str:
        """What was evaluated, in words (from ``info``)."""
        info = self.info
        split = info.get("split", "given examples")
        what = f"{self.n} examples" if split == "given examples" else f"{self.n} {split} examples"
        dataset = f" of {info['dataset']}" if info.get("dataset") else ""
        weights = info.get("weights_sha256", "")[:12]
        return f"{what}{dataset}, K = {self.k}, seed {info.get('seed', 0)}, weights {weights}"

    def table(self) -> str:
        """A plain-text table of the identity and the diagnostics."""
        density = self.bits_per_dim is None  # a density of x, not a probability of it
        bpd = "" if density else f"  ({self.bits_per_dim:.4f} bits/dim)"
        kind = " (a density of x, not comparable with discrete likelihoods)" if density else ""
        rate_note = "  (Monte Carlo, K draws)" if self.rate_estimator == "Monte Carlo" else ""
        given = " given the labels y" if self.conditional else ""
        log_px, elbo = term_names(self.conditional)
        rows = [
            f"{self.describe()}",
            f"{self.likelihood} likelihood{kind}; nats per example (mean ± standard error){given}",
            f"  {log_px:<19}{self.log_px!s:>18}{bpd}",  # p̂: 2 characters, 1 column
            f"  {elbo:<18}{self.elbo!s:>18}",
            f"    reconstruction  {self.reconstruction!s:>18}",
            f"    rate (KL to p(z)) {self.rate!s:>16}{rate_note}",
            f"  gap log p̂ − ELBO  {self.gap!s:>18}   (≈ KL(q(z|x) || p(z|x)))",
        ]
        if self.marginal_kl is not None:
            rows.append(
                f"  rate = I_q(x;z) {self.mutual_information:.2f} + KL(q(z) || p(z)) "
                f"{self.marginal_kl:.2f}"
            )
        faint = sum(
            1
            for kl, on in zip(self.kl_per_dim, self.active, strict=False)
            if on and kl is not None and kl < 0.1
        )
        note = f"; {faint} of them carry under 0.1 nats of KL each" if faint else ""
        rows.append(
            f"  active units      {self.active_units} of {len(self.active)} "
            f"(Cov_x E_q[z_d] > {ACTIVE_THRESHOLD}{note})"
        )
        if self.classifier_error is not None:
            rows.append(
                f"  classifier q(y|x) {100 * self.classifier_error:.2f}% error "
                "(argmax_y q(y|x) ≠ y)"
            )
        if self.kl_per_dim and not self.layers:
            rows.append("  KL per dimension  " + _numbers(self.kl_per_dim))
        if self.layers:
            rows += self._layer_rows()
        if self.k_sweep:
            rows.append("  K sweep:          K    log p̂_K(x)            gap")
            rows += [
                f"                {s['k']:>7}  {s['log_px']:>10.2f} ± {s['stderr']:.2f}  "
                f"{s['gap']:>9.2f}"
                for s in self.k_sweep
            ]
        if self.weights:
            ess, k_hat = describe_weights(self.weights, self.k)
            rows += [f"  weights' ESS      {ess}", f"  weights' Pareto k̂ {k_hat}"]
        rows += [f"  warning: {w}" for w in self.warnings]
        rows.append(f"  ({self.seconds:.1f} s)")
        return "\n".join(rows)

    def _layer_rows(self) -> list[str]:
        """A hierarchy's rate, active units and KL per dimension, layer by layer."""
        rows = [f"  per layer         rate (Monte Carlo, {LAYER_DRAWS} draws)   active units"]
        rows += [
            f"    z_{level} ({layer['size']} dims){'':<{5 - len(str(layer['size']))}}"
            f"{layer['rate']!s:>16}   {layer['active_units']} of {layer['size']}"
            for level, layer in enumerate(self.layers, start=1)
        ]
        if self.kl_per_dim:
            rows.append(
                "  KL per dimension (Monte Carlo, the same draws; –: prior or q not factorised)"
            )
            sizes = [layer["size"] for layer in self.layers]
            starts = layer_starts(sizes)
            rows += [
                f"    z_{level}  " + _numbers(self.kl_per_dim[start : start + size])
                for level, (start, size) in enumerate(zip(starts, sizes, strict=True), start=1)
            ]
        return rows

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    def save_per_example(
        self,
        path: str | Path,
        labels: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
        files: list[str] | None = None,
        classes: list[str] | None = None,
    ) -> None:
        """CSV with one row per example: its index in the evaluated examples, its ``rows``
        in the user's data and its file (an image folder's), its label and the label's name,
        then elbo, reconstruction, rate, log_px and gap (nats), and the weights' effective
        sample size and Pareto k̂ (empty: not computed, K < 25, or equal weights)."""
        columns = ["elbo", "reconstruction", "rate", "log_px", "gap", "ess", "pareto_k"]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["index", "row", "file", "label", "class", *columns])
        values = torch.stack([self.per_example[c] for c in columns], 1).tolist()
        for i, terms in enumerate(values):
            row = i if rows is None else int(rows[i])
            label = None if labels is None else int(labels[i])
            writer.writerow(
                [
                    i,
                    row,
                    "" if files is None else files[row],
                    "" if label is None else label,
                    "" if label is None or classes is None else classes[label],
                    *("" if math.isnan(v) else f"{v:.4f}" for v in terms),
                ]
            )
        atomic_write_bytes(path, buffer.getvalue().encode())


def _numbers(values: list[float | None]) -> str:
    """Nats to two decimals ("0.00" for a Monte Carlo −0.004), "–" where not defined."""
    return " ".join("–" if v is None else f"{round(v, 2) + 0.0:.2f}" for v in values)


def weight_summary(ess: torch.Tensor, k_hat: torch.Tensor) -> dict[str, Any]:
    """The share of examples whose k̂ exceeds 0.7 (log p̂_K unreliable there), k̂'s median and
    maximum, and quantiles of the effective sample size (of K); k̂ over the examples that
    have one (not where K < 25 or the weights are all equal)."""
    fitted = k_hat[~k_hat.isnan()]
    quantiles = torch.quantile(ess.double(), torch.tensor([0.0, 0.05, 0.5], dtype=torch.float64))
    summary: dict[str, Any] = {
        "ess_min": float(quantiles[0]),
        "ess_5%": float(quantiles[1]),
        "ess_median": float(quantiles[2]),
        "pareto_k_examples": len(fitted),
    }
    if len(fitted):
        summary["pareto_k_unreliable_share"] = float((fitted > UNRELIABLE_K).double().mean())
        summary["pareto_k_median"] = float(fitted.median())
        summary["pareto_k_max"] = float(fitted.max())
    return summary


def describe_weights(summary: dict[str, Any], k: int) -> tuple[str, str]:
    """``(effective sample size, Pareto k̂)`` in words, from :func:`weight_summary`."""
    ess = (
        f"median {summary['ess_median']:.1f} of K = {k}, 5% quantile {summary['ess_5%']:.1f}, "
        f"min {summary['ess_min']:.1f}"
    )
    if not summary["pareto_k_examples"]:
        return ess, "not fitted (K < 25, or equal weights)"
    share = summary["pareto_k_unreliable_share"]
    return ess, (
        f"median {summary['pareto_k_median']:.2f}, max {summary['pareto_k_max']:.2f}; "
        f"{100 * share:.1f}% of examples over {UNRELIABLE_K} (log p̂_K unreliable there)"
    )


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


def evaluation_batch(model: torch.nn.Module, data: Dataset, split: str = "test") -> Batch:
    """The ``split`` of ``data`` as ``model`` is evaluated on it: its likelihood's protocol
    (e.g. grey levels binarised once with the fixed test seed under a Bernoulli)."""
    x, y = data.split(split)
    return Batch(model.likelihood.evaluation_examples(x), y)


def evaluate_split(
    model: torch.nn.Module,
    data: Dataset,
    k: int,
    dataset: str,
    split: str = "test",
    limit: int | None = None,
    **options: Any,
) -> tuple[Evaluation, Batch, torch.Tensor]:
    """``vaekit evaluate``'s evaluation of ``data``'s ``split`` (its first ``limit`` examples;
    all: None), its ``info`` saying which (``dataset``: the name the run knows its data by);
    returns it with the batch evaluated and those examples' rows in the dataset. ``options``:
    :func:`evaluate`'s (``k_sweep``, ``seed``, ``progress``)."""
    batch, rows = evaluation_batch(model, data, split), data.index(split)
    if limit is not None:
        batch, rows = batch.select(slice(limit)), rows[:limit]
    result = evaluate(model, batch, k, **options)
    result.info.update(
        split=split,
        dataset=dataset,
        binarized=model.likelihood.evaluation_binarization,
        limit=limit,
    )
    return result, batch, rows


def term_names(conditional: bool) -> tuple[str, str]:
    """How an evaluation names its log p̂ and ELBO: of x, or of x given the labels y (a
    conditional model's: log p̂_K(x|y), ELBO(x|y))."""
    return ("log p̂_K(x|y)", "ELBO(x|y)") if conditional else ("log p̂_K(x)", "ELBO")


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: torch.Tensor | Batch | Dataset,
    k: int = 5000,
    *,
    split: str = "test",
    k_sweep: list[int] | tuple[int, ...] = (),
    chunk_size: int | None = None,
    chunk_rows: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Evaluation:
    """Evaluate ``model`` with K importance samples on examples ``(N, *input_shape)`` (or a
    :class:`Batch`), or on the ``split`` of a :class:`Dataset` (see :func:`evaluation_batch`:
    the standard protocol).

    Examples are processed in batches and samples in chunks of at most ``chunk_rows`` decoder
    rows (samples x examples; default :func:`rows_per_chunk` of the model's device), so memory
    stays bounded whatever K. Random draws come from a generator seeded with ``seed``.
    """
    positive_int("K (-k)", k)
    if any(s < 1 or s > k for s in k_sweep):
        raise ConfigError(f"every --k-sweep value must be within 1..{k} (K, -k)")
    if any(size is not None and size < 1 for size in (chunk_size, chunk_rows)):
        raise ConfigError("chunk_size and chunk_rows must be >= 1 (or None: by the device)")
    batch = evaluation_batch(model, data, split) if isinstance(data, Dataset) else as_batch(data)
    info = {
        "split": split if isinstance(data, Dataset) else "given examples",
        "k": k,
        "n": len(batch.x),
        "seed": seed,
        "weights_sha256": weights_fingerprint(model),
    }
    model.check_examples(batch)
    model.eval()
    start_time = time.perf_counter()
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    per = _evaluate_batches(model, batch, k, k_sweep, chunk_size, chunk_rows, generator, progress)
    result = _gathered(model, batch, k, per, k_sweep, generator, start_time)
    if model.infers_labels:
        result.classifier_error = classification_error(model, batch.to(device))
    result.info = info
    return result


def _evaluate_batches(
    model: torch.nn.Module,
    batch: Batch,
    k: int,
    k_sweep: list[int] | tuple[int, ...],
    chunk_size: int | None,
    chunk_rows: int | None,
    generator: torch.Generator,
    progress: bool,
) -> dict[str, torch.Tensor]:
    """The per-example columns of every batch's terms (see :func:`_evaluate_batch`) and of
    L_K at each ``k_sweep`` K, in chunks of ``chunk_size`` draws and ``chunk_rows`` decoder
    rows (None: by the device, see :func:`evaluate`). A batch that runs the GPU out of memory
    is evaluated again in chunks half as large."""
    device = next(model.parameters()).device
    chunk_rows = chunk_rows or rows_per_chunk(device, batch.x[0].numel())
    rows = _Rows(len(batch.x))
    bar = tqdm(total=len(batch.x), disable=not progress or None, unit="example", leave=False)
    begin = 0
    while begin < len(batch.x):
        chunk = chunk_size or max(1, min(k, chunk_rows))
        part = batch.select(slice(begin, begin + max(1, chunk_rows // chunk))).to(device)
        try:
            log_w = _evaluate_batch(model, part, k, chunk, generator, rows.at(begin))
        except torch.cuda.OutOfMemoryError as err:
            chunk_rows = _smaller_chunk(chunk, len(part.x), chunk_size is not None, err)
            continue
        for group in k_sweep:
            groups = log_w[: (k // group) * group].reshape(k // group, group, -1)
            rows.at(begin)(f"sweep {group}", log_mean_exp(groups.transpose(0, 1)).mean(0))
        begin += len(part.x)
        bar.update(len(part.x))
    bar.close()
    return rows.columns


def _smaller_chunk(chunk: int, examples: int, fixed: bool, err: BaseException) -> int:
    """Half the decoder rows of a chunk of ``chunk`` draws for ``examples`` examples that ran
    the GPU out of memory; a one-line error where it cannot shrink (one example, and one draw
    or ``fixed`` draws per chunk)."""
    if examples == 1 and (chunk == 1 or fixed):
        raise ConfigError(
            f"out of GPU memory evaluating one example's chunk of {chunk} draws "
            f"({first_line(err)}); evaluate on the CPU (--device cpu)"
        ) from err
    return max(1, chunk * examples // 2)


def _gathered(
    model: torch.nn.Module,
    batch: Batch,
    k: int,
    per: dict[str, torch.Tensor],
    k_sweep: list[int] | tuple[int, ...],
    generator: torch.Generator,
    start_time: float,
) -> Evaluation:
    """The :class:`Evaluation` from the per-example columns ``per`` that the batches
    gathered (L_K of each ``k_sweep`` K, each dimension's and layer's rate, q's parameters and
    means, the largest log-weight): the tail indices k̂, the gaps, KL(q(z) || p(z)) and the
    layers."""
    sweep = {group: per.pop(f"sweep {group}") for group in k_sweep}
    per_dim = per.pop("kl_per_dim", None)
    per_layer = per.pop("rate_per_layer", None)
    loc, scale, means = per.pop("loc", None), per.pop("scale", None), per.pop("means")
    per["pareto_k"] = pareto_k(per.pop("largest_log_w"))
    per = {name: values.cpu() for name, values in per.items()}
    per["gap"] = per["log_px"] - per["elbo"]
    marginal_kl = (
        None if loc is None else aggregate_posterior_kl(loc, scale, model.log_prior, generator)
    )
    result = _evaluation(model, batch.x, k, per, per_dim, means, marginal_kl, sweep, start_time)
    result.layers = _layers(model.layer_sizes, per_layer, result.active)
    result.conditional = model.uses_labels
    return result


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of the model's weights (names, dtypes, shapes, values): which model an
    evaluation was of."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}{array.dtype}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def mismatch(saved: dict[str, Any], model: torch.nn.Module, n_test: int) -> str | None:
    """Why a saved evaluation (``Evaluation.to_dict``) is not of ``model`` on its test split
    of ``n_test`` examples, or None. Evaluations from before vaekit recorded what it
    evaluated are taken as they are."""
    info = saved.get("info", {})
    weights = info.get("weights_sha256")
    if weights is not None and weights != weights_fingerprint(model):
        return "it was of other weights (the model has changed since)"
    if info.get("split", "test") != "test":
        return f"it was of the {info['split']} split"
    if len(saved.get("per_example", {}).get("log_px", [])) != saved.get("n") or saved["n"] > n_test:
        return "it was of other examples"
    return None


REQUIRED = ("per_example", "active", "n", "k", "log_px", "elbo")
"""The fields without which a saved evaluation is not read (older ones lack some others)."""


def well_formed(saved: Any) -> bool:
    """Whether ``saved`` (a parsed ``evaluation.json``) has the fields and types that the
    report, ``compare`` and ``export`` read: a damaged or forged file is then one line
    ("no readable evaluation"), not a traceback. Fields that older evaluations lack may be
    absent."""
    if not isinstance(saved, dict) or not all(key in saved for key in REQUIRED):
        return False
    checks = {
        "n": _positive_count,
        "k": _positive_count,
        "active_units": _count,
        "active": lambda v: isinstance(v, list) and all(isinstance(a, bool) for a in v),
        "kl_per_dim": lambda v: isinstance(v, list) and all(map(_number_or_none, v)),
        "per_example": lambda v: (
            isinstance(v, dict)
            and all(isinstance(a, list) and all(map(_number_or_none, a)) for a in v.values())
        ),
        "weights": lambda v: isinstance(v, dict) and all(map(_number_or_none, v.values())),
        "layers": lambda v: isinstance(v, list) and all(map(_is_layer, v)),
        "warnings": lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v),
        "info": lambda v: isinstance(v, dict),
        "conditional": lambda v: isinstance(v, bool),
        **{name: _is_mean for name in ("elbo", "reconstruction", "rate", "log_px", "gap")},
        **{
            name: _number_or_none
            for name in ("bits_per_dim", "mutual_information", "marginal_kl", "classifier_error")
        },
    }
    return all(check(saved[key]) for key, check in checks.items() if key in saved)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_count(value: Any) -> bool:
    return _count(value) and value > 0


def _number_or_none(value: Any) -> bool:
    return value is None or is_number(value)


def _is_mean(value: Any) -> bool:
    return (
        isinstance(value, dict) and is_number(value.get("value")) and is_number(value.get("stderr"))
    )


def _is_layer(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and _count(value.get("size"))
        and _is_mean(value.get("rate"))
        and _count(value.get("active_units"))
    )


def fuller(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Whether evaluation ``new`` may replace ``old`` as a run's evaluation: ``old`` is of other
    weights or split, or ``new`` has at least its examples and K (a partial evaluation never
    replaces a full-protocol one, nor one from before evaluations recorded their weights)."""
    old_info, new_info = old.get("info", {}), new.get("info", {})
    old_weights = old_info.get("weights_sha256")  # None: from before evaluations recorded it
    if old_weights is not None and old_weights != new_info.get("weights_sha256"):
        return True
    if old_info.get("split", "test") != new_info.get("split"):
        return new_info.get("split") == "test"
    return new["n"] >= old["n"] and new["k"] >= old["k"]


class _Rows:
    """Per-example values, each column a tensor of N rows allocated at its first batch and
    written in place: nothing small outlives a batch. (Appending every batch's small tensors
    to lists let glibc's heap grow ~1.6 MB per batch around the chunks' large transient
    buffers: 10 GB by some 6,000 MNIST examples at K = 5000.)"""

    def __init__(self, n: int) -> None:
        self.n = n
        self.columns: dict[str, torch.Tensor] = {}

    def at(self, start: int) -> Callable[[str, torch.Tensor], None]:
        """A writer of one batch's values ``(b, ...)`` into rows ``start`` onwards."""

        def put(name: str, values: torch.Tensor) -> None:
            if name not in self.columns:
                self.columns[name] = values.new_empty((self.n, *values.shape[1:]))
            self.columns[name][start : start + len(values)] = values

        return put


def _evaluate_batch(
    model: torch.nn.Module,
    batch: Batch,
    k: int,
    chunk: int,
    generator: torch.Generator,
    put: Callable[[str, torch.Tensor], None],
) -> torch.Tensor:
    """Write one batch's terms with ``put``; return its log weights ``(K, b)`` (float64)."""
    params = model.posterior_parameters(batch)
    weights = list(iter_log_weights(model, batch, k, chunk, generator=generator))
    log_w = torch.cat([w.log_w for w in weights]).double()
    reconstruction = torch.cat([w.log_likelihood for w in weights]).double().mean(0)
    log_q = torch.cat([w.log_q for w in weights]).double()
    log_prior = torch.cat([w.log_prior for w in weights]).double()
    rate = model.rate(params, log_q, log_prior).double()  # the model's rule, over all K draws
    if model.rate_rule.analytic:
        put("kl_per_dim", model.rate_rule.per_dimension(params).double())
    put("reconstruction", reconstruction)
    put("rate", rate)
    put("elbo", reconstruction - rate)
    put("log_px", log_mean_exp(log_w))
    put("ess", effective_sample_size(log_w))
    put("largest_log_w", largest_log_weights(log_w))
    put("means", model.posterior.representative(params))
    if len(model.layer_sizes) > 1:
        draws = standard_noise(model, LAYER_DRAWS, params[0], generator)
        put("rate_per_layer", model.rate_per_layer(params, draws).double())
        put("kl_per_dim", model.kl_per_dimension(params, draws).double())
    layers = model.posterior.gaussian_layers(params)
    if layers is not None and len(layers) == 1:
        put("loc", layers[0][0])
        put("scale", layers[0][1])
    return log_w


def _known(values: torch.Tensor) -> list[float | None]:
    """``values`` as a list, NaN (not defined) as None."""
    return [None if math.isnan(v) else v for v in values.tolist()]


def _layers(
    sizes: tuple[int, ...], rates: torch.Tensor | None, active: list[bool]
) -> list[dict[str, Any]]:
    """Each latent layer's size, rate and active units (none for one layer)."""
    if rates is None:
        return []
    starts = layer_starts(sizes)
    return [
        {
            "size": size,
            "rate": Mean.of(rates[:, level].cpu()),
            "active_units": sum(active[start : start + size]),
        }
        for level, (start, size) in enumerate(zip(starts, sizes, strict=True))
    ]


def _evaluation(
    model: torch.nn.Module,
    x: torch.Tensor,
    k: int,
    per: dict[str, torch.Tensor],
    per_dim: torch.Tensor | None,
    means: torch.Tensor,
    marginal_kl: float | None,
    sweep: dict[int, torch.Tensor],
    start_time: float,
) -> Evaluation:
    active_mask = active_units(means)
    active = int(active_mask.sum())
    mean_rate = float(per["rate"].mean())
    data_dim = math.prod(x.shape[1:])
    log_px_mean = Mean.of(per["log_px"])
    elbo_mean = float(per["elbo"].double().mean())
    return Evaluation(
        n=len(x),
        k=k,
        likelihood=model.config.likelihood.name,
        rate_estimator=model.rate_rule.label,
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
                "gap": bound.value - elbo_mean,
            }
            for size, bound in sorted((size, Mean.of(values)) for size, values in sweep.items())
        ],
        kl_per_dim=[] if per_dim is None or per_dim.isnan().all() else _known(per_dim.mean(0)),
        active=active_mask.tolist(),
        active_units=active,
        mutual_information=None if marginal_kl is None else mean_rate - marginal_kl,
        marginal_kl=marginal_kl,
        seconds=time.perf_counter() - start_time,
        warnings=_warnings(active, len(active_mask), mean_rate),
        weights=weight_summary(per["ess"], per["pareto_k"]),
        per_example=per,
    )
