"""A newcomer's first day: evaluations never lost, help that says its defaults, outputs in
the run, messages that fit where they are read."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import copy_without_evaluations, one_line_error

import vaekit
from vaekit.cli import main
from vaekit.errors import ConfigError, DataError


def test_a_partial_evaluation_never_replaces_a_full_one(
    tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_without_evaluations(trained_run, tmp_path / "run")
    assert main(["evaluate", str(run), "-k", "20", "--no-progress"]) == 0
    full = (run / "evaluation.json").read_text()
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("180 test examples of digits, K = 20, seed 0, weights ")
    copy = tmp_path / "copy.json"
    argv = ["evaluate", str(run), "-k", "5", "--limit", "10", "-o", str(copy), "--no-progress"]
    assert main(argv) == 0
    assert "is kept: it is a fuller evaluation of these weights" in capsys.readouterr().out
    assert (run / "evaluation.json").read_text() == full
    kept = sorted(p.name for p in (run / "evaluations").iterdir())
    assert [name.split("-seed")[0] for name in kept] == ["test-n10-k5", "test-n180-k20"]
    assert json.loads(copy.read_text())["n"] == 10


def test_version_and_defaults_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"vaekit {vaekit.__version__}"
    for command, shown in (
        ("sample", ["-n N number of samples (default: 64)", "(default: 1.0)"]),
        ("evaluate", ["importance samples per example (default: 5000)"]),
        ("train", ["--latent-dim LATENT_DIM the size of z (default: 20)", "(default: 100)"]),
    ):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for words in shown:
            assert words in text, (command, words)
        assert "(default: None)" not in text


def test_a_pattern_matching_two_runs_is_one_line(
    tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["sample", str(trained_run), str(trained_run)])
    one_line_error(capsys, status, "2 runs given")


def test_default_runs_are_linked_as_latest_and_outputs_go_into_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--no-progress"]
    assert main(argv) == 0
    latest = tmp_path / "runs" / "latest"
    assert latest.is_symlink() and (latest / "config.json").is_file()
    assert main(["sample", "runs/latest", "-n", "4"]) == 0
    assert main(["reconstruct", "runs/latest", "-n", "4"]) == 0
    assert (latest / "samples.png").is_file() and (latest / "reconstructions.png").is_file()
    assert not (tmp_path / "samples.png").exists()
    assert main(["report", "runs/latest/model.safetensors", "-k", "2", "--limit", "10"]) == 0
    assert (latest / "report.html").is_file()
    assert main([*argv, "--run-dir", "runs/mine"]) == 0  # named runs leave the link alone
    assert latest.resolve().name != "mine"
    capsys.readouterr()


def test_the_api_is_told_how_to_continue_in_its_own_words(
    tmp_path: Path, digits: vaekit.Dataset
) -> None:
    model = vaekit.VAE(digits.shape, 2, hidden=[8])
    vaekit.fit(model, digits, epochs=1, run_dir=tmp_path / "api", progress=False)
    with pytest.raises(ConfigError, match=r"vaekit\.resume\("):
        vaekit.fit(model, digits, epochs=1, run_dir=tmp_path / "api", progress=False)


def test_the_epoch_line_shows_the_kl_weight_during_warm_up(
    digits: vaekit.Dataset, capsys: pytest.CaptureFixture[str]
) -> None:
    model = vaekit.VAE(digits.shape, 2, hidden=[8])
    vaekit.fit(model, digits, epochs=2, warmup_epochs=4, progress=True)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    weights = [float(line.split("weighted ×")[1].split(")")[0]) for line in lines]
    assert 0 < weights[0] < weights[1] < 0.5  # β of each epoch's last step: t / (4 epochs)


def test_active_units_say_how_many_carry_almost_nothing(trained_run: Path) -> None:
    result = vaekit.evaluate(vaekit.load(trained_run), vaekit.load_dataset("digits"), k=2)
    faint = sum(
        1 for kl, on in zip(result.kl_per_dim, result.active, strict=True) if on and kl < 0.1
    )
    line = next(row for row in result.table().splitlines() if "active units" in row)
    assert (f"{faint} of them carry under 0.1 nats" in line) == (faint > 0), line


def test_grey_or_colour_data_are_said_to_be_binarised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--hidden", "8", "--latent-dim", "2", "--epochs", "1"]
    assert main([*argv, "--run-dir", str(tmp_path / "grey")]) == 0
    assert "grey-level values are binarised" in capsys.readouterr().out
    colour = tmp_path / "colour.npy"
    np.save(colour, np.random.default_rng(0).random((40, 3, 4, 4)).astype(np.float32))
    assert main([*argv, "--dataset", str(colour), "--run-dir", str(tmp_path / "rgb")]) == 0
    assert "colour values are binarised" in capsys.readouterr().out


def test_a_failed_download_leaves_no_empty_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="could not download"):
        vaekit.load_dataset("fashion-mnist")
    assert not (tmp_path / "cache" / "fashion-mnist").exists()


def test_mnist_files_named_as_fashion_mnist_are_recognised(
    mnist_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["train", "--dataset", "fashion-mnist", "--data-dir", str(mnist_dir)])
    one_line_error(capsys, status, "is mnist's")


def test_runs_find_their_data_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run records absolute data paths; one that recorded a relative path (older runs, the
    shipped models) finds it from the folders above the run; a moved file is named with
    --dataset, for report, plot and --resume alike (resume checks it is the same data)."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(project / "data" / "x.npy", (rng.random((60, 6)) < 0.5).astype(np.float32))
    monkeypatch.chdir(project)
    argv = ["train", "--dataset", "data/x.npy", "--hidden", "8", "--latent-dim", "2"]
    assert main([*argv, "--epochs", "1", "--run-dir", "runs/a", "--no-progress"]) == 0
    config = json.loads((project / "runs/a/config.json").read_text())
    assert config["train"]["dataset"] == str(project / "data" / "x.npy")
    config["train"]["dataset"] = "data/x.npy"  # as runs before this recorded it
    (project / "runs/a/config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    assert main(["plot", "project/runs/a", "--what", "recon"]) == 0
    moved = tmp_path / "moved.npy"
    shutil.move(project / "data" / "x.npy", moved)
    one_line_error(
        capsys, main(["plot", "project/runs/a", "--what", "recon"]), "name them with --dataset"
    )
    assert main(["plot", "project/runs/a", "--what", "recon", "--dataset", str(moved)]) == 0
    assert main(["report", "project/runs/a", "-k", "2", "--dataset", str(moved)]) == 0
    resume = ["train", "--resume", "project/runs/a", "--epochs", "2", "--no-progress"]
    assert main([*resume, "--dataset", str(moved)]) == 0


def test_threads_default_to_the_free_cores(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A core busy with another job is left to it (by default); --threads and
    $VAEKIT_THREADS choose; the choice is said in the run's header."""
    from vaekit import threads

    monkeypatch.delenv("VAEKIT_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = threads.available_cores()
    monkeypatch.setattr(threads, "busy_cores", lambda: 1)
    assert (
        threads.choose_threads()
        == threads.ThreadChoice(max(1, cores - 1), f"{cores} cores, 1 busy")
        or cores == 1
    )
    assert threads.choose_threads(3).threads == 3
    monkeypatch.setenv("VAEKIT_THREADS", "2")
    assert threads.choose_threads() == threads.ThreadChoice(2, "$VAEKIT_THREADS")
    monkeypatch.setenv("VAEKIT_THREADS", "two")
    with pytest.raises(ConfigError, match="VAEKIT_THREADS must be a positive integer"):
        threads.choose_threads()
    monkeypatch.delenv("VAEKIT_THREADS")
    argv = ["--threads", "1", "train", "--hidden", "8", "--latent-dim", "2", "--epochs", "1"]
    assert main([*argv, "--run-dir", str(tmp_path / "run")]) == 0
    assert "-> " + str(tmp_path / "run") + "; 1 thread (--threads;" in capsys.readouterr().out


def test_busy_cores_sees_a_spinning_process() -> None:
    import subprocess
    import sys
    import time

    from vaekit.threads import available_cores, busy_cores

    if available_cores() < 2:
        pytest.skip("needs two cores")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert busy_cores(0.5) >= 1
    finally:
        spinner.kill()
        spinner.wait()


def test_your_own_data_traced_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An image folder's codes come with each example's row, file and class name; --split
    all encodes every example in the folder's order; the run keeps the class names."""
    from PIL import Image

    folder = tmp_path / "pets"
    rng = np.random.default_rng(0)
    for kind, level in (("cats", 40), ("dogs", 200)):
        (folder / kind).mkdir(parents=True)
        for i in range(10):
            pixels = np.clip(rng.normal(level, 20, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / kind / f"{i}.png")
    run = tmp_path / "run"
    argv = ["train", "--dataset", str(folder), "--hidden", "8", "--latent-dim", "2"]
    assert main([*argv, "--epochs", "1", "--run-dir", str(run), "--no-progress"]) == 0
    assert json.loads((run / "config.json").read_text())["data"]["classes"] == ["cats", "dogs"]
    out = tmp_path / "z.npy"
    assert main(["encode", str(run), "--split", "all", "-o", str(out)]) == 0
    z, index = np.load(out), np.load(tmp_path / "z.index.npy")
    files, labels = np.load(tmp_path / "z.files.npy"), np.load(tmp_path / "z.labels.npy")
    assert len(z) == 20 and index.tolist() == list(range(20))
    assert [f.split("/")[0] for f in files] == ["cats"] * 10 + ["dogs"] * 10
    assert labels.tolist() == [0] * 10 + [1] * 10
    assert np.load(tmp_path / "z.classes.npy").tolist() == ["cats", "dogs"]
    csv_path = tmp_path / "terms.csv"
    assert main(["evaluate", str(run), "-k", "2", "--per-example", str(csv_path)]) == 0
    header, *rows = [line.split(",") for line in csv_path.read_text().splitlines()]
    assert header[:5] == ["index", "row", "file", "label", "class"] and len(rows) == 2
    for _, row, file, label, name in (r[:5] for r in rows):
        assert (
            file == files[int(row)] and name == file.split("/")[0] == ["cats", "dogs"][int(label)]
        )
    capsys.readouterr()


class _Encoder(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(64, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.flatten(1))


class _Decoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 64)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layer(z).reshape(-1, 1, 8, 8)


def test_your_own_networks_are_checked_and_get_every_figure(
    tmp_path: Path, digits: vaekit.Dataset, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match=r"your encoder maps \(2, 1, 8, 8\) to \(2, 5\); "):
        vaekit.VAE(digits.shape, 3, encoder=_Encoder(5), decoder=_Decoder())
    model = vaekit.VAE(digits.shape, 3, encoder=_Encoder(6), decoder=_Decoder())
    history = vaekit.fit(model, digits, epochs=2, run_dir=tmp_path / "run", progress=False)
    eight_bit = (digits.test_x * 255).to(torch.uint8)
    for measure in (lambda: vaekit.elbo(model, eight_bit), lambda: model.encode(eight_bit)):
        with pytest.raises(DataError, match=r"torch.uint8; convert them to floats first"):
            measure()
    with pytest.raises(DataError, match=r"shape \(64,\) but the model expects \(1, 8, 8\)"):
        vaekit.evaluate(model, digits.test_x.flatten(1), k=2)
    path = vaekit.write_report(model, digits, tmp_path / "mine.html", k=2, history=history)
    page = path.read_text()
    assert page.count("<img") == 9 and "No training history" not in page  # every figure
    status = main(["sample", str(tmp_path / "run")])
    one_line_error(capsys, status, "vaekit.write_report(model, data")
