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

from .actions import build_action_space_for
from .domains import is_domain_table, trained_domains
from .model.int8_linear import Int8Linear
from .utils import atomic_write

ADAPTER_FORMAT = "xvla-adapter-1"
LORA_ADAPTER = "default"  # peft's adapter name inside a LoRA-injected model
IDENTITY_KEYS = (
    "action_mode",
    "real_action_dim",
    "max_action_dim",
    "image_keys",
    "image_size",
    "max_state_dim",
    "chunk_size",
    "tokenizer_max_length",
)


@dataclass
class AdapterInfo:
    """What ``policy.adapters`` lists for one loaded adapter."""

    name: str
    domain_id: int
    path: str
    metadata: dict[str, Any] = field(default_factory=dict)


def base_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights without LoRA: adapters dropped, ``.base_layer.`` names back to the plain ones."""
    state = model.state_dict()
    return {k.replace(".base_layer.", "."): v for k, v in state.items() if ".lora_" not in k}


def backbone_fingerprint(model: torch.nn.Module) -> str:
    """A hash of every weight that is not a domain row: names, shapes and a strided sample of the values
    (a sample keeps it fast on the 0.9B model; two different trainings differ in every tensor). LoRA
    layers count as their frozen base weights, so a LoRA run has the fingerprint of the model it started from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(base_state_dict(model).items()):
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
    rows = {
        name: t[domain_id].detach() for name, t in base_state_dict(model).items() if is_domain_table(name)
    }
    return {name: row if row.is_meta else row.cpu().clone() for name, row in rows.items()}


def lora_tensors(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A LoRA-injected model's adapter weights under peft's saved names
    (``base_model.model.<module>.lora_A.weight``) and its peft ``LoraConfig`` fields."""
    from peft.tuners.lora import LoraLayer

    tensors: dict[str, torch.Tensor] = {}
    targets, ranks, alphas = [], set(), set()
    for module_name, module in model.named_modules():
        if not isinstance(module, LoraLayer) or LORA_ADAPTER not in module.lora_A:
            continue
        targets.append(module_name)
        ranks.add(int(module.r[LORA_ADAPTER]))
        alphas.add(float(module.lora_alpha[LORA_ADAPTER]))
        for part in ("lora_A", "lora_B"):
            weight = getattr(module, part)[LORA_ADAPTER].weight
            tensors[f"base_model.model.{module_name}.{part}.weight"] = weight.detach().cpu().clone()
    if len(ranks) != 1 or len(alphas) != 1:
        raise ValueError(
            f"expected one LoRA rank and alpha over the model, found ranks {ranks} and alphas {alphas}"
        )
    config = {
        "peft_type": "LORA",
        "r": ranks.pop(),
        "lora_alpha": alphas.pop(),
        "target_modules": targets,
        "bias": "none",
    }
    return tensors, config


def export_adapter(
    policy: Any,
    domain_id: int,
    out: str | Path,
    name: str | None = None,
    lora_model: torch.nn.Module | None = None,
    **extra: Any,
) -> Path:
    """Write ``domain_id``'s rows of ``policy`` and the robot's metadata to the safetensors file ``out``.

    ``lora_model``: the LoRA-injected model of a ``lora`` run (``policy`` is then its merged checkpoint);
    its adapter weights go into the file under peft's names, and the fingerprint is its base model's.
    """
    config = policy.config
    known = trained_domains(config)
    if domain_id not in known:
        raise ValueError(
            f"--domain {domain_id} was never trained in this checkpoint; its domains are {known}"
        )
    data = config.to_dict()
    backbone = lora_model if lora_model is not None else policy.model
    metadata = {
        "format": ADAPTER_FORMAT,
        "name": name or known[domain_id],
        "source_domain_id": domain_id,
        "backbone": backbone_fingerprint(backbone),
        **{k: data[k] for k in IDENTITY_KEYS},
        **extra,
    }
    tensors = domain_rows(policy.model, domain_id)
    if lora_model is not None:
        lora, metadata["lora"] = lora_tensors(lora_model)
        tensors.update(lora)
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
        raise ValueError(
            f"{path} is not an xvla adapter (no '{ADAPTER_FORMAT}' metadata): write one with "
            "`xvla adapter export`"
        )
    return tensors, metadata


def split_lora(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(domain rows, LoRA weights under peft's names)."""
    lora = {k: v for k, v in tensors.items() if k.startswith("base_model.model.")}
    return {k: v for k, v in tensors.items() if k not in lora}, lora


def adapter_action_space(metadata: dict[str, Any]) -> Any:
    """The action space the adapter's robot was trained with."""
    try:
        return build_action_space_for(metadata)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"the adapter's action space cannot be built here: {exc}") from exc


def check_compatible(model: torch.nn.Module, tensors: dict, metadata: dict, path: Any) -> None:
    """Refuse an adapter made for another backbone, an action space of another model width, or other shapes."""
    if metadata.get("backbone") != backbone_fingerprint(model):
        raise ValueError(
            f"adapter {path} was trained on another backbone (fingerprint {metadata.get('backbone')}, this model: "
            f"{backbone_fingerprint(model)}): load it into the checkpoint it was exported from"
        )
    space = adapter_action_space(metadata)
    if int(space.dim_action) != int(model.dim_action):
        raise ValueError(
            f"adapter {path} predicts {space.dim_action}-wide model actions ({metadata.get('action_mode')}) "
            f"but this backbone's action heads are {model.dim_action} wide"
        )
    rows, _ = split_lora(tensors)
    state = model.state_dict()
    tables = {k for k in state if is_domain_table(k)}
    if set(rows) != tables:
        raise ValueError(f"adapter {path} has tables {sorted(rows)} but this model has {sorted(tables)}")
    bad = [
        f"{k}: {tuple(v.shape)} vs {tuple(state[k].shape[1:])}"
        for k, v in rows.items()
        if v.shape != state[k].shape[1:]
    ]
    if bad:
        raise ValueError(f"adapter {path} does not fit this model's domain tables: {bad}")


@torch.no_grad()
def merge_lora(
    model: torch.nn.Module, lora: dict[str, torch.Tensor], config: dict[str, Any], path: Any
) -> int:
    """Add a LoRA adapter's deltas (alpha / r * B @ A) into ``model``'s linear weights; returns the layer count."""
    modules = dict(model.named_modules())
    scale = float(config["lora_alpha"]) / float(config["r"])
    merged = 0
    for key, a in lora.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module_name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        b = lora.get(f"base_model.model.{module_name}.lora_B.weight")
        module = modules.get(module_name)
        if isinstance(module, Int8Linear):
            raise ValueError(
                f"adapter {path}: LoRA layer {module_name!r} is int8-quantized, and a LoRA merge needs full-precision "
                "weights: load the policy without quantize='int8' to use this adapter"
            )
        if (
            b is None
            or not isinstance(module, torch.nn.Linear)
            or module.weight.shape != (b.shape[0], a.shape[1])
        ):
            raise ValueError(f"adapter {path}: LoRA layer {module_name!r} does not fit this model")
        weight = module.weight
        weight.copy_((weight.float() + scale * (b.float() @ a.float())).to(weight.dtype))
        merged += 1
    return merged


def parse_adapter_specs(items: list[str] | None, flag: str = "--adapters") -> list[tuple[str, str]]:
    """``NAME=PATH`` entries (the serve and info flags) -> [(name, path)]."""
    out = []
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(
                f"{flag} entry {item!r} must look like NAME=PATH (a robot name and an adapter file)"
            )
        out.append((name.strip(), path.strip()))
    return out


def describe_adapter(path: str | Path) -> dict[str, Any]:
    """What ``xvla info ADAPTER.safetensors`` prints: the robot, its action space and what it was trained on."""
    tensors, metadata = read_adapter(path)
    rows, lora = split_lora(tensors)
    space = adapter_action_space(metadata)
    return {
        "path": str(path),
        "bytes": Path(path).stat().st_size,
        **metadata,
        "action_dim": int(space.real_dim),
        "model_action_dim": int(space.dim_action),
        "domain_rows": {k: list(v.shape) for k, v in rows.items()},
        "parameters": sum(v.numel() for v in tensors.values()),
        "lora_tensors": len(lora),
    }
