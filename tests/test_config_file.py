"""Configuration files: ``vaekit config RUN`` writes the TOML that trains the run again, bit for
bit; ``vaekit train --config`` reads one, with command-line options overriding it; a bad file
is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import one_line_error, same_run

from vaekit.cli import main

OPTIONS = ["--hidden", "32", "--latent-dim", "4", "--prior", "mog", "--components", "3"]
OPTIONS += ["--lr", "0.002", "--seed", "5", "--batch-size", "64", "--epochs", "3"]


def test_a_run_trains_again_from_its_configuration_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = tmp_path / "first"
    assert main(["train", *OPTIONS, "--run-dir", str(first), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["config", str(first)]) == 0
    toml = tmp_path / "run.toml"
    toml.write_text(capsys.readouterr().out)
    again = tmp_path / "again"
    assert main(["train", "--config", str(toml), "--run-dir", str(again), "--no-progress"]) == 0
    same_run(first, again)
    first_config = json.loads((first / "config.json").read_text())
    again_config = json.loads((again / "config.json").read_text())
    assert first_config["model"] == again_config["model"]
    assert first_config["train"] == again_config["train"]
    shorter = tmp_path / "shorter"
    argv = ["train", "--config", str(toml), "--epochs", "1", "--run-dir", str(shorter)]
    assert main([*argv, "--no-progress"]) == 0  # the command line overrides the file
    saved = json.loads((shorter / "config.json").read_text())
    assert saved["train"]["epochs"] == 1 and saved["train"]["lr"] == 0.002
    assert saved["model"]["prior"] == {"name": "mog", "components": 3}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train\nepochs = 2", "not valid TOML"),
        ("[optimizer]\nlr = 0.1", "unknown tables ['optimizer']"),
        ("[train]\nepochz = 2", "[train] has unknown options ['epochz']"),
        ("[train]\nepochs = 0", "epochs must be"),
        ("[model]\nfrobnicate = 1", "unknown model option 'frobnicate'"),
        ("train = 3", "'train' must be a table"),
    ],
)
def test_a_bad_configuration_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    status = main(["train", "--config", str(toml), "--run-dir", str(tmp_path / "run")])
    one_line_error(capsys, status, message)
    assert not (tmp_path / "run").exists()
    status = main(["train", "--config", str(tmp_path / "missing.toml")])
    one_line_error(capsys, status, "cannot read the configuration")
