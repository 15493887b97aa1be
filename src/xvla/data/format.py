"""Facts about the LeRobot dataset layout (format v3.0, and v2.x for reading), shared by reader and writer.

v3.0 (what the writer produces)::

    meta/info.json                              fps, features, paths, totals, codebase_version "v3.0"
    meta/stats.json                             per feature: min, max, mean, std, count, q01..q99
    meta/tasks.parquet                          task_index + the task string (a pandas index column)
    meta/episodes/chunk-XXX/file-XXX.parquet    one row per episode: length, tasks, data/video file,
                                                dataset_from_index/to_index, videos/<key>/from_timestamp,
                                                to_timestamp, stats/<key>/<stat>
    data/chunk-XXX/file-XXX.parquet             one row per frame; several episodes may share a file
    videos/<key>/chunk-XXX/file-XXX.mp4         several episodes may share a file, at from_timestamp

v2.x: data/chunk-XXX/episode_XXXXXX.parquet, videos/chunk-XXX/<key>/episode_XXXXXX.mp4 (one file per
episode, timestamps from 0), meta/episodes.jsonl, meta/tasks.jsonl, meta/episodes_stats.jsonl (v2.1)
or meta/stats.json (v2.0).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import utils
from ..utils import atomic_write as _atomic_write

CODEBASE_VERSION = "v3.0"
SUPPORTED_VERSIONS = ("v2.0", "v2.1", "v3.0")

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
LEGACY_EPISODES_PATH = "meta/episodes.jsonl"
LEGACY_EPISODES_STATS_PATH = "meta/episodes_stats.jsonl"
LEGACY_TASKS_PATH = "meta/tasks.jsonl"

DEFAULT_CHUNKS_SIZE = 1000  # files per chunk folder
DEFAULT_DATA_FILE_SIZE_MB = 100
DEFAULT_VIDEO_FILE_SIZE_MB = 200

# Columns every frame carries; the writer fills them in.
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
CAMERA_DTYPES = ("video", "image")
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
TMP_SUFFIX = ".tmp"
QUANTILE_KEYS = tuple(f"q{int(round(q * 100)):02d}" for q in QUANTILES)


def chunk_and_file(n: int, chunks_size: int) -> tuple[int, int]:
    """The n-th file of a kind lives at chunk n // chunks_size, file n % chunks_size."""
    return n // chunks_size, n % chunks_size


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``."""
    _atomic_write(path, write, suffix=TMP_SUFFIX)


def to_jsonable(obj):
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_json(path: Path, data) -> None:
    """LeRobot's metadata files are indented by 4."""
    utils.write_json(path, to_jsonable(data), indent=4)


def read_json(path: Path, what: str):
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{what} {path} is not valid JSON ({e}): the file is damaged; download it again"
        ) from e


def read_jsonl(path: Path, what: str) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {lineno} is not valid JSON ({e}): the file is damaged") from e
    return rows
