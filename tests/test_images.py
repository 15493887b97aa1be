"""The frame steps: any camera frame to normalised float, resizing, camera slots."""

import numpy as np
import pytest
import torch

from xvla import images


def test_image_to_float_and_normalize():
    img = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    f = images.image_to_float(img)
    assert f.dtype == torch.float32 and f.max() == 1.0
    assert torch.equal(images.image_to_float(torch.full((1, 3, 2, 2), 127.5)), torch.full((1, 3, 2, 2), 0.5))
    n = images.imagenet_normalize(torch.zeros(1, 3, 2, 2))
    torch.testing.assert_close(
        n[0, :, 0, 0], -torch.tensor(images.IMAGENET_MEAN) / torch.tensor(images.IMAGENET_STD)
    )


def test_image_range_errors_name_the_key():
    with pytest.raises(ValueError, match=r"'observation.images.top'.*outside \[0, 255\]"):
        images.image_to_float(torch.full((1, 3, 2, 2), 300.0), "observation.images.top")
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*image_to_float"):
        images.imagenet_normalize(torch.full((1, 3, 2, 2), 2.0), "cam")
    with pytest.raises(ValueError, match="NaN"):
        images.image_to_float(torch.full((1, 3, 2, 2), float("nan")))


def test_numpy_hwc_frames_are_accepted():
    frame = np.random.randint(0, 256, (48, 64, 3), dtype=np.uint8)
    out = images.prepare_image(frame, "cam", image_size=(32, 32))
    assert out.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="HxWx3"):
        images.prepare_image(np.zeros((4, 4, 5), dtype=np.uint8), "cam")


def test_resize_with_pad_keeps_aspect_and_pads_top_left():
    img = torch.ones(1, 3, 20, 40)
    out = images.resize_with_pad(img, 20, 20)
    assert out.shape == (1, 3, 20, 20)
    assert out[..., :10, :].abs().sum() == 0 and out[..., 10:, :].eq(1).all()


def test_stack_cameras_with_empty_slots():
    imgs = [torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)]
    stacked, mask = images.stack_cameras(imgs, total_views=3)
    assert stacked.shape == (2, 3, 3, 8, 8)
    assert mask.tolist() == [[True, True, False]] * 2
    assert stacked[:, 2].abs().sum() == 0
    with pytest.raises(ValueError, match="same size"):
        images.stack_cameras([torch.rand(1, 3, 8, 8), torch.rand(1, 3, 4, 4)], 2)
