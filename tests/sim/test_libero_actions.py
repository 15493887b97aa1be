"""LIBERO conversions against hand-computed values (no simulator needed), the domain table, the CLI flags."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from xvla.domains import LIBERO_DOMAIN_ID, RELEASED_DOMAINS, released_domain_name
from xvla.execution import chunk_seed
from xvla.sim.libero import (
    axis_angle_to_matrix,
    chunk_to_env_actions,
    libero_observation,
    matrix_to_quat_xyzw,
    pose_to_state,
    rot6d_to_axis_angle,
)
from xvla.sim.libero_eval import check_domain_id, libero_domain
from xvla.sim.libero_pool import episode_specs


def row(xyz=(0.1, -0.2, 0.9), rot6d=(1, 0, 0, 0, 1, 0), gripper=0.0, width=20) -> np.ndarray:
    out = np.zeros(width)
    out[0:3], out[3:9], out[9] = xyz, rot6d, gripper
    return out


def rot6d_of(matrix: np.ndarray) -> np.ndarray:
    return np.concatenate([matrix[:, 0], matrix[:, 1]])


def rotation(axis, angle: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    return axis_angle_to_matrix(axis / np.linalg.norm(axis) * angle)


def test_identity_pose_and_gripper_threshold():
    chunk = np.stack([row(gripper=g) for g in (0.0, 0.3, 0.5, 0.51, 1.0)])
    out = chunk_to_env_actions(chunk)
    assert out.shape == (5, 7)
    np.testing.assert_allclose(out[:, :3], np.tile([0.1, -0.2, 0.9], (5, 1)))
    np.testing.assert_allclose(out[:, 3:6], 0.0, atol=1e-6)
    assert out[:, 6].tolist() == [-1, -1, -1, 1, 1]  # +1 closes only strictly above 0.5


BACKENDS = [
    "numpy",
    pytest.param(
        "robosuite",
        marks=pytest.mark.skipif(
            not __import__("importlib").util.find_spec("robosuite"), reason="robosuite is not installed"
        ),
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_quarter_turn_about_z(backend):
    # R = Rz(90deg): first column (0, 1, 0), second column (-1, 0, 0)
    out = chunk_to_env_actions(row(rot6d=(0, 1, 0, -1, 0, 0))[None], backend)
    np.testing.assert_allclose(out[0, 3:6], [0, 0, math.pi / 2], atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_orthogonal_rot6d_is_gram_schmidt(backend):
    # a1 = (0, 0, 3) -> b1 = z; a2 = (0, 2, 1) -> b2 = y; b3 = z x y = -x: R = Ry(-90deg)
    out = chunk_to_env_actions(row(rot6d=(0, 0, 3, 0, 2, 1))[None], backend)
    np.testing.assert_allclose(out[0, 3:6], [0, -math.pi / 2, 0], atol=1e-5)
    # scaled and skewed identity: still the identity
    out = chunk_to_env_actions(row(rot6d=(2, 0, 0, 5, 0.5, 0))[None], backend)
    np.testing.assert_allclose(out[0, 3:6], 0.0, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("angle", [math.pi - 1e-3, math.pi - 1e-5, math.pi])
@pytest.mark.parametrize("axis", [(1, 0, 0), (0, 1, 0), (1, 1, 0), (0.3, -0.5, 0.8)])
def test_rotations_near_180_degrees(axis, angle, backend):
    target = rotation(axis, angle)
    aa = chunk_to_env_actions(row(rot6d=rot6d_of(target))[None], backend)[0, 3:6]
    # Near 180 degrees +axis and -axis are the same rotation: check the rotation and the angle.
    np.testing.assert_allclose(axis_angle_to_matrix(aa), target, atol=2e-3)
    assert np.linalg.norm(aa) == pytest.approx(angle, abs=2e-3)
    if angle < math.pi - 1e-4:  # far enough from 180 for the axis sign to be defined (w > 0)
        unit = np.asarray(axis) / np.linalg.norm(axis)
        np.testing.assert_allclose(aa, unit * angle, atol=2e-3)


def test_random_rotations_round_trip_and_batch_shape():
    rng = np.random.default_rng(0)
    chunk = rng.normal(size=(2, 3, 30, 20))
    chunk[..., 9] = rng.uniform(size=(2, 3, 30))
    out = chunk_to_env_actions(chunk)
    assert out.shape == (2, 3, 30, 7)
    flat = chunk.reshape(-1, 20)
    for i in range(0, flat.shape[0], 17):
        a1, a2 = flat[i, 3:6], flat[i, 6:9]
        b1 = a1 / np.linalg.norm(a1)
        b2 = a2 - (b1 @ a2) * b1
        b2 /= np.linalg.norm(b2)
        expected = np.stack([b1, b2, np.cross(b1, b2)], axis=-1)
        np.testing.assert_allclose(axis_angle_to_matrix(out.reshape(-1, 7)[i, 3:6]), expected, atol=1e-5)
    np.testing.assert_array_equal(chunk_to_env_actions(torch.from_numpy(chunk)), out)


def test_matches_robosuite_math():
    """Random, skewed and near-180-degree rot6d against robosuite's own mat2quat / quat2axisangle."""
    T = pytest.importorskip("robosuite.utils.transform_utils")
    rng = np.random.default_rng(1)
    near = [
        rot6d_of(rotation(rng.normal(size=3), math.pi - eps)) for eps in (0.0, 1e-6, 1e-4) for _ in range(20)
    ]
    rot6d = np.concatenate([rng.normal(size=(300, 6)), near])
    a1, a2 = rot6d[:, :3], rot6d[:, 3:]
    b1 = a1 / (np.linalg.norm(a1, axis=-1, keepdims=True) + 1e-6)
    b2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = b2 / (np.linalg.norm(b2, axis=-1, keepdims=True) + 1e-6)
    mats = np.stack([b1, b2, np.cross(b1, b2)], axis=-1)
    ref = np.stack([T.quat2axisangle(T.mat2quat(m)) for m in mats])
    np.testing.assert_allclose(rot6d_to_axis_angle(rot6d, "robosuite"), ref, atol=1e-12)
    np.testing.assert_array_equal(rot6d_to_axis_angle(rot6d), ref)  # "auto" picks robosuite when installed
    ours = rot6d_to_axis_angle(rot6d, "numpy")
    same_vector = np.abs(ours - ref).max(-1) < 1e-5
    assert same_vector[:300].all()  # away from 180 degrees: the same numbers
    for mine, theirs in zip(
        ours[~same_vector], ref[~same_vector], strict=True
    ):  # at 180: q or -q, one rotation
        np.testing.assert_allclose(axis_angle_to_matrix(mine), axis_angle_to_matrix(theirs), atol=1e-5)
    np.testing.assert_allclose(matrix_to_quat_xyzw(np.eye(3)), [0, 0, 0, 1], atol=1e-7)


def test_bad_chunks_are_clear_errors():
    with pytest.raises(ValueError, match=">=10"):
        chunk_to_env_actions(np.zeros((30, 7)))
    bad = np.zeros((2, 20))
    bad[0, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        chunk_to_env_actions(bad)
    with pytest.raises(ValueError, match="backend"):
        chunk_to_env_actions(np.zeros((2, 20)), backend="scipy")


def test_pose_to_state_uses_columns():
    rot = rotation((0, 0, 1), math.pi / 2)
    state = pose_to_state([1, 2, 3], rot)
    assert state.shape == (20,) and state.dtype == np.float32
    np.testing.assert_allclose(state[:9], [1, 2, 3, 0, 1, 0, -1, 0, 0], atol=1e-7)
    assert not state[9:].any()


def test_libero_observation():
    rot = torch.tensor([[[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]])
    img = torch.arange(2 * 2 * 3, dtype=torch.float32).reshape(1, 3, 2, 2)
    obs = {
        "observation.images.image": img,
        "observation.robot_state": {"eef": {"pos": torch.tensor([[0.1, 0.2, 0.3]]), "mat": rot}},
    }
    out = libero_observation(obs)
    state = out["observation.state"]
    assert state.shape == (1, 20)
    assert state[0, :9].tolist() == pytest.approx([0.1, 0.2, 0.3, 0, 1, 0, -1, 0, 0])
    assert state[0, 9:].abs().sum() == 0
    assert torch.equal(out["observation.images.image"], torch.flip(img, dims=[-2, -1]))


def test_libero_observation_numpy_frames():
    frame = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    wrist = frame.copy()
    rot = rotation((1, 0, 0), math.pi)
    out = libero_observation(
        {
            "observation.images.image": frame,
            "observation.images.image2": wrist,
            "observation.robot_state": {"eef": {"pos": np.array([0.1, 0.2, 0.3]), "mat": rot}},
        }
    )
    img = out["observation.images.image"]
    assert isinstance(img, np.ndarray) and img.shape == (4, 5, 3)
    assert img[0, 0].tolist() == frame[3, 4].tolist()  # turned by 180 degrees, channels untouched
    np.testing.assert_array_equal(img, np.rot90(frame, 2))
    np.testing.assert_array_equal(out["observation.images.image2"], wrist)  # the wrist is not flipped
    state = out["observation.state"][0]
    np.testing.assert_allclose(state[:10].numpy(), [0.1, 0.2, 0.3, 1, 0, 0, 0, -1, 0, 0], atol=1e-6)
    with pytest.raises(ValueError, match="HxWx3"):
        libero_observation({"observation.images.image": np.zeros((4, 5))})


def test_released_domain_table():
    assert released_domain_name(3) == "libero" == RELEASED_DOMAINS[LIBERO_DOMAIN_ID]
    assert released_domain_name(0) == "Bridge" and released_domain_name(18) == "AIRBOT"
    assert released_domain_name(25) is None
    assert {RELEASED_DOMAINS[i] for i in range(11, 18)} >= {"Droid-Left", "AGIBOT", "robomind-franka"}


def test_domain_choice_and_warning():
    class Policy:
        def __init__(self, domains):
            self.config = type("Config", (), {"domains": domains})()

    assert libero_domain(Policy(None), None) == 3  # released checkpoints record no table: the released id
    assert libero_domain(Policy({0: "bridge", 5: "LIBERO-finetune"}), None) == 5  # a recorded LIBERO domain
    assert libero_domain(Policy({5: "libero"}), 1) == 1  # an explicit id wins
    with pytest.warns(UserWarning, match="domain id 3"):
        assert check_domain_id(0, '{"repo_id": "lerobot/libero", "type": "xvla"}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_domain_id(3, "libero") is None
        assert check_domain_id(5, "libero", expected=5) is None
        assert check_domain_id(0, "bridge widowx") is None


def test_episode_specs_and_noise_seeds():
    specs = episode_specs([2, 5], 3, videos=3)
    assert [(s.task_id, s.episode) for s in specs] == [(2, 0), (2, 1), (2, 2), (5, 0), (5, 1), (5, 2)]
    assert {(s.task_id, s.episode) for s in specs if s.record} == {(2, 0), (5, 0), (2, 1)}
    seeds = {chunk_seed(0, t, e, c) for t in range(3) for e in range(3) for c in range(3)}
    assert len(seeds) == 27 and chunk_seed(0, 1, 2, 3) == chunk_seed(0, 1, 2, 3)
    assert chunk_seed(7, 1, 2, 3) == int(
        np.random.SeedSequence([7, 1, 2, 3]).generate_state(1)[0]
    )  # (seed, task, episode, chunk)


def parse_eval(*argv: str):
    import argparse

    from xvla.sim.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["eval", *argv])


def test_cli_defaults_follow_the_protocol():
    from xvla.sim.cli import libero_config_from_args as config_from_args

    cfg = config_from_args(parse_eval("--env", "libero", "--policy.path", "ckpt"))
    assert (cfg.policy, cfg.suite, cfg.tasks, cfg.episodes_per_task, cfg.max_steps) == (
        "ckpt",
        "libero_spatial",
        None,
        50,
        800,
    )
    assert (cfg.state_source, cfg.domain_id, cfg.seed, cfg.output) == (
        "open_loop",
        None,
        0,
        "outputs/libero/libero_spatial",
    )
    assert (cfg.num_envs, cfg.videos, cfg.progress, cfg.overwrite) == (4, 3, True, False)
    cfg = config_from_args(parse_eval(
        "--env", "libero", "--suite", "libero_10", "--policy.url", "http://h:1", "--tasks", "0,3", "--episodes-per-task",
        "10", "--max-steps", "100", "--state-source", "measured", "--domain-id", "0", "--no-progress", "--overwrite"))  # fmt: skip
    assert (cfg.policy, cfg.policy_url, cfg.tasks, cfg.episodes_per_task) == (None, "http://h:1", [0, 3], 10)
    assert (cfg.max_steps, cfg.state_source, cfg.domain_id, cfg.progress, cfg.overwrite) == (
        100,
        "measured",
        0,
        False,
        True,
    )
    assert (
        cfg.output,
        config_from_args(parse_eval("--env", "libero", "--suite", "libero_10", "c")).max_steps,
    ) == ("outputs/libero/libero_10", 900)
    assert config_from_args(parse_eval("--env", "libero", "c", "--tasks", "7")).tasks == [7]
    with pytest.raises(ValueError, match="no policy"):
        config_from_args(parse_eval("--env", "libero"))
    with pytest.raises(ValueError, match="--variant"):
        config_from_args(parse_eval("--env", "libero", "c", "--variant", "sawyer"))
    with pytest.raises(ValueError, match="task ids"):
        config_from_args(parse_eval("--env", "libero", "c", "--tasks", "mt10"))
    meta = parse_eval("expert")
    assert meta.env == "metaworld" and meta.policy == "expert" and "tasks" not in vars(meta)
