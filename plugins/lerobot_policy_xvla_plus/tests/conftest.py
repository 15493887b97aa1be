"""Fixtures of the plugin tests (they run in .venv-lerobot: `make lerobot-test`): tiny models, a local tokenizer."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[3]
FIXTURE_DATASET = (
    REPO / "tests" / "fixtures" / "lerobot_v30_small"
)  # cameras front + wrist, state 4, action 3


def _main_suite_conftest():
    """The main suite's tests/conftest.py (tiny_config, WORDS), loaded under its own module name."""
    spec = importlib.util.spec_from_file_location("xvla_main_conftest", REPO / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_MAIN = _main_suite_conftest()
WORDS, tiny_config = _MAIN.WORDS, _MAIN.tiny_config

import lerobot_policy_xvla_plus  # noqa: E402,F401  (registers xvla_plus, as LeRobot's plugin discovery does)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    from xvla.tokenizer import train_bpe_tokenizer

    path = tmp_path_factory.mktemp("tokenizer")
    train_bpe_tokenizer([WORDS], vocab_size=300).save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tokenizer_dir) -> Path:
    """A random tiny X-VLA in xvla's format (action_mode auto, up to 8 action values, state up to 8)."""
    from transformers import AutoTokenizer

    from xvla import XVLAPolicy

    torch.manual_seed(0)
    config = tiny_config(action_mode="auto", max_action_dim=8, tokenizer_name=str(tokenizer_dir))
    policy = XVLAPolicy(config, tokenizer=AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    path = tmp_path_factory.mktemp("tiny") / "checkpoint"
    policy.save_pretrained(path)
    return path


def fixture_batch(size: int = 1) -> dict:
    """What LeRobot's dataset / env loop gives the preprocessor for the fixture dataset's features."""
    return {
        "observation.images.front": torch.rand(size, 3, 48, 64),
        "observation.images.wrist": torch.rand(size, 3, 32, 32),
        "observation.state": torch.randn(size, 4),
        "task": ["pick up the red block"] * size,
    }
