"""The Meta-World adapter: LeRobot-form observations, seeded layouts, upright cameras, success."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def env(metaworld):
    from xvla.sim.metaworld_env import MetaWorldEnv

    env = MetaWorldEnv("reach-v3", "sawyer", image_size=32, max_episode_steps=120)
    yield env
    env.close()


def test_reset_and_step_shapes(env):
    obs, info = env.reset(seed=1)
    assert set(obs) == {"observation.images.main", "observation.images.wrist", "observation.state"}
    for key in ("observation.images.main", "observation.images.wrist"):
        assert obs[key].shape == (32, 32, 3) and obs[key].dtype == np.uint8
        assert obs[key].std() > 5  # a rendered scene, not a blank frame
    assert obs["observation.state"].shape == (4,) and obs["observation.state"].dtype == np.float32
    assert 0.0 <= obs["observation.state"][3] <= 1.0  # gripper opening
    assert env.observation_space.contains(obs)
    assert info["task"] == env.instruction == "move the gripper to the red target point"
    obs2, reward, terminated, truncated, info = env.step(np.array([0.0, 0.0, 1.0, 0.0], np.float32))
    assert obs2["observation.state"][2] > obs["observation.state"][2]  # +z moves the hand up
    assert isinstance(reward, float) and terminated is False and truncated is False and not info["success"]


def test_layouts_are_reproducible_by_seed(env):
    from xvla.sim.metaworld_env import episode_seed

    a, _ = env.reset(seed=episode_seed(0, "reach-v3", 3))
    goal_a = env.raw_observation[-3:]
    env.step(np.array([0.5, 0.0, 0.0, 0.0]))
    b, _ = env.reset(seed=episode_seed(0, "reach-v3", 3))
    goal_b = env.raw_observation[-3:]
    np.testing.assert_array_equal(goal_a, goal_b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    env.reset(seed=episode_seed(0, "reach-v3", 4))
    assert not np.allclose(env.raw_observation[-3:], goal_a)  # another layout index, another goal
    assert episode_seed(0, "reach-v3", 3) != episode_seed(1, "reach-v3", 3) != episode_seed(0, "push-v3", 3)


def test_expert_succeeds_and_episode_ends(env):
    env.reset(seed=7)
    for _ in range(env.max_episode_steps):
        obs, _, terminated, truncated, info = env.step(env.expert_action())
        if terminated or truncated:
            break
    assert terminated and info["success"] and not truncated
    env.reset(seed=7)
    env.max_episode_steps = 2
    env.step(np.zeros(4))
    assert env.step(np.zeros(4))[3]  # truncated at the step limit
    env.max_episode_steps = 120


def test_corner_cameras_are_turned_upright(metaworld):
    import mujoco

    from xvla.sim.metaworld_env import UPSIDE_DOWN_CAMERAS, make_metaworld_env, upright

    frame = np.arange(2 * 3 * 3).reshape(2, 3, 3)
    np.testing.assert_array_equal(upright(frame), np.rot90(frame, 2))
    # A camera whose image "up" axis points down in the world renders upside down: exactly those are turned.
    env = make_metaworld_env("reach-v3")
    env.seed(0)
    env.reset()
    for camera in ("corner", "corner2", "corner3", "corner4", "behindGripper", "gripperPOV"):
        cam = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        up_z = env.data.cam_xmat[cam].reshape(3, 3)[2, 1]
        assert (up_z < 0) == (camera in UPSIDE_DOWN_CAMERAS), camera
    env.close()


def test_upright_frame_shows_floor_below_robot(metaworld):
    from xvla.sim.metaworld_env import MetaWorldEnv

    env = MetaWorldEnv(
        "reach-v3", {"name": "probe", "domain_id": 0, "cameras": {"main": "corner3"}}, image_size=64
    )
    obs, _ = env.reset(seed=0)
    frame = obs["observation.images.main"].astype(float)
    # The red arm is up in the air: after turning, red dominates the upper half, not the lower one.
    redness = frame[..., 0] - frame[..., 1:].mean(-1)
    assert redness[:32].mean() > redness[32:].mean()
    env.close()


def test_privileged_state_and_action_repeat(metaworld):
    from xvla.sim.metaworld_env import PRIVILEGED_STATE_DIM, MetaWorldEnv

    env = MetaWorldEnv("push-v3", "sawyer-joint7", image_size=32, privileged_state=True)
    obs, _ = env.reset(seed=3)
    assert obs["observation.state"].shape == (PRIVILEGED_STATE_DIM,)
    np.testing.assert_allclose(obs["observation.state"][4:7], env.raw_observation[4:7])  # puck position
    np.testing.assert_allclose(obs["observation.state"][-3:], env.raw_observation[-3:])  # goal
    assert env.action_space.shape == (7,)
    env.step(env.expert_action())
    assert env._env.curr_path_length == 2  # action_repeat=2: one variant action = two simulator steps
    assert obs["observation.images.main"].shape == (32, 32, 3)
    env.close()


def test_gymnasium_make(metaworld):
    import gymnasium as gym

    from xvla.sim.metaworld_env import GYM_ID

    env = gym.make(GYM_ID, task="reach-v3", variant="sawyer-topdown", image_size=32)
    obs, _ = env.reset(seed=0)
    obs, _, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.action_space.shape == (8,) and obs["observation.state"].shape == (4,)
    assert info["task_name"] == "reach-v3" and not terminated and not truncated
    env.close()
