import json

import numpy as np
import pytest
import torch
from conftest import make_batch, tiny_config
from safetensors.torch import load_file, save_file

from xvla import XVLAPolicy
from xvla.cli import main as cli_main

CAMS = ["observation.images.front", "observation.images.wrist"]


@pytest.fixture
def policy(tokenizer):
    return XVLAPolicy(tiny_config(image_keys=CAMS, empty_cameras=1), tokenizer=tokenizer)


def test_predict_action_chunk_from_lerobot_batch(policy):
    batch = make_batch(policy.config, domain_id=torch.tensor([0, 3]))
    chunk = policy.predict_action_chunk(batch)
    assert chunk.shape == (2, 4, 20) and chunk.dtype == torch.float32
    inputs = policy.prepare_inputs(batch)
    assert inputs["image_input"].shape == (2, 3, 3, 32, 32)
    assert inputs["image_mask"].tolist() == [[True, True, False]] * 2
    assert inputs["proprio"].shape == (2, 8) and inputs["input_ids"].shape == (2, 12)


def test_generate_and_loss_on_prepared_inputs_are_the_raw_batch_paths(policy):
    """The server and the trainer batch prepared inputs: the same chunk and loss as from the raw batch."""
    batch = make_batch(policy.config, domain_id=torch.tensor([0, 3]), action_dim=20)
    noise = torch.randn(2, 4, 20)
    inputs = policy.prepare_inputs(batch)
    torch.testing.assert_close(
        policy.generate(inputs, noise=noise, steps=3),
        policy.predict_action_chunk(batch, noise=noise, steps=3),
        atol=0,
        rtol=0,
    )
    targets = policy.processor.actions(batch["action"], policy.model.action_space)
    t, loss_noise = torch.rand(2), torch.randn(2, 4, 20)
    losses = policy.loss({**inputs, "action": targets}, t=t, noise=loss_noise)
    total, logs = policy(batch, t=t, noise=loss_noise)
    assert logs == {**{k: float(v) for k, v in losses.items()}, "loss": float(total)}


def test_uint8_and_numpy_frames_give_the_same_actions(policy):
    frames = {k: np.random.randint(0, 256, (1, 40, 48, 3), dtype=np.uint8) for k in CAMS}
    as_uint8 = {k: torch.from_numpy(v).permute(0, 3, 1, 2) for k, v in frames.items()}
    as_float = {k: v.float() / 255 for k, v in as_uint8.items()}
    common = {"observation.state": torch.randn(1, 5), "task": ["open the drawer"]}
    noise = torch.randn(1, 4, 20)
    a = policy.predict_action_chunk({**frames, **common}, noise=noise)
    b = policy.predict_action_chunk({**as_uint8, **common}, noise=noise)
    c = policy.predict_action_chunk({**as_float, **common}, noise=noise)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)


def test_select_action_queue(policy, monkeypatch):
    calls = []
    original = policy.predict_action_chunk

    def spy(batch, noise=None):
        calls.append(1)
        return original(batch, noise=noise)

    monkeypatch.setattr(policy, "predict_action_chunk", spy)
    batch = make_batch(policy.config, batch_size=1)
    noise = torch.randn(1, 4, 20)
    chunk = original(batch, noise=noise)
    steps = [policy.select_action(batch, noise=noise) for _ in range(4)]
    assert len(calls) == 1
    torch.testing.assert_close(torch.stack(steps, 1), chunk)
    policy.select_action(batch)
    assert len(calls) == 2
    policy.reset()
    policy.select_action(batch)
    assert len(calls) == 3


def test_n_action_steps_shorter_than_chunk(tokenizer):
    policy = XVLAPolicy(tiny_config(n_action_steps=2), tokenizer=tokenizer)
    batch = make_batch(policy.config, batch_size=1)
    calls = []
    original = policy.predict_action_chunk
    policy.predict_action_chunk = lambda b, noise=None: calls.append(1) or original(b, noise=noise)
    for _ in range(5):
        assert policy.select_action(batch).shape == (1, 20)
    assert len(calls) == 3


@pytest.mark.parametrize("fmt", ["xvla", "lerobot"])
def test_save_load_round_trip(policy, tmp_path, fmt):
    policy.save_pretrained(tmp_path / fmt, format=fmt)
    assert (tmp_path / fmt / "tokenizer.json").exists()
    loaded = XVLAPolicy.from_pretrained(tmp_path / fmt)
    assert loaded.checkpoint_format == fmt
    assert loaded.config.image_keys == CAMS and loaded.config.total_image_views == 3
    batch = make_batch(policy.config)
    noise = torch.randn(2, 4, 20)
    torch.testing.assert_close(
        loaded.predict_action_chunk(batch, noise=noise), policy.predict_action_chunk(batch, noise=noise)
    )


def test_official_round_trip(tokenizer, tmp_path):
    policy = XVLAPolicy(tiny_config(max_state_dim=20, image_size=(32, 32)), tokenizer=tokenizer)
    policy.save_pretrained(tmp_path / "off", format="official")
    raw = json.loads((tmp_path / "off" / "config.json").read_text())
    assert (
        raw["model_type"] == "xvla"
        and raw["num_actions"] == 4
        and "dim_embed" in raw["florence_config"]["vision_config"]
    )
    keys = load_file(str(tmp_path / "off" / "model.safetensors")).keys()
    assert "vlm.image_projection" in keys and not any(k.startswith("model.") for k in keys)
    loaded = XVLAPolicy.from_pretrained(tmp_path / "off")
    batch = {
        "observation.images.front": torch.rand(1, 3, 32, 32),
        "observation.state": torch.randn(1, 20),
        "task": ["wipe the table"],
    }
    noise = torch.randn(1, 4, 20)
    torch.testing.assert_close(
        loaded.model.generate_actions(**policy.prepare_inputs(batch), noise=noise),
        policy.model.generate_actions(**policy.prepare_inputs(batch), noise=noise),
    )


def test_convert_cli_gives_identical_actions(policy, tmp_path):
    policy.save_pretrained(tmp_path / "src")
    assert cli_main(["convert", str(tmp_path / "src"), str(tmp_path / "lr"), "--to", "lerobot"]) == 0
    assert cli_main(["convert", str(tmp_path / "lr"), str(tmp_path / "back"), "--to", "xvla"]) == 0
    batch = make_batch(policy.config)
    noise = torch.randn(2, 4, 20)
    ref = policy.predict_action_chunk(batch, noise=noise)
    for folder in ("lr", "back"):
        torch.testing.assert_close(
            XVLAPolicy.from_pretrained(tmp_path / folder).predict_action_chunk(batch, noise=noise), ref
        )
    a = load_file(str(tmp_path / "src" / "model.safetensors"))
    b = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_convert_cli_reports_errors(tmp_path, capsys):
    assert cli_main(["convert", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bf16_load(policy, tmp_path):
    policy.save_pretrained(tmp_path / "p")
    loaded = XVLAPolicy.from_pretrained(tmp_path / "p", dtype="bfloat16")
    assert loaded.model.transformer.pos_emb.dtype == torch.bfloat16
    out = loaded.predict_action_chunk(make_batch(policy.config))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_missing_and_unexpected_keys_are_named(policy, tmp_path):
    policy.save_pretrained(tmp_path / "p")
    weights = load_file(str(tmp_path / "p" / "model.safetensors"))
    weights.pop("transformer.norm.weight")
    weights["transformer.extra.weight"] = torch.zeros(1)
    save_file(weights, str(tmp_path / "p" / "model.safetensors"))
    with pytest.raises(
        ValueError,
        match=r"missing keys \(1\): \['transformer.norm.weight'\].*unexpected keys \(1\): \['transformer.extra.weight'\]",
    ):
        XVLAPolicy.from_pretrained(tmp_path / "p")


def test_pickle_weights_are_refused(policy, tmp_path):
    policy.save_pretrained(tmp_path / "p")
    (tmp_path / "p" / "model.safetensors").unlink()
    torch.save({}, tmp_path / "p" / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="safetensors only"):
        XVLAPolicy.from_pretrained(tmp_path / "p")


def test_missing_folder_and_offline_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        XVLAPolicy.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="offline"):
        XVLAPolicy.from_pretrained("lerobot/xvla-base")


def test_tokenizer_loaded_from_checkpoint_folder(policy, tmp_path):
    policy.save_pretrained(tmp_path / "p")
    loaded = XVLAPolicy.from_pretrained(tmp_path / "p")
    assert loaded.processor.loaded_tokenizer is None  # lazily, only when text has to be tokenized
    loaded.predict_action_chunk(make_batch(policy.config))
    assert loaded.processor.loaded_tokenizer is not None


def test_tokenizer_missing_offline_is_a_clear_error(tmp_path):
    policy = XVLAPolicy(tiny_config())
    policy.save_pretrained(tmp_path / "p")
    loaded = XVLAPolicy.from_pretrained(tmp_path / "p")
    with pytest.raises(OSError, match="Provide it offline"):
        loaded.predict_action_chunk(make_batch(policy.config))
    batch = make_batch(policy.config)
    batch["observation.language.tokens"] = torch.randint(3, 200, (2, 12))
    del batch["task"]
    assert loaded.predict_action_chunk(batch).shape == (2, 4, 20)


# ---------------------------------------------------------------------------- the troubleshooting cases
def test_error_action_dimension_mismatch(policy):
    batch = make_batch(policy.config, action_dim=7)
    with pytest.raises(ValueError, match=r"action dimension mismatch.*7-dim actions.*'ee6d'.*auto"):
        policy(batch)


def test_error_image_values_out_of_range(policy):
    batch = make_batch(policy.config)
    batch[CAMS[1]] = batch[CAMS[1]] * 400
    with pytest.raises(ValueError, match=r"observation.images.wrist.*outside \[0, 255\]"):
        policy.predict_action_chunk(batch)
    batch[CAMS[1]] = -torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="outside"):
        policy.predict_action_chunk(batch)


def test_error_domain_id_out_of_range(policy):
    with pytest.raises(ValueError, match=r"domain_id 7 is out of range.*num_domains=6"):
        policy.predict_action_chunk(make_batch(policy.config, domain_id=7))


def test_error_missing_camera(policy):
    batch = make_batch(policy.config)
    del batch[CAMS[1]]
    with pytest.raises(KeyError, match=r"missing camera keys \['observation.images.wrist'\]"):
        policy.predict_action_chunk(batch)


def test_error_state_too_wide(policy):
    batch = make_batch(policy.config, state_dim=12)
    with pytest.raises(ValueError, match="max_state_dim is 8"):
        policy.predict_action_chunk(batch)


def test_error_missing_state_and_instruction(policy):
    batch = make_batch(policy.config)
    del batch["observation.state"]
    with pytest.raises(KeyError, match="observation.state"):
        policy.predict_action_chunk(batch)
    batch = make_batch(policy.config)
    del batch["task"]
    with pytest.raises(KeyError, match="task"):
        policy.predict_action_chunk(batch)


def test_training_step_updates_weights(policy):
    batch = make_batch(policy.config, action_dim=20)
    batch["action"][..., [9, 19]] = batch["action"][..., [9, 19]].sigmoid()
    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    before = policy.model.transformer.soft_prompt_hub.weight.clone()
    loss, logs = policy(batch)
    loss.backward()
    opt.step()
    assert set(logs) == {"position_loss", "rotate6D_loss", "gripper_loss", "loss"}
    assert not torch.equal(before, policy.model.transformer.soft_prompt_hub.weight)


def test_unused_florence_parts_in_a_file_are_ignored(tokenizer, tmp_path):
    policy = XVLAPolicy(tiny_config(max_state_dim=20), tokenizer=tokenizer)
    policy.save_pretrained(tmp_path / "off", format="official")
    weights = load_file(str(tmp_path / "off" / "model.safetensors"))
    weights["vlm.language_model.model.decoder.layers.0.fc1.weight"] = torch.zeros(2, 2)
    weights["vlm.language_model.lm_head.weight"] = torch.zeros(2, 2)
    weights["vlm.language_model.final_logits_bias"] = torch.zeros(1, 300)
    save_file(weights, str(tmp_path / "off" / "model.safetensors"))
    XVLAPolicy.from_pretrained(tmp_path / "off")
