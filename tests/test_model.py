import pytest
import torch
from conftest import tiny_config

from xvla.model import XVLAModel
from xvla.model.transformer import DomainAwareLinear, timestep_embedding


def inputs(config, batch=2, views=2, domain=None, length=12):
    mask = torch.ones(batch, views, dtype=torch.bool)
    return dict(
        input_ids=torch.randint(3, 250, (batch, length)),
        image_input=torch.randn(batch, views, 3, 32, 32),
        image_mask=mask,
        domain_id=torch.tensor(domain if domain is not None else [1] * batch),
        proprio=torch.randn(batch, config.proprio_dim),
    )


MODES = [
    ("ee6d", 20, 20),
    ("joint", 14, 14),
    ("agibot_ee6d", 20, 20),
    ("franka_joint7", 20, 7),
    ("so101_bimanual", 20, 12),
    ("auto", 20, 7),
]


@pytest.mark.parametrize("mode,model_dim,real_dim", MODES)
def test_every_action_mode_generates_and_trains(mode, model_dim, real_dim):
    config = tiny_config(action_mode=mode, real_action_dim=7 if mode == "auto" else None, max_state_dim=20)
    model = XVLAModel(config)
    x = inputs(config)
    out = model.generate_actions(**x, steps=2)
    assert out.shape == (2, config.chunk_size, real_dim) and torch.isfinite(out).all()
    target = torch.rand(
        2, config.chunk_size, real_dim if mode in ("auto", "franka_joint7", "so101_bimanual") else model_dim
    )
    losses = model(**x, action=target)
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    assert model.transformer.action_encoder.fc.weight.grad is not None


def test_noise_makes_sampling_reproducible_and_generator_works():
    config = tiny_config()
    model = XVLAModel(config)
    x = inputs(config)
    noise = torch.randn(2, config.chunk_size, 20)
    a = model.generate_actions(**x, steps=3, noise=noise)
    b = model.generate_actions(**x, steps=3, noise=noise)
    assert torch.equal(a, b)
    g1 = model.generate_actions(**x, steps=3, generator=torch.Generator().manual_seed(5))
    g2 = model.generate_actions(**x, steps=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(g1, g2) and not torch.equal(a, g1)
    with pytest.raises(ValueError, match="noise must have shape"):
        model.generate_actions(**x, noise=torch.randn(2, 3, 20))


def test_sampling_follows_the_flow_matching_recursion():
    """generate_actions == the explicit loop over t = i/steps with x_t = t*x1 + (1-t)*a_hat."""
    config = tiny_config()
    model = XVLAModel(config).eval()
    x = inputs(config)
    noise = torch.randn(2, config.chunk_size, 20)
    got = model.generate_actions(**x, steps=3, noise=noise)
    enc = model.vlm(x["input_ids"], x["image_input"], x["image_mask"])
    a_hat = torch.zeros_like(noise)
    with torch.no_grad():
        for i in (3, 2, 1):
            t = torch.full((2,), i / 3)
            x_t = t.view(-1, 1, 1) * noise + (1 - t).view(-1, 1, 1) * a_hat
            p, xt = model.action_space.preprocess(x["proprio"], x_t)
            a_hat = model.transformer(x["domain_id"], enc["vlm_features"], enc["aux_visual_inputs"], xt, p, t)
    torch.testing.assert_close(got, model.action_space.postprocess(a_hat))


def test_encoding_runs_once_per_chunk(monkeypatch):
    config = tiny_config()
    model = XVLAModel(config)
    calls = {"vlm": 0, "proj": 0}
    vlm_forward = model.vlm.forward
    proj_forward = model.transformer.vlm_proj.forward

    def count_vlm(*a, **k):
        calls["vlm"] += 1
        return vlm_forward(*a, **k)

    def count_proj(*a, **k):
        calls["proj"] += 1
        return proj_forward(*a, **k)

    monkeypatch.setattr(model.vlm, "forward", count_vlm)
    monkeypatch.setattr(model.transformer.vlm_proj, "forward", count_proj)
    model.generate_actions(**inputs(config), steps=7)
    assert calls == {"vlm": 1, "proj": 1}


def test_mixed_domains_equal_per_sample_runs():
    config = tiny_config(use_hetero_proj=True)
    model = XVLAModel(config)
    x = inputs(config, batch=3, domain=[0, 4, 2])
    noise = torch.randn(3, config.chunk_size, 20)
    together = model.generate_actions(**x, steps=2, noise=noise)
    for i in range(3):
        single = {k: v[i : i + 1] for k, v in x.items()}
        alone = model.generate_actions(**single, steps=2, noise=noise[i : i + 1])
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=1e-5)
    # domains really matter: the same observation under another id gives other actions
    other = dict(x, domain_id=torch.tensor([1, 1, 1]))
    assert not torch.allclose(model.generate_actions(**other, steps=2, noise=noise), together)


def test_empty_camera_is_ignored():
    config = tiny_config()
    model = XVLAModel(config)
    x = inputs(config, views=3)
    x["image_mask"][:, 2] = False
    noise = torch.randn(2, config.chunk_size, 20)
    a = model.generate_actions(**x, steps=2, noise=noise)
    x["image_input"][:, 2] = torch.randn_like(x["image_input"][:, 2]) * 100
    torch.testing.assert_close(model.generate_actions(**x, steps=2, noise=noise), a)
    x["image_mask"][:, 0] = False
    with pytest.raises(ValueError, match="view 0"):
        model.generate_actions(**x)


def test_loss_with_explicit_t_and_noise_matches_definition():
    config = tiny_config(action_mode="auto", real_action_dim=7, max_state_dim=20)
    model = XVLAModel(config).eval()
    x = inputs(config)
    action = torch.rand(2, config.chunk_size, 7)
    t, noise = torch.tensor([0.3, 0.8]), torch.randn(2, config.chunk_size, 7)
    losses = model(**x, action=action, t=t, noise=noise)
    with torch.no_grad():
        x_t = t.view(-1, 1, 1) * noise + (1 - t).view(-1, 1, 1) * action
        enc = model.vlm(x["input_ids"], x["image_input"], x["image_mask"])
        p, xt = model.action_space.preprocess(x["proprio"], x_t)
        pred = model.transformer(x["domain_id"], enc["vlm_features"], enc["aux_visual_inputs"], xt, p, t)
        expected = ((pred[..., :7] - action) ** 2).mean()
    torch.testing.assert_close(losses["joints_loss"], expected)


def test_default_t_is_stratified():
    config = tiny_config()
    model = XVLAModel(config).eval()
    seen = {}
    original = model.denoise_step

    def spy(context, x_t, proprio, t):
        seen["t"] = t.clone()
        return original(context, x_t, proprio, t)

    model.denoise_step = spy
    model(
        **inputs(config, batch=4),
        action=torch.rand(4, config.chunk_size, 20),
        generator=torch.Generator().manual_seed(1),
    )
    u = torch.rand(1, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(seen["t"], (u + torch.arange(4) / 4) % (1 - 1e-5))


def test_bfloat16_runs():
    config = tiny_config(dtype="bfloat16")
    model = XVLAModel(config)
    assert model.transformer.pos_emb.dtype == torch.bfloat16
    assert next(model.vlm.parameters()).dtype == torch.bfloat16
    x = inputs(config)
    out = model.generate_actions(**x, steps=2)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    losses = model(**x, action=torch.rand(2, config.chunk_size, 20))
    sum(losses.values()).backward()


def test_sequence_too_long_is_a_clear_error():
    config = tiny_config(max_len_seq=20)
    model = XVLAModel(config)
    with pytest.raises(ValueError, match="exceeds max_len_seq=20"):
        model.generate_actions(**inputs(config))


def test_view_capacity_is_the_most_views_the_sequence_holds():
    config = tiny_config()
    model = XVLAModel(config)
    capacity = model.view_capacity(config.image_size)
    assert capacity == model.free_tokens() // model.image_tokens(config.image_size) > 1
    model.generate_actions(**inputs(config, batch=1, views=capacity), steps=1)
    with pytest.raises(ValueError, match="exceeds max_len_seq"):
        model.generate_actions(**inputs(config, batch=1, views=capacity + 1), steps=1)


def test_input_checks():
    config = tiny_config()
    model = XVLAModel(config)
    x = inputs(config)
    with pytest.raises(ValueError, match=r"domain_id 9 is out of range.*num_domains=6"):
        model.generate_actions(**dict(x, domain_id=torch.tensor([0, 9])))
    with pytest.raises(ValueError, match="proprio must be"):
        model.generate_actions(**dict(x, proprio=torch.randn(2, 3)))


def test_domain_aware_linear_and_time_embedding():
    layer = DomainAwareLinear(3, 2, num_domains=4)
    x = torch.randn(2, 5, 3)
    ids = torch.tensor([1, 3])
    y = layer(x, ids)
    w = layer.fc.weight[3].view(3, 2)
    torch.testing.assert_close(y[1], x[1] @ w + layer.bias.weight[3])
    assert layer(torch.randn(2, 3), ids).shape == (2, 2)
    emb = timestep_embedding(torch.tensor([0.0, 0.5]), 8)
    assert (
        emb.shape == (2, 8)
        and torch.equal(emb[0, :4], torch.ones(4))
        and torch.equal(emb[0, 4:], torch.zeros(4))
    )


def test_freeze_switches():
    config = tiny_config(
        freeze_vision_encoder=True, freeze_language_encoder=True, train_policy_transformer=False
    )
    model = XVLAModel(config)
    assert not any(p.requires_grad for p in model.vlm.vision_tower.parameters())
    assert not any(p.requires_grad for p in model.vlm.language_model.parameters())
    trainable = {n for n, p in model.transformer.named_parameters() if p.requires_grad}
    assert trainable == {"soft_prompt_hub.weight"}
    model = XVLAModel(tiny_config(train_soft_prompts=False))
    assert not model.transformer.soft_prompt_hub.weight.requires_grad
    assert model.transformer.blocks[0].attn.qkv.weight.requires_grad


def test_the_last_block_computes_only_the_decoded_rows_exactly():
    """The last block runs its queries and MLP on the action rows only; they equal the full block's."""
    from xvla.model.transformer import TransformerBlock

    torch.manual_seed(0)
    block = TransformerBlock(32, 4).eval()
    x = torch.randn(2, 11, 32)
    full = block(x)
    kept = block(x, rows=3)
    assert kept.shape == (2, 3, 32)
    torch.testing.assert_close(kept, full[:, :3], rtol=0, atol=1e-6)


def test_training_dropout_is_where_the_reference_has_it():
    """Attention probabilities, after the GELU and after fc2 (LeRobot / timm): nothing after the attention
    projection. With those two rates at zero, a block in training mode is deterministic."""
    from xvla.model.transformer import TransformerBlock

    torch.manual_seed(0)
    block = TransformerBlock(32, 4).train()
    assert block.attn.dropout == 0.1 and block.mlp.drop.p == 0.1
    block.attn.dropout = 0.0
    block.mlp.drop.p = 0.0
    x = torch.randn(2, 11, 32)
    torch.testing.assert_close(block(x), block.eval()(x), rtol=0, atol=0)
