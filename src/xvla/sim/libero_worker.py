"""The LIBERO simulator worker: one per process of a :class:`~xvla.sim.workers.WorkerPool` (or in this process).

A message resets an episode or executes a whole action chunk, so the main process talks to a worker
once per policy query, not once per control step. Camera frames are rendered only where someone looks
at them: at each query, and at every step of an episode that is filmed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .libero import IMAGE_KEY, WRIST_KEY, LiberoEnv

VIDEO_FPS = 20  # LIBERO's control frequency: videos play in real time


class LiberoWorker:
    """Runs LIBERO episodes on command; one per process (or this process). Messages and replies are tuples."""

    def __init__(
        self,
        suite: str,
        state_source: str,
        max_steps: int,
        settle_steps: int,
        camera_size: int,
        video_dir: str | None,
    ):
        self.kwargs = dict(
            state_source=state_source,
            max_episode_steps=max_steps,
            settle_steps=settle_steps,
            camera_size=camera_size,
            render_images=False,
        )
        self.suite, self.video_dir = suite, video_dir
        self.env = None
        self.encoder = None

    def handle(self, message: tuple) -> tuple:
        if message[0] == "reset":
            return self.reset(*message[1:])
        if message[0] == "chunk":
            return self.run_chunk(message[1])
        raise ValueError(f"unknown command {message[0]!r}")

    def reset(self, task_id: int, episode: int, record: bool) -> tuple:
        if self.env is None or self.env.task_id != task_id:
            self.close()
            self.env = LiberoEnv(self.suite, task_id, **self.kwargs)
        self.env.reset(options={"episode": episode})
        self._finish_video()
        if record and self.video_dir:
            self._start_video(task_id, episode)
        obs = self.env.observe(images=True)
        if self.encoder is not None:
            self._frame(obs)
        return ("ok", obs, False, False, 0)

    def run_chunk(self, rows: np.ndarray) -> tuple:
        """Execute every row (stopping at success or the step limit); reply with the next query's observation."""
        env, recording = self.env, self.encoder is not None
        success = truncated = False
        env.render_images = recording  # every frame of a recorded episode; otherwise none until the query
        try:
            for row in rows:
                obs, _, success, truncated, _ = env.step(row)
                if recording:
                    self._frame(obs)
                if success or truncated:
                    self._finish_video()
                    return ("ok", obs, success, truncated, env.elapsed_steps)
        finally:
            env.render_images = False
        return ("ok", obs if recording else env.observe(images=True), False, False, env.elapsed_steps)

    def _start_video(self, task_id: int, episode: int) -> None:
        from ..data.video import VideoEncoder

        path = Path(self.video_dir) / video_name(task_id, episode)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.encoder = VideoEncoder(path, fps=VIDEO_FPS, crf=20, gop=None, name=path.stem)

    def _frame(self, obs: dict) -> None:
        self.encoder.add(video_frame(obs))

    def _finish_video(self) -> None:
        if self.encoder is not None:
            self.encoder.close()
            self.encoder = None

    def close(self) -> None:
        self._finish_video()
        if self.env is not None:
            self.env.close()
            self.env = None


def video_name(task_id: int, episode: int) -> str:
    return f"task{task_id:02d}_ep{episode:03d}.mp4"


def video_frame(obs: dict) -> np.ndarray:
    """Agentview and wrist side by side, both upright and unmirrored (as a person would film the scene).

    The model sees the agentview turned 180 degrees (upright but mirrored) and the wrist frame as
    rendered (OpenGL rows, bottom first); one vertical flip of the rendered frames shows both as seen.
    """
    agent = obs[IMAGE_KEY][:, ::-1]  # = rendered[::-1]
    wrist = obs[WRIST_KEY][::-1]
    return np.ascontiguousarray(np.concatenate([agent, wrist], axis=1))
