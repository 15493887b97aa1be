import pytest
import torch
import torch.nn.functional as F
from conftest import make_batch, tiny_config
from torch import nn

from xvla import BaseActionSpace, XVLAPolicy, build_action_space, register_action, registered_action_modes
from xvla.actions import ACTION_REGISTRY


def _pair(dim, batch=2, chunk=3):
    return torch.randn(batch, chunk, dim), torch.rand(batch, chunk, dim)


def test_builtin_modes_registered():
    for mode in ("ee6d", "joint", "agibot_ee6d", "franka_joint7", "so101_bimanual", "auto"):
        assert mode in registered_action_modes()


def test_ee6d_loss_terms_match_definition():
    space = build_action_space("ee6d")
    pred, target = _pair(20)
    losses = space.compute_loss(pred, target)
    pos = (
        F.mse_loss(pred[..., :3], target[..., :3]) + F.mse_loss(pred[..., 10:13], target[..., 10:13])
    ) * 500
    rot = (
        F.mse_loss(pred[..., 3:9], target[..., 3:9]) + F.mse_loss(pred[..., 13:19], target[..., 13:19])
    ) * 10
    grip = (
        F.binary_cross_entropy_with_logits(pred[..., 9], target[..., 9])
        + F.binary_cross_entropy_with_logits(pred[..., 19], target[..., 19])
    ) / 2
    assert set(losses) == {"position_loss", "rotate6D_loss", "gripper_loss"}
    torch.testing.assert_close(losses["position_loss"], pos)
    torch.testing.assert_close(losses["rotate6D_loss"], rot)
    torch.testing.assert_close(losses["gripper_loss"], grip)


def test_ee6d_pre_and_postprocess():
    space = build_action_space("ee6d")
    proprio, action = torch.ones(2, 20), torch.ones(2, 3, 20)
    p, a = space.preprocess(proprio, action)
    assert p[:, [9, 19]].abs().sum() == 0 and a[..., [9, 19]].abs().sum() == 0
    assert proprio[:, 9].eq(1).all(), "preprocess must not modify its inputs"
    out = space.postprocess(torch.zeros(1, 2, 20))
    assert torch.allclose(out[..., 9], torch.full((1, 2), 0.5)) and out[..., 0].eq(0).all()


def test_joint_loss_and_processing():
    space = build_action_space("joint")
    pred, target = _pair(14)
    losses = space.compute_loss(pred, target)
    joints = [i for i in range(14) if i not in (6, 13)]
    torch.testing.assert_close(losses["joints_loss"], F.mse_loss(pred[..., joints], target[..., joints]))
    grip = (F.binary_cross_entropy_with_logits(pred[..., 6], target[..., 6])
            + F.binary_cross_entropy_with_logits(pred[..., 13], target[..., 13])) / 2 * 0.1  # fmt: skip
    torch.testing.assert_close(losses["gripper_loss"], grip)
    assert space.postprocess(torch.zeros(1, 1, 14))[..., 6].item() == pytest.approx(0.5)


def test_agibot_uses_mse_gripper_and_no_processing():
    space = build_action_space("agibot_ee6d")
    pred, target = _pair(20)
    losses = space.compute_loss(pred, target)
    torch.testing.assert_close(
        losses["gripper_loss"], F.mse_loss(pred[..., [9, 19]], target[..., [9, 19]]) * 10
    )
    x = torch.randn(1, 2, 20)
    assert torch.equal(space.postprocess(x), x)
    p, a = space.preprocess(torch.ones(1, 20), x)
    assert torch.equal(a, x) and p.eq(1).all()


def test_franka_joint7_pads_and_trims():
    space = build_action_space("franka_joint7")
    assert space.dim_action == 20 and space.real_dim == 7
    _, a = space.preprocess(torch.zeros(1, 32), torch.ones(1, 3, 7))
    assert a.shape == (1, 3, 20) and a[..., 7:].abs().sum() == 0
    assert space.postprocess(torch.randn(1, 3, 20)).shape == (1, 3, 7)
    pred, target = torch.randn(1, 3, 20), torch.randn(1, 3, 7)
    torch.testing.assert_close(
        space.compute_loss(pred, target)["joints_loss"], F.mse_loss(pred[..., :7], target)
    )
    with pytest.raises(ValueError, match="action dimension mismatch"):
        space.preprocess(torch.zeros(1, 32), torch.ones(1, 3, 9))


def test_so101_bimanual():
    space = build_action_space("so101_bimanual")
    proprio, action = torch.ones(2, 12), torch.ones(2, 3, 12)
    p, a = space.preprocess(proprio, action)
    assert p.shape == (2, 20) and a.shape == (2, 3, 20)
    assert a[..., [5, 11]].abs().sum() == 0 and a[..., 12:].abs().sum() == 0
    out = space.postprocess(torch.zeros(1, 2, 20))
    assert out.shape == (1, 2, 12) and out[..., 5].eq(0.5).all()
    losses = space.compute_loss(torch.randn(2, 3, 20), torch.randn(2, 3, 12))
    assert set(losses) == {"joints_loss", "gripper_loss", "left_arm_loss", "right_arm_loss"}


@pytest.mark.parametrize("weight", [1.0, 100.0])
def test_auto_space(weight):
    space = build_action_space("auto", real_dim=7, max_dim=20, loss_weight=weight)
    assert space.dim_action == 20 and space.real_dim == 7
    pred, target = torch.randn(2, 3, 20), torch.randn(2, 3, 7)
    torch.testing.assert_close(
        space.compute_loss(pred, target)["joints_loss"], F.mse_loss(pred[..., :7], target) * weight
    )
    assert space.postprocess(pred).shape == (2, 3, 7)
    with pytest.raises(ValueError, match="max_action_dim"):
        build_action_space("auto", real_dim=25, max_dim=20)


def test_unknown_mode_lists_registered():
    with pytest.raises(ValueError, match="ee6d") as err:
        build_action_space("no_such_robot")
    assert "register_action" in str(err.value)


def test_ee6d_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="action dimension mismatch"):
        build_action_space("ee6d").compute_loss(torch.randn(1, 2, 20), torch.randn(1, 2, 7))


def test_custom_action_space_example_end_to_end():
    """The documented recipe: subclass BaseActionSpace, register it, select it with action_mode."""
    name = "my_custom_robot"
    ACTION_REGISTRY.pop(name, None)

    @register_action(name)
    class MyCustomActionSpace(BaseActionSpace):
        dim_action = 15
        gripper_idx = (7, 14)

        def __init__(self):
            super().__init__()
            self.mse = nn.MSELoss()
            self.bce = nn.BCEWithLogitsLoss()

        def compute_loss(self, pred, target):
            return {
                "joints_loss": self.mse(pred[:, :, :7], target[:, :, :7]),
                "gripper_loss": self.bce(pred[:, :, self.gripper_idx], target[:, :, self.gripper_idx]),
            }

        def preprocess(self, proprio, action, mode="train"):
            proprio_m = proprio.clone()
            action_m = action.clone() if action is not None else None
            proprio_m[..., self.gripper_idx] = 0.0
            if action_m is not None:
                action_m[..., self.gripper_idx] = 0.0
            return proprio_m, action_m

        def postprocess(self, action):
            action[..., self.gripper_idx] = torch.sigmoid(action[..., self.gripper_idx])
            return action

    try:
        config = tiny_config(action_mode=name, max_state_dim=32)
        policy = XVLAPolicy(config)
        batch = make_batch(config, action_dim=15)
        batch["action"][..., [7, 14]] = batch["action"][..., [7, 14]].sigmoid()
        batch["observation.language.tokens"] = torch.randint(3, 200, (2, 12))
        del batch["task"]
        chunk = policy.predict_action_chunk(batch)
        assert chunk.shape == (2, config.chunk_size, 15)
        assert ((chunk[..., [7, 14]] > 0) & (chunk[..., [7, 14]] < 1)).all()
        loss, logs = policy(batch)
        assert set(logs) == {"joints_loss", "gripper_loss", "loss"}
        loss.backward()
    finally:
        ACTION_REGISTRY.pop(name, None)


def test_registering_a_taken_name_fails_and_names_the_existing_class():
    builtin = ACTION_REGISTRY["ee6d"]
    with pytest.raises(KeyError, match=r"already registered by xvla\.actions\.\w+.*override=True"):

        @register_action("ee6d")
        class Other(BaseActionSpace):
            dim_action = 3

    with pytest.raises(ValueError, match="already registered"):  # also a ValueError, for the CLI's errors
        register_action("EE6D")(type("Other2", (BaseActionSpace,), {"dim_action": 3}))
    assert ACTION_REGISTRY["ee6d"] is builtin


def test_a_custom_name_is_refused_twice_and_override_replaces_it():
    def define():
        class TmpSpace(BaseActionSpace):
            dim_action = 3

        return TmpSpace

    try:
        first = register_action("tmp_custom_space")(define())
        assert register_action("tmp_custom_space")(first) is first  # the same class again is harmless
        with pytest.raises(KeyError, match="tmp_custom_space.*already registered"):
            register_action("tmp_custom_space")(define())  # a re-run cell defines a new class: refused
        second = register_action("tmp_custom_space", override=True)(define())
        assert ACTION_REGISTRY["tmp_custom_space"] is second and first is not second
        assert build_action_space("tmp_custom_space").dim_action == 3
    finally:
        ACTION_REGISTRY.pop("tmp_custom_space", None)


def test_action_hub_alias_for_ported_code():
    from xvla import action_hub

    assert action_hub.register_action is register_action and action_hub.BaseActionSpace is BaseActionSpace
