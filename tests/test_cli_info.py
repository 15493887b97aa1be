"""`xvla info` verifies the weights file (header and sizes) instead of reporting a damaged one as fine."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_config

from xvla import XVLAPolicy
from xvla.cli import main


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("info") / "ckpt"
    XVLAPolicy(tiny_config()).save_pretrained(path)
    return path


def test_info_reports_verified_weights(saved, capsys):
    assert main(["info", str(saved)]) == 0
    weights = json.loads(capsys.readouterr().out)["weights"]
    assert weights["tensors"] > 0 and weights["files"][0]["name"] == "model.safetensors"
    assert weights["status"].startswith("ok")


@pytest.mark.parametrize("damage", ["truncated", "padded"])
def test_info_says_when_the_weights_are_damaged(saved, tmp_path, capsys, damage):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    data = (broken / "model.safetensors").read_bytes()
    data = data[: len(data) - 100] if damage == "truncated" else data + b"\0" * 100
    (broken / "model.safetensors").write_bytes(data)
    assert main(["info", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model.safetensors is damaged" in err and "download or copy" in err
