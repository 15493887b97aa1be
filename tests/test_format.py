"""The tree stays `ruff format`-clean, so CI fails on unformatted code. The fix:
`ruff format src tests benchmarks scripts plugins examples` (or see `make lint`). `# fmt: skip` stays only
on layouts that carry meaning: matrices, tables written as rows, command lines as flag/value pairs."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("src", "tests", "benchmarks", "scripts", "plugins", "examples")


@pytest.mark.skipif(
    importlib.util.find_spec("ruff") is None, reason="ruff is not installed (it comes with the dev extra)"
)
def test_the_tree_is_ruff_formatted():
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", *FOLDERS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (
        f"run `ruff format {' '.join(FOLDERS)}` (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
    )
