"""LeRobot-format datasets: read (v3.0 and v2.x) and write (v3.0), with PyAV videos."""

from .lerobot_dataset import EpisodeInfo, LeRobotDataset, LeRobotDatasetMeta, resolve_dataset_root
from .video import FrameTimestampError, VideoDecodeError
from .writer import LeRobotDatasetWriter

__all__ = [
    "EpisodeInfo",
    "FrameTimestampError",
    "LeRobotDataset",
    "LeRobotDatasetMeta",
    "LeRobotDatasetWriter",
    "VideoDecodeError",
    "resolve_dataset_root",
]
