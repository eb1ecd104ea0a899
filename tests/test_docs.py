"""The README's Python API example runs as printed (in a fresh directory)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"


def test_readme_python_api_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section = README.read_text().split("## Python API", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, re.S)
    assert example is not None, "the Python API section has no python block"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(example.group(1), "README.md (Python API)", "exec"), namespace)
    assert len(namespace["history"]) == 80  # resumed from 50 to 80 epochs
    assert (tmp_path / "runs" / "api" / "model.safetensors").exists()
