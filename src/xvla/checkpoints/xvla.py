"""This library's own format: config.json is :meth:`XVLAConfig.to_dict` (marked ``"format": "xvla"``) and
the weights are our module's keys, Florence-2 in the native transformers layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import XVLAConfig


def config_from_xvla(data: dict[str, Any]) -> XVLAConfig:
    return XVLAConfig.from_dict(data)


def config_to_xvla(config: XVLAConfig) -> dict[str, Any]:
    return config.to_dict()


def legacy_domains(folder: Path) -> dict[int, str]:
    """Checkpoints written before domains moved into the config kept them in domains.json."""
    path = folder / "domains.json"
    if not path.is_file():
        return {}
    return {int(k): str(v) for k, v in json.loads(path.read_text()).get("domains", {}).items()}
