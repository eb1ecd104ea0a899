"""``--track mlflow``: a real MLflow store (SQLite, offline) holds the run's configuration, the
same per-epoch metrics as metrics.jsonl, the figures and the model, across a resume, and the
evaluation ``vaekit evaluate`` adds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import one_line_error

import vaekit
from vaekit.cli import main
from vaekit.errors import ConfigError
from vaekit.training.tracking import read_tracking, scalars

mlflow = pytest.importorskip("mlflow")

TRAIN = ["train", "--hidden", "16", "--latent-dim", "2", "--no-progress"]


def _history(client: object, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow keeps a new experiment's artifacts in ./mlruns: here, the test's folder."""
    monkeypatch.chdir(tmp_path)


def test_mlflow_holds_the_runs_metrics_model_and_evaluation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    track = ["--track", "mlflow", "--track-uri", uri]
    assert main([*TRAIN, "--epochs", "2", "--run-dir", str(run), *track]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    saved = read_tracking(run)
    assert saved is not None and saved["uri"] == uri
    client = mlflow.MlflowClient(uri)
    tracked = client.get_run(saved["run_id"])
    assert tracked.info.status == "FINISHED" and tracked.info.run_name == "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3  # the resumed epoch went to the same MLflow run
    for key in scalars(records[0]):
        expected = [(r["epoch"], scalars(r)[key]) for r in records]
        assert _history(client, saved["run_id"], key) == expected, key
    config = json.loads((run / "config.json").read_text())
    assert tracked.data.params["model.latent_dim"] == "2"
    assert tracked.data.params["train.epochs"] == "2"  # as it started: MLflow keeps parameters
    assert config["train"]["epochs"] == 3
    weights = client.download_artifacts(saved["run_id"], "model/model.safetensors", str(tmp_path))
    assert Path(weights).read_bytes() == (run / "model.safetensors").read_bytes()
    artifacts = {a.path for a in client.list_artifacts(saved["run_id"])}
    assert {"samples.png", "reconstructions.png", "model"} <= artifacts

    capsys.readouterr()
    assert main(["evaluate", str(run), "-k", "10", "--no-progress"]) == 0
    assert f"logged the evaluation to MLflow run {saved['run_id']}" in capsys.readouterr().out
    evaluation = json.loads((run / "evaluation.json").read_text())
    metrics = client.get_run(saved["run_id"]).data.metrics
    assert metrics["eval_K10_log_px"] == evaluation["log_px"]["value"]
    assert metrics["eval_K10_gap"] == evaluation["gap"]["value"]
    assert "evaluation-K10.txt" in {a.path for a in client.list_artifacts(saved["run_id"])}
    (run / "tracking.json").write_text('{"mlflow": 3}')  # forged: refused before training
    status = main(["train", "--resume", str(run), "--epochs", "4", "--no-progress"])
    one_line_error(capsys, status, "tracking.json is damaged")
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_tracking_refusals(
    tmp_path: Path,
    digits: vaekit.Dataset,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = ["--run-dir", str(tmp_path / "run")]
    status = main([*TRAIN, *run, "--track-uri", "sqlite:///x.db"])
    one_line_error(capsys, status, "give --track too")
    model = vaekit.VAE(digits.shape, 2, hidden=[8])
    with pytest.raises(ConfigError, match="run directory"):
        vaekit.fit(model, digits, epochs=1, track="mlflow", progress=False)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # the extra not installed
    one_line_error(
        capsys, main([*TRAIN, *run, "--track", "mlflow"]), "pip install 'vaekit[mlflow]'"
    )
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_tracker_that_fails_loses_no_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An MLflow server that cannot be reached: one warning, and training goes on."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    run = tmp_path / "run"
    track = ["--track", "mlflow", "--track-uri", "http://127.0.0.1:9"]  # nothing listens there
    with pytest.warns(UserWarning, match="MLflow stopped logging this run"):
        assert main([*TRAIN, "--epochs", "2", "--run-dir", str(run), *track]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert vaekit.load(run) is not None
