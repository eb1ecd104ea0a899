"""Never a dead end: every stop resumable, every file written whole, every signal handled.
One test (or more) per defect found by trying the reliability promises as a hostile user
would; each failed on vaekit 0.1."""

from __future__ import annotations

import errno
import io
import json
import math
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    TRAIN,
    FullDisk,
    copy_without_evaluations,
    one_line_error,
    same_run,
    signal_during_epoch_2,
    start,
    wait_for_epochs,
)
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import vaekit
from vaekit import files
from vaekit.cli import main
from vaekit.errors import CheckpointError, DataError, TrainingDiverged
from vaekit.files import run_lock
from vaekit.model import ModelConfig, build_model
from vaekit.training.config import TrainConfig
from vaekit.training.run_dir import CHECKPOINT, METRICS, WEIGHTS
from vaekit.training.trainer import Trainer


# 1. a stop before the first checkpoint ---------------------------------------------------
def test_kill_before_the_first_checkpoint_resumes_from_epoch_0(
    tmp_path: Path, array_data: Path, uninterrupted: Path
) -> None:
    """kill -9 after epoch 1 of a run that checkpoints every 3 epochs: there is a config and
    metrics but no checkpoint; --resume starts again from epoch 0 and ends as the run that
    was never stopped."""
    run = tmp_path / "early"
    process = start(array_data, run, "--checkpoint-every", "3")
    wait_for_epochs(run, 1, process)
    process.kill()
    process.wait()
    assert not (run / CHECKPOINT).exists()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    same_run(run, uninterrupted)


def test_divergence_in_epoch_1_does_not_claim_a_checkpoint(
    tmp_path: Path, digits: vaekit.Dataset
) -> None:
    model = vaekit.VAE(digits.shape, 4, hidden=[16])
    model.decoder.register_forward_hook(lambda module, inputs, output: output * math.nan)
    with pytest.raises(TrainingDiverged, match="no checkpoint was written yet") as error:
        vaekit.fit(model, digits, run_dir=tmp_path / "run", epochs=2, progress=False)
    assert "starts the run again from epoch 0" in str(error.value)
    assert "intact" not in str(error.value) and "is kept" not in str(error.value)


# 2. a kill during the last write of model.safetensors -------------------------------------
def test_resume_makes_the_weights_agree_with_the_checkpoint(
    tmp_path: Path, trained_run: Path, digits: vaekit.Dataset
) -> None:
    """The final checkpoint was written, the kill came before model.safetensors: resume
    trains nothing, and must still leave the checkpoint's weights in model.safetensors."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    stale = (run / WEIGHTS).read_bytes()
    vaekit.resume(run, epochs=4, progress=False)
    (run / WEIGHTS).write_bytes(stale)  # the epoch-3 weights beside the epoch-4 checkpoint
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    checkpoint = load_file(run / CHECKPOINT)
    for name, tensor in load_file(run / WEIGHTS).items():
        assert torch.equal(tensor, checkpoint[f"model.{name}"]), name


# 3. outputs outside the run directory -----------------------------------------------------
def _full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    real_fdopen = os.fdopen
    monkeypatch.setattr(
        files.os, "fdopen", lambda fd, mode="r", *a, **k: FullDisk(real_fdopen(fd, mode, *a, **k))
    )


@pytest.mark.parametrize(
    "command",
    [
        ["sample", "-n", "4", "-o", "{out}.npy"],
        ["encode", "-o", "{out}.npy"],
        ["encode", "-o", "{out}.npz"],
    ],
)
def test_sample_and_encode_outputs_are_written_whole(
    tmp_path: Path,
    trained_run: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    """On a full disk the user's previous file stays as it was, and the error is one line
    that names the file not written."""
    argv = [command[0], str(trained_run), *(a.format(out=tmp_path / "out") for a in command[1:])]
    assert main(argv) == 0
    output = Path(argv[-1])
    before = output.read_bytes()
    _full_disk(monkeypatch)
    status = main([*argv, "--seed", "1"])
    monkeypatch.undo()
    err = capsys.readouterr().err
    one_line = f"vaekit: error: {tmp_path / 'out'}."  # out.npy, out.npz, or out.labels.npy
    assert status == 2 and err.startswith(one_line) and err.count("\n") == 1, err
    assert err.rstrip().endswith(": No space left on device"), err
    assert output.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_an_output_in_a_read_only_folder_is_named_in_one_line(
    tmp_path: Path,
    trained_run: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The temporary file that could not be made is vaekit's; the line names the user's."""

    def read_only_folder(dir: str, prefix: str, suffix: str) -> tuple[int, str]:
        tmp = os.path.join(dir, f"{prefix}x1y2z3{suffix}")
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), tmp)

    monkeypatch.setattr(files.tempfile, "mkstemp", read_only_folder)
    out = tmp_path / "samples.npy"
    status = main(["sample", str(trained_run), "-n", "4", "-o", str(out)])
    one_line_error(capsys, status, f"{out}: {os.strerror(errno.EROFS)}")


def test_encode_removes_the_labels_of_an_earlier_output(
    tmp_path: Path, trained_run: Path, digits: vaekit.Dataset
) -> None:
    out = tmp_path / "z.npy"
    assert main(["encode", str(trained_run), "-o", str(out)]) == 0
    assert (tmp_path / "z.labels.npy").exists()  # digits have labels
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, x_train=digits.train_x.numpy(), x_test=digits.test_x.numpy())
    assert main(["encode", str(trained_run), "--dataset", str(unlabelled), "-o", str(out)]) == 0
    assert not (tmp_path / "z.labels.npy").exists()


# 4. --run-dir naming a folder of other files ----------------------------------------------
def test_a_folder_of_other_files_is_not_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("my notes\n")
    (folder / "model.safetensors").write_bytes(b"my weights")
    status = main(["train", "--epochs", "1", "--run-dir", str(folder), "--no-progress"])
    one_line_error(capsys, status, "holds other files")
    assert (folder / "metrics.jsonl").read_text() == "my notes\n"
    assert (folder / "model.safetensors").read_bytes() == b"my weights"
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, main(["train", "--run-dir", str(tmp_path / "file")]), "is a file")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    one_line_error(capsys, main(["train", "--run-dir", str(tmp_path / "dangling")]), "broken link")


# 5. preemption ----------------------------------------------------------------------------
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_save_like_ctrl_c(
    tmp_path: Path, array_data: Path, uninterrupted: Path, signum: int, status: int
) -> None:
    run = tmp_path / "preempted"
    process = signal_during_epoch_2(array_data, run, signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == status, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"stopped by {signal.Signals(signum).name}" in lines[0], err
    assert f"--resume {run}" in lines[0]
    assert not (run / ".lock").exists()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    same_run(run, uninterrupted)


def test_a_lock_file_naming_a_live_pid_does_not_block(tmp_path: Path) -> None:
    """After a container restarts, pid 1 (or any reused pid) is alive again: only a lock
    held by a live process blocks, never a file left behind."""
    (tmp_path / ".lock").write_text("1")
    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_text().startswith(f"pid {os.getpid()} on ")


def _hold_lock(folder: str, barrier, results) -> None:
    barrier.wait()
    try:
        with run_lock(Path(folder)):
            results.put("won")
            time.sleep(1.0)
    except CheckpointError as err:
        results.put(str(err))


def test_of_processes_taking_a_stale_lock_at_once_one_wins(tmp_path: Path) -> None:
    (tmp_path / ".lock").write_text("999999999")  # left by a dead process
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(6), context.Queue()
    workers = [
        context.Process(target=_hold_lock, args=(str(tmp_path), barrier, results)) for _ in range(6)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join()
    assert outcomes.count("won") == 1, outcomes
    refused = [o for o in outcomes if o != "won"]
    assert all("in use by another vaekit process (pid" in o for o in refused), refused
    assert all("nothing to delete" in o for o in refused)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_sigterm_to_pid_1_of_a_container_is_not_ignored(tmp_path: Path, array_data: Path) -> None:
    """PID 1 ignores signals it has no handler for; vaekit installs one for SIGTERM."""
    run = tmp_path / "pid1"
    argv = [*TRAIN, "--dataset", str(array_data), "--run-dir", str(run), "--epochs", "100"]
    probe = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no permission for a PID namespace here")
    process = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--kill-child=SIGTERM",
            sys.executable,
            "-m",
            "vaekit",
            *argv,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_epochs(run, 1, process)
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    os.kill(int(children[0]), signal.SIGTERM)  # vaekit, pid 1 of its namespace
    _, err = process.communicate(timeout=60)
    assert "stopped by SIGTERM" in err, err
    assert len(run.joinpath(METRICS).read_text().splitlines()) < 100


# 6. --on-nan rollback ---------------------------------------------------------------------
def test_every_rollback_halves_the_learning_rate_again(
    digits: vaekit.Dataset, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def diverge(self: Trainer, bar: object) -> dict:
        raise TrainingDiverged(f"diverged at lr x{self.state.lr_scale:g}")

    monkeypatch.setattr(Trainer, "_train_epoch", diverge)
    model = vaekit.VAE(digits.shape, 4, hidden=[8])
    with pytest.raises(TrainingDiverged, match=r"x0\.125"):
        vaekit.fit(model, digits, epochs=2, on_nan="rollback", progress=False)
    captured = capsys.readouterr()
    assert "rolled back" not in captured.out
    scales = [line.split("learning rate ")[1].split()[0] for line in captured.err.splitlines()]
    assert scales == ["x0.5", "x0.25", "x0.125"]


# 7. images --------------------------------------------------------------------------------
def test_16_bit_images_use_their_full_range(tmp_path: Path) -> None:
    folder = tmp_path / "deep"
    folder.mkdir()
    values = np.array([[0, 16384], [32768, 65535]], dtype=np.uint16)
    for i in range(4):
        Image.fromarray(values).save(folder / f"{i}.png")
    data = vaekit.load_dataset(str(folder))
    x = torch.cat([data.train_x, data.test_x])[0, 0]
    expected = torch.tensor([[0, 16384], [32768, 65535]]) / 65535
    torch.testing.assert_close(x, expected.float())


def test_transparency_is_refused_and_opaque_alpha_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    opaque, clear = tmp_path / "opaque", tmp_path / "clear"
    for folder, alpha in ((opaque, 255), (clear, 0)):
        folder.mkdir()
        for i in range(3):
            pixels = np.full((4, 4, 4), alpha, dtype=np.uint8)
            pixels[..., :3] = 40 * i
            Image.fromarray(pixels, mode="RGBA").save(folder / f"{i}.png")
    data = vaekit.load_dataset(str(opaque))
    assert data.shape == (3, 4, 4)
    with pytest.raises(DataError, match="transparent pixels"):
        vaekit.load_dataset(str(clear))
    one_line_error(capsys, main(["train", "--dataset", str(clear)]), "transparent pixels")


# 8. the report's evaluation ---------------------------------------------------------------
def test_report_does_not_show_an_evaluation_of_other_data_or_weights(
    tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_without_evaluations(trained_run, tmp_path / "run")
    assert main(["evaluate", str(run), "--split", "train", "-k", "3", "--no-progress"]) == 0
    assert main(["report", str(run), "-k", "3"]) == 0
    page = (run / "report.html").read_text()
    assert "Evaluated for this report (it was of the train split)" in page
    assert main(["evaluate", str(run), "-k", "4", "--no-progress"]) == 0
    vaekit.resume(run, epochs=4, progress=False)
    assert main(["report", str(run), "-k", "3"]) == 0
    page = (run / "report.html").read_text()
    assert "it was of other weights" in page
    capsys.readouterr()


# 9. the data of a resumed run -------------------------------------------------------------
def test_resume_refuses_changed_data_unless_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "x.npy"
    rng = np.random.default_rng(0)
    np.save(data, (rng.random((200, 6)) < 0.5).astype(np.float32))
    run = tmp_path / "run"
    argv = ["train", "--dataset", str(data), "--hidden", "8", "--latent-dim", "2"]
    assert main([*argv, "--epochs", "1", "--run-dir", str(run), "--no-progress"]) == 0
    np.save(data, (rng.random((200, 6)) < 0.5).astype(np.float32))
    status = main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"])
    one_line_error(capsys, status, "not the data")
    assert (
        main(
            [
                "train",
                "--resume",
                str(run),
                "--epochs",
                "2",
                "--accept-changed-data",
                "--no-progress",
            ]
        )
        == 0
    )


@pytest.mark.parametrize("empty", ["x_train", "x_test"])
def test_an_empty_split_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], empty: str
) -> None:
    arrays = {"x_train": np.zeros((20, 4), np.float32), "x_test": np.zeros((5, 4), np.float32)}
    arrays[empty] = arrays[empty][:0]
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    run = tmp_path / "run"
    status = main(["train", "--dataset", str(path), "--run-dir", str(run), "--epochs", "1"])
    one_line_error(capsys, status, "split is empty")
    assert not run.exists()


# 10. a closed stdout ----------------------------------------------------------------------
def test_training_goes_on_when_its_output_goes(tmp_path: Path, array_data: Path) -> None:
    run = tmp_path / "piped"
    argv = [*TRAIN[:-1], "--dataset", str(array_data), "--run-dir", str(run)]
    command = " ".join([sys.executable, "-m", "vaekit", *argv]) + " | head -c 1 > /dev/null"
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, text=True
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    assert len((run / METRICS).read_text().splitlines()) == 4
    assert vaekit.load(run) is not None


# 11. one line where one line is promised ---------------------------------------------------
def test_full_disk_in_evaluate_is_one_line(
    tmp_path: Path,
    trained_run: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    _full_disk(monkeypatch)
    status = main(["evaluate", str(run), "-k", "2", "--no-progress"])
    monkeypatch.undo()
    one_line_error(capsys, status, "No space left on device")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["sample", "{run}", "--temperature", "nan"],
            "--temperature must be a non-negative finite number",
        ),
        (["sample", "{run}", "-n", "100000000000"], "more than this machine's"),
        (["sample", "{run}", "--seed", str(2**64)], "--seed must be an integer from 0"),
        (["train", "--seed", str(2**64)], "seed must be an integer from 0"),
        (["train", "--latent-dim", "100000000", "--epochs", "1"], "more than this machine's"),
        (["train", "--hidden", "3000000000", "--epochs", "1"], "more than this machine's"),
        (
            ["train", "--model", "hierarchy", "--layer-hidden", "3000000000", "--epochs", "1"],
            "vaekit: error: a network of ",
        ),
        (
            ["train", "--posterior", "iaf", "--flow-steps", "10000000", "--epochs", "1"],
            "IAF steps of ",
        ),
        (["sample", "{run}", "-o", "{tmp}/a_folder.png"], "is a folder"),
        (["identity", "--dataset", "{tmp}/two.npy", "--latent-dim", "1"], "at least 2 held-out"),
    ],
)
def test_impossible_requests_are_one_line(
    tmp_path: Path,
    trained_run: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    (tmp_path / "a_folder.png").mkdir()
    np.save(tmp_path / "two.npy", np.random.default_rng(0).random((2, 3)).astype(np.float32))
    argv = [a.format(run=trained_run, tmp=tmp_path) for a in argv]
    one_line_error(capsys, main(argv), message)


def test_weights_torch_cannot_allocate_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sizes no estimate refused (a VampPrior's pseudo-inputs, a mixture's components) that
    torch's allocator refuses become one line with the size asked for, not a traceback."""

    def refused(*args: object, **kwargs: object) -> None:
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 3221225472 bytes. Error code 12"
        )

    config = ModelConfig.from_options((4,), 2)
    monkeypatch.setattr(torch.nn.Linear, "__init__", refused)
    with pytest.raises(
        vaekit.VaekitError, match=r"torch asked for 3\.0 GiB at once and was refused"
    ):
        build_model(config)


def test_damaged_run_files_are_one_line(
    tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / METRICS).write_bytes(b"\xff\xfe not utf-8")
    one_line_error(capsys, main(["train", "--resume", str(run), "--epochs", "4"]), "damaged")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    one_line_error(capsys, main(["sample", str(run)]), "unreadable or corrupt")
    (run / "config.json").write_text(
        json.dumps(config).replace('"seed": 0', '"seed": 1' + "0" * 5000)
    )
    one_line_error(capsys, main(["sample", str(run)]), "unreadable or corrupt")


@pytest.mark.parametrize(
    "edit",
    [
        lambda record: record.update(test_elbo="abc"),  # a TypeError in the curves
        lambda record: record.pop("train_elbo"),  # a KeyError in the curves
        lambda record: record.update(lr=[1e-3]),
    ],
)
def test_forged_epoch_records_are_one_line(
    tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str], edit
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    records = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
    edit(records[-1])
    (run / METRICS).write_text("".join(json.dumps(record) + "\n" for record in records))
    for argv in (["plot", str(run), "--what", "curves"], ["train", "--resume", str(run)]):
        one_line_error(capsys, main(argv), "not vaekit's per-epoch records; remove it")


def test_a_checkpoint_position_that_does_not_fit_is_one_line(
    tmp_path: Path, array_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "forged"
    process = signal_during_epoch_2(array_data, run, signal.SIGINT)
    process.communicate(timeout=60)
    with safe_open(str(run / CHECKPOINT), framework="pt") as f:
        metadata = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    tensors["epoch.order"] = tensors["epoch.order"] + 10**9  # indices past the data
    save_file(tensors, run / CHECKPOINT, metadata)
    one_line_error(capsys, main(["train", "--resume", str(run)]), "does not fit these")


def test_a_cache_that_is_a_file_and_huge_images_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "cache"))
    status = main(["train", "--dataset", "fashion-mnist", "--run-dir", str(tmp_path / "r")])
    one_line_error(capsys, status, str(tmp_path / "cache"))
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / f"{i}.png")
    status = main(["train", "--dataset", str(folder), "--image-size", "30000"])
    one_line_error(capsys, status, "more than this machine's")


def test_a_forged_member_size_is_refused_before_allocating(tmp_path: Path) -> None:
    """An .npz member whose stated size (in the archive's directory) and array header claim
    4 GB, compressed into a few bytes: refused from what the archive can hold, before numpy
    allocates anything."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1,), np.float32))
    header["shape"] = (1_000_000_000,)  # 4.0 GB of float32
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    path = tmp_path / "forged.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", buffer.getvalue() + bytes(64))
    raw = bytearray(path.read_bytes())
    directory = raw.rfind(b"PK\x01\x02")  # the central directory entry: its stated size
    raw[directory + 24 : directory + 28] = (0xFFFFFFF0).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as archive:
        assert archive.infolist()[0].file_size == 0xFFFFFFF0
    with pytest.raises(DataError, match="declares more data"):
        vaekit.load_dataset(str(path))


def test_ctrl_c_outside_training_talks_of_no_checkpoint(
    trained_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("vaekit.cli.evaluate_split", interrupt)
    assert main(["evaluate", str(trained_run), "-k", "2"]) == 130
    err = capsys.readouterr().err
    assert "checkpoint" not in err and "RUN" not in err and err.count("\n") == 1


# 12. smaller --------------------------------------------------------------------------------
def test_temporary_files_of_a_killed_write_are_removed(tmp_path: Path, trained_run: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / ".checkpoint.safetensors.abc123.tmp").write_bytes(b"half a file")
    vaekit.resume(run, epochs=4, progress=False)
    assert not list(run.glob(".*.tmp"))


def test_a_resume_that_would_change_the_run_names_what_may_change(
    trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["train", "--resume", str(trained_run), "--lr", "0.1"])
    may_change = (
        "drop --lr (only --epochs, --device, --precision, --compile, --on-nan, and --dataset or "
        "--data-dir for the same data may change)"
    )
    one_line_error(capsys, status, may_change)


def test_resuming_with_more_epochs_says_the_schedule_is_stretched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    argv = ["train", "--hidden", "8", "--latent-dim", "2", "--lr-schedule", "cosine"]
    assert main([*argv, "--epochs", "2", "--run-dir", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "4", "--no-progress"]) == 0
    assert "the cosine learning-rate schedule now spans 4 epochs instead of 2" in (
        capsys.readouterr().out
    )


def test_warnings_are_one_line() -> None:
    from vaekit.cli import _one_line_warning

    text = _one_line_warning(UserWarning("first line\n  second line"), UserWarning)
    assert text == "vaekit: warning: first line second line\n"


def test_a_read_only_run_is_refused_before_minutes_of_work(
    tmp_path: Path,
    trained_run: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """(Tests run as root, which any folder lets write: the probe's failure is simulated.)"""

    def read_only(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EROFS, os.strerror(errno.EROFS))

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("computed before finding it could not save the result")

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)

    def files() -> dict[Path, bytes]:
        return {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}

    before = files()
    monkeypatch.setattr("vaekit.cli.tempfile.TemporaryFile", read_only)
    monkeypatch.setattr("vaekit.cli.evaluate_split", never)
    monkeypatch.setattr("vaekit.cli.resume", never)
    resume = ["train", "--resume", str(run), "--epochs", "5", "--no-progress"]
    sweep = ["sweep", "--resume", str(run), "--epochs", "5"]  # refused before reading a plan
    for command in (["evaluate", str(run)], ["report", str(run)], resume, sweep):
        one_line_error(capsys, main(command), "cannot be written")
    for command, fix in (
        (["sample", str(run)], "-o"),
        (["reconstruct", str(run)], "-o"),
        (["plot", str(run), "--what", "curves"], "-o"),
        (["evaluate", str(run), "--per-example", str(tmp_path / "x.csv")], "--per-example"),
    ):
        one_line_error(
            capsys,
            main(command),
            f"cannot be written (Read-only file system); name another file with {fix}",
        )
    assert files() == before


def test_a_damaged_evaluation_or_a_lost_metrics_file_is_no_dead_end(
    tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "evaluation.json").write_bytes(b"\xff{ not json")
    assert main(["report", str(run), "-k", "2", "--limit", "10"]) == 0
    assert "Evaluated for this report (the run had none)" in (run / "report.html").read_text()
    (run / METRICS).unlink()
    assert main(["train", "--resume", str(run), "--epochs", "4", "--no-progress"]) == 0
    assert [json.loads(line)["epoch"] for line in (run / METRICS).read_text().splitlines()] == [4]
    capsys.readouterr()


# 13. another device -----------------------------------------------------------------------
CUDA_STATE = torch.arange(16, dtype=torch.uint8)
"""A CUDA generator's state as a checkpoint holds it (16 bytes: seed and offset), which no
CPU generator can take."""


def _with_noise_state(run: Path, state: torch.Tensor) -> None:
    """The run's checkpoint, its noise generator's state replaced by ``state``."""
    path = run / CHECKPOINT
    with safe_open(str(path), "pt") as saved:
        metadata = saved.metadata()
    save_file({**load_file(path), "rng.noise": state}, str(path), metadata=metadata)


def test_a_run_resumes_on_another_type_of_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that trained on a GPU goes on on a CPU (or back): its generators' states do not
    fit there, so they are seeded from the saved ones: it continues, the same way from the
    same checkpoint, and says it is not bit for bit. ``--device`` may change on resume."""
    first, second = tmp_path / "first", tmp_path / "second"
    argv = ["train", "--hidden", "8", "--latent-dim", "2", "--epochs", "2", "--no-progress"]
    assert main([*argv, "--run-dir", str(first)]) == 0
    _with_noise_state(first, CUDA_STATE)  # as a run on a GPU saved it
    shutil.copytree(first, second)
    capsys.readouterr()
    assert main(["train", "--resume", str(first), "--epochs", "4", "--device", "cpu"]) == 0
    note = capsys.readouterr().out
    assert "random state of its noise draws on another type of device than cpu" in note
    assert main(["train", "--resume", str(second), "--epochs", "4", "--no-progress"]) == 0
    same_run(first, second)
    assert json.loads((first / "config.json").read_text())["train"]["device"] == "cpu"
    if not torch.cuda.is_available():
        status = main(["train", "--resume", str(first), "--epochs", "5", "--device", "cuda"])
        one_line_error(capsys, status, "no CUDA device")
    # a state that is no generator's is damage, not another device
    for forged in (torch.zeros(0, dtype=torch.uint8), torch.zeros(16, dtype=torch.float32)):
        _with_noise_state(second, forged)
        status = main(["train", "--resume", str(second), "--epochs", "5"])
        one_line_error(capsys, status, "incomplete training state (rng.noise is not a generator")
    # how the steps are computed may change too (a GPU's fp16 has no CPU kernels)
    how = ["--precision", "bf16", "--compile", "off", "--no-progress"]
    assert main(["train", "--resume", str(first), "--epochs", "5", *how]) == 0
    train = json.loads((first / "config.json").read_text())["train"]
    assert (train["precision"], train["compile"], train["epochs"]) == ("bf16", "off", 5)


# 14. past a divergence ---------------------------------------------------------------------
def test_a_diverged_run_goes_on_with_on_nan_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run stopped by a divergence says how to get past it: resumed as it was it would
    diverge again where it did (the draws are the same), so the way on is the resume command
    it names, with --on-nan rollback, which that resume accepts."""
    run = tmp_path / "run"
    argv = ["train", "--hidden", "8", "--latent-dim", "2", "--no-progress", "--run-dir", str(run)]
    assert main([*argv, "--epochs", "2"]) == 0
    real = Trainer._train_epoch
    tries = {"n": 0}

    def diverge_once(self: Trainer, bar: object) -> dict:
        tries["n"] += 1
        if tries["n"] == 1:
            self._check_finite(torch.tensor([[0.0, math.nan, 1.0]]), 0)
        return real(self, bar)

    monkeypatch.setattr(Trainer, "_train_epoch", diverge_once)
    capsys.readouterr()
    status = main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"])
    err = capsys.readouterr().err
    assert status != 0 and len(err.strip().splitlines()) == 1, err
    command = f"vaekit train --resume {run} --on-nan rollback"
    assert f"continue with '{command}' (a divergence then returns to the last good" in err
    tries["n"] = 0
    assert main([*command.split()[1:], "--epochs", "3", "--no-progress"]) == 0
    assert "rolled back to epoch 2 with learning rate x0.5" in capsys.readouterr().err
    rows = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3] and rows[2]["lr"] == pytest.approx(5e-4)


@pytest.mark.parametrize(
    ("on_nan", "in_sweep", "advice"),
    [
        ("stop", False, "continue with 'vaekit train --resume {run} --on-nan rollback' (a"),
        ("rollback", False, "continue with 'vaekit train --resume {run}', or train anew"),
        ("stop", True, "'vaekit sweep --resume S', though resumed as it was it diverges again"),
    ],
)
def test_a_divergence_names_a_way_past_it_that_works(
    tmp_path: Path, digits: vaekit.Dataset, on_nan: str, in_sweep: bool, advice: str
) -> None:
    """Only a resume of a single run takes --on-nan rollback: a sweep's does not, and a run
    that rolls back already has spent its tries."""
    run = tmp_path / "run"
    model = vaekit.VAE(digits.shape, 2, hidden=[8])
    vaekit.fit(model, digits, run_dir=run, epochs=1, progress=False)  # a checkpoint is kept
    trainer = Trainer(model, digits, TrainConfig(epochs=2, on_nan=on_nan), run, False)
    if in_sweep:
        trainer.run_dir.resume_command = "vaekit sweep --resume S"
        trainer.run_dir.resume_rolls_back = False
    with pytest.raises(TrainingDiverged) as error:
        trainer._check_finite(torch.tensor([[0.0, 1.0, math.inf]]), 0)
    assert advice.format(run=run) in str(error.value)
    assert "the rate term became inf at epoch 1, step 1" in str(error.value)
