"""Every flag of every ``xvla`` sub-command says what it does, not only its default."""

from __future__ import annotations

import argparse
import re

from xvla.cli import build_parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in _subparsers(sub).items()})
    return found


def test_every_flag_has_help_text():
    bare = []
    for command, parser in _subparsers(build_parser()).items():
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == "help":
                continue
            text = re.sub(r"\(default: [^)]*\)", "", action.help or "").strip()
            if not text:
                bare.append(f"xvla {command} {action.option_strings[0]}")
    assert not bare, f"flags without help text: {bare}"
