"""Damaged or mismatched datasets fail with errors that name the file or key and say what to do."""

from __future__ import annotations

import json
import shutil

import pytest

import xvla.data.lerobot_dataset as reader_module
from xvla.data import FrameTimestampError, LeRobotDataset, VideoDecodeError

from .lerobot_toy import FRONT, LENGTHS


@pytest.fixture
def copy(written_dataset, tmp_path):
    return shutil.copytree(written_dataset, tmp_path / "copy")


def video_file(root, episode):
    return root / f"videos/{FRONT}/chunk-000/file-{episode:03d}.mp4"


def test_missing_data_file(copy):
    (copy / "data/chunk-000/file-001.parquet").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"data/chunk-000/file-001\.parquet.*episodes \[1\].*download it again"
    ):
        LeRobotDataset(copy)
    assert len(LeRobotDataset(copy, episodes=[0, 2])) == LENGTHS[0] + LENGTHS[2]  # the rest still reads


def test_missing_metadata(copy):
    (copy / "meta/tasks.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"meta/tasks\.parquet"):
        LeRobotDataset(copy)
    (copy / "meta/info.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"meta/info\.json.*LeRobot dataset"):
        LeRobotDataset(copy)


def test_damaged_data_file(copy):
    (copy / "data/chunk-000/file-000.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(ValueError, match=r"data/chunk-000/file-000\.parquet.*damaged"):
        LeRobotDataset(copy)


def test_corrupt_video(copy):
    path = video_file(copy, 1)
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    ds = LeRobotDataset(copy)
    ds[0]  # episode 0's video is fine
    with pytest.raises(
        VideoDecodeError, match=r"observation\.images\.front \(episode 1\).*file-001\.mp4.*download"
    ):
        ds[LENGTHS[0]]


def test_truncated_video(copy):
    path = video_file(copy, 0)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    ds = LeRobotDataset(copy)
    with pytest.raises((VideoDecodeError, FrameTimestampError), match=r"file-000\.mp4"):
        ds[LENGTHS[0] - 1]


def test_missing_video(copy):
    video_file(copy, 2).unlink()
    ds = LeRobotDataset(copy)
    with pytest.raises(FileNotFoundError, match=r"observation\.images\.front \(episode 2\).*file-002\.mp4"):
        ds[len(ds) - 1]


def test_required_camera_missing(written_dataset):
    with pytest.raises(
        ValueError, match=r"no camera \['observation\.images\.top'\].*observation\.images\.front"
    ):
        LeRobotDataset(written_dataset, camera_keys=["observation.images.top", FRONT])


def test_shape_expected_by_config_differs(written_dataset):
    with pytest.raises(ValueError, match=r"'observation\.state' has shape \[4\].*expects \[8\]"):
        LeRobotDataset(written_dataset, expected_shapes={"observation.state": (8,)})
    with pytest.raises(ValueError, match=r"no feature 'observation\.velocity'"):
        LeRobotDataset(written_dataset, expected_shapes={"observation.velocity": (3,)})
    ds = LeRobotDataset(written_dataset, expected_shapes={"action": (3,), FRONT: (3, 48, 64)})  # CHW is fine
    assert len(ds) == sum(LENGTHS)


def test_info_shape_disagrees_with_data(copy):
    info = json.loads((copy / "meta/info.json").read_text())
    info["features"]["observation.state"]["shape"] = [5]
    (copy / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"file-000\.parquet: feature 'observation\.state'.*4 values.*\[5\]"):
        LeRobotDataset(copy)


def test_video_size_disagrees_with_info(copy):
    info = json.loads((copy / "meta/info.json").read_text())
    info["features"][FRONT]["shape"] = [96, 128, 3]
    (copy / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"observation\.images\.front.*48x64.*\[96, 128, 3\]"):
        LeRobotDataset(copy)[0]


def test_missing_action_and_unknown_episode(written_dataset):
    with pytest.raises(ValueError, match=r"no 'actions' feature"):
        LeRobotDataset(written_dataset, action_key="actions")
    with pytest.raises(IndexError, match=r"episode 7 is not in"):
        LeRobotDataset(written_dataset, episodes=[0, 7])


def test_unreachable_hub(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setenv("HF_LEROBOT_HOME", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.snapshot_download", offline)
    with pytest.raises(
        FileNotFoundError, match=r"'someone/some_dataset'.*could not be fetched.*offline.*local folder"
    ):
        LeRobotDataset("someone/some_dataset")
    with pytest.raises(FileNotFoundError, match="dataset folder .* does not exist"):
        LeRobotDataset(tmp_path / "does" / "not" / "exist")
    assert reader_module.resolve_dataset_root(tmp_path) == tmp_path


def test_a_damaged_video_names_episode_frame_and_file_and_can_be_found_up_front(copy):
    path = video_file(copy, 1)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    ds = LeRobotDataset(copy)
    with pytest.raises((VideoDecodeError, FrameTimestampError)) as info:
        ds[LENGTHS[0] + 2]
    assert f"episode 1, frame 2, file {path}" in str(info.value)
    bad = ds.unreadable_episodes()
    assert list(bad) == [1] and "file-001.mp4" in bad[1]
