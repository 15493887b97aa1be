"""The LIBERO environment on a real LIBERO scene: camera flips, grip-site state, absolute control.

One scene (libero_spatial task 0, init state 0) is built once for the module (~10-60 s on 2 busy cores).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("libero.libero", reason="LIBERO is not installed: pip install 'xvla[libero]'")
pytestmark = pytest.mark.slow  # a real LIBERO scene per test: ~100 s together on 2 cores (`make test-slow`)

from xvla.sim.libero import (  # noqa: E402
    IMAGE_KEY,
    WRIST_KEY,
    LiberoEnv,
    axis_angle_to_matrix,
    pose_to_state,
)


@pytest.fixture(scope="module")
def env():
    env = LiberoEnv("libero_spatial", 0, max_episode_steps=60)
    obs, info = env.reset(options={"episode": 0})
    env.first_obs, env.first_info = obs, info
    yield env
    env.close()


def _raw_depth(env: LiberoEnv) -> np.ndarray:
    import robosuite.macros as macros
    from robosuite.utils.mjcf_utils import IMAGE_CONVENTION_MAPPING

    size = env.camera_size
    _, depth = env.sim_env.env.sim.render(camera_name="agentview", width=size, height=size, depth=True)
    return depth[:: IMAGE_CONVENTION_MAPPING[macros.IMAGE_CONVENTION]]


def test_reset_follows_the_protocol(env):
    obs, info = env.first_obs, env.first_info
    assert set(obs) == {IMAGE_KEY, WRIST_KEY, "observation.state"}
    assert env.observation_space.contains(obs)
    assert info["episode"] == 0 and info["steps"] == 0 and not info["success"]
    assert (
        env.instruction
        == "pick up the black bowl between the plate and the ramekin and place it on the plate"
    )
    assert env.controller.use_delta is False  # settled in delta mode, then switched to absolute targets
    assert env.max_episode_steps == 60


def test_agentview_turned_180_and_upright_wrist_as_rendered(env):
    obs = env.observe(images=True)
    agent, wrist = env.render_cameras()
    np.testing.assert_array_equal(obs[IMAGE_KEY], agent[::-1, ::-1])
    np.testing.assert_array_equal(obs[WRIST_KEY], wrist)
    assert obs[IMAGE_KEY].std() > 10 and obs[WRIST_KEY].std() > 10
    # Upright: the agentview looks down at the table from the front, so in an upright frame the top rows
    # (robot, far background) are farther away than the bottom rows (the table's near edge).
    depth = _raw_depth(env)[::-1, ::-1]  # the same turn as the model's image
    quarter = depth.shape[0] // 4
    assert depth[:quarter].mean() > depth[-quarter:].mean() + 0.001
    rendered = _raw_depth(env)  # as MuJoCo renders it: upside down
    assert rendered[:quarter].mean() < rendered[-quarter:].mean()


def test_state_is_the_grip_site_pose_not_the_hand_body(env):
    import robosuite.utils.transform_utils as T

    state = env.observe(images=False)["observation.state"]
    ctrl = env.controller
    raw = env.sim_env.env._get_observations(force_update=True)
    np.testing.assert_allclose(state[:3], raw["robot0_eef_pos"], atol=1e-4)
    np.testing.assert_allclose(
        state[3:9], np.concatenate([ctrl.ee_ori_mat[:, 0], ctrl.ee_ori_mat[:, 1]]), atol=1e-6
    )
    body = T.quat2mat(raw["robot0_eef_quat"])
    assert np.abs(state[3:9] - np.concatenate([body[:, 0], body[:, 1]])).max() > 0.5  # 90 degrees apart
    assert not state[9:].any()


def test_observation_matches_the_official_client_math(env):
    """Frames from LIBERO's own camera observables, processed as the official client does, equal ours."""
    from xvla.sim.libero import libero_env_observation

    sim = env.sim_env.env
    for name in ("agentview_image", "robot0_eye_in_hand_image"):
        sim.modify_observable(name, "enabled", True)
    try:
        raw = sim._get_observations(force_update=True)
    finally:
        for name in ("agentview_image", "robot0_eye_in_hand_image"):
            sim.modify_observable(name, "enabled", False)
    ctrl = env.controller
    main_view = np.flip(np.flip(raw["agentview_image"], 0), 1)
    arm = np.concatenate([ctrl.ee_pos, ctrl.ee_ori_mat[:3, 0], ctrl.ee_ori_mat[:3, 1], [0.0]])
    proprio = np.concatenate([arm, np.zeros_like(arm)])
    for ours in (libero_env_observation(raw, ctrl.ee_pos, ctrl.ee_ori_mat), env.observe(images=True)):
        np.testing.assert_array_equal(ours[IMAGE_KEY], main_view)
        np.testing.assert_array_equal(ours[WRIST_KEY], raw["robot0_eye_in_hand_image"])
        np.testing.assert_allclose(ours["observation.state"], proprio, atol=1e-6)
        assert ours["observation.state"].dtype == np.float32


def test_absolute_control_moves_the_gripper_to_the_target(env):
    env.reset(options={"episode": 1})
    ctrl = env.controller
    start_pos, start_rot = ctrl.ee_pos.copy(), ctrl.ee_ori_mat.copy()
    target_pos = start_pos + np.array([0.04, -0.03, -0.05])
    target_rot = axis_angle_to_matrix(np.array([0.0, 0.0, math.radians(15)])) @ start_rot
    model_row = np.zeros(20)
    model_row[:3], model_row[3:6], model_row[6:9] = target_pos, target_rot[:, 0], target_rot[:, 1]
    for _ in range(40):
        obs, reward, terminated, truncated, info = env.step(model_row)
    assert np.linalg.norm(ctrl.ee_pos - target_pos) < 0.005, (ctrl.ee_pos, target_pos)
    error = target_rot.T @ ctrl.ee_ori_mat
    assert math.degrees(math.acos(np.clip((np.trace(error) - 1) / 2, -1, 1))) < 3.0
    assert np.linalg.norm(start_pos - target_pos) > 0.07  # it really moved
    # open loop: the state is the commanded pose; measured: the controller's
    np.testing.assert_allclose(obs["observation.state"][:9], model_row[:9], atol=1e-6)
    env.state_source = "measured"
    try:
        np.testing.assert_allclose(env.state(), pose_to_state(ctrl.ee_pos, ctrl.ee_ori_mat))
    finally:
        env.state_source = "open_loop"
    assert env.elapsed_steps == 40 and not truncated


def test_step_limit_truncates_and_bad_actions_fail(env):
    hold = env.observe(images=False)["observation.state"].astype(np.float64)[:10]
    truncated = False
    for _ in range(60):
        _, _, terminated, truncated, _ = env.step(hold)
        if terminated or truncated:
            break
    assert truncated and env.elapsed_steps == 60  # settle steps are not counted
    with pytest.raises(ValueError, match="7-D absolute env action"):
        env.step(np.zeros(5))
