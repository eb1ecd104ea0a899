"""``vaekit export RUN DIR``: a model folder in the Hugging Face Hub's repository layout.

    DIR/config.json          the run's configuration (``vaekit.load(DIR)`` rebuilds the model)
    DIR/model.safetensors    the weights (no pickle anywhere)
    DIR/evaluation.json      the evaluation the card reports
    DIR/README.md            the model card: YAML metadata with a ``model-index`` filled from
                             the evaluation, then what the model is and how to check it
    DIR/*.png                the run's samples and reconstructions, where it has them

The card's claim is checkable with one command: ``vaekit evaluate DIR -k K`` evaluates the
model again with the card's protocol and says whether it reproduces the saved numbers.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from vaekit.errors import ConfigError
from vaekit.files import atomic_write_bytes
from vaekit.hub import PREFIX, parse_repo, upload_folder
from vaekit.training.run_dir import EVALUATION, RunDirectory
from vaekit.version import __version__

FIGURES = ("samples.png", "reconstructions.png")


def export_run(run: RunDirectory, out: Path, location: str | None = None) -> list[Path]:
    """Write ``run``'s model folder to ``out`` (new or empty); return the files written. The
    card's commands name the model by ``location`` (e.g. its Hub id; default: a placeholder
    for wherever the folder is put)."""
    config = run.config
    if config.custom_networks:
        raise ConfigError(
            f"{run} was trained with networks of your own: an exported folder could not "
            "rebuild them (export a model built from vaekit's networks)"
        )
    evaluation, reason = run.evaluation_of(run.load_model())
    if evaluation is None:
        raise ConfigError(f"{run} has no evaluation for the card: run 'vaekit evaluate {run}'")
    if reason is not None:
        raise ConfigError(f"{run}'s evaluation.json is not of its model ({reason}): evaluate it")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty: export into a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("config.json", "model.safetensors", EVALUATION, *FIGURES):
        if (run / name).is_file():
            atomic_write_bytes(out / name, (run / name).read_bytes())
            written.append(out / name)
    card = model_card(out.name, config, evaluation, location or "THIS_FOLDER")
    atomic_write_bytes(out / "README.md", card.encode())
    return [*written, out / "README.md"]


def push_run(run: RunDirectory, repo: str, private: bool = False) -> str:
    """Export ``run`` (see :func:`export_run`) into a scratch folder and upload it to the Hub
    repository ``repo``; return the commit's address."""
    repo_id, _ = parse_repo(repo)
    with tempfile.TemporaryDirectory(prefix="vaekit-push-") as scratch:
        folder = Path(scratch) / repo_id.split("/")[1]  # the card's name: the repository's
        export_run(run, folder, PREFIX + repo_id)
        return upload_folder(folder, repo, private)


def model_index(name: str, config: Any, evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """The card's ``model-index``: the dataset (with its SHA-256 where the run recorded it), the
    protocol (split, K, examples, the test binarisation) and the identity's terms in nats."""
    info, data = evaluation.get("info", {}), config.data
    metrics = [
        _metric("nll", -evaluation["log_px"]["value"], "-log p̂_K(x), nats per example"),
        _metric("elbo", evaluation["elbo"]["value"], "ELBO, nats per example"),
        _metric("gap", evaluation["gap"]["value"], "log p̂_K(x) − ELBO, nats per example"),
    ]
    if evaluation.get("bits_per_dim") is not None:
        metrics.append(_metric("bits_per_dim", evaluation["bits_per_dim"], "bits per dimension"))
    dataset = {
        "type": data.get("name", config.train.dataset),
        "name": data.get("name", config.train.dataset),
        "split": info.get("split", "test"),
        "args": {
            "sha256": data.get("sha256", "not recorded"),
            "examples": evaluation["n"],
            "k": evaluation["k"],
            "evaluation_seed": info.get("seed", 0),
            "binarization": info.get("binarized", "none"),
            "likelihood": evaluation["likelihood"],
        },
    }
    task = {"type": "density-estimation", "name": "Density estimation"}
    return [{"name": name, "results": [{"task": task, "dataset": dataset, "metrics": metrics}]}]


def _metric(kind: str, value: float, name: str) -> dict[str, Any]:
    return {"type": kind, "value": round(value, 4), "name": name}


def model_card(name: str, config: Any, evaluation: dict[str, Any], location: str) -> str:
    """README.md: YAML metadata (its ``model-index`` written as JSON, which YAML reads), then
    the model, its numbers and how to check them."""
    index = model_index(name, config, evaluation)
    metadata = "\n".join(
        [
            "---",
            "library_name: vaekit",
            "tags: [vae, variational-autoencoder, density-estimation, vaekit]",
            f"model-index: {json.dumps(index)}",
            "---",
        ]
    )
    model, k = config.model, evaluation["k"]
    stderr = evaluation["log_px"]["stderr"]
    body = f"""
# {name}

A variational autoencoder trained with vaekit {__version__}:
{model.describe()}, trained on
{index[0]["results"][0]["dataset"]["name"]} ({config.train.epochs} epochs).

| | nats per example |
|---|---|
| log p̂_K(x), K = {k} | {evaluation["log_px"]["value"]:.2f} ± {_finite(stderr)} |
| ELBO | {evaluation["elbo"]["value"]:.2f} |
| gap log p̂ − ELBO (≈ KL(q(z\\|x) \\|\\| p(z\\|x))) | {evaluation["gap"]["value"]:.2f} |

On {evaluation["n"]} {evaluation.get("info", {}).get("split", "test")} examples; every term summed
over dimensions. `evaluation.json` holds the full evaluation.

    pip install vaekit
    vaekit evaluate {location} -k {k}     # evaluates again and checks these numbers
    python -c "import vaekit; model = vaekit.load('{location}')"
"""
    return metadata + "\n" + body


def _finite(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.2f}"


def read_model_index(folder: Path) -> list[dict[str, Any]]:
    """The ``model-index`` of an exported folder's card."""
    for line in (folder / "README.md").read_text().splitlines():
        if line.startswith("model-index: "):
            return json.loads(line.removeprefix("model-index: "))
    raise ConfigError(f"{folder}/README.md has no model-index")
