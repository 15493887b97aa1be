"""Meta-World as a gymnasium environment with LeRobot-form observations.

    env = MetaWorldEnv("pick-place-v3", variant="sawyer", image_size=96)
    obs, info = env.reset(seed=episode_seed(0, "pick-place-v3", 3))   # layout 3 of seed 0
    obs["observation.images.main"]   # (96, 96, 3) uint8, upright
    obs["observation.images.wrist"]  # (96, 96, 3) uint8
    obs["observation.state"]         # (4,) float32: hand xyz + gripper opening in [0, 1]
    env.instruction                  # "pick up the puck and set it down on the target"
    obs, reward, terminated, truncated, info = env.step(action)   # action in the variant's space
    info["success"]                  # the simulator's own success flag; terminated == success

Rendering is offscreen through MuJoCo (``MUJOCO_GL=egl`` unless set otherwise) with shadows,
reflections and multisampling off: a 96x96 frame costs a few milliseconds on a CPU. Meta-World's
corner cameras are mounted upside down; their frames are turned by 180 degrees here.

``observation.state`` is the robot's own state only. ``privileged_state=True`` appends what a real
robot would not measure: the object block of Meta-World's observation (positions and quaternions
of up to two objects, 14 values) and the goal position (3), for 21 values in all.
"""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("MUJOCO_GL", "egl")

from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from .instructions import ALL_TASKS, canonical_task, instruction  # noqa: E402
from .variants import ENV_ACTION_DIM, EmbodimentVariant, get_variant  # noqa: E402

STATE_DIM = 4
PRIVILEGED_STATE_DIM = 21
UPSIDE_DOWN_CAMERAS = frozenset({"corner", "corner2", "corner3", "corner4"})
CAMERAS = ("topview", "corner", "corner2", "corner3", "corner4", "behindGripper", "gripperPOV")
DEFAULT_MAX_EPISODE_STEPS = 200

# OpenGL contexts opened in this process. A process that has one must not fork simulator workers
# (a forked child that renders hangs in the GL driver); ``xvla.sim.gen_demos.mp_context`` checks this.
_GL_CONTEXTS_OPENED = 0


def gl_context_opened() -> bool:
    return _GL_CONTEXTS_OPENED > 0


def episode_seed(seed: int, task: str, index: int) -> int:
    """The layout seed of episode ``index`` of ``task`` under base ``seed`` (independent streams per task)."""
    task_id = ALL_TASKS.index(canonical_task(task))
    return int(np.random.SeedSequence([int(seed), task_id, int(index)]).generate_state(1)[0])


def _import_metaworld():
    try:
        import metaworld  # noqa: F401
        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
        from metaworld.policies import ENV_POLICY_MAP
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Meta-World simulator is not installed: `pip install 'xvla[sim]'` (metaworld, mujoco, gymnasium)"
        ) from exc
    return mujoco, ALL_V3_ENVIRONMENTS, ENV_POLICY_MAP


def make_metaworld_env(task: str):
    """A bare Meta-World v3 env whose layout is drawn from its own seeded RNG at every reset."""
    _, envs, _ = _import_metaworld()
    env = envs[canonical_task(task)]()
    env._partially_observable = False  # the scripted experts read the goal from the observation
    if "sawyer_observation_space" in env.__dict__:
        del env.sawyer_observation_space  # cached with the goal hidden; recomputed on next access
    env._set_task_called = True
    env._freeze_rand_vec = False
    env.seeded_rand_vec = True
    env.max_path_length = 10**9  # episodes are cut by this wrapper, not by Meta-World
    return env


def expert_policy(task: str):
    """Meta-World's scripted expert for ``task`` (``get_action(raw_observation) -> 4-D action``)."""
    _, _, policies = _import_metaworld()
    return policies[canonical_task(task)]()


class OffscreenCameras:
    """Renders named cameras of a MuJoCo model at one size, cheaply (no shadows, reflections, MSAA)."""

    def __init__(self, model, cameras: list[str], height: int, width: int):
        global _GL_CONTEXTS_OPENED
        mujoco, _, _ = _import_metaworld()
        unknown = [c for c in cameras if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, c) < 0]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; this simulator has {list(CAMERAS)}")
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
        _GL_CONTEXTS_OPENED += 1
        try:
            self._renderer = mujoco.Renderer(model, height=height, width=width)
        except Exception as exc:  # noqa: BLE001 - turned into an actionable message
            raise RuntimeError(
                f"MuJoCo could not open an offscreen context with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} "
                f"({type(exc).__name__}: {exc}). MuJoCo reads MUJOCO_GL when it is first imported: set it "
                "before anything imports mujoco (or import xvla.sim first). On a machine without a GPU use "
                "Mesa's EGL (Debian/Ubuntu: `apt-get install -y libegl1 libegl-mesa0 libgl1-mesa-dri`) or "
                "OSMesa (`apt-get install -y libosmesa6` and MUJOCO_GL=osmesa)."
            ) from exc
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self.cameras = list(cameras)

    def render(self, data) -> dict[str, np.ndarray]:
        frames = {}
        for camera in self.cameras:
            self._renderer.update_scene(data, camera=camera)
            frame = self._renderer.render()
            if camera in UPSIDE_DOWN_CAMERAS:
                frame = upright(frame)
            frames[camera] = np.ascontiguousarray(frame)
        return frames

    def close(self) -> None:
        self._renderer.close()


def upright(frame: np.ndarray) -> np.ndarray:
    """Turn a frame of an upside-down camera by 180 degrees (both axes; a vertical flip alone would mirror it)."""
    return frame[::-1, ::-1]


class MetaWorldEnv(gym.Env):
    """One Meta-World task seen and driven as one embodiment variant (see ``xvla.sim.variants``)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task: str,
        variant: str | EmbodimentVariant = "sawyer",
        *,
        image_size: int | tuple[int, int] | None = None,
        privileged_state: bool = False,
        max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS,
        render_mode: str | None = None,
    ):
        self.task = canonical_task(task)
        self.variant = get_variant(variant).with_image_size(image_size)
        self.instruction = instruction(self.task)
        self.privileged_state = bool(privileged_state)
        self.max_episode_steps = int(max_episode_steps)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.variant.fps}
        self._env = make_metaworld_env(self.task)
        self._expert = None
        height, width = self.variant.image_size
        self._cameras = OffscreenCameras(self._env.model, list(self.variant.cameras.values()), height, width)
        state_dim = PRIVILEGED_STATE_DIM if self.privileged_state else STATE_DIM
        self.observation_space = gym.spaces.Dict(
            {key: gym.spaces.Box(0, 255, (height, width, 3), np.uint8) for key in self.variant.camera_keys}
            | {"observation.state": gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)}
        )
        bound = np.ones(self.variant.action_dim, dtype=np.float32)  # padded slots: ignored, any value
        bound[list(self.variant.action.xyz_indices)] = np.abs(self.variant.action.matrix).sum(1)
        g = self.variant.action
        bound[g.gripper_index] = abs(g.gripper_scale) + abs(g.gripper_offset)
        self.action_space = gym.spaces.Box(-bound, bound, dtype=np.float32)
        self._raw_obs: np.ndarray | None = None
        self._steps = 0
        self._success = False

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.seed(int(seed))
        raw, _ = self._env.reset()
        self._raw_obs = np.asarray(raw, dtype=np.float64)
        self._steps = 0
        self._success = False
        if self._expert is not None and hasattr(self._expert, "reset"):
            self._expert.reset()
        return self._observe(), self._info(False)

    def step(self, action: Any):
        """One variant action, held for ``variant.action_repeat`` simulator steps (fewer if the task succeeds)."""
        if self._raw_obs is None:
            raise RuntimeError("call reset() before step()")
        env_action = self.variant.action.to_env(np.asarray(action, dtype=np.float64).reshape(-1))
        reward, success = self._step_env(env_action)
        self._steps += 1
        truncated = not success and self._steps >= self.max_episode_steps
        return self._observe(), reward, success, truncated, self._info(success)

    def render(self) -> np.ndarray:
        """All cameras side by side (what the evaluation videos show)."""
        frames = self._cameras.render(self._env.data)
        return np.concatenate([frames[c] for c in self.variant.cameras.values()], axis=1)

    def close(self) -> None:
        self._cameras.close()
        self._env.close()

    # ------------------------------------------------------------------ experts
    def expert_env_action(self) -> np.ndarray:
        """Meta-World's scripted expert action for the current state, in the simulator's 4-D space."""
        if self._raw_obs is None:
            raise RuntimeError("call reset() before asking the expert")
        if self._expert is None:
            self._expert = expert_policy(self.task)
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # the experts warn when their gains saturate; the env clips anyway
            action = self._expert.get_action(self._raw_obs)
        return np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)

    def expert_action(self) -> np.ndarray:
        """The expert's action in this variant's action space (what a demonstration dataset stores)."""
        return self.variant.action.from_env(self.expert_env_action())

    # ------------------------------------------------------------------ internals
    @property
    def raw_observation(self) -> np.ndarray:
        """Meta-World's own 39-D observation (hand, gripper, objects, previous frame, goal): privileged."""
        if self._raw_obs is None:
            raise RuntimeError("call reset() first")
        return self._raw_obs.copy()

    @property
    def elapsed_steps(self) -> int:
        return self._steps

    def _step_env(self, env_action: np.ndarray) -> tuple[float, bool]:
        if env_action.shape != (ENV_ACTION_DIM,):
            raise ValueError(f"a simulator action has {ENV_ACTION_DIM} values, got {env_action.shape}")
        reward, success = 0.0, False
        for _ in range(self.variant.action_repeat):
            raw, r, _, _, info = self._env.step(env_action.astype(np.float32))
            self._raw_obs = np.asarray(raw, dtype=np.float64)
            reward += float(r)
            success = bool(info.get("success", 0.0))
            if success:
                break
        self._success = self._success or success
        return reward, success

    def _state(self) -> np.ndarray:
        raw = self._raw_obs
        if self.privileged_state:
            return np.concatenate([raw[:18], raw[-3:]]).astype(np.float32)
        return raw[:STATE_DIM].astype(np.float32)

    def _observe(self) -> dict[str, np.ndarray]:
        frames = self._cameras.render(self._env.data)
        obs = {f"observation.images.{slot}": frames[camera] for slot, camera in self.variant.cameras.items()}
        obs["observation.state"] = self._state()
        return obs

    def _info(self, success: bool) -> dict[str, Any]:
        return {
            "success": bool(success),
            "task": self.instruction,
            "task_name": self.task,
            "steps": self._steps,
        }


GYM_ID = "xvla/MetaWorld-v0"
if GYM_ID not in gym.registry:
    # gym.make("xvla/MetaWorld-v0", task="push-v3", variant="sawyer-rot90", image_size=96)
    gym.register(id=GYM_ID, entry_point=f"{__name__}:MetaWorldEnv", max_episode_steps=None)
