"""Shared test fixtures: tiny configs and a BART-style tokenizer built locally (no network)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)

from xvla import XVLAConfig  # noqa: E402
from xvla.config import tiny_florence_config  # noqa: E402

WORDS = (
    "pick up the red block and place it in the bowl open the drawer close the drawer push the button "
    "turn the faucet put the cup on the plate stack the cubes fold the cloth wipe the table"
)


def tiny_config(**overrides) -> XVLAConfig:
    base = dict(
        hidden_size=32,
        depth=2,
        num_heads=4,
        num_domains=6,
        len_soft_prompts=4,
        dim_time=8,
        max_len_seq=160,
        chunk_size=4,
        n_action_steps=4,
        max_state_dim=8,
        florence_config=tiny_florence_config(width=24, vocab_size=300),
        tokenizer_max_length=12,
        image_size=(32, 32),
    )
    base.update(overrides)
    return XVLAConfig(**base)


def pytest_sessionstart(session):
    """Name the CPU once, at the top (even with -q): which kernels ran decides which tests skip and why."""
    from xvla.hardware import probe

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"xvla.hardware: {probe().summary()}")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """A byte-level BPE tokenizer with BART's special ids (<s>=0, <pad>=1, </s>=2, <unk>=3)."""
    from xvla.tokenizer import train_bpe_tokenizer

    fast = train_bpe_tokenizer([WORDS], vocab_size=300)
    path = tmp_path_factory.mktemp("tokenizer")
    fast.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def make_batch(
    config: XVLAConfig,
    batch_size: int = 2,
    cameras: list[str] | None = None,
    state_dim: int = 5,
    tasks: list[str] | None = None,
    domain_id=None,
    size=(40, 48),
    action_dim: int | None = None,
):
    cameras = cameras or config.image_keys or ["observation.images.front"]
    batch = {cam: torch.rand(batch_size, 3, *size) for cam in cameras}
    batch["observation.state"] = torch.randn(batch_size, state_dim)
    batch["task"] = tasks or ["pick up the red block"] * batch_size
    if domain_id is not None:
        batch["domain_id"] = domain_id
    if action_dim is not None:
        batch["action"] = torch.randn(batch_size, config.chunk_size, action_dim)
    return batch
