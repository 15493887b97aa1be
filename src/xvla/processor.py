"""ObservationProcessor: the one path from raw observations to the model's input tensors.

The policy owns one processor (``policy.processor``). Every caller goes through it: the Python API
(``predict_action_chunk`` / ``select_action``), the server (one observation per request, then the
requests are concatenated), the training collation, simulator rollouts and ``xvla eval-offline``.
So the same frames, state, instruction and domain give the same model inputs wherever they come
from. A caller may rename keys or decode transport formats around it, never re-implement a step.

Named steps (each a method, in this order):

    cameras  : one slot per model camera (+ ``empty_cameras``); frames of any size, HxWx3 uint8 or
               CHW float in [0, 1], resized to ``image_size`` and ImageNet-normalised; a missing
               camera (``None``, or ``image_mask`` False) is a zero slot whose mask is False
    state    : ``observation.state`` zero-padded to ``max_state_dim``
    language : ``task`` tokenized (or pre-tokenized ``observation.language.tokens``)
    domain   : one domain id per sample, range-checked
    actions  : (training) the target chunk, zero-padded to the model's width and chunk length

The image size is settled once, when the processor is built (see :func:`xvla.config.settle_image_size`).
The frame steps live in :mod:`xvla.images` and the tokenizer in :mod:`xvla.tokenizer`; the batch keys,
the state and domain-id steps and the key map (``--key-map``) are at the end of this module.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .actions import build_action_space_for
from .config import EMPTY_CAMERA_PREFIX, XVLAConfig, settle_image_size
from .domains import check_domain_ids
from .images import prepare_image, stack_cameras
from .tokenizer import check_tokenizer_fits, load_tokenizer, tokenize

IMAGE_PREFIX = "observation.images."
STATE_KEY = "observation.state"
TOKENS_KEY = "observation.language.tokens"
MODEL_INPUTS = ("input_ids", "image_input", "image_mask", "domain_id", "proprio")
CAMERA_MASK_KEY = "image_mask"  # optional [B, cameras] bool in a batch: False = that camera is missing


class ObservationProcessor:
    """Raw observations (LeRobot keys) -> ``{input_ids, image_input, image_mask, domain_id, proprio}``."""

    def __init__(self, config: XVLAConfig, tokenizer: Any | None = None, tokenizer_dir: Any | None = None):
        self.config = config
        self.image_size = settle_image_size(config)
        self._tokenizer = None
        self.tokenizer = tokenizer
        self.tokenizer_dir = tokenizer_dir  # checkpoint folder whose tokenizer files win over the name
        self._lock = threading.Lock()  # fast tokenizers must not be called from several threads at once

    def __getstate__(self) -> dict[str, Any]:  # picklable for DataLoader workers
        state = dict(self.__dict__)
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ tokenizer
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.config.tokenizer_name, local_dir=self.tokenizer_dir)
            check_tokenizer_fits(self._tokenizer, self.text_vocab_size, self.config.tokenizer_name)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        if value is not None:
            check_tokenizer_fits(value, self.text_vocab_size)
        self._tokenizer = value

    @property
    def loaded_tokenizer(self):
        """The tokenizer if it is loaded already, else None (loading is lazy: offline users may send tokens)."""
        return self._tokenizer

    @property
    def text_vocab_size(self) -> int:
        return int(self.config.florence_config["text_config"].get("vocab_size", 51289))

    # ------------------------------------------------------------------ the pipeline
    def __call__(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """A batch (or one unbatched observation) -> model inputs with a leading batch dimension."""
        image_input, image_mask = self.cameras(batch)
        size = image_input.shape[0]
        return {
            "input_ids": self.language(batch, size),
            "image_input": image_input,
            "image_mask": image_mask,
            "domain_id": self.domain(batch, size),
            "proprio": self.state(batch, size),
        }

    def collate(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """One observation each (frames of any size, states of any width) -> one batch of model inputs.

        With ``action`` in the samples (training), the batch also holds the padded ``action`` targets.
        """
        if not samples:
            raise ValueError("collate needs at least one observation")
        parts = [self(sample) for sample in samples]
        out = {name: torch.cat([p[name] for p in parts]) for name in MODEL_INPUTS}
        if "action" in samples[0]:
            out["action"] = torch.cat([self.actions(s["action"]) for s in samples])
        return out

    # ------------------------------------------------------------------ steps
    def camera_keys(self, batch: Mapping[str, Any]) -> list[str]:
        """The model's cameras in slot order: ``image_keys`` when the checkpoint names them, else sorted."""
        if self.config.image_keys:
            missing = [k for k in self.config.image_keys if k not in batch]
            if missing:
                present = sorted(k for k in batch if k.startswith(IMAGE_PREFIX))
                raise KeyError(
                    f"missing camera keys {missing}: this policy expects {self.config.image_keys} and the batch has "
                    f"{present}. Rename your cameras to match (--key-map), or pass None for a camera that is absent."
                )
            return list(self.config.image_keys)
        keys = sorted(
            k for k in batch if k.startswith(IMAGE_PREFIX) and not k.startswith(EMPTY_CAMERA_PREFIX)
        )
        if not keys:
            raise KeyError(
                "the batch has no camera image: add at least one 'observation.images.<camera>' entry "
                f"(batch keys: {sorted(batch)})"
            )
        return keys

    def cameras(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, V, 3, H, W] normalised frames and the [B, V] mask (False = empty or missing camera)."""
        cfg = self.config
        keys = self.camera_keys(batch)
        frames = {k: self._frame(batch[k], k) for k in keys if batch[k] is not None}
        if keys[0] not in frames:
            raise ValueError(f"camera '{keys[0]}' is None: the main camera (view 0) is required")
        reference = frames[keys[0]]
        size = reference.shape[0]
        for key, frame in frames.items():
            if frame.shape[0] != size:
                raise ValueError(f"camera '{key}' has batch size {frame.shape[0]}, expected {size}")
        views = [frames.get(k, torch.zeros_like(reference)) for k in keys]
        total = max(cfg.total_image_views, len(views) + cfg.empty_cameras)
        image_input, mask = stack_cameras(views, total)
        mask[:, : len(keys)] &= torch.tensor([k in frames for k in keys], device=mask.device)
        given = batch.get(CAMERA_MASK_KEY)
        if given is not None:
            given = torch.as_tensor(given, device=mask.device).bool().reshape(size, -1)
            mask[:, : given.shape[1]] &= given
        return image_input, mask

    def _frame(self, image: Any, key: str) -> torch.Tensor:
        padding = self.config.resize_imgs_with_padding
        return prepare_image(image, key, self.image_size, padding)

    def state(self, batch: Mapping[str, Any], size: int) -> torch.Tensor:
        cfg = self.config
        if not cfg.use_proprio:
            return torch.zeros(size, 0)
        if batch.get(STATE_KEY) is None:
            raise KeyError(
                f"'{STATE_KEY}' is missing: this policy uses proprioception (use_proprio=True); "
                "add the robot state to the batch"
            )
        proprio = pad_state(torch.as_tensor(batch[STATE_KEY]), cfg.max_state_dim)
        if proprio.shape[0] != size:
            raise ValueError(f"'{STATE_KEY}' has batch size {proprio.shape[0]}, expected {size}")
        return proprio

    def language(self, batch: Mapping[str, Any], size: int) -> torch.Tensor:
        if batch.get(TOKENS_KEY) is not None:
            input_ids = torch.as_tensor(batch[TOKENS_KEY]).long()
            input_ids = input_ids.unsqueeze(0) if input_ids.dim() == 1 else input_ids
        elif batch.get("task") is not None:
            tasks = batch["task"]
            tasks = [tasks] * size if isinstance(tasks, str) else list(tasks)
            tokenizer = self.tokenizer
            with self._lock:
                input_ids = tokenize(tokenizer, tasks, self.config.tokenizer_max_length)
        else:
            raise KeyError(
                "no instruction in the batch: add 'task' (one string per sample) or pre-tokenized "
                f"'{TOKENS_KEY}'"
            )
        if input_ids.shape[0] != size:
            raise ValueError(f"got {input_ids.shape[0]} instructions for a batch of {size}")
        if input_ids.numel() and int(input_ids.max()) >= self.text_vocab_size:
            raise ValueError(
                f"token id {int(input_ids.max())} is outside this checkpoint's text embedding "
                f"({self.text_vocab_size} tokens): the tokenizer is not the one the model was trained with; "
                "use the tokenizer files saved with the checkpoint"
            )
        return input_ids

    def domain(self, batch: Mapping[str, Any], size: int) -> torch.Tensor:
        """``domain_id`` (one or one per sample), or ``robot`` names of the checkpoint's domain table."""
        value = batch.get("domain_id")
        if value is None and batch.get("robot") is not None:
            value = self.robot_ids(batch["robot"])
        value = self.config.domain_id if value is None else value
        return domain_ids(value, size, self.config.num_domains)

    def robot_ids(self, robots: str | Sequence[str]) -> list[int]:
        by_name = {name: d for d, name in (self.config.domains or {}).items()}
        names = [robots] if isinstance(robots, str) else list(robots)
        unknown = sorted({n for n in names if n not in by_name})
        if unknown:
            raise KeyError(
                f"robot {unknown} is not in this checkpoint's domain table {sorted(by_name)}: load its "
                "adapter (policy.load_adapter) or pass domain_id"
            )
        return [by_name[n] for n in names]

    def actions(self, action: Any, space: Any = None) -> torch.Tensor:
        """Target chunk(s) -> [B, chunk_size, model action dim], zero-padded (as LeRobot pads before noise)."""
        space = space or build_action_space_for(self.config)
        action = torch.as_tensor(action).float()
        action = action.unsqueeze(0) if action.dim() == 2 else action
        if action.dim() != 3:
            raise ValueError(
                f"'action' must be [chunk, dim] or [B, chunk, dim], got shape {tuple(action.shape)}"
            )
        width = action.shape[-1]
        check_action_width(self.config, width, space)
        action = torch.nn.functional.pad(action, (0, space.dim_action - width))
        chunk = self.config.chunk_size
        action = action[:, :chunk]
        return torch.nn.functional.pad(action, (0, 0, 0, chunk - action.shape[1]))


def check_action_width(config: XVLAConfig, width: int, space: Any = None, where: str = "the dataset") -> None:
    """Targets are zero-padded to the model width only in ``auto`` mode or from the robot's real width."""
    space = space or build_action_space_for(config)
    padded_mode = str(config.action_mode).lower() == "auto"
    if width > space.dim_action or (width < space.dim_action and not padded_mode and width != space.real_dim):
        raise ValueError(
            f"action dimension mismatch: {where} has {width}-dim actions but action_mode '{config.action_mode}' "
            f"expects {sorted({space.dim_action, space.real_dim})}. Use --policy.action_mode=auto (pads any width "
            "up to --policy.max_action_dim) or register an action space."
        )
    if (
        padded_mode and width > space.real_dim
    ):  # the loss and the robot would see only the first real_dim channels
        raise ValueError(
            f"action dimension mismatch: {where} has {width}-dim actions but real_action_dim={space.real_dim}: pass "
            f"--policy.real_action_dim={width} to train all {width} (at most max_action_dim={space.dim_action})"
        )


# ---------------------------------------------------------------------------------------------- steps
def rename_keys(
    observation: dict[str, Any], key_map: dict[str, str], source: str = "observation"
) -> dict[str, Any]:
    """Apply a key map, which always goes MODEL KEY -> SOURCE KEY (dataset, simulator or robot key).

    The one meaning of ``--key-map model_key=source_key`` in every command.
    """
    out = dict(observation)
    for model_key, source_key in key_map.items():
        if source_key not in observation:
            raise KeyError(
                f"--key-map {model_key}={source_key}: the {source} has no key {source_key!r} (its keys: "
                f"{sorted(observation)}); a key map goes model key=source key"
            )
        out[model_key] = out.pop(source_key) if source_key != model_key else out[source_key]
    return out


def pad_state(state: torch.Tensor, width: int, key: str = STATE_KEY) -> torch.Tensor:
    """Zero-pad a [B, S] state to ``width`` (``max_state_dim``); a wider state is an error."""
    if state.dim() == 3:  # [B, n_obs_steps, S]
        state = state[:, -1]
    if state.dim() == 1:
        state = state.unsqueeze(0)
    if state.shape[-1] > width:
        raise ValueError(
            f"'{key}' has {state.shape[-1]} dims but this model's max_state_dim is {width}: reduce the state "
            f"to at most {width} dims, or train a model with max_state_dim >= {state.shape[-1]}"
        )
    if not torch.isfinite(state).all():
        raise ValueError(f"'{key}' contains NaN or infinite values")
    return F.pad(state.float(), (0, width - state.shape[-1]))


def domain_ids(value: Any, batch: int, num_domains: int, device: torch.device | None = None) -> torch.Tensor:
    """An int, list or tensor of domain ids -> LongTensor [B], range-checked."""
    ids = torch.as_tensor(value, dtype=torch.long, device=device)
    if ids.dim() == 0:
        ids = ids.expand(batch)
    ids = ids.reshape(-1)
    if ids.numel() == 1 and batch > 1:
        ids = ids.expand(batch)
    if ids.numel() != batch:
        raise ValueError(
            f"'domain_id' has {ids.numel()} values for a batch of {batch}; give one id or one per sample"
        )
    check_domain_ids(ids, num_domains)
    return ids.contiguous()
