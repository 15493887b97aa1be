"""LIBERO is quiet by default: no robosuite macro-file advice, no task-order line (each once printed per use)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("libero.libero", reason="LIBERO is not installed: pip install 'xvla[libero]'")


def test_libero_suites_load_without_third_party_chatter():
    code = (
        "from xvla.sim.libero import get_suite, suite_tasks\n"
        "tasks = suite_tasks('libero_spatial'); get_suite('libero_spatial')\n"
        "import robosuite\n"
        "import logging; logging.getLogger('robosuite_logs').warning('another robosuite warning')\n"
        "print(len(tasks))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    output = done.stdout + done.stderr
    assert "macro file" not in output and "setup_macros" not in output, output
    assert "task order" not in output, output
    assert done.stdout.strip() == "10"
    assert "another robosuite warning" in done.stderr  # only the macro advice is dropped
