"""Read LeRobot-format datasets (v3.0 and v2.x) into training samples.

All tabular data is read once into numpy arrays when the dataset is built; a sample is then a few
array slices plus, per camera, one decoded video frame (or one PNG). Video files are opened lazily,
per process, so the dataset can be handed to DataLoader workers.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .format import (
    CAMERA_DTYPES,
    EPISODES_DIR,
    INFO_PATH,
    LEGACY_EPISODES_PATH,
    LEGACY_EPISODES_STATS_PATH,
    LEGACY_TASKS_PATH,
    STATS_PATH,
    SUPPORTED_VERSIONS,
    TASKS_PATH,
    read_json,
    read_jsonl,
)
from .video import DecoderCache, FrameTimestampError, VideoDecodeError

_SCALAR_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index")


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Reading LeRobot datasets needs pyarrow: `pip install pyarrow` (or `pip install 'xvla[data]'`)"
        ) from e
    return pa, pc, pq


@dataclass
class EpisodeInfo:
    """Where one episode's frames live. Paths are relative to the dataset root."""

    episode_index: int
    length: int
    tasks: list[str]
    data_path: str
    dataset_from_index: int | None = None
    dataset_to_index: int | None = None
    # video key -> (relative path, from_timestamp, to_timestamp)
    videos: dict[str, tuple[str, float, float | None]] = field(default_factory=dict)


def _episode_rows(table, eps: list[EpisodeInfo], path: Path) -> tuple[np.ndarray, dict[int, int]]:
    """Row indices of ``eps`` in one data file, ordered by (episode, frame), and where each episode starts.

    Checks every episode's frame count against its metadata: a mismatch means an interrupted write.
    """
    ep_col = _column_to_numpy(table.column("episode_index"), "episode_index", (1,), "int64", path)
    fi_col = _column_to_numpy(table.column("frame_index"), "frame_index", (1,), "int64", path)
    order = np.lexsort((fi_col, ep_col))
    sorted_ep = ep_col[order]
    take, starts, taken = [], {}, 0
    for ep in eps:
        lo, hi = np.searchsorted(sorted_ep, [ep.episode_index, ep.episode_index + 1])
        if hi - lo != ep.length:
            raise ValueError(
                f"episode {ep.episode_index} has {hi - lo} frames in {path} but the episode metadata says "
                f"{ep.length}: the dataset is inconsistent (an interrupted download or write); download "
                f"it again"
            )
        starts[ep.episode_index] = taken
        take.append(order[lo:hi])
        taken += ep.length
    return (np.concatenate(take) if take else np.zeros(0, dtype=np.int64)), starts


class LeRobotDatasetMeta:
    """The metadata of a LeRobot dataset: ``info.json``, tasks, episodes and stats.

    Works for format v3.0 and v2.0/v2.1. ``episodes`` is ordered by episode index.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {self.root}")
        self.info = read_json(
            self.root / INFO_PATH,
            f"{INFO_PATH} (is {self.root} a LeRobot dataset? Its root must contain meta/info.json)",
        )
        self.version = str(self.info.get("codebase_version", ""))
        if self.version not in SUPPORTED_VERSIONS:
            raise ValueError(
                f"{self.root / INFO_PATH}: codebase_version {self.version!r} is not supported "
                f"(supported: {list(SUPPORTED_VERSIONS)}); convert the dataset with LeRobot's converter"
            )
        for key in ("fps", "features"):
            if key not in self.info:
                raise ValueError(f"{self.root / INFO_PATH} has no {key!r} field: the file is incomplete")
        self.features: dict[str, dict] = self.info["features"]
        for ft in self.features.values():
            ft["shape"] = tuple(ft["shape"])
        if self.version == "v3.0":
            self.tasks = self._load_tasks_v3()
            self.episodes = self._load_episodes_v3()
        else:
            self.tasks = self._load_tasks_v2()
            self.episodes = self._load_episodes_v2()
        self._by_index = {ep.episode_index: ep for ep in self.episodes}
        self.stats = self._load_stats()

    # -- simple facts -------------------------------------------------------------------------------
    @property
    def fps(self) -> int:
        return int(self.info["fps"])

    @property
    def robot_type(self) -> str | None:
        return self.info.get("robot_type")

    @property
    def total_episodes(self) -> int:
        return len(self.episodes)

    @property
    def total_frames(self) -> int:
        return sum(ep.length for ep in self.episodes)

    @property
    def video_keys(self) -> list[str]:
        return [k for k, ft in self.features.items() if ft["dtype"] == "video"]

    @property
    def image_keys(self) -> list[str]:
        return [k for k, ft in self.features.items() if ft["dtype"] == "image"]

    @property
    def camera_keys(self) -> list[str]:
        return [k for k, ft in self.features.items() if ft["dtype"] in CAMERA_DTYPES]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(ft["shape"]) for k, ft in self.features.items()}

    @property
    def names(self) -> dict[str, list | dict | None]:
        return {k: ft.get("names") for k, ft in self.features.items()}

    def episode(self, episode_index: int) -> EpisodeInfo:
        try:
            return self._by_index[episode_index]
        except KeyError:
            raise EpisodeNotFoundError(
                f"episode {episode_index} is not in {self.root} (it has {self.total_episodes} episodes: "
                f"{self._index_summary()}); choose --episodes among those"
            ) from None

    def _index_summary(self) -> str:
        idx = [ep.episode_index for ep in self.episodes]
        return f"{idx[0]}..{idx[-1]}" if idx and idx == list(range(idx[0], idx[-1] + 1)) else str(idx[:20])

    def __repr__(self) -> str:
        return (
            f"LeRobotDatasetMeta(root={str(self.root)!r}, version={self.version}, fps={self.fps}, "
            f"episodes={self.total_episodes}, frames={self.total_frames}, cameras={self.camera_keys})"
        )

    # -- v3.0 ---------------------------------------------------------------------------------------
    def _load_tasks_v3(self) -> list[str]:
        path = self.root / TASKS_PATH
        if not path.is_file():
            raise FileNotFoundError(
                f"task list not found: {path}. The dataset is incomplete: download it again"
            )
        table = _read_parquet(path)
        text_cols = [
            n for n in table.column_names if n != "task_index" and "string" in str(table.schema.field(n).type)
        ]
        if "task_index" not in table.column_names or not text_cols:
            raise ValueError(
                f"{path} needs a 'task_index' column and a task string column; found {table.column_names}"
            )
        name = "task" if "task" in text_cols else text_cols[0]
        return _indexed_list(table.column("task_index").to_pylist(), table.column(name).to_pylist(), path)

    def _load_episodes_v3(self) -> list[EpisodeInfo]:
        files = sorted((self.root / EPISODES_DIR).glob("*/*.parquet"))
        if not files:
            raise FileNotFoundError(
                f"episode metadata not found: no parquet file under {self.root / EPISODES_DIR}. "
                f"The dataset is incomplete: download it again"
            )
        data_path_tpl = self.info.get("data_path")
        video_path_tpl = self.info.get("video_path")
        episodes = []
        for path in files:
            columns = [c for c in _read_parquet(path, schema_only=True).names if not c.startswith("stats/")]
            for row in _read_parquet(path, columns).to_pylist():
                try:
                    ep = EpisodeInfo(
                        episode_index=int(row["episode_index"]),
                        length=int(row["length"]),
                        tasks=list(row.get("tasks") or []),
                        data_path=data_path_tpl.format(
                            chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]
                        ),
                        dataset_from_index=row.get("dataset_from_index"),
                        dataset_to_index=row.get("dataset_to_index"),
                    )
                    for key in self.video_keys:
                        ep.videos[key] = (
                            video_path_tpl.format(
                                video_key=key,
                                chunk_index=row[f"videos/{key}/chunk_index"],
                                file_index=row[f"videos/{key}/file_index"],
                            ),
                            float(row.get(f"videos/{key}/from_timestamp") or 0.0),
                            row.get(f"videos/{key}/to_timestamp"),
                        )
                except KeyError as e:
                    raise ValueError(
                        f"{path}: episode rows lack the column {e.args[0]!r}; the file is damaged"
                    ) from None
                episodes.append(ep)
        episodes.sort(key=lambda e: e.episode_index)
        return episodes

    # -- v2.x ---------------------------------------------------------------------------------------
    def _load_tasks_v2(self) -> list[str]:
        path = self.root / LEGACY_TASKS_PATH
        rows = read_jsonl(path, "task list")
        return _indexed_list([r["task_index"] for r in rows], [r["task"] for r in rows], path)

    def _load_episodes_v2(self) -> list[EpisodeInfo]:
        rows = sorted(
            read_jsonl(self.root / LEGACY_EPISODES_PATH, "episode list"), key=lambda r: r["episode_index"]
        )
        chunks_size = int(self.info.get("chunks_size", 1000))
        episodes, start = [], 0
        for row in rows:
            idx, length = int(row["episode_index"]), int(row["length"])
            fmt = {"episode_chunk": idx // chunks_size, "episode_index": idx}
            ep = EpisodeInfo(
                episode_index=idx,
                length=length,
                tasks=list(row.get("tasks") or []),
                data_path=self.info["data_path"].format(**fmt),
                dataset_from_index=start,
                dataset_to_index=start + length,
            )
            for key in self.video_keys:
                ep.videos[key] = (self.info["video_path"].format(video_key=key, **fmt), 0.0, None)
            episodes.append(ep)
            start += length
        return episodes

    # -- stats --------------------------------------------------------------------------------------
    def _load_stats(self) -> dict[str, dict[str, np.ndarray]] | None:
        path = self.root / STATS_PATH
        if path.is_file():
            raw = read_json(path, "dataset stats")
            return {
                k: {s: np.asarray(v) for s, v in d.items()} for k, d in raw.items() if isinstance(d, dict)
            }
        legacy = self.root / LEGACY_EPISODES_STATS_PATH
        if legacy.is_file():
            from .stats import aggregate_stats

            per_episode = [
                {k: {s: np.asarray(v) for s, v in d.items()} for k, d in row["stats"].items()}
                for row in read_jsonl(legacy, "episode stats")
            ]
            return aggregate_stats(per_episode) if per_episode else None
        return None


def _read_parquet(path: Path, columns: list[str] | None = None, *, schema_only: bool = False):
    pa, _, pq = _pa()
    try:
        return pq.read_schema(path) if schema_only else pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"cannot read {path} ({e}): the file is damaged; download the dataset again") from e


def _indexed_list(indices: list[int], values: list[str], path: Path) -> list[str]:
    if not indices:
        return []
    out: list[str | None] = [None] * (max(indices) + 1)
    for i, v in zip(indices, values, strict=True):
        out[int(i)] = v
    return [v if v is not None else "" for v in out]


# --------------------------------------------------------------------------------------------------
# Finding the dataset
# --------------------------------------------------------------------------------------------------


class EpisodeNotFoundError(IndexError, ValueError):
    """An episode index the dataset does not have (an IndexError, and a ValueError for the CLI's one-line errors)."""


def resolve_dataset_root(root_or_repo_id: str | Path, *, revision: str | None = None, cache_dir=None) -> Path:
    """A local folder is used as is; otherwise ``owner/name`` is fetched from the Hugging Face Hub
    (or found in LeRobot's own download folder, ``HF_LEROBOT_HOME``)."""
    from ..hub import looks_like_hub_id, resolve_folder

    repo_id = str(root_or_repo_id)
    lerobot_home = Path(os.environ.get("HF_LEROBOT_HOME", Path.home() / ".cache/huggingface/lerobot"))
    if looks_like_hub_id(repo_id) and (lerobot_home / repo_id / INFO_PATH).is_file():  # fetched by LeRobot
        return lerobot_home / repo_id
    return resolve_folder(
        root_or_repo_id, what="dataset", repo_type="dataset", revision=revision, cache_dir=cache_dir
    )


# --------------------------------------------------------------------------------------------------
# Parquet columns -> numpy
# --------------------------------------------------------------------------------------------------


def _column_to_numpy(column, key: str, shape: tuple[int, ...], dtype: str, path: Path) -> np.ndarray:
    """A numeric parquet column as an array of shape [rows, *shape] (scalars: [rows])."""
    pa, pc, _ = _pa()
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(arr.type, pa.ExtensionType):
        arr = arr.storage
    rows = len(arr)
    depth = 0
    values = arr
    while (
        pa.types.is_list(values.type)
        or pa.types.is_large_list(values.type)
        or pa.types.is_fixed_size_list(values.type)
    ):
        if depth < len(shape) and not pa.types.is_fixed_size_list(values.type):
            lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
            if values.null_count or (lengths != shape[depth]).any():
                bad = int(np.argmax(lengths != shape[depth])) if not values.null_count else -1
                raise ValueError(
                    f"{path}: feature {key!r} rows have {'missing values' if bad < 0 else f'{lengths[bad]} values (row {bad})'} "
                    f"but meta/info.json declares shape {list(shape)}: fix the feature's shape in info.json or "
                    f"rewrite the data"
                )
        values = values.flatten()
        depth += 1
    flat = values.to_numpy(zero_copy_only=False)
    expected = rows * int(np.prod(shape)) if shape else rows
    if flat.size != expected or (shape and depth == 0 and tuple(shape) != (1,)):
        per_row = flat.size / rows if rows else 0
        raise ValueError(
            f"{path}: feature {key!r} holds {per_row:g} values per frame but meta/info.json declares shape "
            f"{list(shape)}: fix the feature's shape in info.json or rewrite the data"
        )
    if dtype in ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"):
        flat = flat.astype(dtype, copy=False)
    if tuple(shape) in ((), (1,)):
        return flat.reshape(rows)
    return flat.reshape(rows, *shape)


# --------------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------------


class LeRobotDataset(torch.utils.data.Dataset):
    """A LeRobot dataset (v3.0 or v2.x) as training samples.

    ``ds[i]`` is a dict with LeRobot's keys: every camera (``observation.images.<cam>``, float32
    [3, H, W] in [0, 1]), every numeric feature at frame i (``observation.state`` ...), ``action``
    as a chunk [chunk_size, D] of frames i .. i+chunk_size-1 whose steps past the episode end repeat
    the last action and are flagged in ``action_is_pad`` [chunk_size], ``task`` (str), and
    ``episode_index``, ``frame_index``, ``index``, ``task_index``, ``timestamp`` as 0-d tensors.

    Args:
        root_or_repo_id: a local dataset folder, or a Hub id ``owner/name`` (needs a network).
        chunk_size: length of the action chunk.
        episodes: episode indices to keep (default: all).
        camera_keys: cameras to return (default: all); each must exist in the dataset.
        image_size: optional (height, width) every camera is resized to (bilinear, antialiased).
        expected_shapes: feature -> shape the caller needs (e.g. from a policy config); checked now.
        action_key: the feature that is chunked.
        tolerance_s: how far (seconds) a decoded video frame may lie from the requested timestamp;
            default 0.4 / fps, which always picks the right frame of a constant-rate video.
        revision, cache_dir: passed to ``huggingface_hub.snapshot_download`` for Hub ids.
    """

    def __init__(
        self,
        root_or_repo_id: str | Path,
        *,
        chunk_size: int = 32,
        episodes: list[int] | None = None,
        camera_keys: list[str] | None = None,
        image_size: tuple[int, int] | None = None,
        expected_shapes: dict[str, tuple[int, ...]] | None = None,
        action_key: str = "action",
        tolerance_s: float | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        max_open_videos: int = 16,
        cache_frames: bool = False,
    ):
        super().__init__()
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size={chunk_size} is invalid: it must be at least 1")
        if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
            raise ValueError(
                f"image_size={image_size!r} is invalid: pass (height, width) with positive sizes"
            )
        self.root = resolve_dataset_root(root_or_repo_id, revision=revision, cache_dir=cache_dir)
        self.meta = LeRobotDatasetMeta(self.root)
        self.chunk_size = int(chunk_size)
        self.image_size = tuple(int(s) for s in image_size) if image_size is not None else None
        self.action_key = action_key
        self.tolerance_s = float(tolerance_s) if tolerance_s is not None else 0.4 / self.meta.fps
        self.max_open_videos = max_open_videos
        # Decoded video frames kept in RAM (uint8), one episode decoded at a time: seeking dominates the
        # cost of random access, so a small dataset is then decoded once instead of once per sample.
        self.cache_frames = bool(cache_frames)
        self._frames: dict[tuple[str, int], np.ndarray] = {}

        self.camera_keys = self._select_features(action_key, camera_keys)
        self._check_expected_shapes(expected_shapes or {})
        self.episodes = self._select_episodes(episodes)
        self._load_frames()
        self._decoders: DecoderCache | None = None

    # -- loading ------------------------------------------------------------------------------------
    def _select_features(self, action_key: str, camera_keys: list[str] | None) -> list[str]:
        """Check that the chunked feature exists; the cameras to return (all by default)."""
        features = self.meta.features
        if action_key not in features:
            raise ValueError(
                f"dataset {self.root} has no {action_key!r} feature (features: {sorted(features)}): "
                f"pass action_key= one of them"
            )
        if camera_keys is None:
            return self.meta.camera_keys
        missing = [k for k in camera_keys if k not in self.meta.camera_keys]
        if missing:
            raise ValueError(
                f"dataset {self.root} has no camera {missing}; its cameras are {self.meta.camera_keys}: "
                f"choose camera_keys from those (or map your policy's camera names onto them)"
            )
        return list(camera_keys)

    def _select_episodes(self, episodes: list[int] | None) -> list[int]:
        if episodes is None:
            return [ep.episode_index for ep in self.meta.episodes]
        selected = [int(e) for e in episodes]
        for e in selected:
            self.meta.episode(e)  # raises a clear IndexError for unknown episodes
        return selected

    def _check_expected_shapes(self, expected: dict[str, tuple[int, ...]]) -> None:
        for key, shape in expected.items():
            shape = tuple(int(s) for s in shape)
            if key not in self.meta.features:
                raise ValueError(
                    f"dataset {self.root} has no feature {key!r} that the config requires "
                    f"(features: {sorted(self.meta.features)})"
                )
            have = tuple(self.meta.features[key]["shape"])
            ok = shape == have
            if self.meta.features[key]["dtype"] in CAMERA_DTYPES and len(have) == 3:
                ok = ok or shape == (have[2], have[0], have[1])  # CHW given for an HWC feature
            if not ok:
                raise ValueError(
                    f"feature {key!r} has shape {list(have)} in {self.root / INFO_PATH} but the config expects "
                    f"{list(shape)}: use a dataset/config pair that agree (e.g. set the config's dimension to "
                    f"{have[-1]})"
                )

    def _load_frames(self) -> None:
        features = self.meta.features
        numeric = [
            k for k, ft in features.items() if ft["dtype"] not in CAMERA_DTYPES and ft["dtype"] != "string"
        ]
        image_keys = [k for k in self.camera_keys if features[k]["dtype"] == "image"]
        by_file: dict[str, list[EpisodeInfo]] = {}
        for e in self.episodes:
            ep = self.meta.episode(e)
            by_file.setdefault(ep.data_path, []).append(ep)

        parts: dict[str, list] = {k: [] for k in numeric + image_keys}
        ep_rows: dict[int, tuple[int, int]] = {}  # episode -> (start, length) in the concatenated arrays
        offset = 0
        for rel, eps in by_file.items():
            path = self.root / rel
            if not path.is_file():
                raise FileNotFoundError(
                    f"data file not found: {path} (episodes {[ep.episode_index for ep in eps][:10]}). "
                    f"The dataset is incomplete: download it again or restore the file"
                )
            schema_names = _read_parquet(path, schema_only=True).names
            missing = [k for k in numeric + image_keys if k not in schema_names]
            if missing:
                raise ValueError(
                    f"{path} has no column {missing} although meta/info.json lists these features: the data "
                    f"file does not belong to this dataset or is damaged"
                )
            table = _read_parquet(path, numeric + image_keys)
            take_idx, local_starts = _episode_rows(table, eps, path)
            for ep in eps:
                ep_rows[ep.episode_index] = (offset + local_starts[ep.episode_index], ep.length)
            for k in numeric:
                ft = features[k]
                parts[k].append(
                    _column_to_numpy(table.column(k), k, tuple(ft["shape"]), ft["dtype"], path)[take_idx]
                )
            for k in image_keys:
                parts[k].append(_image_column(table.column(k), take_idx, k, path))
            offset += len(take_idx)

        self._arrays = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items() if k in numeric}
        self._images: dict[str, list] = {k: [x for chunk in parts[k] for x in chunk] for k in image_keys}
        starts = np.array([ep_rows[e][0] for e in self.episodes], dtype=np.int64)
        lengths = np.array([ep_rows[e][1] for e in self.episodes], dtype=np.int64)
        # Samples run through episodes in the order given; the arrays are in data-file order.
        self._ep_start = starts
        self._ep_length = lengths
        self._cum = np.concatenate([[0], np.cumsum(lengths)])
        self._numeric = numeric

    # -- sizes ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._cum[-1])

    @property
    def num_frames(self) -> int:
        return len(self)

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def fps(self) -> int:
        return self.meta.fps

    @property
    def features(self) -> dict[str, dict]:
        return self.meta.features

    @property
    def stats(self):
        return self.meta.stats

    def episode_range(self, slot: int) -> tuple[int, int]:
        """Sample indices [start, stop) of the ``slot``-th selected episode."""
        return int(self._cum[slot]), int(self._cum[slot + 1])

    def episode_column(self, slot: int, key: str) -> np.ndarray:
        """A numeric column of the ``slot``-th selected episode, one row per frame (e.g. its recorded actions)."""
        if key not in self._arrays:
            raise KeyError(
                f"{key!r} is not a numeric column of {self.root} (columns: {sorted(self._arrays)})"
            )
        row, length = int(self._ep_start[slot]), int(self._ep_length[slot])
        return np.asarray(self._arrays[key][row : row + length])

    # -- samples ------------------------------------------------------------------------------------
    def __getitem__(self, idx: int) -> dict:
        n = len(self)
        if idx < 0:
            idx += n
        if not 0 <= idx < n:
            raise IndexError(f"index {idx} is out of range for a dataset of {n} frames")
        slot = int(np.searchsorted(self._cum, idx, side="right") - 1)
        frame = idx - int(self._cum[slot])
        start, length = int(self._ep_start[slot]), int(self._ep_length[slot])
        row = start + frame

        item: dict = {}
        for key in self.camera_keys:
            item[key] = self._camera_frame(key, slot, row)
        for key in self._numeric:
            if key == self.action_key:
                continue
            value = torch.from_numpy(np.asarray(self._arrays[key][row]).copy())
            item[key] = value
        steps = np.arange(frame, frame + self.chunk_size)
        item[self.action_key] = torch.from_numpy(
            self._arrays[self.action_key][start + np.minimum(steps, length - 1)]
        )
        item[f"{self.action_key}_is_pad"] = torch.from_numpy(steps >= length)
        task_index = int(self._arrays["task_index"][row])
        try:
            item["task"] = self.meta.tasks[task_index]
        except IndexError:
            raise ValueError(
                f"frame {idx} has task_index {task_index} but {self.root} lists only {len(self.meta.tasks)} tasks"
            ) from None
        return item

    def _camera_frame(self, key: str, slot: int, row: int) -> torch.Tensor:
        ft = self.meta.features[key]
        if ft["dtype"] == "video":
            hwc = self._video_frame(key, slot, row)
        else:
            hwc = self._decode_image(key, row)
        h, w, c = ft["shape"] if len(ft["shape"]) == 3 else (None, None, None)
        if h is not None and hwc.shape[:2] != (h, w) and (c, h) != hwc.shape[:2]:
            raise ValueError(
                f"{key}: a decoded frame is {hwc.shape[0]}x{hwc.shape[1]} but meta/info.json declares {list(ft['shape'])}"
                f" (dataset {self.root}): fix the shape in info.json or re-encode the video"
            )
        img = torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1).float().div_(255.0)
        if self.image_size is not None and tuple(img.shape[1:]) != self.image_size:
            img = torch.nn.functional.interpolate(
                img[None], size=self.image_size, mode="bilinear", align_corners=False, antialias=True
            )[0].clamp_(0.0, 1.0)
        return img

    def _video_frame(self, key: str, slot: int, row: int) -> np.ndarray:
        ep = self.meta.episode(self.episodes[slot])
        rel, from_ts, _ = ep.videos[key]
        path = self.root / rel
        if self._decoders is None:
            self._decoders = DecoderCache(self.max_open_videos)
        try:
            decoder = self._decoders.get(path, name=f"{key} (episode {ep.episode_index})")
            if self.cache_frames:
                return self._cached_frame(key, slot, row, decoder, from_ts)
            return decoder.frames_at([from_ts + float(self._arrays["timestamp"][row])], self.tolerance_s)[0]
        except (VideoDecodeError, FrameTimestampError) as exc:
            frame = row - int(self._ep_start[slot])
            raise type(exc)(f"episode {ep.episode_index}, frame {frame}, file {path}: {exc}") from exc

    def unreadable_episodes(self) -> dict[int, str]:
        """Episode index -> why, for the selected episodes whose video frames do not all decode (every frame of
        every camera is decoded once: what ``--mixture.skip_bad_episodes`` pays before training)."""
        bad: dict[int, str] = {}
        videos = [k for k in self.camera_keys if self.meta.features[k]["dtype"] == "video"]
        for slot, episode in enumerate(self.episodes):
            start, length = int(self._ep_start[slot]), int(self._ep_length[slot])
            for key in videos:
                try:
                    self._frames_of_episode(key, slot, start, length)
                except (VideoDecodeError, FrameTimestampError, FileNotFoundError) as exc:
                    bad[int(episode)] = str(exc)
                    break
        return bad

    def _frames_of_episode(self, key: str, slot: int, start: int, length: int) -> None:
        ep = self.meta.episode(self.episodes[slot])
        rel, from_ts, _ = ep.videos[key]
        if self._decoders is None:
            self._decoders = DecoderCache(self.max_open_videos)
        decoder = self._decoders.get(self.root / rel, name=f"{key} (episode {ep.episode_index})")
        stamps = from_ts + np.asarray(self._arrays["timestamp"][start : start + length], dtype=np.float64)
        for first in range(0, length, 64):  # in windows: a long episode's frames never sit in memory together
            decoder.frames_at(stamps[first : first + 64], self.tolerance_s)

    def _cached_frame(self, key: str, slot: int, row: int, decoder: Any, from_ts: float) -> np.ndarray:
        if (key, row) not in self._frames:
            start, length = int(self._ep_start[slot]), int(self._ep_length[slot])
            stamps = from_ts + np.asarray(self._arrays["timestamp"][start : start + length], dtype=np.float64)
            for offset, frame in enumerate(decoder.frames_at(stamps, self.tolerance_s)):
                self._frames[(key, start + offset)] = frame
        return self._frames[(key, row)]

    def _decode_image(self, key: str, row: int) -> np.ndarray:
        from PIL import Image

        data, rel = self._images[key][row]
        try:
            if data is not None:
                img = Image.open(io.BytesIO(data))
            elif rel:
                path = Path(rel) if Path(rel).is_absolute() else self.root / rel
                img = Image.open(path)
            else:
                raise ValueError("no image bytes and no path")
            return np.array(img.convert("RGB"))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"image for {key} (frame {row}) not found: {e.filename}") from e
        except Exception as e:
            raise ValueError(
                f"image for {key} (frame {row}) in {self.root} cannot be decoded ({e}): the data is damaged"
            ) from e

    # -- pickling for DataLoader workers --------------------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_decoders"] = None  # open file handles stay with the process that opened them
        return state

    def __repr__(self) -> str:
        return (
            f"LeRobotDataset(root={str(self.root)!r}, episodes={self.num_episodes}, frames={len(self)}, "
            f"cameras={self.camera_keys}, chunk_size={self.chunk_size}, fps={self.fps})"
        )


def _image_column(
    column, take_idx: np.ndarray, key: str, path: Path
) -> list[tuple[bytes | None, str | None]]:
    """An image column (struct of PNG bytes and path) as (bytes, path) pairs for the rows in ``take_idx``."""
    pa, _, _ = _pa()
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_struct(arr.type):
        raise ValueError(
            f"{path}: image feature {key!r} is stored as {arr.type}, expected a struct of bytes and path"
        )
    arr = arr.take(pa.array(take_idx))
    names = [arr.type.field(i).name for i in range(arr.type.num_fields)]
    data = arr.field("bytes").to_pylist() if "bytes" in names else [None] * len(arr)
    paths = arr.field("path").to_pylist() if "path" in names else [None] * len(arr)
    return list(zip(data, paths, strict=True))


__all__ = ["EpisodeInfo", "LeRobotDataset", "LeRobotDatasetMeta", "resolve_dataset_root"]
