"""The HTML report, opened in a real headless browser; the PNG figures; TensorBoard files."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import copy_without_evaluations
from PIL import Image

import vaekit
from vaekit.cli import main
from vaekit.report import PLOTS
from vaekit.visuals.figures import latent_scatter_png

SECTIONS = (
    "config",
    "curves",
    "identity",
    "kl",
    "samples",
    "reconstructions",
    "interpolations",
    "traversals",
    "latent",
    "worst",
    "reliability",
)
BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def report(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the trained run, evaluated here with K = 50 (enough for Pareto k̂)."""
    run = copy_without_evaluations(trained_run, tmp_path_factory.mktemp("report") / "run")
    assert main(["report", str(run), "-k", "50"]) == 0
    return run / "report.html"


def _chromium() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    return browser


def test_report_is_self_contained(report: Path) -> None:
    page = report.read_text()
    for key in SECTIONS:
        assert f'<section id="{key}">' in page
    sources = re.findall(r'src="([^"]+)"', page)
    assert len(sources) == 10 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in page and "https://" not in page


def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    browser = _chromium()
    dom = subprocess.run(
        [
            browser,
            *BROWSER_FLAGS,
            f"--user-data-dir={tmp_path / 'a'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body is not None, dom.stderr[-2000:]
    assert 'data-images-broken="0"' in body.group(0)
    assert 'data-images-loaded="10"' in body.group(0)
    for key in SECTIONS:
        assert f'id="{key}"' in dom.stdout
    assert "Uncaught" not in dom.stderr  # no script errors in the console
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            browser,
            *BROWSER_FLAGS,
            f"--user-data-dir={tmp_path / 'b'}",
            "--window-size=1200,4000",
            f"--screenshot={shot}",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 20  # not blank: text and figures on a white page


def test_every_plot(report: Path, tmp_path: Path) -> None:
    for what in PLOTS:  # (the report wrote the evaluation.json that identity and kl read)
        out = tmp_path / f"{what}.png"
        assert main(["plot", str(report.parent), "--what", what, "-o", str(out)]) == 0
        with Image.open(out) as image:
            assert image.width > 50 and image.height > 50


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("with_labels", [True, False])
def test_latent_scatter_with_and_without_labels(with_labels: bool) -> None:
    """Unlabelled data (a user's .npy) plots in one colour, without matplotlib's warning."""
    means = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(40) % 10 if with_labels else None
    with Image.open(io.BytesIO(latent_scatter_png(means, labels))) as image:
        assert image.width > 50 and image.height > 50


def test_tensorboard_event_files(tmp_path: Path, digits: vaekit.Dataset) -> None:
    pytest.importorskip("tensorboard")
    model = vaekit.VAE(digits.shape, 4, hidden=[16])
    vaekit.fit(model, digits, run_dir=tmp_path / "run", epochs=2, tensorboard=True, progress=False)
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    assert len(accumulator.Scalars("test_elbo")) == 2
    assert accumulator.Tags()["images"] == ["samples"]
