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


def parse_error(capsys, argv: list[str]) -> str:
    import pytest

    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err  # one line, no usage block
    return err


def test_flags_are_never_abbreviated(capsys):
    # `--step=5` once ran as `--steps=5`
    assert "unknown flag --step: did you mean --steps?" in parse_error(capsys, ["train", "--step=5"])


def test_an_unknown_flag_names_the_one_it_may_mean(capsys):
    err = parse_error(capsys, ["train", "--lr=1e-4"])
    assert err.startswith("xvla train: error: unknown flag --lr: did you mean --optimizer.lr?")
    assert "did you mean --port?" in parse_error(capsys, ["serve", "--policy.path=x", "--prot", "9"])
    assert "unknown flag --zzz-qqq (see xvla info --help)" in parse_error(capsys, ["info", "p", "--zzz-qqq"])
