"""Checkpoint formats: detection, config translation, weight-key remapping and export.

Three layouts are read (and written back by ``xvla convert``), one module each:

========== ============================ ======================= ===========================
format     config.json marker           weight keys             Florence-2 layout
========== ============================ ======================= ===========================
xvla       ``"format": "xvla"``         ``vlm.*  transformer.*``  native transformers
lerobot    ``"type": "xvla"``           ``model.vlm.* ...``       remote-code (older) or native
official   ``"model_type": "xvla"``     ``vlm.*  transformer.*``  remote-code (Microsoft)
========== ============================ ======================= ===========================

Weights are read with safetensors only (:mod:`.weights`). Our model uses the native layout internally;
remote-code keys are renamed (and the image projection transposed) on load, and back on export
(:mod:`.florence`). Identity fields a format's config.json cannot hold travel in ``xvla.json``
(:mod:`.identity`). This module holds the entry points every command uses: read and detect a config,
translate it, map weights to and from our keys, and write a checkpoint in any format.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import XVLAConfig
from ..utils import write_json
from .florence import (
    ENCODER_EMBED_KEY,
    NATIVE_IMAGE_PROJECTION,
    REMOTE_IMAGE_PROJECTION,
    SHARED_KEY,
    UNUSED_KEY_PATTERN,
    florence_config_to_native,
    florence_config_to_remote,
    is_remote_florence_config,
    is_remote_layout,
    native_to_remote,
    remote_to_native,
    restore_tied_embeddings,
)
from .identity import IDENTITY_FIELDS, IDENTITY_NAME, SIDE_FIELDS, apply_identity, checkpoint_identity
from .lerobot import config_from_lerobot, config_to_lerobot
from .official import PREPROCESSOR_NAME, config_from_official, config_to_official, write_preprocessor_config
from .weights import WEIGHTS_NAME, load_weights_file, save_weights_file, verify_weights, weights_files
from .xvla import config_from_xvla, config_to_xvla, legacy_domains

if TYPE_CHECKING:
    import torch

# torch, safetensors.torch and the processor load where tensors are read or written: `xvla info` reads
# configs and verifies files without them.

CONFIG_NAME = "config.json"
FORMATS = ("xvla", "lerobot", "official")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
)

__all__ = [
    "CONFIG_NAME",
    "ENCODER_EMBED_KEY",
    "FORMATS",
    "IDENTITY_FIELDS",
    "IDENTITY_NAME",
    "NATIVE_IMAGE_PROJECTION",
    "PREPROCESSOR_NAME",
    "REMOTE_IMAGE_PROJECTION",
    "SHARED_KEY",
    "SIDE_FIELDS",
    "TOKENIZER_FILES",
    "UNUSED_KEY_PATTERN",
    "WEIGHTS_NAME",
    "apply_identity",
    "checkpoint_identity",
    "config_from_json",
    "config_from_lerobot",
    "config_from_official",
    "config_from_xvla",
    "config_to_lerobot",
    "config_to_official",
    "config_to_xvla",
    "detect_format",
    "export_config",
    "florence_config_to_native",
    "florence_config_to_remote",
    "from_internal_state_dict",
    "is_remote_florence_config",
    "is_remote_layout",
    "legacy_domains",
    "load_weights_file",
    "native_to_remote",
    "read_config_json",
    "remote_to_native",
    "restore_tied_embeddings",
    "save_weights_file",
    "to_internal_state_dict",
    "verify_weights",
    "weights_files",
    "write_checkpoint",
    "write_config",
    "write_preprocessor_config",
]


# ------------------------------------------------------------------------------------------- configs
def read_config_json(folder: Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_NAME
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: an X-VLA checkpoint folder needs config.json and {WEIGHTS_NAME}"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not valid JSON ({exc}); the checkpoint is corrupt or incomplete"
        ) from exc


def detect_format(config: dict[str, Any]) -> str:
    if config.get("format") == "xvla":
        return "xvla"
    if config.get("model_type") == "xvla":
        return "official"
    if config.get("type") == "xvla":
        return "lerobot"
    raise ValueError(
        "config.json is not an X-VLA checkpoint config: expected 'format': 'xvla' (this library), "
        "'type': 'xvla' (LeRobot) or 'model_type': 'xvla' (official release)"
    )


def config_from_json(data: dict[str, Any], folder: Path | None = None) -> tuple[XVLAConfig, str]:
    fmt = detect_format(data)
    if fmt == "xvla":
        config = config_from_xvla(data)
    elif fmt == "lerobot":
        config = config_from_lerobot(data, folder)
    else:
        config = config_from_official(data, folder)
    config = apply_identity(config, fmt, folder)
    if config.domains is None and folder is not None:
        config = config.replace(domains=legacy_domains(Path(folder)) or None)
    return config, fmt


def export_config(config: XVLAConfig, fmt: str) -> dict[str, Any]:
    if fmt == "xvla":
        return config_to_xvla(config)
    if fmt == "lerobot":
        return config_to_lerobot(config)
    if fmt == "official":
        return config_to_official(config)
    raise ValueError(f"unknown checkpoint format '{fmt}'; choose one of {FORMATS}")


def write_config(data: dict[str, Any], folder: Path) -> None:
    write_json(Path(folder) / CONFIG_NAME, data)


# ------------------------------------------------------------------------------------------- weight keys
def to_internal_state_dict(state_dict: dict[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    """Any supported file layout -> our module's keys (native Florence, no ``model.`` prefix)."""
    if fmt == "lerobot" or all(k.startswith("model.") for k in state_dict):
        state_dict = {k[len("model.") :] if k.startswith("model.") else k: v for k, v in state_dict.items()}
    state_dict = {k: v for k, v in state_dict.items() if not UNUSED_KEY_PATTERN.match(k)}
    if is_remote_layout(state_dict):
        state_dict = remote_to_native(state_dict)
    return restore_tied_embeddings(dict(state_dict))


def from_internal_state_dict(state_dict: dict[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    """Our keys -> the file layout of ``fmt`` (LeRobot and official use the remote-code Florence layout)."""
    state_dict = {k: v for k, v in state_dict.items() if k != ENCODER_EMBED_KEY}  # one alias is enough
    if fmt in ("lerobot", "official"):
        state_dict = native_to_remote(state_dict)
    if fmt == "lerobot":
        state_dict = {f"model.{k}": v for k, v in state_dict.items()}
    return state_dict


# ------------------------------------------------------------------------------------------- writing
def write_checkpoint(
    directory: str | Path,
    state_dict: dict[str, torch.Tensor],
    config: XVLAConfig,
    fmt: str = "xvla",
    tokenizer: Any = None,
    source_dir: Path | None = None,
    producer: str = "xvla",
) -> Path:
    """The one checkpoint writer: weights, config.json, the identity side file, tokenizer and image size.

    Used by ``XVLAPolicy.save_pretrained``, ``xvla convert`` and the trainer. The tokenizer is saved
    from ``tokenizer`` when given, else its files are copied from ``source_dir``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format '{fmt}' is unknown; choose one of {FORMATS}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = from_internal_state_dict(state_dict, fmt)
    save_weights_file(weights, directory, metadata={"format": fmt, "producer": producer})
    write_config(export_config(config, fmt), directory)
    if SIDE_FIELDS[fmt]:
        write_json(directory / IDENTITY_NAME, checkpoint_identity(config, fmt))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    elif source_dir is not None and Path(source_dir).resolve() != directory.resolve():
        for name in TOKENIZER_FILES:
            if (Path(source_dir) / name).exists():
                shutil.copy2(Path(source_dir) / name, directory / name)
    if fmt == "official":
        write_preprocessor_config(config, directory, source_dir)
    return directory
