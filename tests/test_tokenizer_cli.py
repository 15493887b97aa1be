"""`xvla tokenizer`: the offline way to give a checkpoint (or a from-scratch run) a tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xvla import XVLAPolicy
from xvla.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "lerobot_v30_small"


def test_a_smoke_checkpoint_tokenizes_text_offline_after_xvla_tokenizer(tmp_path, capsys):
    ckpt = tmp_path / "smoke"
    assert main(["smoke", f"--output={ckpt}"]) == 0
    obs = {
        "observation.images.front": torch.rand(1, 3, 64, 64),
        "observation.images.wrist": torch.rand(1, 3, 64, 64),
        "observation.state": torch.zeros(1, 8),
        "task": ["pick up the red block"],
        "domain_id": 1,
    }
    with pytest.raises(
        OSError, match="could not load the tokenizer"
    ):  # no Hub here: the default name cannot load
        XVLAPolicy.from_pretrained(ckpt).predict_action_chunk(obs)
    texts = tmp_path / "tasks.txt"
    texts.write_text("pick up the red block\nopen the drawer\n")
    capsys.readouterr()
    assert main(["tokenizer", str(ckpt), f"--train_on={texts}"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checkpoint"] and "tokenizer.json" in report["files"] and report["tokens"] <= 1024
    assert XVLAPolicy.from_pretrained(ckpt).predict_action_chunk(obs).shape == (1, 8, 7)
    assert main(["tokenizer", str(ckpt), f"--train_on={texts}"]) == 2  # files there already: --overwrite


def test_copy_a_tokenizer_and_build_one_from_a_dataset(tmp_path, tokenizer_dir, capsys):
    from xvla.tokenizer import load_tokenizer

    assert main(["tokenizer", str(tmp_path / "copy"), f"--source={tokenizer_dir}"]) == 0
    copied, original = load_tokenizer(tmp_path / "copy"), load_tokenizer(tokenizer_dir)
    assert copied("open the drawer")["input_ids"] == original("open the drawer")["input_ids"]
    assert main(["tokenizer", str(tmp_path / "built"), f"--train_on={FIXTURE}", "--vocab_size=400"]) == 0
    assert 4 < len(load_tokenizer(tmp_path / "built")) <= 400
    assert main(["tokenizer", str(tmp_path / "none")]) == 2
    assert "one of --source" in capsys.readouterr().err
