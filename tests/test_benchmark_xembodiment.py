"""benchmarks/metaworld_xembodiment.py's bookkeeping: the stages it skips on a re-run, the doc sections it
rewrites, and the studies it accepts (the training runs themselves are the library's, tested elsewhere)."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "metaworld_xembodiment.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("metaworld_xembodiment", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_finished_stage_is_skipped_and_other_settings_are_refused(bench, tmp_path):
    calls = []
    stages = bench.Stages(tmp_path, {"steps": 1})
    assert stages.run("train/a", lambda: calls.append(1) or {"seconds": 2.0}) == {"seconds": 2.0}
    again = bench.Stages(tmp_path, {"steps": 1})
    assert again.run("train/a", lambda: calls.append(2) or {}) == {"seconds": 2.0} and calls == [1]
    assert json.loads((tmp_path / "stages.json").read_text())["done"]["train/a"] == {"seconds": 2.0}
    with pytest.raises(SystemExit, match="other settings"):
        bench.Stages(tmp_path, {"steps": 2})


def test_each_study_rewrites_only_its_own_section(bench, tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Title\n\nwritten by hand\n\n<!-- study:hidden -->\nold\n<!-- /study:hidden -->\n\ntail\n"
    )
    bench.write_sections(doc, {"hidden": "new table", "fewdemo": "few"})
    text = doc.read_text()
    assert "old" not in text and "new table" in text and text.count("<!-- study:hidden -->") == 1
    assert text.index("written by hand") < text.index("new table") < text.index("tail") < text.index("few")


def test_studies_and_quick_defaults(bench):
    args = bench.parse_args(["--quick"])
    assert args.studies == ["hidden", "fewdemo"]
    assert args.output.endswith("_quick") and args.doc.startswith(args.output)  # docs/ stays untouched
    with pytest.raises(SystemExit):
        bench.parse_args(["--study", "hidden,nonsense"])
    given = [
        "--study",
        "fewdemo",
        "--tasks",
        "reach",
        "--output",
        "/tmp/x",
        "--label",
        "hard",
        "--no-progress",
    ]
    assert bench.command(bench.parse_args(given), "fewdemo") == (
        "python benchmarks/metaworld_xembodiment.py --study fewdemo --tasks reach --label hard"
    )
