"""Write a v3.0 dataset with LeRobotDatasetWriter and read it back with LeRobotDataset."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from xvla.data import LeRobotDataset, LeRobotDatasetMeta

from .lerobot_toy import FPS, FRONT, LENGTHS, TASKS, WRIST, action, front_colour, state, wrist_value

CHUNK = 4


def frame_of(idx: int) -> tuple[int, int]:
    starts = np.cumsum((0,) + LENGTHS)
    ep = int(np.searchsorted(starts, idx, side="right") - 1)
    return ep, idx - int(starts[ep])


def check_item(item: dict, ep: int, i: int, chunk: int = CHUNK) -> None:
    assert item["episode_index"].item() == ep
    assert item["frame_index"].item() == i
    assert item["timestamp"].item() == pytest.approx(i / FPS, abs=1e-6)
    assert item["task"] == TASKS[ep]
    torch.testing.assert_close(item["observation.state"], torch.from_numpy(state(ep, i)))
    # the action chunk: frames i .. i+chunk-1, the last real action repeated past the episode end
    n = LENGTHS[ep]
    want = np.stack([action(ep, min(j, n - 1)) for j in range(i, i + chunk)])
    torch.testing.assert_close(item["action"], torch.from_numpy(want))
    assert item["action_is_pad"].tolist() == [j >= n for j in range(i, i + chunk)]
    # video: lossy, but within a few levels of this frame's colour and far from any other frame's
    front = item[FRONT]
    assert front.shape == (3, 48, 64) and front.dtype == torch.float32
    assert 0.0 <= front.min() and front.max() <= 1.0
    mean_rgb = (front.mean(dim=(1, 2)) * 255).numpy()
    assert np.abs(mean_rgb - front_colour(ep, i)).max() < 6, (ep, i, mean_rgb)
    # image feature: PNG, lossless
    wrist = item[WRIST]
    assert wrist.shape == (3, 32, 32)
    assert torch.all((wrist * 255).round() == wrist_value(ep, i))


def test_every_frame_reads_back_aligned(written_dataset):
    ds = LeRobotDataset(written_dataset, chunk_size=CHUNK)
    assert len(ds) == sum(LENGTHS) and ds.num_episodes == 3 and ds.fps == FPS
    assert ds.meta.tasks == ["pick the cube", "open the drawer"]
    # backwards, so that every video read seeks rather than continuing from the previous frame
    for idx in reversed(range(len(ds))):
        item = ds[idx]
        check_item(item, *frame_of(idx))
        assert item["index"].item() == idx
    check_item(ds[-1], 2, LENGTHS[2] - 1)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_cached_frames_equal_decoded_ones(written_dataset):
    plain, cached = (LeRobotDataset(written_dataset, chunk_size=CHUNK, cache_frames=c) for c in (False, True))
    for idx in reversed(range(len(plain))):  # the first read of an episode decodes all of it
        torch.testing.assert_close(cached[idx][FRONT], plain[idx][FRONT], atol=0, rtol=0)
    assert len(cached._frames) == sum(LENGTHS)  # one decoded frame per video frame, each decoded once


def test_chunk_longer_than_episode_pads(written_dataset):
    ds = LeRobotDataset(written_dataset, chunk_size=10, camera_keys=[WRIST])
    item = ds[sum(LENGTHS[:2])]  # first frame of the 4-frame episode 2
    assert item["action"].shape == (10, 3)
    assert item["action_is_pad"].tolist() == [False] * 4 + [True] * 6
    assert torch.equal(item["action"][9], item["action"][3])
    assert FRONT not in item  # only the cameras asked for


def test_episode_subset_and_resize(written_dataset):
    ds = LeRobotDataset(written_dataset, chunk_size=2, episodes=[2, 0], image_size=(24, 20))
    assert len(ds) == LENGTHS[2] + LENGTHS[0]
    first, last = ds[0], ds[len(ds) - 1]
    assert (first["episode_index"].item(), first["frame_index"].item()) == (2, 0)
    assert (last["episode_index"].item(), last["frame_index"].item()) == (0, LENGTHS[0] - 1)
    assert first[FRONT].shape == (3, 24, 20) and first[WRIST].shape == (3, 24, 20)
    assert np.abs((first[FRONT].mean(dim=(1, 2)) * 255).numpy() - front_colour(2, 0)).max() < 6
    assert ds.episode_range(1) == (LENGTHS[2], LENGTHS[2] + LENGTHS[0])


def test_metadata_files_follow_v30(written_dataset):
    info = json.loads((written_dataset / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, sum(LENGTHS), 2)
    assert info["splits"] == {"train": "0:3"}
    assert {"timestamp", "frame_index", "episode_index", "index", "task_index"} <= set(info["features"])
    video_info = info["features"][FRONT]["info"]
    assert (video_info["video.height"], video_info["video.width"], video_info["video.fps"]) == (48, 64, FPS)
    assert video_info["video.pix_fmt"] == "yuv420p"

    episodes = pq.read_table(written_dataset / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["length"] for e in episodes] == list(LENGTHS)
    assert [e["tasks"] for e in episodes] == [[t] for t in TASKS]
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in episodes] == [(0, 7), (7, 12), (12, 16)]
    for ep, e in enumerate(episodes):
        path = written_dataset / info["video_path"].format(
            video_key=FRONT,
            chunk_index=e[f"videos/{FRONT}/chunk_index"],
            file_index=e[f"videos/{FRONT}/file_index"],
        )
        assert path.is_file()
        assert e[f"videos/{FRONT}/to_timestamp"] == pytest.approx(LENGTHS[ep] / FPS)
        assert e["stats/observation.state/count"] == [LENGTHS[ep]]
        np.testing.assert_allclose(
            e["stats/observation.state/mean"],
            np.mean([state(ep, i) for i in range(LENGTHS[ep])], axis=0),
            rtol=1e-6,
        )
    tasks = pq.read_table(written_dataset / "meta/tasks.parquet").to_pydict()
    assert tasks["task_index"] == [0, 1]

    meta = LeRobotDatasetMeta(written_dataset)
    assert meta.camera_keys == [FRONT, WRIST] and meta.video_keys == [FRONT] and meta.image_keys == [WRIST]
    assert meta.total_frames == sum(LENGTHS) and meta.robot_type == "toy"


def test_global_stats_match_the_data(written_dataset):
    stats = LeRobotDatasetMeta(written_dataset).stats
    for key, fn in (("observation.state", state), ("action", action)):
        values = np.stack([fn(ep, i) for ep, n in enumerate(LENGTHS) for i in range(n)]).astype(np.float64)
        np.testing.assert_allclose(stats[key]["mean"], values.mean(0), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(stats[key]["std"], values.std(0), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(stats[key]["min"], values.min(0))
        np.testing.assert_allclose(stats[key]["max"], values.max(0))
        assert stats[key]["count"].tolist() == [sum(LENGTHS)]
        assert {"q01", "q10", "q50", "q90", "q99"} <= set(stats[key])
    wrist = np.array([wrist_value(ep, i) for ep, n in enumerate(LENGTHS) for i in range(n)]) / 255
    assert stats[WRIST]["mean"].shape == (3, 1, 1)
    np.testing.assert_allclose(stats[WRIST]["mean"].ravel(), [wrist.mean()] * 3, atol=1e-6)
    front_r = np.array([front_colour(ep, i)[0] for ep, n in enumerate(LENGTHS) for i in range(n)]) / 255
    assert abs(stats[FRONT]["mean"][0, 0, 0] - front_r.mean()) < 0.03
    assert stats["frame_index"]["max"].tolist() == [max(LENGTHS) - 1]


def test_pickles_and_works_in_dataloader_workers(written_dataset):
    ds = LeRobotDataset(written_dataset, chunk_size=CHUNK, image_size=(16, 16))
    ds[3]  # opens a video decoder in this process; it must not travel
    clone = pickle.loads(pickle.dumps(ds))
    check_item(LeRobotDataset(written_dataset, chunk_size=CHUNK)[3], *frame_of(3))
    assert clone[3]["frame_index"].item() == 3
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    assert sum(len(b["task"]) for b in batches) == len(ds)
    assert batches[0][FRONT].shape == (4, 3, 16, 16)
    assert batches[0]["action"].shape == (4, CHUNK, 3) and batches[0]["action_is_pad"].dtype == torch.bool
    assert torch.equal(torch.cat([b["index"] for b in batches]), torch.arange(len(ds)))
