"""A self-contained HTML report of a run: every figure embedded as a data URI, no network.

Sections: configuration and data, training curves, the identity log p̂(x) = ELBO + gap from the
latest evaluation (run if missing), KL per latent dimension, samples, reconstructions,
interpolations, traversals, the latent space, and the worst-explained examples.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import torch

from vaekit.data import load_dataset, protocol_examples
from vaekit.errors import ConfigError
from vaekit.evaluation.diagnostics import kl_per_dimension
from vaekit.evaluation.evaluate import evaluate
from vaekit.training.checkpoint import load, read_config, read_metrics
from vaekit.training.io import atomic_write_bytes
from vaekit.visuals import figures
from vaekit.visuals.grids import examples_png, reconstructions_png, samples_png

EVALUATION = "evaluation.json"
REPORT = "report.html"

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
    run_dir: Path, model: torch.nn.Module, x: torch.Tensor, k: int, limit: int | None
) -> dict[str, Any]:
    """``evaluation.json`` of the run, or a new evaluation (K = ``k``, first ``limit``
    examples) written there."""
    path = run_dir / EVALUATION
    if path.exists():
        saved = json.loads(path.read_text())
        if "per_example" in saved and "active" in saved:
            return saved
    result = evaluate(model, x[:limit] if limit else x, k)
    result.save(path)
    return result.to_dict()


def _test_examples(run_dir: Path, data_dir: str | None) -> tuple[torch.Tensor, Any]:
    """The run's test split as its model is evaluated on it (``protocol_examples``)."""
    model_config, train_config, _ = read_config(run_dir)
    data = load_dataset(
        train_config.dataset, data_dir or train_config.data_dir, train_config.image_size
    )
    return protocol_examples(data, "test", model_config.likelihood)


def build_report(
    run_dir: str | Path, k: int = 1000, limit: int | None = 2000, data_dir: str | None = None
) -> Path:
    """Write ``run_dir/report.html`` and return its path."""
    run_dir = Path(run_dir)
    model = load(run_dir)
    model_config, train_config, raw = read_config(run_dir)
    x, y = _test_examples(run_dir, data_dir)
    history = read_metrics(run_dir)
    evaluation = latest_evaluation(run_dir, model, x, k, limit)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        means = torch.cat([model.encode(x[i : i + 1000]).mean for i in range(0, len(x), 1000)])
    log_px = torch.tensor(evaluation["per_example"]["log_px"])
    worst = torch.argsort(log_px)[:16]
    worst_values = ", ".join(f"{v:.1f}" for v in log_px[worst].tolist())
    numbers = {
        "examples": evaluation["n"],
        "K": evaluation["k"],
        "log p̂_K(x)": f"{evaluation['log_px']['value']:.2f} ± {evaluation['log_px']['stderr']:.2f}",
        "ELBO": f"{evaluation['elbo']['value']:.2f} ± {evaluation['elbo']['stderr']:.2f}",
        "reconstruction": f"{evaluation['reconstruction']['value']:.2f}",
        "rate KL(q(z|x) || p(z))": f"{evaluation['rate']['value']:.2f}",
        "gap log p̂ − ELBO": f"{evaluation['gap']['value']:.2f} ± {evaluation['gap']['stderr']:.2f}",
        "I_q(x; z)": f"{evaluation['mutual_information']:.2f}",
        "KL(q(z) || p(z))": f"{evaluation['marginal_kl']:.2f}",
        "active units": f"{evaluation['active_units']} of {len(evaluation['kl_per_dim'])}",
    }
    warnings = "".join(f"<p><b>Warning:</b> {html.escape(w)}</p>" for w in evaluation["warnings"])
    sections = [
        _section(
            "config",
            "Configuration and data",
            _table({**model_config.to_dict(), **train_config.to_dict()})
            + "<h3>Data</h3>"
            + _table(raw.get("data", {})),
        ),
        _section("curves", "Training curves", _img(figures.curves_png(history), "training curves")),
        _section(
            "identity",
            "The identity: log p̂(x) = ELBO + gap",
            _table(numbers)
            + warnings
            + _img(figures.identity_png(evaluation), "identity")
            + '<p class="note">nats per example, summed over dimensions; the gap estimates '
            "KL(q(z|x) || p(z|x)) from below.</p>",
        ),
        _section(
            "kl",
            "KL per latent dimension",
            _img(
                figures.kl_per_dimension_png(evaluation["kl_per_dim"], evaluation["active"]),
                "KL per dimension",
            ),
        ),
        _section(
            "samples",
            "Samples from the prior",
            _img(samples_png(model, 64, generator=generator), "samples"),
        ),
        _section(
            "reconstructions",
            "Reconstructions",
            _img(reconstructions_png(model, x[:32]), "reconstructions"),
        ),
        _section(
            "interpolations",
            "Interpolations between encoded test examples",
            _img(figures.interpolations_png(model, x), "interpolations"),
        ),
        _section(
            "traversals",
            "Latent traversals of the most active dimensions",
            _img(figures.traversals_png(model, x, evaluation["kl_per_dim"]), "traversals"),
        ),
        _section(
            "latent", "The latent space", _img(figures.latent_scatter_png(means, y), "latent space")
        ),
        _section(
            "worst",
            "Worst-explained test examples (lowest log p̂(x))",
            _img(examples_png(x[worst], title="worst explained"), "worst examples")
            + f'<p class="note">log p̂(x): {worst_values}</p>',
        ),
    ]
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>vaekit report: "
        f"{html.escape(run_dir.name)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>vaekit report: {html.escape(run_dir.name)}</h1>"
        f"<p class='note'>{html.escape(str(run_dir.resolve()))}</p>{''.join(sections)}"
        f"<p id='check' class='note'></p>{_SELF_CHECK}</body></html>"
    )
    path = run_dir / REPORT
    atomic_write_bytes(path, page.encode())
    return path


def plot(run_dir: str | Path, what: str, data_dir: str | None = None) -> bytes:
    """One of the report's figures as PNG bytes (see ``PLOTS``); ``identity`` and ``kl`` need
    the run's ``evaluation.json`` (``vaekit evaluate``)."""
    run_dir = Path(run_dir)
    if what == "curves":
        return figures.curves_png(read_metrics(run_dir))
    if what in ("identity", "kl"):
        path = run_dir / EVALUATION
        if not path.exists():
            raise ConfigError(f"{run_dir} has no {EVALUATION}: run 'vaekit evaluate {run_dir}'")
        evaluation = json.loads(path.read_text())
        if what == "identity":
            return figures.identity_png(evaluation)
        return figures.kl_per_dimension_png(evaluation["kl_per_dim"], evaluation["active"])
    model = load(run_dir)
    if what == "samples":
        return samples_png(model, 64, generator=torch.Generator().manual_seed(0))
    x, y = _test_examples(run_dir, data_dir)
    if what == "recon":
        return reconstructions_png(model, x[:32])
    if what == "interp":
        return figures.interpolations_png(model, x)
    with torch.no_grad():
        posterior = model.encode(x[:5000])
    if what == "latent":
        return figures.latent_scatter_png(posterior.mean, None if y is None else y[:5000])
    kl = kl_per_dimension(posterior.mean, posterior.stddev)
    return figures.traversals_png(model, x, kl.tolist())


PLOTS = ("samples", "recon", "interp", "traverse", "latent", "curves", "identity", "kl")
