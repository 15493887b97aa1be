"""`xvla --help` and `xvla info` start without torch, transformers or fastapi (they took seconds each time).

Speed itself is measured by benchmarks/startup.py; here: which heavy modules a command imports."""

from __future__ import annotations

import argparse
import subprocess
import sys

from conftest import tiny_config

from xvla import XVLAPolicy
from xvla.cli import FEATURE_COMMANDS, build_parser

HEAVY = ("torch", "transformers", "fastapi")


def heavy_modules_after(argv: list[str]) -> list[str]:
    code = (
        "import contextlib, io, sys\nfrom xvla.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n    main({argv!r})\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return eval(done.stdout.strip().splitlines()[-1])  # noqa: S307 - our own repr of a list of names


def test_help_and_info_start_without_heavy_imports(tmp_path):
    XVLAPolicy(tiny_config()).save_pretrained(tmp_path / "ckpt")
    assert heavy_modules_after(["--help"]) == []
    assert heavy_modules_after(["info", str(tmp_path / "ckpt")]) == []


def test_the_quick_help_lines_are_the_commands_own():
    def lines(parser) -> dict[str, str]:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return {a.dest: a.help for a in sub._choices_actions}

    full, quick = lines(build_parser()), lines(build_parser(None))
    assert {n: quick[n] for n in FEATURE_COMMANDS} == {n: full[n] for n in FEATURE_COMMANDS}
    assert list(quick) == list(full)


def test_builtin_action_modes_are_the_registered_ones():
    import xvla.actions as actions
    from xvla.config import BUILTIN_ACTION_MODES

    source = open(actions.__file__).read()  # other tests register their own modes in this process
    assert sorted(BUILTIN_ACTION_MODES) == sorted(
        m for m in actions.ACTION_REGISTRY if f'@register_action("{m}")' in source
    )
