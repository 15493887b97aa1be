"""The committed-prefix constraint of XVLAModel.generate_actions (real-time chunking in the sampler)."""

import pytest
import torch
from conftest import tiny_config
from test_model import MODES, inputs

from xvla.actions import build_action_space
from xvla.model import XVLAModel
from xvla.model.prefix import build_prefix_constraint, guidance_scale


def model_and_inputs(mode="auto", chunk=8, real=7):
    config = tiny_config(
        action_mode=mode,
        real_action_dim=real if mode == "auto" else None,
        max_state_dim=20,
        chunk_size=chunk,
        n_action_steps=chunk,
    )
    torch.manual_seed(0)
    model = XVLAModel(config)
    x = inputs(config)
    noise = torch.randn(2, chunk, model.dim_action)
    return model, x, noise


def test_no_prefix_is_the_unchanged_sampler():
    model, x, noise = model_and_inputs()
    plain = model.generate_actions(**x, steps=3, noise=noise)
    explicit = model.generate_actions(**x, steps=3, noise=noise, prefix=None, guidance="guided")
    assert torch.equal(plain, explicit)


def test_inpaint_at_weight_one_returns_the_prefix_exactly():
    model, x, noise = model_and_inputs()
    prefix = torch.randn(2, 3, 7)
    out = model.generate_actions(**x, steps=4, noise=noise, prefix=prefix)
    torch.testing.assert_close(out[:, :3], prefix, rtol=0, atol=1e-6)
    free = model.generate_actions(**x, steps=4, noise=noise)
    assert not torch.allclose(out[:, 3:], free[:, 3:])  # the rest of the chunk reacts to the prefix


def test_inpaint_weights_zero_change_nothing_and_soft_weights_interpolate():
    model, x, noise = model_and_inputs()
    free = model.generate_actions(**x, steps=1, noise=noise)
    prefix = torch.randn(2, 4, 7)
    zero = model.generate_actions(**x, steps=1, noise=noise, prefix=prefix, prefix_weights=torch.zeros(4))
    assert torch.equal(zero, free)
    # With one step the network runs once, so a soft weight is exactly a convex combination.
    w = torch.tensor([1.0, 0.5, 0.25, 0.0])
    soft = model.generate_actions(**x, steps=1, noise=noise, prefix=prefix, prefix_weights=w)
    expected = free[:, :4] + w.view(1, 4, 1) * (prefix - free[:, :4])
    torch.testing.assert_close(soft[:, :4], expected)


def test_guided_step_is_the_vector_jacobian_correction(monkeypatch):
    """With a linear denoiser a_hat = 0.5 x_t + c the Jacobian is 0.5 I, so the guided estimate is known."""
    model, x, noise = model_and_inputs()
    shift = torch.linspace(-1, 1, model.dim_action)
    monkeypatch.setattr(model, "denoise_step", lambda context, x_t, proprio, t: 0.5 * x_t + shift)
    prefix = torch.randn(2, 3, 7)
    w = torch.tensor([1.0, 0.6, 0.2])
    out = model.generate_actions(
        **x, steps=1, noise=noise, prefix=prefix, prefix_weights=w, guidance="guided", max_guidance=3.0
    )
    free = (0.5 * noise + shift)[..., :7]
    expected = free.clone()
    expected[:, :3] += guidance_scale(1.0, 3.0) * 0.5 * w.view(1, 3, 1) * (prefix - free[:, :3])
    torch.testing.assert_close(out, expected)


def test_guided_differs_from_inpaint_and_leaves_zero_weights_alone():
    model, x, noise = model_and_inputs()
    free = model.generate_actions(**x, steps=3, noise=noise)
    prefix = free[:, :3] + 0.5
    guided = model.generate_actions(**x, steps=3, noise=noise, prefix=prefix, guidance="guided")
    inpaint = model.generate_actions(**x, steps=3, noise=noise, prefix=prefix)
    assert not torch.allclose(guided, inpaint)
    zero = model.generate_actions(
        **x, steps=3, noise=noise, prefix=prefix, prefix_weights=torch.zeros(3), guidance="guided"
    )
    torch.testing.assert_close(zero, free)


def test_guided_runs_under_inference_mode():
    model, x, noise = model_and_inputs()
    with torch.inference_mode():
        out = model.generate_actions(
            **x, steps=2, noise=noise, prefix=torch.zeros(2, 2, 7), guidance="guided"
        )
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("mode,model_dim,real_dim", MODES)
def test_prefix_maps_back_to_model_space_for_every_action_mode(mode, model_dim, real_dim):
    space = build_action_space(mode, real_dim=7, max_dim=20)
    robot = space.postprocess(torch.randn(1, 3, model_dim))
    constraint = build_prefix_constraint(space, robot, None, (1, 5, model_dim))
    # Round trip: model-space target -> postprocess gives the robot's actions back on the prefix.
    back = space.postprocess(constraint.target[:, :3])
    torch.testing.assert_close(back, robot, rtol=0, atol=1e-5)
    assert constraint.weights[:, 3:].abs().sum() == 0
    assert (constraint.weights[0, 0] > 0).sum() == real_dim  # padded channels are not constrained


def test_ee6d_gripper_prefix_round_trips_through_the_sigmoid():
    model, x, noise = model_and_inputs(mode="ee6d")
    prefix = torch.rand(2, 2, 20)
    out = model.generate_actions(**x, steps=2, noise=noise, prefix=prefix)
    torch.testing.assert_close(out[:, :2], prefix, rtol=0, atol=1e-5)


def test_clear_errors():
    model, x, noise = model_and_inputs()
    with pytest.raises(ValueError, match="guidance='magic' is unknown"):
        model.generate_actions(**x, noise=noise, prefix=torch.zeros(2, 2, 7), guidance="magic")
    with pytest.raises(ValueError, match="has 5 channels"):
        model.generate_actions(**x, noise=noise, prefix=torch.zeros(2, 2, 5))
    with pytest.raises(ValueError, match="1 <= d <= chunk_size=8"):
        model.generate_actions(**x, noise=noise, prefix=torch.zeros(2, 9, 7))
    with pytest.raises(ValueError, match="prefix_weights must be"):
        model.generate_actions(**x, noise=noise, prefix=torch.zeros(2, 2, 7), prefix_weights=torch.ones(3))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        model.generate_actions(
            **x, noise=noise, prefix=torch.zeros(2, 2, 7), prefix_weights=torch.tensor([2.0, 1])
        )


def test_guidance_scale_is_clipped_at_the_noisy_end():
    assert guidance_scale(1.0, 5.0) == 5.0
    assert guidance_scale(0.9, 5.0) == pytest.approx(0.9 * 5.0)
    t = 0.25
    assert guidance_scale(t, 5.0) == pytest.approx(t * ((1 - t) ** 2 + t**2) / (t * (1 - t)))
