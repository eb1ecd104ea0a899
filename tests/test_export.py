"""``vaekit export``: a Hub-layout model folder whose card carries the evaluation, loadable bit
for bit, whose claim ``vaekit evaluate`` checks."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from helpers import copy_without_evaluations, one_line_error
from safetensors.torch import load_file

import vaekit
from vaekit.cli import main
from vaekit.export import read_model_index


@pytest.fixture
def evaluated(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    run = copy_without_evaluations(trained_run, tmp_path / "run")
    assert main(["evaluate", str(run), "-k", "40", "--no-progress"]) == 0
    capsys.readouterr()
    return run


def test_export_round_trip_and_card(
    evaluated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "digits-vae"
    assert main(["export", str(evaluated), str(folder)]) == 0
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(
        [
            "README.md",
            "config.json",
            "evaluation.json",
            "model.safetensors",
            "samples.png",
            "reconstructions.png",
        ]
    )
    assert not any(p.suffix in (".pt", ".pth", ".pkl", ".bin") for p in folder.iterdir())
    exported, original = (
        load_file(folder / "model.safetensors"),
        load_file(evaluated / "model.safetensors"),
    )
    assert exported.keys() == original.keys()
    assert all(torch.equal(exported[k], original[k]) for k in original)
    loaded = vaekit.load(folder).state_dict()
    assert all(torch.equal(loaded[k], original[k]) for k in original)
    evaluation = json.loads((evaluated / "evaluation.json").read_text())
    (result,) = read_model_index(folder)[0]["results"]
    metrics = {m["type"]: m["value"] for m in result["metrics"]}
    assert metrics["nll"] == round(-evaluation["log_px"]["value"], 4)
    assert metrics["elbo"] == round(evaluation["elbo"]["value"], 4)
    assert metrics["gap"] == round(evaluation["gap"]["value"], 4)
    assert result["dataset"]["args"]["k"] == 40 and result["dataset"]["args"]["examples"] == 180
    assert (
        result["dataset"]["args"]["sha256"]
        == json.loads((evaluated / "config.json").read_text())["data"]["sha256"]
    )
    assert main(["evaluate", str(folder), "-k", "40", "--seed", "1", "--no-progress"]) == 0
    assert "claims log p̂_K(x) =" in capsys.readouterr().out.splitlines()[-1]


def test_evaluate_says_whether_a_claim_is_reproduced(
    evaluated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "model"
    assert main(["export", str(evaluated), str(folder)]) == 0
    assert main(["evaluate", str(folder), "-k", "40", "--no-progress"]) == 0
    assert ": reproduced (" in capsys.readouterr().out.splitlines()[-1]
    forged = json.loads((folder / "evaluation.json").read_text())
    forged["log_px"]["value"] += 1.0
    forged["per_example"]["log_px"] = [v + 1.0 for v in forged["per_example"]["log_px"]]
    forged["n"], forged["k"] = 180, 40
    (folder / "evaluation.json").write_text(json.dumps(forged))
    assert main(["evaluate", str(folder), "-k", "40", "--no-progress"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert ": NOT reproduced (this evaluation differs by -1.000" in last


def test_export_refuses_with_one_line(
    trained_run: Path, evaluated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = copy_without_evaluations(trained_run, tmp_path / "bare")
    one_line_error(capsys, main(["export", str(bare), str(tmp_path / "a")]), "has no evaluation")
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    one_line_error(capsys, main(["export", str(evaluated), str(full)]), "is not empty")
    assert (full / "notes.txt").read_text() == "mine"


@pytest.fixture
def hub_cache(evaluated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hugging Face cache holding the export of ``evaluated`` as ``someone/digits-vae`` at
    commit ``COMMIT`` (the layout huggingface_hub writes), the Hub switched off (offline mode)."""
    constants = pytest.importorskip("huggingface_hub.constants")
    folder = tmp_path / "export"
    assert main(["export", str(evaluated), str(folder)]) == 0
    cache = tmp_path / "hf-cache"
    repo = cache / "models--someone--digits-vae"
    shutil.copytree(folder, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return repo / "snapshots" / COMMIT


COMMIT = "3" * 40


def test_hub_models_load_and_evaluate_from_the_cache_offline(
    hub_cache: Path,
    evaluated: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    original = load_file(evaluated / "model.safetensors")
    for name in ("hf://someone/digits-vae", f"hf://someone/digits-vae@{COMMIT}"):
        loaded = vaekit.load(name).state_dict()
        assert all(torch.equal(loaded[k], original[k]) for k in original)
    before = {p.name: p.read_bytes() for p in hub_cache.iterdir()}
    monkeypatch.chdir(tmp_path)
    hub = ["hf://someone/digits-vae"]
    assert main(["evaluate", *hub, "-k", "40", "--no-progress"]) == 0
    assert ": reproduced (" in capsys.readouterr().out.splitlines()[-1]
    assert main(["sample", *hub, "-n", "8"]) == 0
    assert (tmp_path / "samples.png").is_file()  # here, not in the cache
    assert {p.name: p.read_bytes() for p in hub_cache.iterdir()} == before
    one_line_error(capsys, main(["report", *hub]), "is in the Hugging Face cache")
    missing = main(["evaluate", "hf://someone/other", "--no-progress"])
    one_line_error(capsys, missing, "is not in the Hugging Face cache")
    one_line_error(capsys, main(["sample", "hf://digits-vae"]), "is not a Hub id")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # the extra not installed
    one_line_error(capsys, main(["sample", *hub]), "pip install 'vaekit[hub]'")


def test_push_uploads_the_exported_folder(
    evaluated: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``vaekit push`` hands huggingface_hub's own API the folder ``vaekit export`` writes."""
    hub = pytest.importorskip("huggingface_hub")
    calls: dict[str, object] = {}

    def create_repo(self: object, repo_id: str, **options: object) -> None:
        calls["create"] = (repo_id, options["private"])

    def upload_folder(self: object, *, repo_id: str, folder_path: Path, **options: object) -> str:
        calls["files"] = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        calls["revision"] = options["revision"]
        return f"https://huggingface.co/{repo_id}/commit/{COMMIT}"

    monkeypatch.setattr(hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(hub.HfApi, "upload_folder", upload_folder)
    assert main(["push", str(evaluated), "someone/digits-vae", "--private"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"/commit/{COMMIT}")
    assert calls["create"] == ("someone/digits-vae", True) and calls["revision"] is None
    exported = tmp_path / "digits-vae"
    assert main(["export", str(evaluated), str(exported)]) == 0
    card = (exported / "README.md").read_text().replace("THIS_FOLDER", "hf://someone/digits-vae")
    assert calls["files"] == {
        **{p.name: p.read_bytes() for p in exported.iterdir()},
        "README.md": card.encode(),
    }

    def refused(self: object, repo_id: str, **options: object) -> None:
        raise hub.errors.LocalTokenNotFoundError("no token")

    monkeypatch.setattr(hub.HfApi, "create_repo", refused)
    capsys.readouterr()
    one_line_error(capsys, main(["push", str(evaluated), "someone/x"]), "no Hugging Face token")
