"""The package's layer order (``[tool.importlinter]`` in pyproject.toml) holds, and it is a
contract that can fail: the same check on a copy of the package with one upward import
breaks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("importlinter", reason="import-linter is not installed (pip install -e .[dev])")


def lint_imports(package_parent: Path, config: Path) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-c",
        "from importlinter.cli import lint_imports_command; lint_imports_command()",
    ]
    env = {"PYTHONPATH": str(package_parent), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [*command, "--config", str(config), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=package_parent,
        env=env,
        timeout=300,
    )


def test_the_layers_hold_and_an_upward_import_breaks_them(tmp_path):
    copy = tmp_path / "src"
    shutil.copytree(
        ROOT / "src" / "featinv", copy / "featinv", ignore=shutil.ignore_patterns("__pycache__")
    )
    config = ROOT / "pyproject.toml"
    kept = lint_imports(copy, config)
    assert kept.returncode == 0, kept.stdout[-2000:] + kept.stderr[-2000:]
    assert "1 kept, 0 broken" in kept.stdout
    # the ground floor reaching up into the metrics: the kind of import the layers forbid
    ops = copy / "featinv" / "ops.py"
    ops.write_text(ops.read_text() + "\nfrom featinv.metrics import psnr  # noqa\n")
    broken = lint_imports(copy, config)
    assert broken.returncode != 0
    assert "featinv.ops is not allowed to import featinv.metrics" in broken.stdout
