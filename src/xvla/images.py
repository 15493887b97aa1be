"""Camera frames -> the vision tower's input: any frame to float [0, 1], resized, ImageNet-normalised,
and the cameras stacked into view slots.

    frame   : uint8 [0, 255] or float [0, 1], HxWx3 numpy or [B, 3, H, W] tensor
           -> float [0, 1] -> (resize) -> ImageNet normalised [B, 3, H, W]
    cameras : one slot per configured camera, plus ``empty_cameras`` zero slots (mask False)

Plain functions, so training, evaluation, the server and the simulator share one implementation through
:class:`xvla.processor.ObservationProcessor`. Errors name the offending camera and say how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        raise ValueError(
            f"'{key}': expected an image of shape [B, 3, H, W] (or HxWx3 numpy), got {tuple(tensor.shape)}"
        )
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
