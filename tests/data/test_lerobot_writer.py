"""LeRobotDatasetWriter: input forms, validation, and what survives failures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import xvla.data.writer as writer_module
from xvla.data import LeRobotDataset, LeRobotDatasetWriter

from .lerobot_toy import FEATURES, FPS, FRONT, LENGTHS, WRIST, front_colour, make_frame, write_dataset


def dataset_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_accepts_torch_chw_float_frames_and_per_frame_tasks(tmp_path):
    w = LeRobotDatasetWriter.create(tmp_path / "ds", fps=FPS, features=FEATURES)
    for i in range(3):
        frame = make_frame(0, i)
        frame[FRONT] = torch.from_numpy(frame[FRONT]).permute(2, 0, 1).float() / 255  # CHW float in [0, 1]
        frame["observation.state"] = torch.from_numpy(frame["observation.state"])
        frame["task"] = "first half" if i < 2 else "second half"
        frame["timestamp"] = i / FPS
        w.add_frame(frame)
    assert w.save_episode() == 0
    w.finalize()
    ds = LeRobotDataset(tmp_path / "ds", chunk_size=1)
    assert [ds[i]["task"] for i in range(3)] == ["first half", "first half", "second half"]
    assert ds.meta.episodes[0].tasks == ["first half", "second half"]
    assert ds[1]["timestamp"].item() == pytest.approx(0.1)
    assert np.abs((ds[2][FRONT].mean(dim=(1, 2)) * 255).numpy() - front_colour(0, 2)).max() < 6


def test_bad_frames_are_rejected_whole_and_name_the_key(tmp_path):
    w = LeRobotDatasetWriter.create(tmp_path / "ds", fps=FPS, features=FEATURES)
    w.add_frame(make_frame(0, 0))
    bad = make_frame(0, 1)
    bad["observation.state"] = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match=r"observation\.state.*\[5\].*\[4\]"):
        w.add_frame(bad)
    bad = make_frame(0, 1)
    bad[FRONT] = np.zeros((40, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=r"observation\.images\.front.*\[40, 64, 3\]"):
        w.add_frame(bad)
    with pytest.raises(ValueError, match="constant 10 fps"):
        w.add_frame({**make_frame(0, 1), "timestamp": 0.15})
    bad = make_frame(0, 1)
    del bad[WRIST]
    with pytest.raises(ValueError, match=r"missing \['observation\.images\.wrist'\]"):
        w.add_frame(bad)
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        w.add_frame({**make_frame(0, 1), "extra": 1.0})
    assert w.episode_length == 1  # none of the bad frames got in
    w.add_frame(make_frame(0, 1))
    w.save_episode(task="t")
    assert LeRobotDataset(tmp_path / "ds")[1]["frame_index"].item() == 1


def test_bad_features_and_existing_folder(tmp_path):
    with pytest.raises(ValueError, match="camera feature 'cam'"):
        LeRobotDatasetWriter.create(
            tmp_path / "a", fps=10, features={"cam": {"dtype": "video", "shape": (3, 32, 32)}}
        )
    with pytest.raises(ValueError, match="'a/b'"):
        LeRobotDatasetWriter.create(
            tmp_path / "b", fps=10, features={"a/b": {"dtype": "float32", "shape": (2,)}}
        )
    with pytest.raises(ValueError, match="odd"):
        LeRobotDatasetWriter.create(tmp_path / "c", fps=10, features={"x": {"dtype": "odd", "shape": (2,)}})
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="resume"):
        LeRobotDatasetWriter.create(tmp_path / "full", fps=10, features=FEATURES)
    with pytest.raises(FileExistsError, match="not a LeRobot dataset"):
        LeRobotDatasetWriter.create(tmp_path / "full", fps=10, features=FEATURES, overwrite=True)
    assert (tmp_path / "full" / "notes.txt").read_text() == "keep me"


def test_odd_video_size_fails_with_a_fix(tmp_path):
    features = {
        "cam": {"dtype": "video", "shape": (33, 32, 3)},
        "action": {"dtype": "float32", "shape": (1,)},
    }
    with pytest.raises(ValueError, match="'cam' is 33x32.*even height.*'image'"):
        LeRobotDatasetWriter.create(tmp_path / "ds", fps=10, features=features)
    features["cam"]["dtype"] = "image"  # PNG has no such limit
    w = LeRobotDatasetWriter.create(tmp_path / "ds", fps=10, features=features)
    w.add_frame({"cam": np.zeros((33, 32, 3), np.uint8), "action": 0.0})
    w.save_episode(task="t")
    assert LeRobotDataset(tmp_path / "ds")[0]["cam"].shape == (3, 33, 32)


def test_failed_save_leaves_earlier_episodes_intact(tmp_path, monkeypatch):
    root = write_dataset(tmp_path / "ds", lengths=LENGTHS[:2], tasks=("a", "b"))
    before = {name: (root / name).read_bytes() for name in dataset_files(root)}
    w = LeRobotDatasetWriter.resume(root)
    for i in range(3):
        w.add_frame(make_frame(2, i))

    real_atomic_write = writer_module.atomic_write

    def info_write_fails(path, write):  # info.json goes last: everything else was already replaced
        if path.name == "info.json":
            raise OSError("disk full")
        real_atomic_write(path, write)

    monkeypatch.setattr(writer_module, "atomic_write", info_write_fails)
    with pytest.raises(OSError, match="disk full") as err:
        w.save_episode(task="a brand new task")
    assert any(
        "episode 2 was not saved" in note
        for note in getattr(err.value, "__notes__", ["episode 2 was not saved"])
    )
    after = {name: (root / name).read_bytes() for name in dataset_files(root)}
    assert after == before  # byte for byte, and no new or temporary file left behind
    assert w.episode_length == 0 and w.num_episodes == 2

    monkeypatch.undo()
    for i in range(2):
        w.add_frame(make_frame(2, i))
    assert w.save_episode(task="c") == 2
    ds = LeRobotDataset(root, chunk_size=1)
    assert len(ds) == LENGTHS[0] + LENGTHS[1] + 2 and ds.meta.tasks == ["a", "b", "c"]


def test_exception_while_recording_keeps_saved_episodes(tmp_path):
    root = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="robot fell over"):
        with LeRobotDatasetWriter.create(root, fps=FPS, features=FEATURES) as w:
            for i in range(4):
                w.add_frame(make_frame(0, i))
            w.save_episode(task="a")
            w.add_frame(make_frame(1, 0))
            raise RuntimeError("robot fell over")
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]  # the unfinished video is gone
    ds = LeRobotDataset(root)
    assert len(ds) == 4 and ds.meta.total_episodes == 1


def test_resume_appends_after_saved_episodes(tmp_path):
    root = write_dataset(tmp_path / "ds", lengths=(3,), tasks=("a",))
    (root / "data" / "chunk-000" / ".file-001.parquet.x.tmp").write_bytes(b"left by a crash")
    w = LeRobotDatasetWriter.resume(root)
    assert not (root / "data" / "chunk-000" / ".file-001.parquet.x.tmp").exists()
    for i in range(2):
        w.add_frame(make_frame(1, i))
    w.save_episode(task="b")
    w.finalize()
    with pytest.raises(RuntimeError, match="finalized"):
        w.add_frame(make_frame(1, 2))
    info = json.loads((root / "meta/info.json").read_text())
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (2, 5, 2)
    ds = LeRobotDataset(root, chunk_size=2)
    item = ds[3]
    assert (item["episode_index"].item(), item["frame_index"].item(), item["index"].item()) == (1, 0, 3)
    assert item["task"] == "b"
    assert np.abs((item[FRONT].mean(dim=(1, 2)) * 255).numpy() - front_colour(1, 0)).max() < 6
    assert ds.stats["observation.state"]["count"].tolist() == [5]


def test_save_without_task_or_frames_is_refused(tmp_path):
    w = LeRobotDatasetWriter.create(tmp_path / "ds", fps=FPS, features=FEATURES)
    with pytest.raises(ValueError, match="no frames"):
        w.save_episode(task="x")
    w.add_frame(make_frame(0, 0))
    with pytest.raises(ValueError, match="task"):
        w.save_episode()
    assert w.num_episodes == 0


def test_video_encoding_is_reproducible(tmp_path):
    """Encoding the same frames twice gives the same bytes (x264's mbtree varied them on small frames)."""
    from xvla.data.video import VideoEncoder

    yy, xx = np.mgrid[0:64, 0:64]
    frames = [
        np.stack([(xx * 3 + i) % 256, (yy * 2 + 5 * i) % 256, (xx + yy) % 256], -1).astype(np.uint8)
        for i in range(24)
    ]
    outputs = []
    for n in range(3):
        encoder = VideoEncoder(tmp_path / f"v{n}.mp4", FPS)
        for frame in frames:
            encoder.add(frame)
        outputs.append(encoder.close().read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    # x264 writes its settings into the stream: the one that made encodes differ is off.
    assert b"mbtree=0" in outputs[0]
