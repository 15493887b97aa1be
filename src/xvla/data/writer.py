"""Write LeRobot v3.0 datasets: episodes of frames, mp4 videos, tasks and stats.

Usage::

    writer = LeRobotDatasetWriter.create("demos/pick", fps=10, features={
        "observation.images.front": {"dtype": "video", "shape": (224, 224, 3)},
        "observation.state": {"dtype": "float32", "shape": (8,)},
        "action": {"dtype": "float32", "shape": (7,)},
    }, robot_type="franka")
    for episode in episodes:
        for obs, act in episode:
            writer.add_frame({"observation.images.front": obs["rgb"], "observation.state": obs["q"], "action": act})
        writer.save_episode(task="pick up the cube")
    writer.finalize()

Every saved episode gets its own data parquet file and its own mp4 per video feature (v3.0 allows
several episodes per file; one per episode keeps every save append-only). Video frames are encoded
as they arrive, so an episode never sits in memory as raw pixels. A save writes new files under
temporary names and renames them into place, then rewrites the small metadata files the same way,
info.json last: an exception or a crash at any point leaves the episodes saved before it intact and
readable (``LeRobotDatasetWriter.resume(root)`` continues such a dataset).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from .format import (
    CAMERA_DTYPES,
    CODEBASE_VERSION,
    DATA_PATH,
    DEFAULT_CHUNKS_SIZE,
    DEFAULT_DATA_FILE_SIZE_MB,
    DEFAULT_FEATURES,
    DEFAULT_VIDEO_FILE_SIZE_MB,
    EPISODES_DIR,
    EPISODES_PATH,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    TMP_SUFFIX,
    atomic_write,
    chunk_and_file,
    read_json,
    write_json,
)
from .stats import FrameSampler, aggregate_stats, feature_stats
from .video import DEFAULT_CODEC, VideoEncoder, probe_video

logger = logging.getLogger(__name__)

NUMERIC_DTYPES = ("float32", "float64", "int64", "int32", "bool")
EPISODES_PER_META_FILE = 1000


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("Writing LeRobot datasets needs pyarrow: `pip install pyarrow`") from e
    return pa, pq


def _normalize_features(features: dict) -> dict[str, dict]:
    """Validate user features and return them in info.json form (defaults appended)."""
    if not isinstance(features, dict) or not features:
        raise ValueError("features must be a non-empty dict: {name: {'dtype': ..., 'shape': (...)}}")
    out: dict[str, dict] = {}
    for key, ft in features.items():
        if key in DEFAULT_FEATURES:
            continue  # filled in by the writer
        if "/" in key:
            raise ValueError(f"feature name {key!r} contains '/': LeRobot uses '/' as a separator; rename it")
        if not isinstance(ft, dict) or "dtype" not in ft or "shape" not in ft:
            raise ValueError(f"feature {key!r} must be a dict with 'dtype' and 'shape', got {ft!r}")
        dtype = ft["dtype"]
        shape = [int(s) for s in (ft["shape"] if isinstance(ft["shape"], (list, tuple)) else [ft["shape"]])]
        if dtype in CAMERA_DTYPES:
            if len(shape) != 3 or shape[2] != 3:
                raise ValueError(
                    f"camera feature {key!r} has shape {shape}: cameras are declared as (height, width, 3)"
                )
            if dtype == "video" and (shape[0] % 2 or shape[1] % 2):
                raise ValueError(
                    f"video feature {key!r} is {shape[0]}x{shape[1]}: mp4 (yuv420p) needs an even height and "
                    f"width; resize the camera to an even size, or declare the feature with dtype 'image'"
                )
            names = ft.get("names") or ["height", "width", "channels"]
        elif dtype in NUMERIC_DTYPES:
            if len(shape) != 1 or shape[0] < 1:
                raise ValueError(
                    f"feature {key!r} has shape {shape}: numeric features must be 1-D, e.g. (7,); flatten it"
                )
            names = ft.get("names")
        else:
            raise ValueError(
                f"feature {key!r} has dtype {dtype!r}: use one of {list(CAMERA_DTYPES) + list(NUMERIC_DTYPES)} "
                f"(the task string goes in add_frame's 'task' or save_episode(task=...))"
            )
        out[key] = {"dtype": dtype, "shape": shape, "names": names}
    for key, ft in DEFAULT_FEATURES.items():
        out[key] = {"dtype": ft["dtype"], "shape": list(ft["shape"]), "names": None}
    return out


def _hf_feature(ft: dict) -> dict:
    """The ``datasets`` feature description stored in the parquet schema metadata."""
    if ft["dtype"] == "image":
        return {"_type": "Image"}
    if ft["shape"] == [1]:
        return {"dtype": ft["dtype"], "_type": "Value"}
    return {
        "feature": {"dtype": ft["dtype"], "_type": "Value"},
        "length": ft["shape"][0],
        "_type": "Sequence",
    }


def _arrow_type(pa, dtype: str):
    return {
        "float32": pa.float32(),
        "float64": pa.float64(),
        "int64": pa.int64(),
        "int32": pa.int32(),
        "bool": pa.bool_(),
    }[dtype]


def _to_numpy(value):
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _camera_frame_to_hwc_uint8(value, key: str, shape: list[int]) -> np.ndarray:
    """Accept HxWx3 or 3xHxW, uint8 in [0, 255] or float in [0, 1]; return HxWx3 uint8."""
    arr = _to_numpy(value)
    h, w, c = shape
    if arr.shape == (c, h, w) and arr.shape != (h, w, c):
        arr = arr.transpose(1, 2, 0)
    if arr.shape != (h, w, c):
        raise ValueError(
            f"frame[{key!r}] has shape {list(arr.shape)} but the feature is declared {shape} (height, width, "
            f"channels): resize the camera image or declare the feature with this shape"
        )
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and (np.nanmin(arr) < 0.0 or np.nanmax(arr) > 1.0):
            raise ValueError(
                f"frame[{key!r}] is float with values outside [0, 1] (min {arr.min():.3g}, max {arr.max():.3g}): "
                f"pass uint8 in [0, 255] or float in [0, 1]"
            )
        return np.ascontiguousarray(np.round(arr * 255.0).astype(np.uint8))
    raise ValueError(f"frame[{key!r}] has dtype {arr.dtype}: pass uint8 in [0, 255] or float in [0, 1]")


def _png_bytes(frame: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _tasks_table(pa, tasks: list[str]):
    """meta/tasks.parquet as pandas writes a frame indexed by the task string (what LeRobot reads)."""
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": None,
                "field_name": "__index_level_0__",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    table = pa.table(
        {
            "task_index": pa.array(range(len(tasks)), pa.int64()),
            "__index_level_0__": pa.array(tasks, pa.string()),
        }
    )
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _clear_for_new_dataset(root: Path, overwrite: bool) -> None:
    """Make way for a new dataset at ``root``: only an existing LeRobot dataset is deleted, and only with
    ``overwrite``."""
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{root} already exists and is not empty: pass overwrite=True to replace it, or use "
                f"LeRobotDatasetWriter.resume({str(root)!r}) to add episodes to it"
            )
        if not (root / INFO_PATH).is_file():
            raise FileExistsError(
                f"{root} is not empty and is not a LeRobot dataset: refusing to delete it with overwrite=True; "
                f"choose another folder"
            )
        shutil.rmtree(root)


class LeRobotDatasetWriter:
    """Create (or continue) a LeRobot v3.0 dataset episode by episode. Use ``create`` or ``resume``."""

    def __init__(
        self,
        root: Path,
        info: dict,
        tasks: list[str],
        episode_rows: list[dict],
        stats: dict | None,
        *,
        video_codec: str = DEFAULT_CODEC,
        crf: int | None = 23,
        gop: int | None = 2,
        preset: str | None = None,
    ):
        self.root = Path(root)
        self.info = info
        self.tasks = list(tasks)
        self._task_index = {t: i for i, t in enumerate(self.tasks)}
        self._episode_rows = episode_rows
        self._stats = stats
        self.video_codec, self.crf, self.gop, self.preset = video_codec, crf, gop, preset
        self.features: dict[str, dict] = info["features"]
        self._user_keys = [k for k in self.features if k not in DEFAULT_FEATURES]
        self._video_keys = [k for k in self._user_keys if self.features[k]["dtype"] == "video"]
        self._image_keys = [k for k in self._user_keys if self.features[k]["dtype"] == "image"]
        self._numeric_keys = [k for k in self._user_keys if self.features[k]["dtype"] in NUMERIC_DTYPES]
        self._closed = False
        self._reset_buffer()

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        root: str | Path,
        fps: int,
        features: dict,
        *,
        robot_type: str | None = None,
        overwrite: bool = False,
        video_codec: str = DEFAULT_CODEC,
        crf: int | None = 23,
        gop: int | None = 2,
        preset: str | None = None,
        chunks_size: int = DEFAULT_CHUNKS_SIZE,
    ) -> LeRobotDatasetWriter:
        """Start a new dataset at ``root``.

        ``features`` maps names to ``{"dtype", "shape", "names"?}`` as in LeRobot: cameras are
        ``dtype`` "video" (mp4) or "image" (PNG in the parquet) with shape (H, W, 3); vectors are
        1-D "float32"/"float64"/"int64"/"int32"/"bool". ``timestamp``, ``frame_index``,
        ``episode_index``, ``index`` and ``task_index`` are added. ``gop`` is the key-frame interval
        (small = fast random access for training), ``crf`` the x264 quality (lower = better).
        """
        root = Path(root)
        if int(fps) <= 0:
            raise ValueError(f"fps={fps} is invalid: it must be a positive integer")
        norm = _normalize_features(features)
        _clear_for_new_dataset(root, overwrite)
        has_video = any(ft["dtype"] == "video" for ft in norm.values())
        if has_video:
            VideoEncoder.check_codec(video_codec)
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": robot_type,
            "total_episodes": 0,
            "total_frames": 0,
            "total_tasks": 0,
            "chunks_size": int(chunks_size),
            "data_files_size_in_mb": DEFAULT_DATA_FILE_SIZE_MB,
            "video_files_size_in_mb": DEFAULT_VIDEO_FILE_SIZE_MB,
            "fps": int(fps),
            "splits": {},
            "data_path": DATA_PATH,
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
            if has_video
            else None,
            "features": norm,
        }
        root.mkdir(parents=True, exist_ok=True)
        write_json(root / INFO_PATH, info)
        return cls(root, info, [], [], None, video_codec=video_codec, crf=crf, gop=gop, preset=preset)

    @classmethod
    def resume(cls, root: str | Path, **video_options) -> LeRobotDatasetWriter:
        """Continue a v3.0 dataset (one this writer or LeRobot made): new episodes go after the saved ones."""
        _, pq = _pa()
        root = Path(root)
        info = read_json(root / INFO_PATH, "dataset info (is this a LeRobot dataset?)")
        if info.get("codebase_version") != CODEBASE_VERSION:
            raise ValueError(
                f"{root / INFO_PATH}: codebase_version {info.get('codebase_version')!r}; only {CODEBASE_VERSION} "
                f"datasets can be continued (convert it with LeRobot's converter first)"
            )
        for ft in info["features"].values():
            ft["shape"] = list(ft["shape"])
        for stale in root.rglob(f".*{TMP_SUFFIX}"):  # left by a crash mid-save; never referenced
            stale.unlink()
        tasks: list[str] = []
        if (root / TASKS_PATH).is_file():
            from .lerobot_dataset import LeRobotDatasetMeta

            tasks = LeRobotDatasetMeta(root).tasks
        rows: list[dict] = []
        for path in sorted((root / EPISODES_DIR).glob("*/*.parquet")):
            rows += pq.read_table(path).to_pylist()
        rows.sort(key=lambda r: r["episode_index"])
        stats = None
        if (root / STATS_PATH).is_file():
            stats = {
                k: {s: np.asarray(v) for s, v in d.items()}
                for k, d in read_json(root / STATS_PATH, "stats").items()
            }
        writer = cls(root, info, tasks, rows, stats, **video_options)
        if info["total_episodes"] != len(rows):
            logger.warning(
                "%s: info.json counts %d episodes but the episode metadata has %d; continuing from the metadata",
                root,
                info["total_episodes"],
                len(rows),
            )
        return writer

    # -- state ------------------------------------------------------------------------------------
    @property
    def fps(self) -> int:
        return int(self.info["fps"])

    @property
    def num_episodes(self) -> int:
        return len(self._episode_rows)

    @property
    def num_frames(self) -> int:
        return int(sum(r["length"] for r in self._episode_rows))

    @property
    def episode_length(self) -> int:
        """Frames added to the episode being recorded."""
        return len(self._buf_timestamps)

    def _next_file_number(self, prefix: str) -> int:
        """Files are numbered 0, 1, 2, ... per kind; the next one follows the highest in use."""
        cs = self.info["chunks_size"]
        used = [r[f"{prefix}/chunk_index"] * cs + r[f"{prefix}/file_index"] for r in self._episode_rows]
        return max(used) + 1 if used else 0

    def _reset_buffer(self) -> None:
        self._buf_numeric: dict[str, list[np.ndarray]] = {k: [] for k in self._numeric_keys}
        self._buf_images: dict[str, list[bytes]] = {k: [] for k in self._image_keys}
        self._buf_timestamps: list[float] = []
        self._buf_tasks: list[str | None] = []
        self._samplers = {k: FrameSampler() for k in self._video_keys + self._image_keys}
        self._encoders: dict[str, VideoEncoder] = {}

    # -- recording -------------------------------------------------------------------------------
    def add_frame(self, frame: dict) -> None:
        """Add one frame to the current episode.

        ``frame`` holds every declared feature (cameras HxWx3 uint8 or float in [0, 1], CHW accepted;
        vectors of the declared length; numpy or torch) and optionally ``task`` (str) and
        ``timestamp`` (seconds from the episode start; default frame_index / fps). A frame that
        fails validation is rejected whole and the episode stays as it was.
        """
        if self._closed:
            raise RuntimeError(
                "this writer is finalized: use LeRobotDatasetWriter.resume(root) to add episodes"
            )
        self._check_frame_keys(frame)
        converted = {key: self._numeric_value(frame, key) for key in self._numeric_keys}
        for key in self._video_keys + self._image_keys:
            converted[key] = _camera_frame_to_hwc_uint8(frame[key], key, self.features[key]["shape"])
        task = frame.get("task")
        if task is not None and not isinstance(task, str):
            raise ValueError(f"frame['task'] must be a string, got {type(task).__name__}")
        timestamp = self._frame_timestamp(frame)
        image_bytes = {k: _png_bytes(converted[k]) for k in self._image_keys}
        # Validation is over: from here on the frame goes in whole.
        self._append_frame(converted, image_bytes, timestamp, task)

    def _check_frame_keys(self, frame: dict) -> None:
        unknown = [k for k in frame if k not in self._user_keys and k not in ("task", "timestamp")]
        missing = [k for k in self._user_keys if k not in frame]
        if unknown or missing:
            raise ValueError(
                f"frame keys do not match the dataset features: missing {missing}, unexpected {unknown} "
                f"(declared: {self._user_keys}, plus optional 'task' and 'timestamp')"
            )

    def _numeric_value(self, frame: dict, key: str) -> np.ndarray:
        """``frame[key]`` as its declared shape and dtype, finite."""
        ft = self.features[key]
        value = _to_numpy(frame[key])
        if value.shape == () and ft["shape"] == [1]:
            value = value.reshape(1)
        if list(value.shape) != ft["shape"]:
            raise ValueError(
                f"frame[{key!r}] has shape {list(value.shape)} but the feature is declared {ft['shape']}: "
                f"fix the value or the feature's shape"
            )
        try:
            converted = value.astype(ft["dtype"], casting="same_kind" if ft["dtype"] != "bool" else "unsafe")
        except TypeError as e:
            raise ValueError(
                f"frame[{key!r}] of dtype {value.dtype} cannot be stored as {ft['dtype']}"
            ) from e
        if np.issubdtype(converted.dtype, np.floating) and not np.isfinite(converted).all():
            raise ValueError(f"frame[{key!r}] contains NaN or inf: {converted}")
        return converted

    def _frame_timestamp(self, frame: dict) -> float:
        """The frame's own timestamp (increasing; with videos, at the constant fps) or frame_index / fps."""
        index = len(self._buf_timestamps)
        timestamp = float(frame["timestamp"]) if "timestamp" in frame else index / self.fps
        if index and timestamp <= self._buf_timestamps[-1]:
            raise ValueError(
                f"frame['timestamp']={timestamp} does not increase (previous {self._buf_timestamps[-1]})"
            )
        if self._video_keys and abs(timestamp - index / self.fps) > 1e-4:
            raise ValueError(
                f"frame['timestamp']={timestamp} is not frame_index / fps = {index / self.fps:.6f}: videos store "
                f"frames at a constant {self.fps} fps, so with video features leave 'timestamp' out (or record "
                f"at exactly {self.fps} fps)"
            )
        return timestamp

    def _append_frame(self, converted: dict, image_bytes: dict, timestamp: float, task: str | None) -> None:
        for key in self._video_keys:
            if key not in self._encoders:
                number = self._next_file_number(f"videos/{key}")
                chunk, file = chunk_and_file(number, self.info["chunks_size"])
                path = self.root / self.info["video_path"].format(
                    video_key=key, chunk_index=chunk, file_index=file
                )
                self._encoders[key] = VideoEncoder(
                    path,
                    self.fps,
                    codec=self.video_codec,
                    crf=self.crf,
                    gop=self.gop,
                    preset=self.preset,
                    name=key,
                )
            self._encoders[key].add(converted[key])
        for key in self._numeric_keys:
            self._buf_numeric[key].append(converted[key])
        for key in self._image_keys:
            self._buf_images[key].append(image_bytes[key])
        for key in self._video_keys + self._image_keys:
            self._samplers[key].add(converted[key])
        self._buf_timestamps.append(timestamp)
        self._buf_tasks.append(task)

    def clear_episode(self) -> None:
        """Drop the frames of the episode being recorded (saved episodes are untouched)."""
        for encoder in self._encoders.values():
            encoder.abort()
        self._reset_buffer()

    def save_episode(self, task: str | None = None) -> int:
        """Write the recorded frames as the next episode and return its index.

        ``task`` applies to every frame added without its own 'task'. If anything fails, the
        episode is dropped, the files it had started are removed, and the dataset is left exactly
        as it was after the previous save.
        """
        if self._closed:
            raise RuntimeError(
                "this writer is finalized: use LeRobotDatasetWriter.resume(root) to add episodes"
            )
        n = self.episode_length
        if n == 0:
            raise ValueError("save_episode() with no frames: call add_frame() first")
        tasks = [t if t is not None else task for t in self._buf_tasks]
        if any(t is None for t in tasks):
            self.clear_episode()
            raise ValueError(
                "some frames have no task: pass save_episode(task='...') or a 'task' in every frame; the "
                "episode was dropped"
            )
        created: list[Path] = []
        backups: dict[Path, bytes | None] = {}
        old_tasks = list(self.tasks)
        try:
            row = self._write_episode(tasks, created, backups)
        except BaseException as e:
            self.clear_episode()
            self.tasks = old_tasks
            self._task_index = {t: i for i, t in enumerate(self.tasks)}
            for path in created:
                path.unlink(missing_ok=True)
            for path, content in backups.items():  # metadata rewritten before the failure
                try:
                    if content is None:
                        path.unlink(missing_ok=True)
                    else:
                        atomic_write(path, lambda tmp, c=content: tmp.write_bytes(c))
                except OSError as restore_error:
                    logger.error("could not restore %s after a failed save: %s", path, restore_error)
            if isinstance(e, Exception) and hasattr(e, "add_note"):  # Python >= 3.11
                e.add_note(
                    f"episode {self.num_episodes} was not saved; the {self.num_episodes} episodes saved before it "
                    f"in {self.root} are intact"
                )
            raise
        self._episode_rows.append(row)
        self._reset_buffer()
        return int(row["episode_index"])

    def _write_episode(
        self, tasks: list[str], created: list[Path], backups: dict[Path, bytes | None]
    ) -> dict:
        """Frames -> a data file, videos, stats, then the metadata (info.json last)."""
        ep_index, n, start = self.num_episodes, self.episode_length, self.num_frames
        new_tasks = [t for t in dict.fromkeys(tasks) if t not in self._task_index]
        for t in new_tasks:
            self._task_index[t] = len(self.tasks)
            self.tasks.append(t)
        columns: dict[str, np.ndarray] = {k: np.stack(v) for k, v in self._buf_numeric.items()}
        columns["timestamp"] = np.asarray(self._buf_timestamps, dtype=np.float32)
        columns["frame_index"] = np.arange(n, dtype=np.int64)
        columns["episode_index"] = np.full(n, ep_index, dtype=np.int64)
        columns["index"] = np.arange(start, start + n, dtype=np.int64)
        columns["task_index"] = np.array([self._task_index[t] for t in tasks], dtype=np.int64)
        data_chunk, data_file = self._write_data_file(columns, created)
        row: dict = {
            "episode_index": ep_index,
            "tasks": list(dict.fromkeys(tasks)),
            "length": n,
            "data/chunk_index": data_chunk,
            "data/file_index": data_file,
            "dataset_from_index": start,
            "dataset_to_index": start + n,
        }
        self._close_videos(row, created)
        stats = self._add_stats(row, columns)
        self._write_metadata(row, new_tasks, stats, backups)
        return row

    def _write_data_file(self, columns: dict[str, np.ndarray], created: list[Path]) -> tuple[int, int]:
        """The episode's non-video columns as a new parquet file; returns its (chunk, file) index."""
        pa, pq = _pa()
        n = self.episode_length
        arrays, fields, hf = [], [], {}
        for key, ft in self.features.items():
            if ft["dtype"] == "video":
                continue
            if ft["dtype"] == "image":
                arr = pa.StructArray.from_arrays(
                    [pa.array(self._buf_images[key], pa.binary()), pa.array([None] * n, pa.string())],
                    names=["bytes", "path"],
                )
            else:
                values, typ = columns[key], _arrow_type(pa, ft["dtype"])
                if ft["shape"] == [1]:
                    arr = pa.array(values.reshape(n), typ)
                else:
                    arr = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), typ), ft["shape"][0])
            arrays.append(arr)
            fields.append(pa.field(key, arr.type))
            hf[key] = _hf_feature(ft)
        schema = pa.schema(fields, metadata={b"huggingface": json.dumps({"info": {"features": hf}}).encode()})
        table = pa.Table.from_arrays(arrays, schema=schema)
        data_chunk, data_file = chunk_and_file(self._next_file_number("data"), self.info["chunks_size"])
        data_path = self.root / self.info["data_path"].format(chunk_index=data_chunk, file_index=data_file)
        atomic_write(data_path, lambda tmp: pq.write_table(table, tmp, compression="snappy"))
        created.append(data_path)
        return data_chunk, data_file

    def _close_videos(self, row: dict, created: list[Path]) -> None:
        for key in self._video_keys:
            created.append(self._encoders[key].close())
            v_chunk, v_file = chunk_and_file(
                self._next_file_number(f"videos/{key}"), self.info["chunks_size"]
            )
            row[f"videos/{key}/chunk_index"] = v_chunk
            row[f"videos/{key}/file_index"] = v_file
            row[f"videos/{key}/from_timestamp"] = 0.0
            row[f"videos/{key}/to_timestamp"] = self.episode_length / self.fps

    def _add_stats(self, row: dict, columns: dict[str, np.ndarray]) -> dict:
        """The episode's stats into its metadata row; returns the dataset's stats with it aggregated in."""
        ep_stats = {k: feature_stats(columns[k]) for k in self._numeric_keys}
        for key in self._video_keys + self._image_keys:
            ep_stats[key] = self._samplers[key].stats()
        for key in DEFAULT_FEATURES:
            ep_stats[key] = feature_stats(columns[key])
        for key, st in ep_stats.items():
            for name, value in st.items():
                row[f"stats/{key}/{name}"] = np.asarray(value).tolist()
        meta_chunk, meta_file = chunk_and_file(
            row["episode_index"] // EPISODES_PER_META_FILE, self.info["chunks_size"]
        )
        row["meta/episodes/chunk_index"] = meta_chunk
        row["meta/episodes/file_index"] = meta_file
        return aggregate_stats([self._stats, ep_stats]) if self._stats else ep_stats

    def _write_metadata(
        self, row: dict, new_tasks: list[str], stats: dict, backups: dict[Path, bytes | None]
    ) -> None:
        """tasks, episodes, stats, then info.json last (a reader trusts it only once everything it names exists)."""
        pa, pq = _pa()
        ep_index = row["episode_index"]

        def replace(path: Path, write) -> None:
            old = path.read_bytes() if path.is_file() else None
            atomic_write(path, write)  # all or nothing: a failed write leaves the old file
            backups.setdefault(path, old)

        if new_tasks:
            replace(self.root / TASKS_PATH, lambda tmp: pq.write_table(_tasks_table(pa, self.tasks), tmp))
        group = ep_index // EPISODES_PER_META_FILE
        same_file = [r for r in self._episode_rows if r["episode_index"] // EPISODES_PER_META_FILE == group]
        meta_table = pa.Table.from_pylist(same_file + [row])
        meta_path = self.root / EPISODES_PATH.format(
            chunk_index=row["meta/episodes/chunk_index"], file_index=row["meta/episodes/file_index"]
        )
        replace(meta_path, lambda tmp: pq.write_table(meta_table, tmp, compression="snappy"))
        replace(
            self.root / STATS_PATH, lambda tmp: tmp.write_text(json.dumps(_jsonable_stats(stats), indent=4))
        )
        info = json.loads(json.dumps(self.info))
        info.update(
            total_episodes=ep_index + 1,
            total_frames=row["dataset_to_index"],
            total_tasks=len(self.tasks),
            splits={"train": f"0:{ep_index + 1}"},
        )
        for key in self._video_keys:
            if "info" not in info["features"][key]:
                info["features"][key]["info"] = probe_video(
                    self.root
                    / info["video_path"].format(
                        video_key=key,
                        chunk_index=row[f"videos/{key}/chunk_index"],
                        file_index=row[f"videos/{key}/file_index"],
                    )
                )
        replace(
            self.root / INFO_PATH, lambda tmp: tmp.write_text(json.dumps(info, indent=4, ensure_ascii=False))
        )
        self.info, self.features, self._stats = info, info["features"], stats

    # -- closing ------------------------------------------------------------------------------------
    def finalize(self) -> Path:
        """Finish the dataset and return its root. Frames added after the last save are dropped (with a warning)."""
        if self.episode_length:
            logger.warning(
                "finalize(): dropping %d frames added after the last save_episode() (call save_episode() to keep them)",
                self.episode_length,
            )
        self.clear_episode()
        if self.num_episodes == 0:
            logger.warning("finalize(): %s has no episodes; LeRobot cannot load an empty dataset", self.root)
        self._closed = True
        return self.root

    def __enter__(self) -> LeRobotDatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.clear_episode()  # the interrupted episode is incomplete; saved ones stay
        self.finalize()

    def __repr__(self) -> str:
        return (
            f"LeRobotDatasetWriter(root={str(self.root)!r}, fps={self.fps}, episodes={self.num_episodes}, "
            f"frames={self.num_frames}, recording={self.episode_length} frames)"
        )


def _jsonable_stats(stats: dict) -> dict:
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}


__all__ = ["LeRobotDatasetWriter"]
