"""Robot adapters: export one domain's rows, load them into the same backbone elsewhere, refuse the rest."""

from __future__ import annotations

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
    assert main(["adapter", "export", str(trained_dir), "--domain", "2", str(tmp_path / "arm.safetensors")]) == 0
    trained = XVLAPolicy.from_pretrained(trained_dir, tokenizer=tokenizer)
    base = XVLAPolicy.from_pretrained(base_dir, tokenizer=tokenizer)
    info = base.load_adapter(tmp_path / "arm.safetensors")
    assert info.name == "new-arm" and info.domain_id == 1  # the first slot no trained domain uses
    assert base.adapters["new-arm"].metadata["action_mode"] == base.config.action_mode
    batch = make_batch(base.config, batch_size=1)
    noise = torch.randn(1, base.config.chunk_size, base.model.dim_action, generator=torch.Generator().manual_seed(1))
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
