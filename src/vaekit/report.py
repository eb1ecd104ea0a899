"""A self-contained HTML report of a run: every figure embedded as a data URI, no network.

Sections: configuration and data, training curves, the identity log p̂(x) = ELBO + gap from the
latest evaluation (run if missing), KL per latent dimension, samples, reconstructions,
interpolations, traversals, the latent space, and the worst-explained examples.
"""

from __future__ import annotations

import base64
import html
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vaekit.data.batch import Batch
from vaekit.data.dataset import Dataset
from vaekit.errors import ConfigError
from vaekit.evaluation.evaluate import (
    describe_weights,
    evaluate,
    evaluation_batch,
    mismatch,
    term_names,
)
from vaekit.evaluation.weights import UNRELIABLE_K
from vaekit.files import atomic_write_bytes
from vaekit.training.run_dir import EVALUATION, REPORT, RunDirectory
from vaekit.training.sweep import SWEEP, sweep_points
from vaekit.version import __version__
from vaekit.visuals import figures
from vaekit.visuals.grids import examples_png, reconstructions_png, samples_png

# On load, the page counts its images that decoded and writes the result into <body>: a
# reader (or a headless browser test) can check that every figure rendered.
_SELF_CHECK = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter((img) => !img.complete || img.naturalWidth === 0).length;
  document.body.dataset.imagesLoaded = String(images.length - broken);
  document.body.dataset.imagesBroken = String(broken);
  document.getElementById("check").textContent =
    `${images.length - broken} of ${images.length} figures rendered.`;
});
</script>"""

_STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{margin-bottom:0}section{margin:2em 0}img{max-width:100%;border:1px solid #ddd}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}
.note{color:#555;font-size:0.9em}"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: dict[str, Any]) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in rows.items()
    )
    return f"<table>{cells}</table>"


def _section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}"><h2>{html.escape(title)}</h2>{body}</section>'


def latest_evaluation(
    run: RunDirectory, model: torch.nn.Module, batch: Batch, k: int, limit: int | None
) -> tuple[dict[str, Any], str]:
    """The run's evaluation of this model on its test split, or a new one (K = ``k``, the
    first ``limit`` examples) saved in the run; and a note saying which one it is."""
    saved = run.read_evaluation()
    reason = "the run had none" if saved is None else mismatch(saved, model, len(batch.x))
    if saved is not None and reason is None:
        saved.setdefault("rate_estimator", "analytic")  # evaluations before format 2
        return saved, f"The evaluation shown is {_described(saved)}."
    result = evaluate(model, batch.select(slice(limit)) if limit else batch, k)
    result.info.update(split="test", dataset=run.config.train.dataset)
    evaluation = result.to_dict()
    run.save_evaluation(evaluation)
    return evaluation, (
        f"Evaluated for this report ({reason}): {result.describe()}; "
        "'vaekit evaluate RUN -k 5000' gives the standard protocol."
    )


def _described(evaluation: dict[str, Any]) -> str:
    info = evaluation.get("info", {})
    weights = info.get("weights_sha256")
    return f"of {evaluation['n']} test examples with K = {evaluation['k']}" + (
        f", weights {weights[:12]}"
        if weights
        else " (recorded before vaekit kept the weights' hash)"
    )


@dataclass(frozen=True)
class DataSource:
    """Where a run's data are, when not where the run recorded them: another ``dataset``
    (the same data moved), or a ``data_dir`` for MNIST-style files."""

    dataset: str | None = None
    data_dir: str | None = None
    image_size: int | None = None

    def test_batch(self, run: RunDirectory, model: torch.nn.Module) -> Batch:
        """The run's test split as its model is evaluated on it."""
        data = run.load_dataset(self.dataset, self.data_dir, self.image_size)
        return evaluation_batch(model, data, "test")


@torch.no_grad()
def _means(model: torch.nn.Module, batch: Batch, limit: int | None = None) -> torch.Tensor:
    """E_q[z|x] of the first ``limit`` examples (all by default), 1,000 at a time."""
    n = len(batch.x) if limit is None else min(limit, len(batch.x))
    return torch.cat(
        [model.representative(batch.select(slice(i, min(i + 1000, n)))) for i in range(0, n, 1000)]
    )


def _numbers(evaluation: dict[str, Any]) -> dict[str, str]:
    def mean(name: str) -> str:
        return f"{evaluation[name]['value']:.2f} ± {evaluation[name]['stderr']:.2f}"

    rate = "rate KL(q(z|x) || p(z))"
    if evaluation["rate_estimator"] != "analytic":
        rate += f" ({evaluation['rate_estimator']})"
    log_px, elbo = term_names(bool(evaluation.get("conditional")))
    numbers = {
        "examples": str(evaluation["n"]),
        "K": str(evaluation["k"]),
        log_px: mean("log_px"),
        elbo: mean("elbo"),
        "reconstruction": f"{evaluation['reconstruction']['value']:.2f}",
        rate: f"{evaluation['rate']['value']:.2f}",
        "gap log p̂ − ELBO": mean("gap"),
    }
    if evaluation["marginal_kl"] is not None:
        numbers["I_q(x; z)"] = f"{evaluation['mutual_information']:.2f}"
        numbers["KL(q(z) || p(z))"] = f"{evaluation['marginal_kl']:.2f}"
    numbers["active units"] = f"{evaluation['active_units']} of {len(evaluation['active'])}"
    if evaluation.get("classifier_error") is not None:
        numbers["classifier q(y|x): test error"] = f"{100 * evaluation['classifier_error']:.2f}%"
    for level, layer in enumerate(evaluation.get("layers", []), start=1):
        numbers[f"layer z_{level} ({layer['size']} dims): rate, active units"] = (
            f"{layer['rate']['value']:.2f} ± {layer['rate']['stderr']:.2f}, "
            f"{layer['active_units']} of {layer['size']}"
        )
    if evaluation.get("weights"):  # evaluations before vaekit 0.2 have no weight diagnostics
        ess, k_hat = describe_weights(evaluation["weights"], evaluation["k"])
        numbers["importance weights' effective sample size"] = ess
        numbers["importance weights' Pareto k̂"] = k_hat
    return numbers


def _least_reliable(evaluation: dict[str, Any], batch: Batch, shown: int = 16) -> list[str]:
    """A section on the examples whose log p̂_K is least reliable (highest Pareto k̂), if the
    evaluation has k̂ per example: their numbers and their images."""
    per = evaluation["per_example"]
    if not any(k is not None for k in per.get("pareto_k", [])):
        return []
    k_hat = torch.tensor([math.nan if k is None else k for k in per["pareto_k"]])
    order = torch.argsort(k_hat.nan_to_num(-math.inf), descending=True)[:shown]
    order = order[~k_hat[order].isnan()]
    rows = "".join(
        f"<tr><td>{i}</td><td>{per['pareto_k'][i]:.2f}</td><td>{per['ess'][i]:.1f}</td>"
        f"<td>{per['log_px'][i]:.2f}</td><td>{per['elbo'][i]:.2f}</td></tr>"
        for i in order.tolist()
    )
    table = (
        "<table><tr><th>test example</th><th>Pareto k̂</th><th>ESS</th>"
        f"<th>log p̂_K(x)</th><th>ELBO</th></tr>{rows}</table>"
    )
    note = (
        f'<p class="note">Above k̂ = {UNRELIABLE_K} the importance weights are too heavy-tailed '
        "for log p̂_K(x) to be trusted: q(z|x) misses part of p(z|x) for these examples, and "
        "the estimate may sit well below log p(x). Images left to right, in the table's "
        "order.</p>"
    )
    images = _img(examples_png(batch.x[order]), "least reliable examples")
    title = "Least reliable log-likelihood estimates (highest Pareto k̂)"
    return [_section("reliability", title, table + note + images)]


NO_KL_SPLIT = (
    "the rate has no per-dimension split here: the prior or q(z|x) does not factorise over the "
    "latent dimensions (a mixture or a VampPrior, a flow)"
)


def _kl_section(evaluation: dict[str, Any]) -> str:
    if not evaluation["kl_per_dim"]:
        return f'<p class="note">{NO_KL_SPLIT[0].upper()}{NO_KL_SPLIT[1:]}.</p>'
    return _img(_kl_figure(evaluation), "KL per dimension")


def _kl_figure(evaluation: dict[str, Any]) -> bytes:
    """The KL per dimension's bars (a hierarchy's layer by layer, Monte Carlo)."""
    sizes = [layer["size"] for layer in evaluation.get("layers", [])]
    return figures.kl_per_dimension_png(evaluation["kl_per_dim"], evaluation["active"], sizes)


def _importance(evaluation: dict[str, Any], means: torch.Tensor) -> list[float]:
    """What ranks the dimensions for traversals: KL per dimension, else Cov_x E_q[z_d]."""
    kl = evaluation.get("kl_per_dim")
    if kl and None not in kl:
        return kl
    return means.double().var(0).tolist()


@dataclass(frozen=True)
class ReportInputs:
    """What a report shows: the model, its test examples, an evaluation of them (with a
    sentence saying which), the training curves, the configuration and the data summary."""

    title: str
    model: torch.nn.Module
    batch: Batch
    evaluation: dict[str, Any]
    which: str
    history: list[dict[str, Any]]
    configuration: dict[str, Any]
    data: dict[str, Any]
    sweep: bytes | None = None  # the rate-distortion plane of the sweep the run is part of


def build_report(
    run_dir: str | Path, k: int = 1000, limit: int | None = 2000, source: DataSource | None = None
) -> Path:
    """Write ``run_dir/report.html`` and return its path."""
    run = RunDirectory(run_dir)
    model = run.load_model()
    batch = (source or DataSource()).test_batch(run, model)
    evaluation, which = latest_evaluation(run, model, batch, k, limit)
    inputs = ReportInputs(
        run.path.name,
        model,
        batch,
        evaluation,
        which,
        run.read_metrics(),
        {**run.config.model.flat_options(), **run.config.train.to_dict()},
        run.config.data,
        _sweep_png(run),
    )
    return run.write(REPORT, report_html(inputs, str(run.path.resolve())).encode())


def write_report(
    model: torch.nn.Module,
    data: Dataset,
    path: str | Path,
    k: int = 1000,
    limit: int | None = 2000,
    history: list[dict[str, Any]] | None = None,
) -> Path:
    """Write the report of a model object (one with your own networks, too) on ``data``'s
    test split to ``path`` (HTML); ``history``: the metrics ``vaekit.fit`` returned, for the
    training curves."""
    batch = evaluation_batch(model, data, "test")
    result = evaluate(model, batch.select(slice(limit)) if limit else batch, k)
    result.info.update(split="test", dataset=data.name)
    inputs = ReportInputs(
        type(model).__name__,
        model,
        batch,
        result.to_dict(),
        f"Evaluated for this report: {result.describe()}.",
        history or [],
        model.config.flat_options(),
        data.summary(),
    )
    path = Path(path)
    atomic_write_bytes(path, report_html(inputs, str(path.resolve())).encode())
    return path


def report_html(inputs: ReportInputs, where: str) -> str:
    """The self-contained page of ``inputs``."""
    title = html.escape(inputs.title)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>vaekit report: {title}"
        f"</title><style>{_STYLE}</style></head><body><h1>vaekit report: {title}</h1>"
        f"<p class='note'>{html.escape(where)}</p>{''.join(_sections(inputs))}"
        f"<p id='check' class='note'></p>{_SELF_CHECK}</body></html>"
    )


def _sections(inputs: ReportInputs) -> list[str]:
    """The report's sections, headline first and configuration last."""
    curves = (
        _img(figures.curves_png(inputs.history), "training curves")
        if inputs.history
        else '<p class="note">No training history was given.</p>'
    )
    return [
        _headline(inputs),
        _section("curves", "Training curves", curves),
        *_identity_sections(inputs.evaluation, inputs.which),
        *_picture_sections(inputs),
        *(
            [_section("sweep", "This run in its sweep", _img(inputs.sweep, "sweep"))]
            if inputs.sweep
            else []
        ),
        _section(
            "config",
            "Configuration and data",
            _table(inputs.configuration) + "<h3>Data</h3>" + _table(inputs.data),
        ),
    ]


def _identity_sections(evaluation: dict[str, Any], which: str) -> list[str]:
    warnings = "".join(f"<p><b>Warning:</b> {html.escape(w)}</p>" for w in evaluation["warnings"])
    return [
        _section(
            "identity",
            "The identity: log p̂(x) = ELBO + gap",
            f'<p class="note">{html.escape(which)}</p>'
            + _table(_numbers(evaluation))
            + warnings
            + _img(figures.identity_png(evaluation), "identity")
            + '<p class="note">nats per example, summed over dimensions; the gap estimates '
            "KL(q(z|x) || p(z|x)) from below.</p>",
        ),
        _section("kl", "KL per latent dimension", _kl_section(evaluation)),
    ]


def _picture_sections(inputs: ReportInputs) -> list[str]:
    model, batch, evaluation = inputs.model, inputs.batch, inputs.evaluation
    means = _means(model, batch)
    log_px = torch.tensor(evaluation["per_example"]["log_px"])
    worst = torch.argsort(log_px)[:16]
    worst_values = ", ".join(f"{v:.1f}" for v in log_px[worst].tolist())
    pictures = {
        "samples": (
            "Samples from the prior",
            samples_png(model, 64, generator=torch.Generator().manual_seed(0)),
        ),
        "reconstructions": (
            "Reconstructions",
            reconstructions_png(model, batch.select(slice(32))),
        ),
        "interpolations": (
            "Interpolations between encoded test examples",
            figures.interpolations_png(model, batch),
        ),
        "traversals": (
            "Latent traversals of the most active dimensions",
            figures.traversals_png(model, batch, _importance(evaluation, means)),
        ),
        "latent": (
            "The latent space",
            figures.latent_scatter_png(means, batch.y, inputs.data.get("classes")),
        ),
        "worst": (
            "Worst-explained test examples (lowest log p̂(x))",
            examples_png(batch.x[worst], title=f"left to right, log p̂(x) in nats: {worst_values}"),
        ),
    }
    sections = [_section(key, title, _img(png, key)) for key, (title, png) in pictures.items()]
    return sections + _least_reliable(evaluation, batch)


def _headline(inputs: ReportInputs) -> str:
    """The model, the data, log p̂ and the ELBO, the date and vaekit's version, first."""
    evaluation, config = inputs.evaluation, inputs.model.config
    model = config.describe()
    data = inputs.data
    shape = "x".join(map(str, data.get("shape", [])))
    log_px_name, elbo_name = term_names(bool(evaluation.get("conditional")))
    log_px = f"{evaluation['log_px']['value']:.2f} ± {evaluation['log_px']['stderr']:.2f}"
    error = evaluation.get("classifier_error")
    numbers = (
        f"{log_px_name} {log_px}, {elbo_name} "
        f"{evaluation['elbo']['value']:.2f} nats per example (K = {evaluation['k']}, "
        f"{evaluation['n']} test examples)"
        + ("" if error is None else f"; classifier q(y|x) test error {100 * error:.2f}%")
    )
    when = time.strftime("%Y-%m-%d %H:%M")
    return (
        f'<section id="headline"><p><b>{html.escape(model)}</b><br>'
        f"{html.escape(str(data.get('name', '')))} ({shape}, "
        f"{data.get('train_examples', '?')} train / {data.get('test_examples', '?')} test)<br>"
        f"{html.escape(numbers)}</p><p class='note'>made {when} by vaekit {__version__}</p>"
        "</section>"
    )


def _sweep_png(run: RunDirectory) -> bytes | None:
    """The rate-distortion plane of the sweep whose member ``run`` is, this run ringed."""
    folder = run.path.resolve().parent
    if not (folder / SWEEP).is_file():
        return None
    points = sweep_points(folder)
    return figures.rate_distortion_png(points, highlight=run.path.resolve().name)


def _evaluation_of(run: RunDirectory) -> dict[str, Any]:
    evaluation = run.read_evaluation()
    if evaluation is None:
        raise ConfigError(f"{run} has no readable {EVALUATION}: run 'vaekit evaluate {run}'")
    evaluation.setdefault("rate_estimator", "analytic")
    return evaluation


def _kl_png(run: RunDirectory, source: DataSource) -> bytes:
    evaluation = _evaluation_of(run)
    if not evaluation["kl_per_dim"]:
        raise ConfigError(f"{run}: {NO_KL_SPLIT}")
    return _kl_figure(evaluation)


def _with_model(draw: Callable[[torch.nn.Module, Batch], bytes]) -> Callable[..., bytes]:
    """A figure of the run's model and its test examples."""

    def figure(run: RunDirectory, source: DataSource) -> bytes:
        model = run.load_model()
        return draw(model, source.test_batch(run, model))

    return figure


@torch.no_grad()
def _traversals(model: torch.nn.Module, batch: Batch) -> bytes:
    """Traversals of the dimensions with the most KL (or, without a per-dimension KL, with
    the most variance of E_q[z_d|x]) over 5,000 test examples."""
    params = model.posterior_parameters(batch.select(slice(5000)))
    if model.rate_rule.analytic:
        importance = model.rate_rule.per_dimension(params).mean(0)
    else:
        importance = model.posterior.representative(params).double().var(0)
    return figures.traversals_png(model, batch, importance.tolist())


def _latent(run: RunDirectory, source: DataSource, limit: int) -> bytes:
    """The latent space of up to ``limit`` test examples (as many as the report's), with
    the run's class names."""
    model = run.load_model()
    batch = source.test_batch(run, model)
    labels = None if batch.y is None else batch.y[:limit]
    means = _means(model, batch, limit)
    return figures.latent_scatter_png(means, labels, run.config.data.get("classes"))


PLOTS: dict[str, Callable[[RunDirectory, DataSource], bytes]] = {
    "samples": lambda run, _: samples_png(
        run.load_model(), 64, generator=torch.Generator().manual_seed(0)
    ),
    "recon": _with_model(lambda model, batch: reconstructions_png(model, batch.select(slice(32)))),
    "interp": _with_model(figures.interpolations_png),
    "traverse": _with_model(_traversals),
    "latent": lambda run, source: _latent(run, source, 10_000),
    "curves": lambda run, _: figures.curves_png(run.read_metrics()),
    "identity": lambda run, _: figures.identity_png(_evaluation_of(run)),
    "kl": _kl_png,
}
"""The figures ``vaekit plot --what`` draws: ``(run, data source) -> PNG bytes``."""


def plot(run_dir: str | Path, what: str, source: DataSource | None = None) -> bytes:
    """One of the report's figures as PNG bytes (see ``PLOTS``); ``identity`` and ``kl`` need
    the run's ``evaluation.json`` (``vaekit evaluate``)."""
    if what not in PLOTS:
        raise ConfigError(f"unknown figure {what!r}: use one of {', '.join(PLOTS)}")
    return PLOTS[what](RunDirectory(run_dir), source or DataSource())
