"""A resumable record of finished episodes: ``episodes.jsonl`` beside the ``settings.json`` that produced it.

Each finished episode is appended and synced at once, so a run killed at any point and started again with
the same settings runs only the episodes that are missing. A run with other settings is refused rather
than mixed into the old one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

EPISODES_FILE, SETTINGS_FILE = "episodes.jsonl", "settings.json"


class EpisodeStore:
    """``episodes.jsonl`` in ``folder``: one line per finished episode, keyed by (task_id, episode).

    ``settings`` are the values that change an episode's outcome; ``overwrite`` starts again, deleting
    the episodes and the ``derived`` files made from them (the reports)."""

    def __init__(
        self,
        folder: str | Path,
        settings: Mapping[str, Any],
        overwrite: bool = False,
        derived: Iterable[str] = (),
    ):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / EPISODES_FILE
        settings_path = self.folder / SETTINGS_FILE
        if overwrite:
            for name in (EPISODES_FILE, *derived, SETTINGS_FILE):
                (self.folder / name).unlink(missing_ok=True)
        elif settings_path.exists():
            _check_same_settings(self.folder, json.loads(settings_path.read_text()), settings)
        settings_path.write_text(json.dumps(dict(settings), indent=2))
        self.records = self._read()

    def _read(self) -> dict[tuple[int, int], dict]:
        if not self.path.exists():
            return {}
        records, good = {}, 0
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a line cut by a kill: dropped, the episode runs again
                rec = json.loads(line)
                records[(rec["task_id"], rec["episode"])] = rec
                good += len(line)
        if good != self.path.stat().st_size:
            with open(self.path, "r+b") as f:
                f.truncate(good)
        return records

    def add(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[(record["task_id"], record["episode"])] = record


def _check_same_settings(folder: Path, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    changed = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
    if changed:
        raise ValueError(
            f"{folder} holds a run with other settings {changed} (old, new): resume with the same "
            "settings, or pass --overwrite / another --output"
        )
