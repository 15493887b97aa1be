"""XVLAConfig: every knob of the policy in one dataclass, validated with messages that say what to fix.

Field names follow LeRobot's ``xvla`` policy config, so a LeRobot ``config.json`` maps one to one.
``florence_config`` is stored in the native ``transformers`` Florence-2 form
(``{"vision_config": {...}, "text_config": {...}}``); the Microsoft remote-code form used by the
official and older LeRobot releases is converted on load (see :mod:`xvla.checkpoints`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .domains import check_domain_ids
from .flags import documented

logger = logging.getLogger(__name__)

# Padding camera slots (``empty_cameras``): they carry no image and a False mask.
EMPTY_CAMERA_PREFIX = "observation.images.empty_camera_"
# The action modes xvla.actions registers: a config naming one is checked without importing torch.
BUILTIN_ACTION_MODES = ("agibot_ee6d", "auto", "ee6d", "franka_joint7", "joint", "so101_bimanual")

DTYPES = ("float32", "bfloat16")


def florence2_large_config() -> dict[str, Any]:
    """The Florence-2-large encoder used by the released 0.9B X-VLA checkpoints (native form)."""
    return {
        "vision_config": {
            "embed_dim": [256, 512, 1024, 2048],
            "num_heads": [8, 16, 32, 64],
            "num_groups": [8, 16, 32, 64],
            "depths": [1, 1, 9, 1],
            "patch_size": [7, 3, 3, 3],
            "patch_stride": [4, 2, 2, 2],
            "patch_padding": [3, 1, 1, 1],
            "patch_prenorm": [False, True, True, True],
            "window_size": 12,
            "projection_dim": 1024,
            "max_position_embeddings": 50,
            "max_temporal_embeddings": 100,
            "drop_path_rate": 0.1,
        },
        "text_config": {
            "vocab_size": 51289,
            "d_model": 1024,
            "encoder_layers": 12,
            "decoder_layers": 12,
            "encoder_attention_heads": 16,
            "decoder_attention_heads": 16,
            "encoder_ffn_dim": 4096,
            "decoder_ffn_dim": 4096,
            "max_position_embeddings": 4096,
            "activation_function": "gelu",
            "dropout": 0.1,
            "attention_dropout": 0.1,
            "activation_dropout": 0.1,
            "scale_embedding": False,
            "pad_token_id": 1,
            "bos_token_id": 0,
            "eos_token_id": 2,
        },
    }


def tiny_florence_config(
    width: int = 32, vocab_size: int = 1024, max_positions: int = 256, stages: int = 2
) -> dict[str, Any]:
    """A small Florence-2 for tests and CPU demos (trained from scratch).

    ``stages=2`` downsamples images 8x (64x64 -> 8x8 tokens); ``stages=4`` downsamples 32x like
    Florence-2-large (224x224 -> 7x7 tokens + 1 pooled).
    """
    if stages not in (2, 3, 4):
        raise ValueError(f"stages={stages} is invalid: use 2, 3 or 4")
    dims = {2: [16, width], 3: [16, 32, width], 4: [16, 32, 64, width]}[stages]
    heads = [max(1, d // 8) for d in dims]
    return {
        "vision_config": {
            "embed_dim": dims,
            "num_heads": heads,
            "num_groups": heads,
            "depths": [1] * stages,
            "patch_size": [7] + [3] * (stages - 1),
            "patch_stride": [4] + [2] * (stages - 1),
            "patch_padding": [3] + [1] * (stages - 1),
            "patch_prenorm": [False] + [True] * (stages - 1),
            "window_size": 4,
            "projection_dim": width,
            "max_position_embeddings": 32,
            "max_temporal_embeddings": 16,
            "drop_path_rate": 0.0,
        },
        "text_config": {
            "vocab_size": vocab_size,
            "d_model": width,
            "encoder_layers": 1,
            "decoder_layers": 1,
            "encoder_attention_heads": 2,
            "decoder_attention_heads": 2,
            "encoder_ffn_dim": 2 * width,
            "decoder_ffn_dim": 2 * width,
            "max_position_embeddings": max_positions,
            "dropout": 0.0,
            "attention_dropout": 0.0,
            "activation_dropout": 0.0,
            "scale_embedding": False,
            "pad_token_id": 1,
            "bos_token_id": 0,
            "eos_token_id": 2,
        },
    }


def _is_registered(mode: str) -> bool:
    if mode in BUILTIN_ACTION_MODES:
        return True
    from .actions import ACTION_REGISTRY  # user-registered modes: xvla.actions is imported already

    return mode in ACTION_REGISTRY


def _require_positive(config: Any, name: str) -> None:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}={value!r} is invalid: it must be a positive integer (>= 1)")


def _require_non_negative(config: Any, name: str) -> None:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name}={value!r} is invalid: it must be an integer >= 0")


@dataclass
class XVLAConfig:
    # Input / output structure
    n_obs_steps: int = documented(1, "observation steps per sample (the policy uses the latest)")
    chunk_size: int = documented(32, "actions per predicted chunk")
    n_action_steps: int = documented(32, "actions of a chunk executed before the next is predicted")

    # Soft-prompted transformer
    hidden_size: int = documented(1024, "width of the soft-prompted transformer")
    depth: int = documented(24, "transformer blocks")
    num_heads: int = documented(16, "attention heads")
    mlp_ratio: float = documented(4.0, "MLP width as a multiple of hidden_size")
    num_domains: int = documented(
        30, "rows of the domain tables (soft prompts, domain-aware heads): robots it can hold"
    )
    len_soft_prompts: int = documented(32, "soft-prompt tokens per domain")
    dim_time: int = documented(32, "width of the flow-matching time embedding")
    max_len_seq: int = documented(512, "longest token sequence (learned position embeddings)")
    use_hetero_proj: bool = documented(False, "domain-aware projections of the vision-language features")

    # Actions and proprioception
    action_mode: str = documented(
        "ee6d", "action space: ee6d, joint, agibot_ee6d, franka_joint7, so101_bimanual or auto"
    )
    use_proprio: bool = documented(True, "feed the robot state to the action tokens")
    max_state_dim: int = documented(32, "state width the model takes (shorter states are zero-padded)")
    max_action_dim: int = documented(20, "action width the model predicts")
    real_action_dim: int | None = documented(
        None, "robot action width for padded modes (auto); default: the model width"
    )
    auto_loss_weight: float = documented(
        1.0, "MSE weight of the auto action space (LeRobot 1.0, the official code 100.0)"
    )
    num_denoising_steps: int = documented(10, "flow-matching integration steps per chunk")

    # Cameras and images
    num_image_views: int | None = documented(None, "camera slots (default: the cameras + empty_cameras)")
    empty_cameras: int = documented(0, "extra camera slots filled with zeros and masked out")
    image_keys: list[str] | None = documented(
        None, "camera order, e.g. observation.images.front,observation.images.wrist"
    )
    image_size: tuple[int, int] | None = documented(None, "raw frames are resized (bicubic) to this H,W")
    resize_imgs_with_padding: tuple[int, int] | None = documented(
        None, "resize to H,W keeping the aspect ratio, zero-padded (LeRobot's option)"
    )

    # Language
    tokenizer_name: str = documented("facebook/bart-large", "tokenizer folder or Hub id")
    tokenizer_max_length: int = documented(64, "instruction tokens (padded or truncated)")

    # Florence-2 encoder (native transformers form)
    florence_config: dict[str, Any] = documented(
        help="Florence-2 settings (vision_config, text_config), as JSON",
        default_factory=florence2_large_config,
    )

    # Numerics and embodiment
    dtype: str = documented("float32", "float32 or bfloat16")
    domain_id: int = documented(0, "the checkpoint's default domain: eval, eval-offline and serve use it")
    domains: dict[int, str] | None = documented(None, "trained domains, id=name pairs (robot / dataset)")

    # Training switches
    freeze_vision_encoder: bool = documented(False, "keep the vision tower's weights fixed")
    freeze_language_encoder: bool = documented(False, "keep the language encoder's weights fixed")
    train_policy_transformer: bool = documented(
        True, "train the transformer and action heads (all but the soft prompts)"
    )
    train_soft_prompts: bool = documented(True, "train the soft prompts")

    def __post_init__(self) -> None:
        if isinstance(self.image_size, list):
            self.image_size = tuple(self.image_size)
        if isinstance(self.resize_imgs_with_padding, list):
            self.resize_imgs_with_padding = tuple(self.resize_imgs_with_padding)
        if self.domains is not None:
            self.domains = {int(k): str(v) for k, v in dict(self.domains).items()}
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Refuse an inconsistent config: each error names the field, its value and the fix."""
        self._validate_sizes()
        self._validate_modes()
        if not isinstance(self.domain_id, int) or isinstance(self.domain_id, bool):
            raise ValueError(f"domain_id={self.domain_id!r} is invalid: it must be an integer")
        check_domain_ids(self.domain_id, self.num_domains)
        self._validate_optional_widths()
        if self.domains:
            check_domain_ids(list(self.domains), self.num_domains, "domains: id")
        self._validate_image_sizes()
        self._validate_florence()

    def _validate_sizes(self) -> None:
        for name in (
            "n_obs_steps",
            "chunk_size",
            "n_action_steps",
            "hidden_size",
            "depth",
            "num_heads",
            "num_domains",
            "dim_time",
            "max_len_seq",
            "max_action_dim",
            "num_denoising_steps",
            "tokenizer_max_length",
        ):
            _require_positive(self, name)
        for name in ("len_soft_prompts", "max_state_dim", "empty_cameras"):
            _require_non_negative(self, name)
        if self.n_action_steps > self.chunk_size:
            raise ValueError(
                f"n_action_steps={self.n_action_steps} is invalid: it must be in [1, chunk_size={self.chunk_size}]"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is invalid: it must be divisible by num_heads={self.num_heads}"
            )
        if self.dim_time % 2:
            raise ValueError(f"dim_time={self.dim_time} is invalid: it must be even (cos and sin halves)")
        if not (isinstance(self.mlp_ratio, (int, float)) and self.mlp_ratio > 0):
            raise ValueError(f"mlp_ratio={self.mlp_ratio!r} is invalid: it must be a number > 0")

    def _validate_modes(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is invalid: allowed values are {list(DTYPES)}")
        if not _is_registered(str(self.action_mode).lower()):
            from .actions import registered_action_modes

            raise ValueError(
                f"action_mode={self.action_mode!r} is not registered. Registered action modes: "
                f"{registered_action_modes()}. Register your own with @register_action('name') before "
                "building the config."
            )

    def _validate_optional_widths(self) -> None:
        """``num_image_views`` and ``real_action_dim``, when set, against the cameras and the action width."""
        if self.num_image_views is not None:
            _require_positive(self, "num_image_views")
            if (
                self.image_keys is not None
                and self.num_image_views < len(self.image_keys) + self.empty_cameras
            ):
                raise ValueError(
                    f"num_image_views={self.num_image_views} is too small for {len(self.image_keys)} cameras "
                    f"+ empty_cameras={self.empty_cameras}; set it to at least "
                    f"{len(self.image_keys) + self.empty_cameras} or leave it None"
                )
        if self.real_action_dim is not None:
            _require_positive(self, "real_action_dim")
            if str(self.action_mode).lower() == "auto" and self.real_action_dim > self.max_action_dim:
                raise ValueError(
                    f"real_action_dim={self.real_action_dim} is invalid: action_mode 'auto' pads the action to "
                    f"max_action_dim={self.max_action_dim}; set max_action_dim >= {self.real_action_dim}"
                )

    def _validate_image_sizes(self) -> None:
        for name in ("image_size", "resize_imgs_with_padding"):
            value = getattr(self, name)
            if value is not None and (
                len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
            ):
                raise ValueError(
                    f"{name}={value!r} is invalid: it must be None or (height, width) positive ints"
                )

    def _validate_florence(self) -> None:
        fc = self.florence_config
        if not isinstance(fc, dict) or "vision_config" not in fc or "text_config" not in fc:
            raise ValueError(
                "florence_config is invalid: it must be a dict with 'vision_config' and 'text_config' "
                "(e.g. xvla.config.florence2_large_config())"
            )
        vision, text = fc["vision_config"], fc["text_config"]
        stages = len(vision.get("embed_dim", []))
        for key in (
            "num_heads",
            "num_groups",
            "depths",
            "patch_size",
            "patch_stride",
            "patch_padding",
            "patch_prenorm",
        ):
            if key in vision and len(vision[key]) != stages:
                raise ValueError(
                    f"florence_config.vision_config.{key} has {len(vision[key])} entries but embed_dim has "
                    f"{stages} stages; give one entry per stage"
                )
        proj = vision.get("projection_dim", 1024)
        d_model = text.get("d_model", 1024)
        if proj != d_model:
            raise ValueError(
                f"florence_config is inconsistent: vision projection_dim={proj} must equal text d_model={d_model} "
                "(image tokens are fed to the text encoder)"
            )

    # ------------------------------------------------------------------ derived values
    @property
    def projection_dim(self) -> int:
        return int(self.florence_config["vision_config"].get("projection_dim", 1024))

    @property
    def proprio_dim(self) -> int:
        return self.max_state_dim if self.use_proprio else 0

    @property
    def total_image_views(self) -> int:
        known = len(self.image_keys) if self.image_keys else 1
        return max(self.num_image_views or 0, known + self.empty_cameras)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("image_size", "resize_imgs_with_padding"):
            if out[key] is not None:
                out[key] = list(out[key])
        if out["domains"] is not None:
            out["domains"] = {str(k): v for k, v in sorted(self.domains.items())}
        return {"type": "xvla", "format": "xvla", **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> XVLAConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: copy.deepcopy(v) for k, v in data.items() if k in names}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(f"unknown XVLAConfig field(s) {sorted(unknown)}; valid fields: {sorted(names)}")
        kwargs.update(overrides)
        return cls(**kwargs)

    def replace(self, **changes: Any) -> XVLAConfig:
        return self.from_dict(self.to_dict(), **changes)

    def save(self, path: str | Path) -> None:
        from .utils import write_json

        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> XVLAConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


DEFAULT_IMAGE_SIZE = (224, 224)  # Florence-2's training size; used only when a checkpoint declares none


def settle_image_size(config: XVLAConfig, warn: bool = True) -> tuple[int, int]:
    """The (height, width) every camera frame reaches the model at.

    ``image_size`` when the checkpoint declares it (official checkpoints: ``preprocessor_config.json``;
    LeRobot: the ``input_features`` image shape; ours: the saved field); else the target of
    ``resize_imgs_with_padding``; else 224x224 with a warning, because a silent guess would feed a
    model frames of a size it never saw.
    """
    if config.image_size is not None:
        return tuple(config.image_size)
    if config.resize_imgs_with_padding is not None:
        return tuple(config.resize_imgs_with_padding)
    if warn:
        logger.warning(
            "this checkpoint declares no image size (image_size, resize_imgs_with_padding or input_features): "
            "frames are resized to %dx%d, the size Florence-2 was trained at. Set image_size in its config.json "
            "(or pass image_size=(H, W) to from_pretrained) to the size it was trained at.",
            *DEFAULT_IMAGE_SIZE,
        )
    return DEFAULT_IMAGE_SIZE
