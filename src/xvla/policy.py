"""XVLAPolicy: the user-facing policy (load, save, predict), the one place where processing meets the model.

Batches use LeRobot keys::

    observation.images.<camera>   [B, 3, H, W] float in [0, 1] or uint8 (or HxWx3 numpy frames)
    observation.state             [B, S]   (zero-padded to max_state_dim)
    task                          list of B instruction strings   (or observation.language.tokens [B, L])
    domain_id                     int or [B] (defaults to config.domain_id)
    action                        [B, chunk, A]  (training only)
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import deque
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoints as ckpt
from . import processing
from .config import XVLAConfig
from .model.xvla import XVLAModel

logger = logging.getLogger(__name__)

OPTIONAL_BUFFERS = ("vlm.multi_modal_projector.visual_temporal_embed.pos_idx_to_embed",)


class XVLAPolicy(nn.Module):
    def __init__(self, config: XVLAConfig, tokenizer: Any | None = None):
        super().__init__()
        self.config = config
        self.model = XVLAModel(config)
        self._tokenizer = tokenizer
        self._source_dir: Path | None = None
        self.reset()

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        tokenizer: Any | None = None,
        strict: bool = True,
        revision: str | None = None,
        compile: bool = False,
        compile_batch_sizes: tuple[int, ...] | None = None,
        **config_overrides: Any,
    ) -> XVLAPolicy:
        """Load an X-VLA checkpoint in our, LeRobot's or the official format (auto-detected).

        ``config_overrides`` replace config fields (e.g. ``dtype="bfloat16"``, ``domain_id=3``).
        ``compile=True`` turns on the fast inference path (:mod:`xvla.fast`: compiled graphs with frozen
        weights at the batch sizes ``compile_batch_sizes``, default 1, 2, 4, 8); with
        ``dtype="bfloat16"`` it is the fastest CPU (AMX) and GPU setting.
        """
        folder = resolve_checkpoint_dir(path_or_hub_id, revision=revision)
        raw = ckpt.read_config_json(folder)
        config, fmt = ckpt.config_from_json(raw, folder)
        if config_overrides:
            config = config.replace(**config_overrides)
        # Build in float32 and cast after loading, so bf16 weights are rounded once from the file's values.
        policy = cls(config.replace(dtype="float32"), tokenizer=tokenizer)
        state_dict = ckpt.to_internal_state_dict(ckpt.load_weights_file(folder), fmt)
        policy.load_model_state_dict(state_dict, strict=strict, source=str(folder))
        policy.config = policy.model.config = config
        policy.model.to(policy.model.dtype)
        policy._source_dir = folder
        policy.checkpoint_format = fmt
        if device is not None:
            policy.to(device)
        policy.eval()
        if compile:
            from .fast import DEFAULT_BATCH_SIZES, enable_fast_path

            enable_fast_path(policy.model, batch_sizes=compile_batch_sizes or DEFAULT_BATCH_SIZES)
        return policy

    def load_model_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True, source: str = "") -> None:
        expected = self.model.state_dict()
        missing = [k for k in expected if k not in state_dict and k not in OPTIONAL_BUFFERS]
        unexpected = [k for k in state_dict if k not in expected]
        mismatched = [
            f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
            for k in expected
            if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
        ]
        problems = []
        if missing:
            problems.append(f"missing keys ({len(missing)}): {missing}")
        if unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
        if mismatched:
            problems.append(f"shape mismatches ({len(mismatched)}): {mismatched}")
        if problems:
            message = (
                f"weights in {source or 'the state dict'} do not match the model built from its config: "
                + "; ".join(problems)
                + ". Check that config.json belongs to these weights (action_mode, max_state_dim, "
                "use_hetero_proj, num_domains, florence_config)."
            )
            if strict or mismatched:
                raise ValueError(message)
            logger.warning(message)
        self.model.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=False)

    def save_pretrained(self, directory: str | os.PathLike, format: str = "xvla") -> Path:
        """Write config.json + model.safetensors (+ tokenizer files when available) to ``directory``."""
        if format not in ckpt.FORMATS:
            raise ValueError(f"format '{format}' is unknown; choose one of {ckpt.FORMATS}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = ckpt.from_internal_state_dict(self.model.state_dict(), format)
        ckpt.save_weights_file(state, directory, metadata={"format": format, "producer": "xvla"})
        ckpt.write_config(ckpt.export_config(self.config, format), directory)
        if format == "lerobot":
            ckpt.write_json(ckpt.lerobot_sidecar(self.config), directory / ckpt.SIDECAR_NAME)
        self._save_tokenizer(directory)
        return directory

    def _save_tokenizer(self, directory: Path) -> None:
        if self._tokenizer is not None:
            self._tokenizer.save_pretrained(str(directory))
        elif self._source_dir is not None and self._source_dir.resolve() != directory.resolve():
            for name in ckpt.TOKENIZER_FILES + ("preprocessor_config.json",):
                src = self._source_dir / name
                if src.exists():
                    shutil.copy2(src, directory / name)

    # ------------------------------------------------------------------ tokenizer
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = processing.load_tokenizer(self.config.tokenizer_name, local_dir=self._source_dir)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        self._tokenizer = value

    # ------------------------------------------------------------------ batch -> model inputs
    @property
    def device(self) -> torch.device:
        return self.model.device

    def camera_keys(self, batch: dict[str, Any]) -> list[str]:
        if self.config.image_keys:
            missing = [k for k in self.config.image_keys if k not in batch]
            if missing:
                present = sorted(k for k in batch if k.startswith(processing.IMAGE_PREFIX))
                raise KeyError(
                    f"missing camera keys {missing}: this policy expects {self.config.image_keys} and the batch has "
                    f"{present}. Rename your cameras to match, or set image_keys / empty_cameras in the config."
                )
            return list(self.config.image_keys)
        keys = sorted(
            k for k in batch
            if k.startswith(processing.IMAGE_PREFIX) and not k.startswith(ckpt.EMPTY_CAMERA_PREFIX)
        )  # fmt: skip
        if not keys:
            raise KeyError(
                "the batch has no camera image: add at least one 'observation.images.<camera>' entry "
                f"(batch keys: {sorted(batch)})"
            )
        return keys

    def prepare_inputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """LeRobot-style batch -> the tensors of ``XVLAModel.generate_actions`` / ``forward``."""
        cfg = self.config
        device = self.device
        keys = self.camera_keys(batch)
        images = [
            processing.prepare_image(batch[k], k, cfg.image_size, cfg.resize_imgs_with_padding).to(device)
            for k in keys
        ]
        batch_size = images[0].shape[0]
        for key, image in zip(keys, images, strict=True):
            if image.shape[0] != batch_size:
                raise ValueError(f"camera '{key}' has batch size {image.shape[0]}, expected {batch_size}")
        total_views = max(cfg.total_image_views, len(images) + cfg.empty_cameras)
        image_input, image_mask = processing.stack_cameras(images, total_views)

        if cfg.use_proprio:
            if processing.STATE_KEY not in batch:
                raise KeyError(
                    f"'{processing.STATE_KEY}' is missing: this policy uses proprioception (use_proprio=True); "
                    "add the robot state to the batch"
                )
            state = torch.as_tensor(batch[processing.STATE_KEY])
            proprio = processing.pad_state(state, cfg.max_state_dim).to(device)
        else:
            proprio = torch.zeros(batch_size, 0, device=device)
        if proprio.shape[0] != batch_size:
            raise ValueError(f"'{processing.STATE_KEY}' has batch size {proprio.shape[0]}, expected {batch_size}")

        if processing.TOKENS_KEY in batch:
            input_ids = torch.as_tensor(batch[processing.TOKENS_KEY]).long().to(device)
            if input_ids.dim() == 1:
                input_ids = input_ids.unsqueeze(0)
        elif "task" in batch:
            tasks = batch["task"]
            if isinstance(tasks, str):
                tasks = [tasks] * batch_size
            input_ids = processing.tokenize(self.tokenizer, tasks, cfg.tokenizer_max_length).to(device)
        else:
            raise KeyError(
                "no instruction in the batch: add 'task' (one string per sample) or pre-tokenized "
                f"'{processing.TOKENS_KEY}'"
            )
        if input_ids.shape[0] != batch_size:
            raise ValueError(f"got {input_ids.shape[0]} instructions for a batch of {batch_size}")

        domain = batch.get("domain_id", cfg.domain_id)
        domain_id = processing.domain_ids(domain, batch_size, cfg.num_domains, device=device)
        return {
            "input_ids": input_ids,
            "image_input": image_input,
            "image_mask": image_mask,
            "domain_id": domain_id,
            "proprio": proprio,
        }

    def prepare_action_targets(self, action: torch.Tensor) -> torch.Tensor:
        space = self.model.action_space
        action = torch.as_tensor(action).float()
        if action.dim() == 2:
            action = action.unsqueeze(1)
        width = action.shape[-1]
        allowed = {space.dim_action, space.real_dim}
        if width not in allowed:
            raise ValueError(
                f"action dimension mismatch: the dataset's action has {width} dims but action_mode "
                f"'{self.config.action_mode}' expects {sorted(allowed)}. Use action_mode='auto' (pads any width up "
                f"to max_action_dim={self.config.max_action_dim}) or register a custom action space."
            )
        if width < space.dim_action:
            # As LeRobot does: the target is zero-padded to the model width before noise is drawn.
            action = torch.nn.functional.pad(action, (0, space.dim_action - width))
        chunk = self.config.chunk_size
        if action.shape[1] > chunk:
            action = action[:, :chunk]
        elif action.shape[1] < chunk:
            action = torch.cat([action, action.new_zeros(action.shape[0], chunk - action.shape[1], action.shape[2])], 1)
        return action.to(self.device)

    # ------------------------------------------------------------------ inference
    def reset(self) -> None:
        """Clear the action queue (call at the start of every episode)."""
        self._action_queue: deque[torch.Tensor] = deque(maxlen=self.config.n_action_steps)

    @torch.no_grad()
    def predict_action_chunk(
        self,
        batch: dict[str, Any],
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        steps: int | None = None,
    ) -> torch.Tensor:
        """A full action chunk [B, chunk_size, real_action_dim] (float32)."""
        self.eval()
        inputs = self.prepare_inputs(batch)
        actions = self.model.generate_actions(
            **inputs, steps=steps or self.config.num_denoising_steps, noise=noise, generator=generator
        )
        return actions.float()

    @torch.no_grad()
    def select_action(self, batch: dict[str, Any], noise: torch.Tensor | None = None) -> torch.Tensor:
        """One action [B, real_action_dim]; a new chunk is predicted every ``n_action_steps`` calls."""
        if not self._action_queue:
            chunk = self.predict_action_chunk(batch, noise=noise)
            self._action_queue.extend(chunk.transpose(0, 1)[: self.config.n_action_steps])
        return self._action_queue.popleft()

    # ------------------------------------------------------------------ training
    def forward(self, batch: dict[str, Any], **kwargs: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss for a batch: (total, {term: value, "loss": total})."""
        if "action" not in batch:
            raise KeyError("the batch has no 'action': training needs the action chunk targets")
        inputs = self.prepare_inputs(batch)
        targets = self.prepare_action_targets(batch["action"])
        losses = self.model(action=targets, **inputs, **kwargs)
        total = sum(losses.values())
        logs = {k: float(v.detach()) for k, v in losses.items()}
        logs["loss"] = float(total.detach())
        return total, logs


def resolve_checkpoint_dir(path_or_hub_id: str | os.PathLike, revision: str | None = None) -> Path:
    """A local folder as is; otherwise a Hugging Face Hub id, downloaded (safetensors + json/txt only)."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; pass the checkpoint folder that holds config.json")
    text = str(path_or_hub_id)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise FileNotFoundError(f"checkpoint folder {text} does not exist (and it is not a Hub id like 'org/name')")
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                text,
                revision=revision,
                allow_patterns=["*.json", "*.safetensors", "*.txt", "tokenizer*", "vocab*", "merges*"],
            )
        )
    except Exception as exc:  # noqa: BLE001 - turned into an actionable message
        raise FileNotFoundError(
            f"could not download '{text}' from the Hugging Face Hub ({type(exc).__name__}: {exc}). If you are "
            "offline, download the checkpoint elsewhere and pass its local folder."
        ) from exc
