"""A tiny, randomly initialised checkpoint (with a locally trained tokenizer) for demos and load tests.

The released checkpoints are large and need the network; this one builds offline in a second, so
``benchmarks/serve_load.py`` and ``examples/serve_gym_client.py`` can run a real server anywhere.
Its actions are meaningless: it exercises the serving path, not the policy.
"""

from __future__ import annotations

from pathlib import Path

_WORDS = (
    "pick up the red block and place it in the bowl open the drawer close the drawer push the button "
    "turn the faucet put the cup on the plate stack the cubes fold the cloth wipe the table balance the pole"
)


def build_tokenizer(vocab_size: int = 300):
    """The demo server's tokenizer, trained here on a few instructions (offline)."""
    from ..tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer([_WORDS], vocab_size)


def tiny_checkpoint(directory: str | Path, *, size: str = "tiny", seed: int = 0, **overrides) -> Path:
    """Save a small X-VLA (ee6d actions, 3 camera views, 8 domains) with its tokenizer to ``directory``.

    ``size="tiny"`` is the test-sized model (32x32 images, 2 blocks of width 32); ``size="small"``
    is wider (64x64 images, 4 blocks of width 128) so the forward pass dominates a load test.
    """
    import torch

    from ..config import XVLAConfig, tiny_florence_config
    from ..policy import XVLAPolicy

    if size == "tiny":
        base = dict(
            hidden_size=32,
            depth=2,
            num_heads=4,
            dim_time=8,
            florence_config=tiny_florence_config(width=24, vocab_size=300),
            image_size=(32, 32),
            max_len_seq=200,
        )
    elif size == "small":
        base = dict(
            hidden_size=128,
            depth=4,
            num_heads=4,
            dim_time=16,
            florence_config=tiny_florence_config(width=64, vocab_size=300),
            image_size=(64, 64),
            max_len_seq=400,
        )
    else:
        raise ValueError(f"size={size!r} is invalid: choose 'tiny' or 'small'")
    base.update(
        num_domains=8,
        len_soft_prompts=4,
        chunk_size=8,
        n_action_steps=8,
        max_state_dim=20,
        action_mode="ee6d",
        num_image_views=3,
        tokenizer_max_length=16,
        num_denoising_steps=4,
    )
    base.update(overrides)
    torch.manual_seed(seed)
    policy = XVLAPolicy(XVLAConfig(**base), tokenizer=build_tokenizer())
    return policy.save_pretrained(directory)
