"""Observation processing: raw observations -> the model's tensors.

Each step is a plain function so that training, evaluation, the server and the simulator share one
implementation. Errors name the offending key and say how to fix it.

    images  : uint8 [0, 255] or float [0, 1]  -> float [0, 1] -> (resize) -> ImageNet normalised
    cameras : one slot per configured camera, plus ``empty_cameras`` zero slots (mask False)
    language: BART tokenizer, padded to ``tokenizer_max_length``
    domain  : one id per sample, range-checked against ``num_domains``
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .domains import check_domain_ids
from .rotation import matrix_to_rot6d

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_PREFIX = "observation.images."
STATE_KEY = "observation.state"
TOKENS_KEY = "observation.language.tokens"


# ---------------------------------------------------------------------------------------------- images
def as_image_tensor(image: Any, key: str = "image") -> torch.Tensor:
    """Accept CHW/BCHW tensors or HWC/BHWC numpy arrays (camera frames) and return [B, 3, H, W]."""
    if isinstance(image, np.ndarray):
        if image.ndim not in (3, 4) or image.shape[-1] not in (1, 3):
            raise ValueError(f"'{key}': a numpy image must be HxWx3 or BxHxWx3, got shape {image.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        tensor = tensor.permute(2, 0, 1) if tensor.dim() == 3 else tensor.permute(0, 3, 1, 2)
    elif isinstance(image, torch.Tensor):
        tensor = image
    else:
        raise TypeError(f"'{key}': expected a torch.Tensor or numpy array image, got {type(image).__name__}")
    if tensor.dim() == 5:  # [B, n_obs_steps, C, H, W]: the policy uses the latest frame
        tensor = tensor[:, -1]
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 4 or tensor.shape[1] not in (1, 3):
        raise ValueError(f"'{key}': expected an image of shape [B, 3, H, W] (or HxWx3 numpy), got {tuple(tensor.shape)}")
    if tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    return tensor


def image_to_float(image: torch.Tensor, key: str = "image") -> torch.Tensor:
    """uint8 / [0, 255] values -> float [0, 1]; float images already in [0, 1] pass through."""
    if image.dtype == torch.uint8:
        return image.float() / 255.0
    image = image.float()
    if image.numel() == 0:
        return image
    lo, hi = float(image.min()), float(image.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"image '{key}' contains NaN or infinite values; check the camera frames")
    if hi <= 1.0 and lo >= 0.0:
        return image
    if lo < 0.0 or hi > 255.0:
        raise ValueError(
            f"image '{key}' has values outside [0, 255] (min={lo:.4f}, max={hi:.4f}): pass raw uint8 frames or "
            "floats in [0, 1]; if the images are already normalised, do not normalise them twice"
        )
    return image / 255.0


def imagenet_normalize(image: torch.Tensor, key: str = "image") -> torch.Tensor:
    """(x - mean) / std with the ImageNet statistics; the input must be in [0, 1]."""
    lo, hi = float(image.min()), float(image.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"image '{key}' has values outside [0, 1] (min={lo:.4f}, max={hi:.4f}): convert it with "
            "image_to_float first (uint8 frames are divided by 255)"
        )
    mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    return (image - mean) / std


def resize_image(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bicubic resize of [B, 3, H, W] floats in [0, 1] to ``size`` (the released models use 224x224)."""
    height, width = int(size[0]), int(size[1])
    if tuple(image.shape[-2:]) == (height, width):
        return image
    out = F.interpolate(image, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0)


def resize_with_pad(image: torch.Tensor, height: int, width: int, pad_value: float = 0.0) -> torch.Tensor:
    """Resize keeping the aspect ratio (bilinear), then pad at the top and left to (height, width).

    This matches LeRobot's ``resize_imgs_with_padding`` so fine-tuned LeRobot checkpoints see the same pixels.
    """
    if image.dim() != 4:
        raise ValueError(f"resize_with_pad expects [B, C, H, W], got {tuple(image.shape)}")
    cur_h, cur_w = image.shape[-2:]
    if (cur_h, cur_w) == (height, width):
        return image
    ratio = max(cur_w / width, cur_h / height)
    new_h, new_w = int(cur_h / ratio), int(cur_w / ratio)
    resized = F.interpolate(image, size=(new_h, new_w), mode="bilinear", align_corners=False)
    return F.pad(resized, (max(0, width - new_w), 0, max(0, height - new_h), 0), value=pad_value)


def prepare_image(
    image: Any,
    key: str = "image",
    image_size: Sequence[int] | None = None,
    resize_imgs_with_padding: Sequence[int] | None = None,
) -> torch.Tensor:
    """Any camera frame -> normalised float [B, 3, H, W] ready for the vision tower."""
    tensor = image_to_float(as_image_tensor(image, key), key)
    if resize_imgs_with_padding is not None:
        tensor = resize_with_pad(tensor, *resize_imgs_with_padding)
    if image_size is not None:
        tensor = resize_image(tensor, image_size)
    return imagenet_normalize(tensor, key)


def stack_cameras(images: Sequence[torch.Tensor], total_views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack [B, 3, H, W] views into [B, V, 3, H, W] and a bool mask [B, V]; missing slots are zeros/False."""
    if not images:
        raise ValueError("at least one camera image is required (view 0 is the main camera)")
    shapes = {tuple(img.shape) for img in images}
    if len(shapes) != 1:
        raise ValueError(
            f"all cameras must have the same size after processing, got {sorted(shapes)}; set image_size "
            "(or resize_imgs_with_padding) in the config to resize them to one size"
        )
    if total_views < len(images):
        raise ValueError(f"{len(images)} camera images given but the model has only {total_views} view slots")
    first = images[0]
    batch = first.shape[0]
    views = list(images) + [first.new_zeros(first.shape)] * (total_views - len(images))
    flags = [True] * len(images) + [False] * (total_views - len(images))
    mask = torch.tensor(flags, dtype=torch.bool, device=first.device).unsqueeze(0).expand(batch, -1).clone()
    return torch.stack(views, dim=1), mask


def rename_keys(observation: dict[str, Any], key_map: dict[str, str], source: str = "observation") -> dict[str, Any]:
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


# ---------------------------------------------------------------------------------------------- state
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


# ---------------------------------------------------------------------------------------------- domain
def domain_ids(value: Any, batch: int, num_domains: int, device: torch.device | None = None) -> torch.Tensor:
    """An int, list or tensor of domain ids -> LongTensor [B], range-checked."""
    ids = torch.as_tensor(value, dtype=torch.long, device=device)
    if ids.dim() == 0:
        ids = ids.expand(batch)
    ids = ids.reshape(-1)
    if ids.numel() == 1 and batch > 1:
        ids = ids.expand(batch)
    if ids.numel() != batch:
        raise ValueError(f"'domain_id' has {ids.numel()} values for a batch of {batch}; give one id or one per sample")
    check_domain_ids(ids, num_domains)
    return ids.contiguous()


# ---------------------------------------------------------------------------------------------- language
def load_tokenizer(name_or_path: str | Path, local_dir: str | Path | None = None):
    """Load the BART tokenizer from ``local_dir`` (files beside the weights) or ``name_or_path``.

    Raises an OSError that says how to provide the tokenizer offline when neither is available.
    """
    from transformers import AutoTokenizer

    candidates = []
    for folder in (local_dir, name_or_path):
        if folder is not None and _has_tokenizer_files(Path(folder)):
            candidates.append((_tokenizer_from_files, str(folder), {}))
    candidates.append((AutoTokenizer.from_pretrained, str(name_or_path), {"local_files_only": True}))  # HF cache
    if not Path(name_or_path).exists() and _hub_resolvable():
        candidates.append((AutoTokenizer.from_pretrained, str(name_or_path), {}))
    errors = []
    for load, candidate, kwargs in candidates:
        try:
            return load(candidate, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported below with the fix
            errors.append(f"{candidate}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    raise OSError(
        f"could not load the tokenizer '{name_or_path}' ({'; '.join(errors)}). The Hugging Face Hub may be "
        "unreachable. Provide it offline: put tokenizer files (tokenizer.json or vocab.json + merges.txt) in the "
        "checkpoint folder, or set tokenizer_name to a local folder, or pass tokenizer=... to XVLAPolicy, or "
        "pre-tokenize the instruction as 'observation.language.tokens'."
    )


def train_bpe_tokenizer(texts: Sequence[str], vocab_size: int = 300):
    """A small byte-level BPE tokenizer with BART's special ids (<s>=0, <pad>=1, </s>=2, <unk>=3), trained
    here on ``texts``: for tests and CPU demos, which train their text embedding from scratch (offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    tok.train_from_iterator(list(texts) * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def _tokenizer_from_files(folder: str):
    """Tokenizer files in a checkpoint folder, read without its config.json: an official checkpoint's
    config says ``model_type: xvla``, which makes AutoTokenizer warn and ask about remote code."""
    from transformers import BartTokenizerFast, PreTrainedTokenizerFast

    if (Path(folder) / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(folder)
    return BartTokenizerFast.from_pretrained(folder)


def _hub_resolvable() -> bool:
    """Whether the Hub's host name resolves: saves a minute of download retries when offline."""
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.getaddrinfo("huggingface.co", 443)
        return True
    except OSError:
        return False


def _has_tokenizer_files(folder: Path) -> bool:
    return (folder / "tokenizer.json").exists() or (folder / "vocab.json").exists()


def tokenize(tokenizer, texts: Sequence[str] | str, max_length: int) -> torch.Tensor:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("'task' must be a string or a list of strings (one instruction per sample)")
    encoded = tokenizer(
        texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
    )
    return encoded["input_ids"].long()


# ---------------------------------------------------------------------------------------------- LIBERO
def libero_observation(observation: dict[str, Any], main_camera: str = "observation.images.image") -> dict[str, Any]:
    """LIBERO observation -> X-VLA inputs (the processor the released LIBERO checkpoints expect).

    - ``observation.robot_state`` = {"eef": {"pos": [B, 3], "mat": [B, 3, 3]}, ...} becomes
      ``observation.state`` = [pos(3), rot6d(6, "columns" convention: first two matrix columns
      concatenated), 0] + 10 zeros = 20 dims (the second-arm half is empty). ``mat`` must be the grip
      site's rotation (robosuite's ``controller.ee_ori_mat``), not ``robot0_eef_quat`` (the hand body);
    - the main camera is rotated by 180 degrees (LIBERO renders it upside down; the result is upright
      but mirrored left-right, which is what the released checkpoints were trained on). Other cameras
      (the wrist) are left as rendered. Numpy frames are HxWx3 (or BxHxWx3), tensors 3xHxW (or Bx3xHxW);
      the type is kept.
    """
    out = dict(observation)
    if main_camera in out:
        out[main_camera] = _rotate_180(out[main_camera], main_camera)
    robot_state = out.pop("observation.robot_state", None)
    if robot_state is not None:
        pos = torch.as_tensor(np.asarray(robot_state["eef"]["pos"]), dtype=torch.float32)
        mat = torch.as_tensor(np.asarray(robot_state["eef"]["mat"]), dtype=torch.float32)
        if pos.dim() == 1:
            pos, mat = pos.unsqueeze(0), mat.unsqueeze(0)
        if pos.shape[-1] != 3 or mat.shape[-2:] != (3, 3):
            raise ValueError(
                f"'observation.robot_state': eef pos must be [B, 3] and mat [B, 3, 3], got {tuple(pos.shape)} and "
                f"{tuple(mat.shape)}"
            )
        arm = torch.cat([pos, matrix_to_rot6d(mat, "columns"), torch.zeros_like(pos[:, :1])], dim=-1)
        out[STATE_KEY] = torch.cat([arm, torch.zeros_like(arm)], dim=-1)
    return out


def _rotate_180(image: Any, key: str) -> Any:
    """Flip both image axes: HxWxC numpy (channels last) or CxHxW tensors (channels first), batched or not."""
    if isinstance(image, np.ndarray):
        if image.ndim not in (3, 4) or image.shape[-1] not in (1, 3):
            raise ValueError(f"'{key}': a numpy frame must be HxWx3 or BxHxWx3, got shape {image.shape}")
        return np.ascontiguousarray(image[..., ::-1, ::-1, :])
    tensor = torch.as_tensor(image)
    if tensor.dim() not in (3, 4) or tensor.shape[-3] not in (1, 3):
        raise ValueError(f"'{key}': an image tensor must be 3xHxW or Bx3xHxW, got shape {tuple(tensor.shape)}")
    return torch.flip(tensor, dims=[-2, -1])
