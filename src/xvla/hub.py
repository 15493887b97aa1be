"""The one Hugging Face Hub resolver: a local folder, else an ``owner/name`` id fetched from the Hub.

Checkpoints (``XVLAPolicy.from_pretrained``) and datasets (``LeRobotDataset``) both resolve through
:func:`resolve_folder`, so a mistyped local path gets a "not found" error instead of a Hub download
attempt, and an unreachable Hub gets one message that names the offline fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def looks_like_hub_id(text: str) -> bool:
    """``owner/name`` whose first part is not a local folder (``outputs/run`` is a path, not an id)."""
    parts = text.split("/")
    if len(parts) != 2 or not all(parts) or text.startswith((".", "/", "~")):
        return False
    return not Path(parts[0]).expanduser().is_dir()


def resolve_folder(
    path_or_id: str | Path,
    *,
    what: str,
    repo_type: str = "model",
    revision: str | None = None,
    **download: Any,
) -> Path:
    """An existing folder as is; a Hub id downloaded with ``snapshot_download(**download)``."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; pass the {what} folder")
    text = str(path_or_id)
    if not looks_like_hub_id(text):
        raise FileNotFoundError(
            f"{what} folder {text} does not exist (and it is not a Hub id like 'owner/name')"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, repo_type=repo_type, revision=revision, **download))
    except Exception as exc:  # noqa: BLE001 - turned into an actionable message
        raise FileNotFoundError(
            f"{what} {text!r} is not a local folder and could not be fetched from the Hugging Face Hub "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). If you are offline, download "
            f"it where a network exists and pass its local folder."
        ) from exc


def resolve_checkpoint_dir(path_or_hub_id: str | Path, revision: str | None = None) -> Path:
    """A local checkpoint folder as is; otherwise a Hugging Face Hub id, downloaded (safetensors + json/txt only)."""
    patterns = ["*.json", "*.safetensors", "*.txt", "tokenizer*", "vocab*", "merges*"]
    return resolve_folder(path_or_hub_id, what="checkpoint", revision=revision, allow_patterns=patterns)
