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
        done = subprocess.run(
            command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
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


# ------------------------------------------------------------------------------------- no development history
# The README, docs/ and benchmarks/ say what is true today: a measurement carries its date, CPU kind and
# command, never the story of who measured it in which numbered run, or which machine the project was given.
HISTORY_FILES = [*DOCS, *sorted((ROOT / "benchmarks").glob("*.py"))]
_ORDINALS = (
    "first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|thirteenth|"
    "fourteenth|fifteenth|sixteenth|seventeenth|eighteenth|nineteenth|twentieth|\\d+(?:st|nd|rd|th)"
)
HISTORY_PATTERNS = {
    "a numbered session": rf"\b(?:{_ORDINALS})[- ]sessions?\b",
    "a session": r"\bsessions?\b",
    "a numbered run": rf"\b(?:{_ORDINALS})[- ](?:run|attempt|try)\b",
    "an earlier or later run": r"\b(?:earlier|later|latest|previous|last) sessions?\b|\b(?:latest|previous) runs?\b",
    "the machine the project was given": (
        r"\b(?:lent|we were given|was given a|the machine this project|the project's machine|"
        r"development machine|no GPU was (?:lent|given|available))\b"
    ),
    "when this was written": r"\bwhen this was written\b",
    "first person singular": r"(?<!Phase )\bI (?=[a-z])|\bI'(?:m|ve|d|ll)\b|\bmy\b(?![-_.])",
    "a commit as a point in time": r"\b(?:at|since|before|after) [0-9a-f]{7,40}\b",
    "an issue number": r"\bissues? #?\d+\b",
}
_HISTORY = re.compile("|".join(f"(?P<p{i}>{p})" for i, p in enumerate(HISTORY_PATTERNS.values())))


def history_lines(text: str) -> list[tuple[int, str, str]]:
    """(line number, what it is, the line) for every line that narrates development history."""
    names = list(HISTORY_PATTERNS)
    hits = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in _HISTORY.finditer(line):
            kind = names[int(match.lastgroup[1:])]
            hits.append((number, kind, line.strip()))
    return hits


@pytest.mark.parametrize("path", HISTORY_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_development_history(path):
    hits = history_lines(path.read_text())
    assert not hits, "development history; say what is true today instead:\n" + "\n".join(
        f"{path.name}:{n}: {kind}: {line}" for n, kind, line in hits
    )


@pytest.mark.parametrize(
    "text",
    [
        "Measured in the thirteenth session on the AMD kind.",
        "2026-12-01, ninth-session run: 540 passed.",
        "A later session re-ran it.",
        "No GPU was lent to this task.",
        "at times my other jobs shared the cores",
        "I measured 0.8x.",
        "Before (the same command, at 132fd6e):",
        "the targets of issue 11",
        "Run of the third session",
    ],
)
def test_history_patterns_catch_narratives(text):
    assert history_lines(text)


@pytest.mark.parametrize(
    "text",
    [
        "Phase I trains a small X-VLA.",
        "xvla adapter export RUN --domain 22 my-arm.safetensors",
        'policy.save_pretrained("my_xvla")',
        "2026-12-04, AMD EPYC, `./.ci/run`: 561 passed.",
        "the first chunk, then the second of each",
    ],
)
def test_history_patterns_leave_plain_text_alone(text):
    assert not history_lines(text)


# ------------------------------------------------------------------------------------- the README's Layout
def readme_layout_modules() -> set[str]:
    """Paths under src/xvla/ that the README's Layout block lists (nested folders by indentation)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Layout\n+```\n(.*?)```", text, re.S)
    assert block, "README.md has a '## Layout' section with one code block"
    lines = block.group(1).splitlines()
    assert lines[0].strip() == "src/xvla/"
    listed, stack = set(), []  # stack of (indent, folder)
    for line in lines[1:]:
        if not line.startswith(" "):
            break  # the top-level folders after src/xvla/
        indent, name = len(line) - len(line.lstrip()), line.split()[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if name.endswith("/"):
            stack.append((indent, name))
        else:
            listed.add("".join(folder for _, folder in stack) + name)
    return listed


def test_readme_layout_lists_every_module():
    src = ROOT / "src" / "xvla"
    modules = {
        str(p.relative_to(src)) for p in src.rglob("*.py") if p.name != "__init__.py" or p.parent == src
    }
    listed = readme_layout_modules()
    assert not modules - listed, f"README.md's Layout misses {sorted(modules - listed)}"
    assert not listed - modules, (
        f"README.md's Layout lists modules that do not exist: {sorted(listed - modules)}"
    )


# ------------------------------------------------------------------------------------- links between the docs
LINK = re.compile(r"\]\(([^)\s]+)\)")


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors for a markdown file's headings (lower case, punctuation dropped, spaces -> '-')."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", text, re.M)
    }


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in heading_anchors(path):
            broken.append(f"{target}: no such heading")
    assert not broken, f"{doc.name}: " + "; ".join(broken)
