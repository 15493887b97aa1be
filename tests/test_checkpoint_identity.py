"""A checkpoint's identity (domains, default domain, cameras, image size, widths, tokenizer, steps)
survives save and conversion through every format, and conversion is atomic."""

from __future__ import annotations

import json

import pytest
import torch

from xvla import XVLAConfig, XVLAPolicy
from xvla.checkpoints.identity import IDENTITY_FIELDS
from xvla.cli import main
from xvla.config import tiny_florence_config

CAMS = ["observation.images.top", "observation.images.wrist"]


def custom_config() -> XVLAConfig:
    """Non-224 px, 2 cameras, auto 7-D actions, a custom domain table: nothing a default would guess."""
    return XVLAConfig(
        hidden_size=32,
        depth=2,
        num_heads=4,
        num_domains=8,
        len_soft_prompts=4,
        dim_time=8,
        max_len_seq=200,
        chunk_size=6,
        n_action_steps=3,
        num_denoising_steps=3,
        action_mode="auto",
        real_action_dim=7,
        max_action_dim=20,
        max_state_dim=20,
        auto_loss_weight=1.0,
        image_size=(48, 40),
        image_keys=CAMS,
        num_image_views=3,
        tokenizer_max_length=11,
        domain_id=5,
        domains={5: "my-arm", 2: "old-arm"},
        florence_config=tiny_florence_config(width=24, vocab_size=300),
    )


def batch():
    gen = torch.Generator().manual_seed(3)
    out = {cam: torch.randint(0, 256, (1, 3, 64, 80), dtype=torch.uint8, generator=gen) for cam in CAMS}
    out.update({"observation.state": torch.randn(1, 9, generator=gen), "task": ["stack the cups"]})
    return out


def identity(policy):
    data = policy.config.to_dict()
    return {k: data[k] for k in IDENTITY_FIELDS}


def test_round_trip_through_every_format_keeps_actions_and_identity(tmp_path, tokenizer):
    torch.manual_seed(0)
    policy = XVLAPolicy(custom_config(), tokenizer=tokenizer)
    policy.save_pretrained(tmp_path / "xvla")
    noise = torch.randn(1, 6, 20, generator=torch.Generator().manual_seed(1))
    reference = XVLAPolicy.from_pretrained(tmp_path / "xvla")
    expected = reference.predict_action_chunk(batch(), noise=noise)
    hops = [("xvla", "official"), ("official", "lerobot"), ("lerobot", "xvla2")]
    for src, dst in hops:
        assert main(["convert", str(tmp_path / src), str(tmp_path / dst), "--to", dst.rstrip("2")]) == 0
        loaded = XVLAPolicy.from_pretrained(tmp_path / dst)
        assert identity(loaded) == identity(reference), dst
        assert torch.equal(loaded.predict_action_chunk(batch(), noise=noise), expected), dst
    assert json.loads((tmp_path / "official" / "preprocessor_config.json").read_text())["size"] == {
        "height": 48,
        "width": 40,
    }


def test_convert_refuses_an_existing_destination_and_leaves_nothing_on_failure(tmp_path, tokenizer, capsys):
    XVLAPolicy(custom_config(), tokenizer=tokenizer).save_pretrained(tmp_path / "src")
    (tmp_path / "taken").mkdir()
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "taken")]) != 0
    assert "--overwrite" in capsys.readouterr().err
    # the official format cannot hold a state narrower than the action: the convert fails cleanly
    config = custom_config().replace(max_state_dim=8)
    XVLAPolicy(config, tokenizer=tokenizer).save_pretrained(tmp_path / "narrow")
    assert main(["convert", str(tmp_path / "narrow"), str(tmp_path / "out"), "--to", "official"]) != 0
    assert "official" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["narrow", "src", "taken"]
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "taken"), "--overwrite"]) == 0
    assert (tmp_path / "taken" / "model.safetensors").exists()


def test_a_tokenizer_that_does_not_fit_the_checkpoint_is_refused(tmp_path, tokenizer):
    """Copying config + weights without the bundled tokenizer used to crash on the first instruction."""
    config = custom_config().replace(florence_config=tiny_florence_config(width=24, vocab_size=50))
    policy = XVLAPolicy(config)
    with pytest.raises(ValueError, match="not the tokenizer the model was trained with"):
        policy.tokenizer = tokenizer  # 300+ tokens into a 50-token embedding
