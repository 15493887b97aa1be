"""Robot adapters: one domain's rows of a checkpoint as a small file, loaded into any copy of its backbone.

A domain (a robot, a dataset) owns one row of every domain-indexed table: its soft prompt, its action
encoder / decoder and, with ``use_hetero_proj``, its vision-language projections. An adapter file is
those rows (safetensors, ``<table name> -> row``) plus metadata that says what the robot is: name,
action mode and real action width, camera keys and order, image size, state width, default
instruction, control rate, and a fingerprint of the backbone (every other weight) it was trained on.

``export_adapter`` writes one; ``XVLAPolicy.load_adapter`` puts it into a free domain slot, refusing a
file made for another backbone or with other shapes. ``xvla adapter export`` is the command.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .domains import RELEASED_DOMAINS, trained_domains
from .utils import atomic_write

ADAPTER_FORMAT = "xvla-adapter-1"
IDENTITY_KEYS = ("action_mode", "real_action_dim", "max_action_dim", "image_keys", "image_size", "max_state_dim",
                 "chunk_size", "tokenizer_max_length")  # fmt: skip


@dataclass
class AdapterInfo:
    """What ``policy.adapters`` lists for one loaded adapter."""

    name: str
    domain_id: int
    path: str
    metadata: dict[str, Any] = field(default_factory=dict)


def is_domain_table(name: str) -> bool:
    from .train.params import is_domain_table as _is_domain_table

    return _is_domain_table(name)


def backbone_fingerprint(model: torch.nn.Module) -> str:
    """A hash of every weight that is not a domain row: names, shapes and a strided sample of the values
    (a sample keeps it fast on the 0.9B model; two different trainings differ in every tensor)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if is_domain_table(name):
            continue
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        if tensor.device.type != "meta" and tensor.numel():
            flat = tensor.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 256)][:256]
            digest.update(sample.float().cpu().numpy().tobytes())
    return digest.hexdigest()[:32]


def domain_rows(model: torch.nn.Module, domain_id: int) -> dict[str, torch.Tensor]:
    """The rows of ``domain_id`` in every domain-indexed table."""
    rows = {name: t[domain_id].detach() for name, t in model.state_dict().items() if is_domain_table(name)}
    return {name: row if row.is_meta else row.cpu().clone() for name, row in rows.items()}


def export_adapter(policy: Any, domain_id: int, out: str | Path, name: str | None = None, **extra: Any) -> Path:
    """Write ``domain_id``'s rows of ``policy`` and the robot's metadata to the safetensors file ``out``."""
    config = policy.config
    known = trained_domains(config)
    if domain_id not in known:
        raise ValueError(f"--domain {domain_id} was never trained in this checkpoint; its domains are {known}")
    data = config.to_dict()
    metadata = {
        "format": ADAPTER_FORMAT, "name": name or known[domain_id], "source_domain_id": domain_id,
        "backbone": backbone_fingerprint(policy.model), **{k: data[k] for k in IDENTITY_KEYS}, **extra,
    }  # fmt: skip
    tensors = domain_rows(policy.model, domain_id)
    out = Path(out)
    atomic_write(out, lambda tmp: save_file(tensors, str(tmp), metadata={"xvla": json.dumps(metadata)}))
    return out


def read_adapter(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"adapter file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = json.loads((f.metadata() or {}).get("xvla", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors' own error type for damaged files
        raise ValueError(f"{path} is not a readable adapter file ({type(exc).__name__}: {exc})") from exc
    if metadata.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{path} is not an xvla adapter (no '{ADAPTER_FORMAT}' metadata): write one with "
                         "`xvla adapter export`")  # fmt: skip
    return tensors, metadata


def free_slot(config: Any, taken: set[int]) -> int:
    """The smallest id no trained domain, loaded adapter or (for a 30-domain base) released domain uses."""
    used = set(trained_domains(config)) | taken
    if config.num_domains == 30:
        used |= set(RELEASED_DOMAINS)
    for d in range(config.num_domains):
        if d not in used:
            return d
    raise ValueError(f"no free domain slot: all {config.num_domains} ids are used; pass domain_id= to replace one")


def check_compatible(model: torch.nn.Module, config: Any, tensors: dict, metadata: dict, path: Any) -> None:
    """Refuse an adapter made for another backbone, another action space or with other table shapes."""
    if metadata.get("backbone") != backbone_fingerprint(model):
        raise ValueError(
            f"adapter {path} was trained on another backbone (fingerprint {metadata.get('backbone')}, this model: "
            f"{backbone_fingerprint(model)}): load it into the checkpoint it was exported from"
        )
    if str(metadata.get("action_mode")).lower() != str(config.action_mode).lower():
        raise ValueError(f"adapter {path} uses action_mode {metadata.get('action_mode')!r} but this model uses "
                         f"{config.action_mode!r}")  # fmt: skip
    state = model.state_dict()
    tables = {k for k in state if is_domain_table(k)}
    if set(tensors) != tables:
        raise ValueError(f"adapter {path} has tables {sorted(tensors)} but this model has {sorted(tables)}")
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(state[k].shape[1:])}" for k, v in tensors.items() if v.shape != state[k].shape[1:]]
    if bad:
        raise ValueError(f"adapter {path} does not fit this model's domain tables: {bad}")
