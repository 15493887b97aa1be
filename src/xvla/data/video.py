"""MP4 encoding and frame-accurate decoding with PyAV (FFmpeg's maintained Python binding).

Encoding writes to a temporary file beside the target and renames it into place, so a crash never
leaves a truncated video under a name the dataset points to. Decoding seeks to the key frame before
the requested time, decodes forward, and returns the frame whose presentation time is nearest to the
request, refusing one further away than a tolerance (a wrong frame is worse than an error).
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..utils import UserFacingError, publish_file

DEFAULT_CODEC = "libx264"
DEFAULT_PIX_FMT = "yuv420p"
# x264's macroblock-tree rate control made the first frames of small videos (64x64) differ from one
# encode of the same frames to the next (measured: 1 to 3 distinct outputs in 25 encodes of a clip), so
# neither the datasets nor anything trained on them were reproducible. Off, every encode is identical;
# files are about 30% larger at the same crf on such frames.
X264_PARAMS = "mbtree=0"


class VideoDecodeError(UserFacingError):
    """A video file exists but cannot be decoded (corrupt, truncated, or not a video); a RuntimeError whose
    message names the file (and, from a dataset, the episode and frame): the CLI prints it in one line."""


class FrameTimestampError(ValueError):
    """No decoded frame lies within the tolerance of a requested timestamp."""


def _import_av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Reading or writing videos needs PyAV: install it with `pip install av` "
            "(or `pip install 'xvla[data]'`)."
        ) from e
    return av


class VideoEncoder:
    """Encode RGB frames one at a time into an mp4 at ``path``; ``close()`` publishes the file.

    Frames go straight to the encoder, so an episode's video never has to sit in memory. Until
    ``close()`` the data lives in a hidden temporary file in the same folder; ``abort()`` deletes it.
    """

    def __init__(
        self,
        path: str | Path,
        fps: int,
        *,
        codec: str = DEFAULT_CODEC,
        pix_fmt: str = DEFAULT_PIX_FMT,
        crf: int | None = 23,
        gop: int | None = 2,
        preset: str | None = None,
        threads: int | None = None,
        name: str = "video",
    ):
        self.check_codec(codec)
        self.path = Path(path)
        self.fps = int(fps)
        self.codec, self.pix_fmt, self.crf, self.gop, self.preset = codec, pix_fmt, crf, gop, preset
        self.threads = threads
        self.name = name
        self.num_frames = 0
        self._container = None
        self._stream = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)

    @staticmethod
    def check_codec(codec: str) -> None:
        av = _import_av()
        if codec not in av.codecs_available:
            common = ("libx264", "h264", "libsvtav1", "libaom-av1", "mpeg4")
            raise ValueError(
                f"video codec {codec!r} is not available in this PyAV build; usable ones here include "
                f"{sorted(c for c in common if c in av.codecs_available)}"
            )

    def _open(self, height: int, width: int) -> None:
        av = _import_av()
        if self.pix_fmt in ("yuv420p", "yuv422p") and (height % 2 or width % 2):
            raise ValueError(
                f"{self.name}: frames of {height}x{width} cannot be encoded as {self.pix_fmt} (needs even height "
                f"and width): resize the camera to an even size, or store this feature as dtype 'image'"
            )
        options = {}
        if self.crf is not None:
            options["crf"] = str(self.crf)
        if self.gop is not None:
            options["g"] = str(self.gop)
        if self.preset is not None:
            options["preset"] = str(self.preset)
        if self.threads is not None:
            options["threads"] = str(self.threads)
        if self.codec in ("libx264", "h264"):
            options["x264-params"] = X264_PARAMS
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        stream = self._container.add_stream(self.codec, rate=Fraction(self.fps), options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, self.pix_fmt
        self._stream = stream

    def add(self, frame: np.ndarray) -> None:
        """Encode one HxWx3 uint8 RGB frame."""
        av = _import_av()
        frame = np.ascontiguousarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"{self.name}: expected an HxWx3 uint8 frame, got {frame.dtype} {frame.shape}")
        if self._container is None:
            self._open(frame.shape[0], frame.shape[1])
        elif (frame.shape[0], frame.shape[1]) != (self._stream.height, self._stream.width):
            raise ValueError(
                f"{self.name}: frame {self.num_frames} is {frame.shape[0]}x{frame.shape[1]} but earlier frames "
                f"are {self._stream.height}x{self._stream.width}: every frame of a video must have the same size"
            )
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        video_frame.pts = self.num_frames
        video_frame.time_base = Fraction(1, self.fps)
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.num_frames += 1

    def close(self) -> Path:
        """Flush the encoder and move the finished file to ``path``; returns ``path``."""
        if self._container is None:
            self.abort()
            raise ValueError(f"{self.name}: no frame was added, nothing to encode")
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
            publish_file(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop the unfinished video (nothing is left on disk)."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # the file is being thrown away; a failing close changes nothing
                pass
            self._container = None
        if self._tmp.exists():
            self._tmp.unlink()


def encode_video(frames, path: str | Path, fps: int, **kwargs) -> Path:
    """Encode an iterable of HxWx3 uint8 RGB frames into the mp4 ``path`` (written atomically)."""
    encoder = VideoEncoder(path, fps, **kwargs)
    try:
        for frame in frames:
            encoder.add(np.asarray(frame))
    except BaseException:
        encoder.abort()
        raise
    return encoder.close()


def probe_video(path: str | Path) -> dict:
    """The stream facts LeRobot keeps under ``features[key]["info"]`` in meta/info.json."""
    av = _import_av()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{path} has no video stream")
            stream = container.streams.video[0]
            pix_fmt = stream.codec_context.pix_fmt or stream.format.name
            info = {
                "video.height": stream.codec_context.height,
                "video.width": stream.codec_context.width,
                "video.codec": stream.codec_context.codec.canonical_name,
                "video.pix_fmt": pix_fmt,
                "video.is_depth_map": False,
                "video.fps": int(round(float(stream.average_rate or stream.base_rate))),
                "video.channels": 1
                if pix_fmt.startswith("gray")
                else 4
                if "a" in pix_fmt.replace("yuv", "")
                else 3,
                "has_audio": bool(container.streams.audio),
            }
    except av.error.FFmpegError as e:
        raise VideoDecodeError(f"cannot read video {path}: {e}") from e
    return info


class VideoDecoder:
    """Random access to the frames of one video file by timestamp (seconds)."""

    def __init__(self, path: str | Path, *, name: str | None = None):
        av = _import_av()
        self.path = Path(path)
        self.name = name or str(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"video file for {self.name} not found: {self.path}. The dataset is incomplete: download it "
                f"again (or restore the file) and retry"
            )
        try:
            self._container = av.open(str(self.path))
            if not self._container.streams.video:
                raise VideoDecodeError(f"{self.path} has no video stream")
            self._stream = self._container.streams.video[0]
            # One decoding thread: parallelism comes from DataLoader workers, and a process that forks
            # while FFmpeg threads exist must never free their state in the child (see DecoderCache).
            self._stream.codec_context.thread_count = 1
        except av.error.FFmpegError as e:
            raise self._corrupt(e) from e
        self._time_base = float(self._stream.time_base)
        self._start = (
            float(self._stream.start_time * self._stream.time_base) if self._stream.start_time else 0.0
        )

    def _corrupt(self, err: Exception) -> VideoDecodeError:
        return VideoDecodeError(
            f"video file for {self.name} is corrupt or unreadable: {self.path} ({err}). Delete it and download "
            f"the dataset again, or re-encode the episode's frames"
        )

    def frames_at(self, timestamps, tolerance_s: float) -> np.ndarray:
        """The frames nearest to ``timestamps`` (seconds from the start of the file) as [N, H, W, 3] uint8."""
        av = _import_av()
        ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        first, last = float(ts.min()), float(ts.max())
        frames, pts = [], []
        try:
            self._container.seek(
                max(0, int((first + self._start - tolerance_s) / self._time_base)),
                stream=self._stream,
                backward=True,
                any_frame=False,
            )
            for frame in self._container.decode(self._stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * frame.time_base) - self._start
                if t < first - tolerance_s:
                    continue
                frames.append(frame.to_ndarray(format="rgb24"))
                pts.append(t)
                if t >= last + tolerance_s:
                    break
        except av.error.FFmpegError as e:
            raise self._corrupt(e) from e
        if not frames:
            raise FrameTimestampError(
                f"{self.name}: no frame at or after t={first:.4f}s in {self.path}: the video is shorter than the "
                f"episode data says (a truncated file? download it again)"
            )
        pts_arr = np.asarray(pts)
        nearest = np.abs(pts_arr[None, :] - ts[:, None]).argmin(axis=1)
        gaps = np.abs(pts_arr[nearest] - ts)
        if (gaps > tolerance_s).any():
            bad = int(gaps.argmax())
            raise FrameTimestampError(
                f"{self.name}: the nearest frame to t={ts[bad]:.4f}s in {self.path} is at {pts_arr[nearest[bad]]:.4f}s, "
                f"{gaps[bad]:.4f}s away (tolerance {tolerance_s:.4f}s): the video and the parquet timestamps disagree; "
                f"re-encode the video or pass a larger tolerance_s"
            )
        return np.stack([frames[i] for i in nearest])

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


_INHERITED_DECODERS: list[VideoDecoder] = []


class DecoderCache:
    """A small LRU of open decoders, owned by one process (it is emptied, never shared, across forks)."""

    def __init__(self, max_open: int = 16):
        self.max_open = max_open
        self._pid = os.getpid()
        self._decoders: OrderedDict[Path, VideoDecoder] = OrderedDict()

    def get(self, path: Path, name: str) -> VideoDecoder:
        if self._pid != os.getpid():
            # A forked DataLoader worker inherits the parent's open decoders. It must neither use them
            # (shared file offsets) nor close them (freeing FFmpeg state that belongs to threads which
            # do not exist in the child can hang forever), so they are parked, untouched, for good.
            _INHERITED_DECODERS.extend(self._decoders.values())
            self._decoders = OrderedDict()
            self._pid = os.getpid()
        decoder = self._decoders.get(path)
        if decoder is None:
            decoder = VideoDecoder(path, name=name)
            self._decoders[path] = decoder
            while len(self._decoders) > self.max_open:
                self._decoders.popitem(last=False)[1].close()
        else:
            self._decoders.move_to_end(path)
        return decoder

    def drop(self, path: Path) -> None:
        decoder = self._decoders.pop(path, None)
        if decoder is not None:
            decoder.close()

    def clear(self) -> None:
        for decoder in self._decoders.values():
            decoder.close()
        self._decoders.clear()

    def __len__(self) -> int:
        return len(self._decoders)
