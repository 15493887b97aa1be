"""The docs say true things: every command block marked ``bash runnable`` runs as written, and the
configs/*.yaml templates build with the two flags their header names."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```bash runnable\n(.*?)```", re.S)


def runnable_blocks():
    for doc in DOCS:
        for i, block in enumerate(BLOCK.findall(doc.read_text())):
            yield pytest.param(block, id=f"{doc.name}-{i}")


@pytest.mark.parametrize("block", list(runnable_blocks()))
def test_runnable_command_blocks(block, tmp_path):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    for line in filter(None, (x.split("#")[0].strip() for x in block.splitlines())):
        command = line.replace("python -m", f"{sys.executable} -m", 1)
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"


def test_there_are_runnable_blocks():
    assert len(list(runnable_blocks())) >= 1


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_config_templates_build(path):
    from xvla.train.cli import resolve_config

    text = path.read_text()
    assert text.startswith("# TEMPLATE"), "each config says it is a template and which flags to override"
    cfg = resolve_config(str(path), {"output_dir": "unused"})
    assert cfg.datasets()
