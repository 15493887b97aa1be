"""A Meta-World Sawyer (``xvla.sim.metaworld_env.MetaWorldEnv``) behind LeRobot's ``Robot`` interface."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lerobot.robots.config import RobotConfig
from lerobot.robots.robot import Robot

STATE_NAMES = ("x", "y", "z", "gripper")
ACTION_NAMES = ("dx", "dy", "dz", "grip")
CAMERAS = {"main": "observation.images.main", "wrist": "observation.images.wrist"}


@RobotConfig.register_subclass("xvla_metaworld")
@dataclass(kw_only=True)
class XVLASimMetaWorldConfig(RobotConfig):
    task: str = "reach-v3"
    image_size: int = 32
    seed: int = 0
    log_path: str | None = (
        None  # JSON lines: {"t": wall time, "step": n, "action": [...]} per executed action
    )


class XVLASimMetaWorld(Robot):
    config_class = XVLASimMetaWorldConfig
    name = "xvla_metaworld"

    def __init__(self, config: XVLASimMetaWorldConfig):
        super().__init__(config)
        self.config = config
        self.env = None
        self._obs: dict[str, Any] | None = None
        self._steps = 0
        self.cameras = dict.fromkeys(CAMERAS)  # simulated: lerobot-record only counts them (writer threads)

    @property
    def observation_features(self) -> dict:
        size = (self.config.image_size, self.config.image_size, 3)
        return {**{name: float for name in STATE_NAMES}, **{cam: size for cam in CAMERAS}}

    @property
    def action_features(self) -> dict:
        return {name: float for name in ACTION_NAMES}

    @property
    def is_connected(self) -> bool:
        return self.env is not None

    def connect(self, calibrate: bool = True) -> None:
        from xvla.sim.metaworld_env import MetaWorldEnv, episode_seed

        self.env = MetaWorldEnv(
            self.config.task, "sawyer", image_size=self.config.image_size, max_episode_steps=10**9
        )
        self._obs, _ = self.env.reset(seed=episode_seed(self.config.seed, self.config.task, 0))

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        return None

    def configure(self) -> None:
        return None

    def get_observation(self) -> dict[str, Any]:
        state = np.asarray(self._obs["observation.state"], dtype=np.float32)
        out: dict[str, Any] = {name: float(state[i]) for i, name in enumerate(STATE_NAMES)}
        out.update({cam: np.array(self._obs[key], copy=True) for cam, key in CAMERAS.items()})
        return out

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        values = np.array([float(action[name]) for name in ACTION_NAMES], dtype=np.float32)
        self._obs, *_ = self.env.step(np.clip(values, self.env.action_space.low, self.env.action_space.high))
        if self.config.log_path:
            with open(self.config.log_path, "a") as f:
                f.write(json.dumps({"t": time.time(), "step": self._steps, "action": values.tolist()}) + "\n")
        self._steps += 1
        return action

    def disconnect(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


def read_log(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
