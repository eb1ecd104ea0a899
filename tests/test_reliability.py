"""Never lose work, never trust a file: kills, Ctrl-C, full disks, NaNs, malicious files,
fuzzed data files."""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import pickle
import shutil
import signal
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FullDisk, same_run, signal_during_epoch_2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import vaekit
from vaekit import files as io
from vaekit.cli import main
from vaekit.data import read_idx
from vaekit.errors import CheckpointError, DataError, TrainingDiverged
from vaekit.training.run_dir import CHECKPOINT, CONFIG, EVALUATION, WEIGHTS, RunDirectory


def test_kill_9_then_resume_ends_as_the_uninterrupted_run(
    tmp_path: Path, array_data: Path, uninterrupted: Path
) -> None:
    run = tmp_path / "killed"
    signal_during_epoch_2(array_data, run, signal.SIGKILL).wait()
    vaekit.load(run)  # the last checkpoint is usable as it is
    (run / ".lock").write_text("999999999")  # the killed process left its lock: a dead pid
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    same_run(run, uninterrupted)


def test_ctrl_c_saves_mid_epoch_and_resume_is_exact(
    tmp_path: Path, array_data: Path, uninterrupted: Path
) -> None:
    run = tmp_path / "interrupted"
    process = signal_during_epoch_2(array_data, run, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not (run / ".lock").exists()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    same_run(run, uninterrupted)


def test_full_disk_during_checkpoint_keeps_the_previous_one(
    tmp_path: Path, digits: vaekit.Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fdopen = os.fdopen
    writes = {"n": 0}

    def fdopen(fd: int, mode: str = "r", *args: object, **kwargs: object):
        file = real_fdopen(fd, mode, *args, **kwargs)
        if mode == "wb":  # atomic writes (the lock file is opened in text mode)
            writes["n"] += 1
            if writes["n"] > 4:  # config + epoch 1 (metrics, checkpoint, weights) succeed
                return FullDisk(file)
        return file

    monkeypatch.setattr(io.os, "fdopen", fdopen)
    torch.manual_seed(0)
    model = vaekit.VAE(digits.shape, 4, hidden=[16])
    with pytest.raises(CheckpointError, match="No space left on device"):
        vaekit.fit(model, digits, run_dir=tmp_path / "run", epochs=3, progress=False)
    monkeypatch.undo()
    assert vaekit.load(tmp_path / "run") is not None
    state = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert state["epoch"] == 1
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    _model_again, history = vaekit.resume(tmp_path / "run", progress=False)
    assert history[-1]["epoch"] == 3


def test_nan_rollback_lowers_the_learning_rate(digits: vaekit.Dataset) -> None:
    torch.manual_seed(0)
    model = vaekit.VAE(digits.shape, 4, hidden=[16])
    calls = {"n": 0}
    poisoned_call = 2 * math.ceil(len(digits.train_x) / 128) + 3

    def poison(module, inputs, output):
        calls["n"] += 1
        return output * math.nan if calls["n"] == poisoned_call else output

    model.decoder.register_forward_hook(poison)
    history = vaekit.fit(model, digits, epochs=4, on_nan="rollback", progress=False)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert history[1]["lr"] == 1e-3 and history[2]["lr"] == pytest.approx(5e-4)
    with pytest.raises(TrainingDiverged):
        calls["n"] = 0
        vaekit.fit(model, digits, epochs=4, progress=False)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_checkpoints_are_refused_without_running_code(
    tmp_path: Path, trained_run: Path
) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / CONFIG).write_text((trained_run / CONFIG).read_text())
    torch.save({"x": _Payload(marker)}, evil / WEIGHTS)  # a torch.save zip holding a pickle
    (evil / CHECKPOINT).write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        vaekit.load(evil)
    with pytest.raises(CheckpointError):
        vaekit.resume(evil, progress=False)
    assert not marker.exists()


def test_newer_format_and_mismatched_checkpoints(tmp_path: Path, trained_run: Path) -> None:
    tensors = load_file(trained_run / WEIGHTS)
    save_file(tensors, tmp_path / "new.safetensors", {"vaekit_format": "99", "model": "{}"})
    with pytest.raises(CheckpointError, match="newer vaekit"):
        vaekit.load(tmp_path / "new.safetensors")
    config = json.loads((trained_run / CONFIG).read_text())
    config["vaekit_format"] = 99
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / CONFIG).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="newer vaekit"):
        vaekit.load(newer)
    metadata = {"vaekit_format": "1", "model": json.dumps(config["model"])}
    first, second, *_ = tensors
    tensors[second] = tensors[second][..., :1].contiguous()
    tensors["stray"] = tensors.pop(first)
    save_file(tensors, tmp_path / "mismatched.safetensors", metadata)
    with pytest.raises(CheckpointError) as refused:
        vaekit.load(tmp_path / "mismatched.safetensors")
    message = str(refused.value)
    assert "do not match the model configuration" in message
    assert f"1 missing, e.g. {first};" in message
    assert "1 not in the model, e.g. stray;" in message
    assert f"1 of another shape, e.g. {second} [" in message
    assert "\n" not in message and len(message) < 400


def _moment_of_one_number(tensors: dict, metadata: dict) -> str:
    tensors["optimizer.0.exp_avg"] = tensors["optimizer.0.exp_avg"].flatten()[:1].clone()
    return "optimizer.0.exp_avg has shape [1] where its parameter has ["


def _negative_step(tensors: dict, metadata: dict) -> str:
    tensors["optimizer.0.step"] = torch.tensor(-3.0)
    return "optimizer.0.step is -3.0, not a count of steps)"


def _scalars_not_an_object(tensors: dict, metadata: dict) -> str:
    metadata["optimizer_scalars"] = "[1]"
    return "optimizer_scalars is not a JSON object)"


def _negative_epoch(tensors: dict, metadata: dict) -> str:
    metadata["state"] = json.dumps({**json.loads(metadata["state"]), "epoch": -5})
    return "incomplete training state (epoch is -5)"


@pytest.mark.parametrize(
    "forge", [_moment_of_one_number, _negative_step, _scalars_not_an_object, _negative_epoch]
)
def test_forged_training_state_is_refused(tmp_path: Path, trained_run: Path, forge) -> None:
    """What torch would load and then train with wrongly is refused in one line, naming the
    field: an Adam moment that broadcasts against its parameter and a negative step count
    (each made the resumed run diverge, its error blaming the learning rate), optimizer
    scalars that are not an object (a traceback), a negative epoch (more epochs trained
    than asked)."""
    run = tmp_path / "forged"
    run.mkdir()
    for name in (CONFIG, WEIGHTS, CHECKPOINT):
        (run / name).write_bytes((trained_run / name).read_bytes())
    with safe_open(str(run / CHECKPOINT), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(run / CHECKPOINT)
    expected = forge(tensors, metadata)
    save_file(tensors, run / CHECKPOINT, metadata)
    with pytest.raises(CheckpointError) as refused:
        vaekit.resume(run, epochs=4, progress=False)
    assert expected in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "family",
    [
        [
            "--model",
            "hierarchy",
            "--upper-layers",
            "2",
            "--inference",
            "x-and-above",
            "--posterior",
            "iaf",
        ],
        ["--model", "semi-supervised", "--labelled", "100"],
        ["--prior", "vamp", "--pseudo-inputs", "5"],
    ],
)
def test_every_family_s_evaluation_is_read_back(tmp_path: Path, family: list[str]) -> None:
    """What ``evaluate`` writes passes the check that refuses damaged evaluation files, for
    the families whose evaluations have the most fields (layers, a classifier's error, no
    KL per dimension): a check too strict would have the report evaluate again, silently."""
    run = tmp_path / "run"
    assert main(["train", *family, "--epochs", "1", "--run-dir", str(run), "--no-progress"]) == 0
    assert main(["evaluate", str(run), "-k", "3", "--no-progress"]) == 0
    assert RunDirectory(run).read_evaluation() is not None


@pytest.mark.parametrize(
    "damage",
    [
        lambda saved: saved.update(elbo="abc"),
        lambda saved: saved["log_px"].update(value="abc"),
        lambda saved: saved.update(layers=[1, 2]),
        lambda saved: saved.update(weights=None),
        lambda saved: saved.update(kl_per_dim="x"),
        lambda saved: saved.update(active=5),
        lambda saved: saved.update(per_example=7),
        lambda saved: saved.update(n=-1),
    ],
)
def test_a_damaged_evaluation_is_not_read(tmp_path: Path, trained_run: Path, damage) -> None:
    """Each of these made the report, ``compare`` or ``export`` end in a traceback; such a
    file is now no evaluation ("run vaekit evaluate"), and the report evaluates anew."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(["evaluate", str(run), "-k", "2", "--no-progress"]) == 0
    saved = json.loads((run / EVALUATION).read_text())
    damage(saved)
    (run / EVALUATION).write_text(json.dumps(saved))
    assert RunDirectory(run).read_evaluation() is None


def test_debug_shows_the_traceback() -> None:
    with pytest.raises(vaekit.VaekitError):
        main(["--debug", "train", "--latent-dim", "0"])


FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(st.binary(max_size=300), st.booleans())
def test_fuzz_idx_reader(tmp_path: Path, content: bytes, compress: bool) -> None:
    path = tmp_path / "fuzz.idx"
    path.write_bytes(gzip.compress(content) if compress else content)
    with contextlib.suppress(DataError):
        read_idx(path)


@FUZZ
@given(st.lists(st.integers(0, 5), min_size=1, max_size=4), st.integers(0, 200))
def test_fuzz_idx_headers_with_short_payloads(tmp_path: Path, dims: list[int], cut: int) -> None:
    header = bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    payload = bytes(math.prod(dims))
    path = tmp_path / "fuzz.idx"
    path.write_bytes((header + payload)[: len(header) + max(0, len(payload) - cut)])
    if cut == 0 or not payload:
        assert read_idx(path).shape == tuple(dims)
    else:
        with pytest.raises(DataError):
            read_idx(path)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(["npy", "npz", "png"]), st.integers(0, 400))
def test_fuzz_array_and_image_files(tmp_path: Path, noise: bytes, kind: str, cut: int) -> None:
    """Random bytes, and valid files cut short or with bytes overwritten: clean errors only."""
    folder = tmp_path / "fuzz"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    if kind == "npy":
        path = folder / "a.npy"
        np.save(path, np.zeros((6, 3), np.float32))
    elif kind == "npz":
        path = folder / "a.npz"
        np.savez(path, x=np.zeros((6, 3), np.float32))
    else:
        path = folder / "a.png"
        from PIL import Image

        Image.new("L", (4, 4)).save(path)
    valid = path.read_bytes()
    broken = valid[: max(1, len(valid) - cut)] if cut % 2 else noise + valid[len(noise) :]
    path.write_bytes(broken)
    with contextlib.suppress(DataError):
        vaekit.load_dataset(str(folder if kind == "png" else path))


def test_npy_header_declaring_huge_array_is_refused_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "huge.npy"
    np.save(path, np.zeros((2, 2), np.float32))
    raw = path.read_bytes().replace(b"(2, 2)", b"(10**12, 2)".replace(b"10**12", b"999999999999"))
    path.write_bytes(raw)
    with pytest.raises(DataError):
        vaekit.load_dataset(str(path))
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w") as archive:
        archive.writestr("x.npy", raw)
    with pytest.raises(DataError):
        vaekit.load_dataset(str(tmp_path / "bomb.npz"))
