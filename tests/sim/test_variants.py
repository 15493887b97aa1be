"""Task lists, instructions, the variant registry and its action adapter (no simulator needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xvla.sim.instructions import (
    ALL_TASKS,
    INSTRUCTIONS,
    TASK_SETS,
    canonical_task,
    instruction,
    resolve_tasks,
)
from xvla.sim.variants import VARIANTS, ActionTransform, EmbodimentVariant, get_variant, resolve_variants


def test_every_task_has_its_own_instruction():
    assert len(ALL_TASKS) == 50
    assert len(set(INSTRUCTIONS.values())) == 50
    assert all(8 <= len(text) <= 80 and text == text.strip() for text in INSTRUCTIONS.values())
    assert set(TASK_SETS["mt10"]) <= set(ALL_TASKS) and len(TASK_SETS["mt10"]) == 10
    assert instruction("reach") == instruction("reach-v3")


def test_task_names_match_metaworld():
    envs = pytest.importorskip(
        "metaworld.env_dict", reason="metaworld is not installed (pip install 'xvla[sim]')"
    )
    assert list(ALL_TASKS) == list(envs.ALL_V3_ENVIRONMENTS)
    assert list(TASK_SETS["mt10"]) == list(envs.MT10_V3)


def test_resolve_tasks():
    assert resolve_tasks("mt10") == list(TASK_SETS["mt10"])
    assert resolve_tasks("reach, push-v3,reach-v3") == ["reach-v3", "push-v3"]
    assert len(resolve_tasks("mt50")) == 50
    with pytest.raises(ValueError, match="Did you mean"):
        canonical_task("pick-plase-v3")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_adapter_round_trip(name):
    variant = VARIANTS[name]
    rng = np.random.default_rng(0)
    env_actions = rng.uniform(-1, 1, size=(50, 4))
    dataset = variant.action.from_env(env_actions)
    assert dataset.shape == (50, variant.action_dim) and dataset.dtype == np.float32
    used = list(variant.action.xyz_indices) + [variant.action.gripper_index]
    unused = [i for i in range(variant.action_dim) if i not in used]
    assert np.all(dataset[:, unused] == 0)
    np.testing.assert_allclose(variant.action.to_env(dataset), env_actions, atol=1e-5)
    # a policy with a wider (padded) action space: the extra slots are ignored
    wide = np.concatenate([dataset, rng.normal(size=(50, 3))], axis=1)
    np.testing.assert_allclose(variant.action.to_env(wide), env_actions, atol=1e-5)
    with pytest.raises(ValueError, match="action space has"):
        variant.action.to_env(dataset[:, :2])


def test_transform_semantics():
    rot = ActionTransform(rotation_z_deg=90.0)
    np.testing.assert_allclose(
        rot.from_env([1, 0, 0, 1]), [0, 1, 0, 1], atol=1e-6
    )  # env +x is the variant's +y
    inv = ActionTransform(gripper_scale=-1.0)
    assert inv.from_env([0, 0, 0, 1])[3] == -1.0
    unit = ActionTransform(gripper_scale=-0.5, gripper_offset=0.5)  # 1 = open, 0 = closed
    assert unit.from_env([0, 0, 0, 1])[3] == 0.0 and unit.from_env([0, 0, 0, -1])[3] == 1.0
    scaled = ActionTransform(scale=2.0, permutation=(2, 0, 1), signs=(1, -1, 1))
    np.testing.assert_allclose(scaled.from_env([0.1, 0.2, 0.3, 0]), [0.6, -0.2, 0.4, 0], atol=1e-6)
    # outputs beyond the simulator's range are clipped on the way back
    assert np.all(np.abs(scaled.to_env([5, 5, 5, 5])) <= 1.0)


def test_invalid_transforms_are_rejected():
    with pytest.raises(ValueError, match="permutation"):
        ActionTransform(permutation=(0, 0, 1))
    with pytest.raises(ValueError, match="distinct slots"):
        ActionTransform(action_dim=4, gripper_index=2)
    with pytest.raises(ValueError, match="even"):
        EmbodimentVariant("odd", 5, image_size=(63, 64))


def test_variants_are_data(tmp_path):
    variant = VARIANTS["sawyer-joint7"]
    assert EmbodimentVariant.from_dict(json.loads(json.dumps(variant.to_dict()))) == variant
    custom = dict(variant.to_dict(), name="my-robot", domain_id=25, action_repeat=4)
    path = tmp_path / "my_robot.json"
    path.write_text(json.dumps(custom))
    loaded = get_variant(str(path))
    assert loaded.name == "my-robot" and loaded.fps == 20 and loaded.action == variant.action
    assert [v.name for v in resolve_variants(f"sawyer,{path}")] == ["sawyer", "my-robot"]
    assert len({v.domain_id for v in VARIANTS.values()}) == len(VARIANTS)
    with pytest.raises(ValueError, match="share domain ids"):
        resolve_variants([variant.to_dict() | {"name": "a"}, variant.to_dict() | {"name": "b"}])
    with pytest.raises(ValueError, match="unknown embodiment variant"):
        get_variant("nope")
    with pytest.raises(ValueError, match="unknown variant field"):
        EmbodimentVariant.from_dict({"name": "x", "domain_id": 1, "colour": "red"})


def test_wilson_interval():
    from xvla.sim.report import wilson_interval

    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_chunk_to_control_rate():
    from xvla.sim.rollout import chunk_to_control_rate

    chunk = np.arange(10, dtype=np.float64)[:, None] * np.ones((1, 3))
    np.testing.assert_allclose(chunk_to_control_rate(chunk, fps=10, horizon_s=None), chunk)
    np.testing.assert_allclose(
        chunk_to_control_rate(chunk, fps=10, horizon_s=1.0), chunk
    )  # N points at 1/fps
    slow = chunk_to_control_rate(chunk, fps=20, horizon_s=1.0)  # control twice as fast as the chunk points
    assert slow.shape[0] == 19
    np.testing.assert_allclose(slow[:, 0], np.arange(19) / 2)
