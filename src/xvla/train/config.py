"""Training configuration: one dataclass tree, named recipes, config files and dotted CLI overrides.

Precedence, lowest first: dataclass defaults < the recipe's values < the config file < command-line
flags. Every field can be set from a file (YAML or JSON, nested like the dataclasses) or from a
flag spelled like its path (``--optimizer.lr=3e-5``, ``--dataset.root=data/pick``).
``policy`` is special: ``policy.path`` names a checkpoint to start from and every other
``policy.<field>`` is an :class:`xvla.XVLAConfig` field (an override of the checkpoint's config, or
the architecture of a model trained from scratch).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import flags
from ..flags import convert, documented, from_dict, parse_bool, parse_literal  # noqa: F401 - re-exported
from ..utils import write_json

RECIPES = ("official", "lerobot", "prompt", "lora")
PARAM_GROUPS = ("vlm", "soft_prompts", "action_heads", "transformer_core")


@dataclass
class ColorJitterConfig:
    """Random brightness / contrast / saturation / hue changes, applied in a random order per sample."""

    enable: bool = documented(False, "jitter the training images' colours")
    brightness: float = documented(0.2, "brightness factor drawn from [1 - b, 1 + b]")
    contrast: float = documented(0.2, "contrast factor drawn from [1 - c, 1 + c]")
    saturation: float = documented(0.2, "saturation factor drawn from [1 - s, 1 + s]")
    hue: float = documented(0.0, "hue shift drawn from [-h, h] (at most 0.5)")


@dataclass
class DatasetConfig:
    """One LeRobot dataset: where it is, its weight and domain, and how its keys map to the model's."""

    root: str | None = documented(None, "local dataset folder (takes precedence over repo_id)")
    repo_id: str | None = documented(None, "Hugging Face dataset id, fetched when root is not given")
    revision: str | None = documented(None, "Hub revision (branch, tag or commit) of repo_id")
    weight: float = documented(1.0, "relative sampling weight inside a mixture")
    domain_id: int | None = documented(
        None, "domain id (soft prompt) this dataset trains (default: the policy's)"
    )
    keys: dict[str, str] = documented(
        help="model key=dataset key pairs, e.g. observation.images.image=observation.images.front; keys not "
        "listed map to themselves",
        default_factory=dict,
    )
    episodes: list[int] | None = documented(None, "episode indices to use (default: all)")
    task: str | None = documented(None, "instruction that replaces every frame's own")
    action_horizon_s: float | None = documented(None, "overrides mixture.action_horizon_s for this dataset")
    name: str | None = documented(None, "label in logs and checkpoints (default: the folder name)")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return Path(self.root).name if self.root else str(self.repo_id)


@dataclass
class MixtureConfig:
    """Several datasets sampled by weight; settings here apply to every dataset (and to ``dataset``)."""

    datasets: list[DatasetConfig] = documented(
        help="several datasets, each with dataset's fields (JSON list here, or a config file)",
        default_factory=list,
    )
    action_horizon_s: float | None = documented(
        None,
        "resample each action chunk to chunk_size points over this many seconds (linear interpolation); "
        "default: chunk_size consecutive frames",
    )
    color_jitter: ColorJitterConfig = field(default_factory=ColorJitterConfig)
    # Frames decoded once instead of once per sample: takes video decoding off a small model's step.
    cache_frames: bool = documented(False, "keep decoded video frames in RAM (uint8, per loader process)")
    skip_bad_episodes: bool = documented(
        False,
        "decode every video frame once before training and leave out the episodes that fail (the log "
        "says which and how many); without it a corrupt frame stops the run and names episode, frame and file",
    )


@dataclass
class OptimizerConfig:
    """AdamW over the four named parameter groups; each group's LR = lr x its scale x the schedule."""

    lr: float = documented(1e-4, "peak learning rate (each group's is lr x its scale)")
    betas: tuple[float, float] = documented((0.9, 0.95), "AdamW betas")
    eps: float = documented(1e-8, "AdamW epsilon")
    weight_decay: float = documented(0.0, "AdamW weight decay")
    grad_clip_norm: float = documented(
        1.0, "clip the gradient norm to this (<= 0: no clipping; the norm is logged)"
    )
    vlm_lr_scale: float = documented(0.1, "LR scale of the VLM (Florence-2 vision tower and text encoder)")
    soft_prompt_lr_scale: float = documented(0.1, "LR scale of the soft prompts")
    action_heads_lr_scale: float = documented(1.0, "LR scale of the domain-aware action heads")
    transformer_core_lr_scale: float = documented(1.0, "LR scale of the action transformer's blocks")

    def scale(self, group: str) -> float:
        return {
            "vlm": self.vlm_lr_scale,
            "soft_prompts": self.soft_prompt_lr_scale,
            "action_heads": self.action_heads_lr_scale,
            "transformer_core": self.transformer_core_lr_scale,
        }[group]


@dataclass
class SchedulerConfig:
    """Per-group LR multiplier: 0 while frozen, linear warm-up, then cosine (or constant) to min_lr_ratio."""

    type: str = documented("cosine", "cosine or constant after the warm-up")
    warmup_steps: int = documented(1000, "linear warm-up steps")
    soft_prompt_warmup_steps: int | None = documented(
        None, "the soft prompts' own warm-up (default: warmup_steps)"
    )
    freeze_steps: int = documented(
        0,
        "for this many first steps only the soft prompts and action heads train; the other groups then warm "
        "up over warmup_steps",
    )
    decay_steps: int | None = documented(
        None, "the cosine reaches min_lr_ratio at this step (default: --steps)"
    )
    min_lr_ratio: float = documented(0.1, "final LR as a fraction of the peak")
    auto_scale: bool = documented(
        False,
        "lerobot-train's rule: if --steps < decay_steps, shrink warm-up and decay by steps / decay_steps",
    )


@dataclass
class LoraConfig:
    """peft LoRA adapters on every nn.Linear of the model (the VLM and the action transformer)."""

    enable: bool = documented(False, "train LoRA adapters (merged into the weights when saved)")
    r: int = documented(8, "LoRA rank")
    alpha: float = documented(16.0, "LoRA alpha (the update is scaled by alpha / r)")
    dropout: float = documented(0.0, "dropout on the LoRA path")
    exclude: list[str] = documented(
        help="substrings of module names to leave without adapters", default_factory=list
    )


@dataclass
class NewDomainConfig:
    """Phase II: give the new robot its own domain id (fresh soft prompt and domain heads)."""

    id: int | str | None = documented(
        None, "the new robot's domain id, or 'auto' (the first free id); default: keep the policy's"
    )
    init_from: int | None = documented(
        None, "copy prompt + heads from this existing domain instead of fresh ones"
    )


@dataclass
class TrainConfig:
    recipe: str = documented("official", "named settings to start from: " + ", ".join(RECIPES))
    policy: dict[str, Any] = field(default_factory=dict)  # {"path": ..., <XVLAConfig field>: value}
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    new_domain: NewDomainConfig = field(default_factory=NewDomainConfig)
    train_domain_rows_only: bool = documented(
        False,
        "only the trained domains' rows of the soft prompts and domain heads change; every other "
        "domain's rows stay bit-identical",
    )
    trainable: str = documented(
        "config",
        "which parameters train: config (the policy's freeze switches), domain (soft prompts + "
        "domain-aware layers) or lora (adapters + soft prompts + action heads)",
    )

    steps: int = documented(10_000, "optimizer steps")
    batch_size: int = documented(8, "samples per process per micro-step")
    grad_accum_steps: int = documented(1, "micro-steps per optimizer step")
    num_workers: int | None = documented(
        None, "data loader processes (default: one per spare CPU core, at most 4)"
    )
    prefetch_factor: int = documented(2, "batches each loader process prepares ahead")
    seed: int = documented(1000, "seed of the sampling, the noise, dropout and new weights")
    output_dir: str | None = documented(
        None, "run folder: checkpoints, metrics, plots (default: outputs/train/<date>_<time>_<recipe>)"
    )
    resume: bool = documented(False, "continue from the last checkpoint in output_dir")
    save_freq: int = documented(1000, "steps between checkpoints")
    keep_last: int = documented(3, "checkpoints kept on disk (0: keep all)")
    save_final: bool = documented(True, "save a checkpoint after the last step")
    log_freq: int = documented(10, "steps between logged metrics")
    mixed_precision: str = documented(
        "auto", "auto (bf16 when policy.dtype is bfloat16 or on a bf16 GPU), no or bf16"
    )
    gradient_checkpointing: bool = documented(False, "recompute activations in the backward to save memory")
    compile: bool = documented(
        False, "compile the vision tower, text encoder and action head (docs/training.md)"
    )
    device: str = documented("auto", "auto, cpu or cuda")
    fsdp: bool = documented(False, "shard parameters, gradients and optimizer state (FSDP2) instead of DDP")
    tokenizer: str | None = documented(
        None, "tokenizer folder or Hub id (default: the checkpoint's, else policy.tokenizer_name)"
    )
    plot: bool = documented(True, "plot the logged metrics (loss, LR) into a PNG in output_dir")
    tensorboard: bool = documented(True, "write TensorBoard logs (when tensorboard is installed)")
    dry_run: bool = documented(
        False, "build everything, print parameter counts and the LR schedule; do not train"
    )
    diagnostics: bool = documented(
        False, "write per-rank sample ids and parameter checksums (tests, debugging)"
    )

    # ------------------------------------------------------------------ helpers
    def datasets(self) -> list[DatasetConfig]:
        if self.mixture.datasets:
            return list(self.mixture.datasets)
        return [self.dataset]

    def validate(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe={self.recipe!r} is unknown: choose one of {list(RECIPES)}")
        if self.trainable not in ("config", "domain", "lora"):
            raise ValueError(f"trainable={self.trainable!r} is invalid: use 'config', 'domain' or 'lora'")
        for name in ("steps", "batch_size", "grad_accum_steps", "save_freq", "log_freq"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid: it must be an integer >= 1")
        if self.num_workers is None:
            self.num_workers = default_num_workers()
        for name in ("num_workers", "keep_last"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} is invalid: it must be an integer >= 0")
        if self.mixed_precision not in ("auto", "no", "bf16"):
            raise ValueError(
                f"mixed_precision={self.mixed_precision!r} is invalid: use 'auto', 'no' or 'bf16'"
            )
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device={self.device!r} is invalid: use 'auto', 'cpu' or 'cuda'")
        if self.scheduler.type not in ("cosine", "constant"):
            raise ValueError(f"scheduler.type={self.scheduler.type!r} is invalid: use 'cosine' or 'constant'")
        for name in ("warmup_steps", "freeze_steps"):
            if getattr(self.scheduler, name) < 0:
                raise ValueError(f"scheduler.{name} must be >= 0")
        if not 0.0 <= self.scheduler.min_lr_ratio <= 1.0:
            raise ValueError(f"scheduler.min_lr_ratio={self.scheduler.min_lr_ratio} must be in [0, 1]")
        if self.mixture.datasets and (self.dataset.root or self.dataset.repo_id):
            raise ValueError(
                "both dataset.* and mixture.datasets are set: put the single dataset into mixture.datasets, "
                "or drop the mixture"
            )
        for i, ds in enumerate(self.datasets()):
            where = f"mixture.datasets[{i}]" if self.mixture.datasets else "dataset"
            if not ds.root and not ds.repo_id:
                raise ValueError(f"{where}: give a local folder (root) or a Hugging Face id (repo_id)")
            if not ds.weight > 0:
                raise ValueError(f"{where}.weight={ds.weight} is invalid: weights must be > 0")
            if not isinstance(ds.keys, dict):
                raise ValueError(f"{where}.keys must map model keys to dataset keys, got {ds.keys!r}")
        if isinstance(self.new_domain.id, str) and self.new_domain.id not in ("auto",):
            raise ValueError(
                f"new_domain.id={self.new_domain.id!r} is invalid: use 'auto', an integer, or none"
            )
        if self.lora.enable and self.fsdp:
            raise ValueError(
                "lora.enable with fsdp is not supported: LoRA trains ~1% of the weights, use DDP"
            )
        if self.train_domain_rows_only and self.fsdp:
            raise ValueError("train_domain_rows_only with fsdp is not supported: use DDP (the default)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:

        write_json(path, self.to_dict())


# ---------------------------------------------------------------------------------------------- recipes
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    # SPEC section 5, the official Phase II fine-tuning recipe.
    "official": {
        "optimizer": dict(lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, grad_clip_norm=1.0,
                          vlm_lr_scale=0.1, soft_prompt_lr_scale=0.1),
        "scheduler": dict(type="cosine", warmup_steps=1000, soft_prompt_warmup_steps=1000, freeze_steps=1000,
                          min_lr_ratio=0.1, decay_steps=None, auto_scale=False),
        "trainable": "config",
    },
    # LeRobot's xvla defaults (SPEC section 5), VLM at 0.1x as LeRobot's X-VLA optimizer does.
    "lerobot": {
        "optimizer": dict(lr=1e-4, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0, grad_clip_norm=10.0,
                          vlm_lr_scale=0.1, soft_prompt_lr_scale=1.0),
        "scheduler": dict(type="cosine", warmup_steps=1000, soft_prompt_warmup_steps=None, freeze_steps=0,
                          min_lr_ratio=2.5e-6 / 1e-4, decay_steps=30_000, auto_scale=True),
        "trainable": "config",
    },
    # Phase II, prompt only: a new domain's soft prompt and domain-aware heads; nothing else moves.
    "prompt": {
        "optimizer": dict(lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, grad_clip_norm=1.0,
                          vlm_lr_scale=0.1, soft_prompt_lr_scale=1.0),
        "scheduler": dict(type="cosine", warmup_steps=200, soft_prompt_warmup_steps=None, freeze_steps=0,
                          min_lr_ratio=0.1, decay_steps=None, auto_scale=False),
        "trainable": "domain",
        "train_domain_rows_only": True,
        "new_domain": dict(id="auto"),
    },
    # The paper's parameter-efficient variant: LoRA r=8 on all linear layers + soft prompts + heads.
    "lora": {
        "optimizer": dict(lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, grad_clip_norm=1.0,
                          vlm_lr_scale=1.0, soft_prompt_lr_scale=1.0),
        "scheduler": dict(type="cosine", warmup_steps=500, soft_prompt_warmup_steps=None, freeze_steps=0,
                          min_lr_ratio=0.1, decay_steps=None, auto_scale=False),
        "trainable": "lora",
        "lora": dict(enable=True, r=8, alpha=16.0, dropout=0.0),
        "train_domain_rows_only": True,
    },
}  # fmt: skip


def default_num_workers() -> int:
    """One loader process per CPU core left to this process beyond the training one, at most 4 (more
    than the cores makes PyTorch warn and only adds contention)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cores - 1))


# ---------------------------------------------------------------------------------------------- building
def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("keys",):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config file not found: {path}")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    elif path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"config file {path} must end in .yaml, .yml or .json")
    if not isinstance(data, dict):
        raise ValueError(
            f"config file {path} must hold a mapping at the top level, got {type(data).__name__}"
        )
    return nest_dotted(data)


def nest_dotted(flat: dict[str, Any]) -> dict[str, Any]:
    """{"optimizer.lr": 1e-4} -> {"optimizer": {"lr": 1e-4}} (nested dicts pass through)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = str(key).split(".")
        # policy fields may contain no dots, so "policy.x" always nests one level
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"config key {key!r} conflicts with a non-mapping value")
        leaf = parts[-1]
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = deep_merge(node[leaf], nest_dotted(value) if leaf != "keys" else value)
        elif isinstance(value, dict) and leaf != "keys":
            node[leaf] = nest_dotted(value)
        else:
            node[leaf] = value
    return out


def build_train_config(
    file_values: dict[str, Any] | None = None, cli_values: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults < recipe < file < CLI, then typed and validated."""
    file_values = nest_dotted(file_values or {})
    cli_values = nest_dotted(cli_values or {})
    recipe = cli_values.get("recipe", file_values.get("recipe", TrainConfig.recipe))
    if recipe not in RECIPES:
        raise ValueError(f"recipe={recipe!r} is unknown: choose one of {list(RECIPES)}")
    merged = deep_merge(RECIPE_DEFAULTS[recipe], file_values)
    merged = deep_merge(merged, cli_values)
    merged["recipe"] = recipe
    cfg = from_dict(TrainConfig, merged)
    cfg.validate()
    return cfg


def flat_fields(cls=None, prefix: str = "") -> dict[str, Any]:
    """Dotted option name -> annotated type for every leaf field of ``TrainConfig`` (used by the CLI)."""
    return flags.flat_fields(cls or TrainConfig, prefix)
