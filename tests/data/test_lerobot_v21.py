"""Reading the older v2.1 layout: one parquet and one mp4 per episode, metadata in JSON lines."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xvla.data import FrameTimestampError, LeRobotDataset
from xvla.data.video import encode_video

FPS = 5
CAM = "observation.images.top"
LENGTHS = (4, 6)
TASKS = ("stack the cups", "wipe the table")


def colour(ep, i):
    return np.array([20 + 35 * i, 200 - 50 * ep, 90], np.uint8)


def write_v21(root, video_lengths=LENGTHS):
    info = {
        "codebase_version": "v2.1",
        "robot_type": "toy",
        "total_episodes": len(LENGTHS),
        "total_frames": sum(LENGTHS),
        "total_tasks": len(TASKS),
        "total_videos": len(LENGTHS),
        "total_chunks": 1,
        "chunks_size": 1000,
        "fps": FPS,
        "splits": {"train": f"0:{len(LENGTHS)}"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": {
            CAM: {"dtype": "video", "shape": [32, 32, 3], "names": ["height", "width", "channel"]},
            "observation.state": {"dtype": "float32", "shape": [2], "names": None},
            "action": {"dtype": "float32", "shape": [2], "names": None},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        },
    }
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(info))
    episodes, stats, start = [], [], 0
    for ep, n in enumerate(LENGTHS):
        state = np.array([[ep, i] for i in range(n)], np.float32)
        act = np.array([[10 * ep + i, -1.0] for i in range(n)], np.float32)
        table = pa.table(
            {
                # variable-length lists, as `datasets` wrote them before v3.0
                "observation.state": pa.array(state.tolist(), pa.list_(pa.float32())),
                "action": pa.array(act.tolist(), pa.list_(pa.float32())),
                "timestamp": pa.array(np.arange(n, dtype=np.float32) / FPS),
                "frame_index": pa.array(np.arange(n, dtype=np.int64)),
                "episode_index": pa.array(np.full(n, ep, dtype=np.int64)),
                "index": pa.array(np.arange(start, start + n, dtype=np.int64)),
                "task_index": pa.array(np.full(n, ep, dtype=np.int64)),
            }
        )
        (root / "data/chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / f"data/chunk-000/episode_{ep:06d}.parquet")
        frames = [np.broadcast_to(colour(ep, i), (32, 32, 3)) for i in range(video_lengths[ep])]
        encode_video(frames, root / f"videos/chunk-000/{CAM}/episode_{ep:06d}.mp4", FPS)
        episodes.append({"episode_index": ep, "tasks": [TASKS[ep]], "length": n})
        stats.append(
            {
                "episode_index": ep,
                "stats": {
                    "action": {
                        "min": act.min(0).tolist(),
                        "max": act.max(0).tolist(),
                        "mean": act.mean(0).tolist(),
                        "std": act.std(0).tolist(),
                        "count": [n],
                    }
                },
            }
        )
        start += n
    (root / "meta/episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    (root / "meta/tasks.jsonl").write_text(
        "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(TASKS))
    )
    (root / "meta/episodes_stats.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stats))
    return root


def test_reads_v21(tmp_path):
    ds = LeRobotDataset(write_v21(tmp_path / "v21"), chunk_size=3)
    assert ds.meta.version == "v2.1" and len(ds) == sum(LENGTHS) and ds.meta.tasks == list(TASKS)
    for idx in reversed(range(len(ds))):
        ep, i = (0, idx) if idx < LENGTHS[0] else (1, idx - LENGTHS[0])
        item = ds[idx]
        assert (item["episode_index"].item(), item["frame_index"].item(), item["task"]) == (ep, i, TASKS[ep])
        assert item["observation.state"].tolist() == [ep, i]
        n = LENGTHS[ep]
        assert item["action"][:, 0].tolist() == [10 * ep + min(j, n - 1) for j in range(i, i + 3)]
        assert item["action_is_pad"].tolist() == [j >= n for j in range(i, i + 3)]
        mean_rgb = (item[CAM].mean(dim=(1, 2)) * 255).numpy()
        assert np.abs(mean_rgb - colour(ep, i)).max() < 6, (ep, i, mean_rgb)
    # stats come from episodes_stats.jsonl, aggregated
    all_actions = np.array([[10 * ep + i, -1.0] for ep, n in enumerate(LENGTHS) for i in range(n)])
    np.testing.assert_allclose(ds.stats["action"]["mean"], all_actions.mean(0), rtol=1e-6)
    np.testing.assert_allclose(ds.stats["action"]["std"], all_actions.std(0), rtol=1e-6, atol=1e-9)
    assert ds.stats["action"]["count"].tolist() == [sum(LENGTHS)]


def test_v21_video_shorter_than_data(tmp_path):
    ds = LeRobotDataset(write_v21(tmp_path / "v21", video_lengths=(4, 3)))
    ds[LENGTHS[0] + 2]
    with pytest.raises(FrameTimestampError, match=r"episode_000001\.mp4"):
        ds[len(ds) - 1]
