"""Numerical parity with LeRobot 0.4.4's `xvla` (fixtures made by scripts/make_parity_fixtures.py).

Each case holds a checkpoint written in one of the three layouts and the reference's inputs, noise,
action chunk and loss terms. Our loader must give the same actions (1e-4, fp32) and losses.
"""

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from xvla import XVLAPolicy

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "io.safetensors").exists())


def load_case(name):
    tensors, meta = {}, {}
    with safe_open(str(FIXTURES / name / "io.safetensors"), framework="pt") as f:
        meta = f.metadata()
        for key in f.keys():
            tensors[key] = f.get_tensor(key)
    return tensors, meta


def test_all_layouts_are_covered():
    layouts = {load_case(c)[1]["layout"] for c in CASES}
    assert layouts == {"lerobot", "lerobot_native", "official"}


@pytest.mark.parametrize("case", CASES)
def test_generate_actions_matches_reference(case):
    io, meta = load_case(case)
    policy = XVLAPolicy.from_pretrained(FIXTURES / case / "checkpoint")
    assert policy.checkpoint_format == ("official" if meta["layout"] == "official" else "lerobot")
    actions = policy.model.generate_actions(
        input_ids=io["input_ids"],
        image_input=io["image_input"],
        image_mask=io["image_mask"],
        domain_id=io["domain_id"],
        proprio=io["proprio"],
        steps=int(meta["steps"]),
        noise=io["noise"],
    )
    assert actions.shape == io["actions"].shape
    torch.testing.assert_close(actions, io["actions"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_loss_terms_match_reference(case):
    io, _ = load_case(case)
    policy = XVLAPolicy.from_pretrained(FIXTURES / case / "checkpoint")
    losses = policy.model(
        input_ids=io["input_ids"],
        image_input=io["image_input"],
        image_mask=io["image_mask"],
        domain_id=io["domain_id"],
        proprio=io["proprio"],
        action=io["action"],
        t=io["t"],
        noise=io["loss_noise"],
    )
    expected = {k[len("loss.") :]: v for k, v in io.items() if k.startswith("loss.")}
    assert set(losses) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(losses[name], value, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", CASES)
def test_converted_checkpoints_give_identical_actions(case, tmp_path):
    io, meta = load_case(case)
    policy = XVLAPolicy.from_pretrained(FIXTURES / case / "checkpoint")
    formats = ["xvla", "lerobot"] + (["official"] if meta["layout"] == "official" else [])
    inputs = {k: io[k] for k in ("input_ids", "image_input", "image_mask", "domain_id", "proprio")}
    ref = policy.model.generate_actions(**inputs, steps=2, noise=io["noise"])
    for fmt in formats:
        policy.save_pretrained(tmp_path / fmt, format=fmt)
        out = XVLAPolicy.from_pretrained(tmp_path / fmt).model.generate_actions(
            **inputs, steps=2, noise=io["noise"]
        )
        assert torch.equal(out, ref), fmt
