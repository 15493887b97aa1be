"""Robot adapters: export one domain's rows, load them into the same backbone elsewhere, refuse the rest."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_batch, tiny_config

from xvla import XVLAConfig, XVLAPolicy
from xvla.adapters import domain_rows, export_adapter
from xvla.cli import main


@pytest.fixture
def base_and_trained(tmp_path, tokenizer):
    """A base checkpoint and a copy whose domain 2 was "trained" (its rows changed): a Phase II result."""
    torch.manual_seed(0)
    config = tiny_config(num_domains=6, domains={0: "base-robot"})
    XVLAPolicy(config, tokenizer=tokenizer).save_pretrained(tmp_path / "base")
    trained = XVLAPolicy.from_pretrained(tmp_path / "base", tokenizer=tokenizer)
    with torch.no_grad():
        for name, param in trained.model.named_parameters():
            if name in domain_rows(trained.model, 2):
                param[2].normal_(0, 0.05)
    trained.config.domains = {0: "base-robot", 2: "new-arm"}
    trained.config.domain_id = 2
    trained.save_pretrained(tmp_path / "trained")
    return tmp_path / "base", tmp_path / "trained"


def test_export_load_gives_the_trained_robots_actions(base_and_trained, tmp_path, tokenizer):
    base_dir, trained_dir = base_and_trained
    assert (
        main(["adapter", "export", str(trained_dir), "--domain", "2", str(tmp_path / "arm.safetensors")]) == 0
    )
    trained = XVLAPolicy.from_pretrained(trained_dir, tokenizer=tokenizer)
    base = XVLAPolicy.from_pretrained(base_dir, tokenizer=tokenizer)
    info = base.load_adapter(tmp_path / "arm.safetensors")
    assert info.name == "new-arm" and info.domain_id == 1  # the first slot no trained domain uses
    assert base.adapters["new-arm"].metadata["action_mode"] == base.config.action_mode
    batch = make_batch(base.config, batch_size=1)
    noise = torch.randn(
        1, base.config.chunk_size, base.model.dim_action, generator=torch.Generator().manual_seed(1)
    )
    expected = trained.predict_action_chunk({**batch, "domain_id": 2}, noise=noise)
    assert torch.equal(base.predict_action_chunk({**batch, "robot": "new-arm"}, noise=noise), expected)
    assert torch.equal(base.predict_action_chunk({**batch, "domain_id": 1}, noise=noise), expected)
    with pytest.raises(KeyError, match="not in this checkpoint's domain table"):
        base.predict_action_chunk({**batch, "robot": "nobody"})


def test_refusals(base_and_trained, tmp_path, tokenizer):
    _, trained_dir = base_and_trained
    trained = XVLAPolicy.from_pretrained(trained_dir, tokenizer=tokenizer)
    export_adapter(trained, 2, tmp_path / "arm.safetensors")
    torch.manual_seed(5)
    other = XVLAPolicy(tiny_config(num_domains=6), tokenizer=tokenizer)  # another backbone
    with pytest.raises(ValueError, match="another backbone"):
        other.load_adapter(tmp_path / "arm.safetensors")
    with pytest.raises(ValueError, match="never trained"):
        export_adapter(trained, 4, tmp_path / "none.safetensors")
    trained.load_adapter(tmp_path / "arm.safetensors", name="copy")
    with pytest.raises(ValueError, match="loaded already"):
        trained.load_adapter(tmp_path / "arm.safetensors", name="copy")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="not a readable adapter"):
        trained.load_adapter(tmp_path / "junk.safetensors")


def test_adapter_of_the_09b_model_is_under_1_mb():
    with torch.device("meta"):
        policy = XVLAPolicy(XVLAConfig())
    rows = domain_rows(policy.model, 3)
    size = sum(t.numel() * 4 for t in rows.values())  # float32 bytes
    assert 100_000 * 4 < size < 1024 * 1024, size


@pytest.fixture
def two_widths(tmp_path, tokenizer):
    """A 4-wide base robot and, on the same backbone, a 7-wide robot trained as domain 2 (auto mode, 8-wide heads)."""
    torch.manual_seed(0)
    fields = dict(num_domains=6, action_mode="auto", max_action_dim=8)
    XVLAPolicy(
        tiny_config(real_action_dim=4, domains={0: "gripper4"}, **fields), tokenizer=tokenizer
    ).save_pretrained(tmp_path / "base")
    arm = XVLAPolicy.from_pretrained(
        tmp_path / "base",
        tokenizer=tokenizer,
        real_action_dim=7,
        domain_id=2,
        domains={0: "gripper4", 2: "arm7"},
    )
    with torch.no_grad():
        for name, param in arm.model.named_parameters():
            if name in domain_rows(arm.model, 2):
                param[2].normal_(0, 0.05)
    export_adapter(arm, 2, tmp_path / "arm7.safetensors")
    return (
        XVLAPolicy.from_pretrained(tmp_path / "base", tokenizer=tokenizer),
        arm,
        tmp_path / "arm7.safetensors",
    )


def test_one_batch_mixes_robots_of_different_action_widths(two_widths):
    base, arm, path = two_widths
    base_alone = XVLAPolicy.from_pretrained(base.source_dir, tokenizer=base.tokenizer)
    info = base.load_adapter(path)
    assert base.action_widths(["gripper4", "arm7"]) == [4, 7] and base.action_widths([0, info.domain_id]) == [
        4,
        7,
    ]
    batch = make_batch(base.config, batch_size=2)
    noise = torch.randn(
        2, base.config.chunk_size, base.model.dim_action, generator=torch.Generator().manual_seed(3)
    )
    mixed = base.predict_action_chunk({**batch, "robot": ["gripper4", "arm7"]}, noise=noise)
    assert mixed.shape[-1] == 7 and torch.isnan(mixed[0, :, 4:]).all() and torch.isfinite(mixed[1]).all()
    one, two = {k: v[:1] for k, v in batch.items()}, {k: v[1:] for k, v in batch.items()}
    alone4 = base_alone.predict_action_chunk({**one, "domain_id": 0}, noise=noise[:1])
    alone7 = arm.predict_action_chunk({**two, "domain_id": 2}, noise=noise[1:])
    assert alone4.shape[-1] == 4 and alone7.shape[-1] == 7
    torch.testing.assert_close(mixed[0, :, :4], alone4[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(mixed[1], alone7[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="use their own action spaces"):
        base.save_pretrained(base.source_dir.parent / "mixed")  # it would lose arm7's action space
    with pytest.raises(ValueError, match="one action space per batch"):
        base.predict_action_chunk({**batch, "robot": ["gripper4", "arm7"]}, prefix=torch.zeros(2, 1, 4))


def test_an_adapter_of_another_model_action_width_is_refused(two_widths, tmp_path):
    from safetensors.torch import save_file

    from xvla.adapters import read_adapter

    base, _, path = two_widths
    tensors, metadata = read_adapter(path)
    metadata["max_action_dim"] = 10
    save_file(tensors, str(tmp_path / "wide.safetensors"), metadata={"xvla": json.dumps(metadata)})
    with pytest.raises(ValueError, match="10-wide model actions"):
        base.load_adapter(tmp_path / "wide.safetensors")


def test_info_lists_an_adapter_file_and_the_adapters_loaded_into_a_checkpoint(two_widths, capsys):
    base, _, path = two_widths
    assert main(["info", str(path)]) == 0
    about = json.loads(capsys.readouterr().out)
    assert about["name"] == "arm7" and about["action_dim"] == 7 and about["model_action_dim"] == 8
    assert about["lora_tensors"] == 0 and about["bytes"] == path.stat().st_size
    assert main(["info", str(base.source_dir), "--adapters", f"left={path}"]) == 0
    domains = json.loads(capsys.readouterr().out)["domains"]
    assert domains["adapters"] == {
        "left": {"domain_id": 1, "action_mode": "auto", "action_dim": 7, "path": str(path)}
    }
    assert domains["trained"] == {"0": "gripper4", "1": "left"} and domains["free"] == [2, 3, 4, 5]
    assert main(["info", str(base.source_dir), "--adapters", "no-equals-sign"]) == 2
    assert "must look like NAME=PATH" in capsys.readouterr().err


@pytest.mark.slow  # two compiles of every graph (~90 s); the mechanism is covered in tests/test_compiled_runner.py
def test_an_adapter_loaded_into_a_compiled_policy_is_used(two_widths):
    """Compiled graphs freeze the weights: loading an adapter afterwards must rebuild them, not serve stale rows."""
    base, arm, path = two_widths
    compiled = XVLAPolicy.from_pretrained(
        base.source_dir, tokenizer=base.tokenizer, compile=True, compile_batch_sizes=(1,)
    )
    batch = make_batch(base.config, batch_size=1)
    noise = torch.randn(
        1, base.config.chunk_size, base.model.dim_action, generator=torch.Generator().manual_seed(3)
    )
    before = compiled.predict_action_chunk({**batch, "domain_id": 0}, noise=noise)  # compiles, weights frozen
    info = compiled.load_adapter(path)
    assert compiled.model.runner is not None  # still the compiled runner
    expected = arm.predict_action_chunk({**batch, "domain_id": 2}, noise=noise)
    got = compiled.predict_action_chunk({**batch, "robot": "arm7"}, noise=noise)
    assert got.shape[-1] == 7 and info.domain_id != 2
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(compiled.predict_action_chunk({**batch, "domain_id": 0}, noise=noise), before)
