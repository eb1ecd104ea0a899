"""Every CLI command, and every bad-input case: one line on stderr, exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error
from PIL import Image

from vaekit.cli import main
from vaekit.training.run_dir import CHECKPOINT, WEIGHTS


def _fails_cleanly(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    one_line_error(capsys, status, message)


def test_train_writes_a_run_and_resume_extends_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    argv = ["train", "--epochs", "2", "--hidden", "32", "--latent-dim", "4", "--run-dir", str(run)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "held-out ELBO" in out and "nats/example" in out
    for name in (
        "config.json",
        WEIGHTS,
        CHECKPOINT,
        "metrics.jsonl",
        "samples.png",
        "reconstructions.png",
    ):
        assert (run / name).is_file(), name
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    capsys.readouterr()
    _fails_cleanly(capsys, ["train", "--resume", str(run), "--epochs", "2"], "more than 3")


def test_gaussian_on_8bit_images_points_to_the_discretized_logistic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images.npy"
    np.save(images, np.random.default_rng(0).integers(0, 256, (30, 8, 8), dtype=np.uint8))
    run = ["--dataset", str(images), "--epochs", "1", "--hidden", "8", "--latent-dim", "2"]
    for likelihood, noted in (("gaussian", True), ("discretized-logistic", False)):
        argv = ["train", *run, "--likelihood", likelihood, "--run-dir", str(tmp_path / likelihood)]
        assert main(argv) == 0
        assert ("note: a Gaussian likelihood of 8-bit images" in capsys.readouterr().out) is noted


def test_a_run_whose_data_file_moved(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).random((40, 6), dtype=np.float32))
    run = ["--run-dir", str(tmp_path / "run"), "--likelihood", "gaussian", "--hidden", "8"]
    assert main(["train", "--dataset", str(data), "--epochs", "1", *run]) == 0
    data.rename(tmp_path / "moved.npy")
    capsys.readouterr()
    evaluate = ["evaluate", str(tmp_path / "run"), "-k", "2", "--no-progress"]
    _fails_cleanly(capsys, evaluate, "name them with --dataset")
    assert main([*evaluate, "--dataset", str(tmp_path / "moved.npy")]) == 0


def test_sample_reconstruct_encode(trained_run: Path, tmp_path: Path) -> None:
    assert main(["sample", str(trained_run), "-n", "16", "-o", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").size[0] > 0
    assert (
        main(
            [
                "sample",
                str(trained_run / WEIGHTS),
                "-n",
                "5",
                "--temperature",
                "0",
                "-o",
                str(tmp_path / "s.npy"),
            ]
        )
        == 0
    )
    cold = np.load(tmp_path / "s.npy")
    assert cold.shape == (5, 1, 8, 8) and np.allclose(cold, cold[0])  # T = 0: all at z = 0
    drawn = []
    for seed in ("1", "1", "2"):
        out = tmp_path / f"d{len(drawn)}.npy"
        argv = ["sample", str(trained_run), "-n", "5", "--draw", "--seed", seed, "-o", str(out)]
        assert main(argv) == 0
        drawn.append(np.load(out))
    assert set(np.unique(drawn[0])) <= {0.0, 1.0}  # draws from the Bernoulli p(x|z)
    assert np.array_equal(drawn[0], drawn[1]) and not np.array_equal(drawn[0], drawn[2])
    assert main(["reconstruct", str(trained_run), "-o", str(tmp_path / "r.png")]) == 0
    assert main(["encode", str(trained_run), "-o", str(tmp_path / "z.npy")]) == 0
    z, labels = np.load(tmp_path / "z.npy"), np.load(tmp_path / "z.labels.npy")
    assert z.shape == (180, 4) and labels.shape == (180,)
    encode_draw = ["encode", str(trained_run), "--draw", "-o", str(tmp_path / "zd.npy")]
    assert main(encode_draw) == 0
    z_draw = np.load(tmp_path / "zd.npy")
    assert z_draw.shape == z.shape and not np.allclose(z_draw, z)
    assert (
        main(["encode", str(trained_run), "--split", "train", "-o", str(tmp_path / "z.npz")]) == 0
    )
    with np.load(tmp_path / "z.npz") as archive:
        assert archive["z"].shape == (1617, 4) and archive["labels"].shape == (1617,)


def test_bad_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run = ["--run-dir", str(tmp_path / "never")]
    _fails_cleanly(capsys, ["train", "--latent-dim", "0", *run], "latent_dim")
    _fails_cleanly(capsys, ["train", "--hidden", "-5", *run], "every hidden size")
    _fails_cleanly(capsys, ["train", "--hidden", "many", *run], "comma-separated")
    _fails_cleanly(capsys, ["train", "--epochs", "-1", *run], "epochs")
    _fails_cleanly(capsys, ["train", "--batch-size", "0", *run], "batch_size")
    _fails_cleanly(capsys, ["train", "--network", "conv", "--hidden", "8,8", *run], "one --hidden")
    _fails_cleanly(capsys, ["train", "--likelihood", "poisson", *run], "invalid choice")
    _fails_cleanly(capsys, ["train", "--compile", "yes", *run], "invalid choice")
    _fails_cleanly(capsys, ["train", "--dataset", "nope", *run], "unknown dataset")
    assert not (tmp_path / "never").exists()


def test_bad_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    np.save(tmp_path / "ints.npy", np.zeros((10, 3), np.int64))
    _fails_cleanly(capsys, ["train", "--dataset", str(tmp_path / "ints.npy")], "dtype")
    np.save(tmp_path / "flat.npy", np.zeros(10, np.float32))
    _fails_cleanly(capsys, ["train", "--dataset", str(tmp_path / "flat.npy")], "rank 1")
    _fails_cleanly(capsys, ["train", "--dataset", str(tmp_path / "missing.npy")], "not found")
    images = tmp_path / "images"
    images.mkdir()
    Image.new("L", (8, 8)).save(images / "a.png")
    Image.new("L", (10, 8)).save(images / "b.png")
    _fails_cleanly(capsys, ["train", "--dataset", str(images)], "--image-size")
    _fails_cleanly(
        capsys, ["train", "--dataset", "mnist", "--data-dir", str(tmp_path)], "not found"
    )
    np.save(tmp_path / "grey.npy", np.full((20, 4), 0.5, np.float32))
    grey = ["train", "--dataset", str(tmp_path / "grey.npy"), "--run-dir", str(tmp_path / "no")]
    _fails_cleanly(capsys, [*grey, "--binarize", "none"], "Bernoulli")
    _fails_cleanly(capsys, [*grey, "--likelihood", "gaussian", "--output-bias"], "--output-bias")
    assert not (tmp_path / "no").exists()  # data and options are checked before it is made


def test_bad_checkpoints(
    capsys: pytest.CaptureFixture[str], trained_run: Path, tmp_path: Path
) -> None:
    out = ["-o", str(tmp_path / "x.png")]
    _fails_cleanly(capsys, ["sample", str(tmp_path / "nothing"), *out], "not found")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes((trained_run / WEIGHTS).read_bytes()[:1000])
    _fails_cleanly(capsys, ["sample", str(broken), *out], "truncated or corrupt")
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "config.json").write_text(
        (trained_run / "config.json").read_text().replace('"latent_dim": 4', '"latent_dim": 5')
    )
    (copy / WEIGHTS).write_bytes((trained_run / WEIGHTS).read_bytes())
    _fails_cleanly(capsys, ["sample", str(copy), *out], "do not match")
    (copy / "config.json").write_text("{not json")
    _fails_cleanly(capsys, ["sample", str(copy), *out], "corrupt")
    _fails_cleanly(capsys, ["sample", str(trained_run), "-o", str(tmp_path / "x.gif")], ".png")
    _fails_cleanly(capsys, ["train", "--resume", str(tmp_path / "nothing")], "config.json")
    weights_only = str(tmp_path / "broken.safetensors")  # a file where the run's folder goes
    _fails_cleanly(capsys, ["train", "--resume", weights_only], "is this a vaekit run directory")


def test_real_process_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vaekit",
            "train",
            "--latent-dim",
            "0",
            "--run-dir",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


def test_closed_stdout_writes_the_files_and_exits_without_a_traceback(
    trained_run: Path, tmp_path: Path
) -> None:
    """``vaekit evaluate RUN | head -1``: the reader goes away; the evaluation is still saved."""
    csv, saved = tmp_path / "terms.csv", trained_run / "evaluation.json"
    saved.unlink(missing_ok=True)
    command = [sys.executable, "-m", "vaekit", "evaluate", str(trained_run), "-k", "2"]
    process = subprocess.Popen(
        [*command, "--no-progress", "--per-example", str(csv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # before the process writes anything
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141, err  # 128 + SIGPIPE, as a shell reports it
    assert b"Traceback" not in err and err.strip() == b"", err
    assert csv.exists() and saved.exists()
