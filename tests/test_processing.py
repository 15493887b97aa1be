import numpy as np
import pytest
import torch

from xvla import processing as P


def test_image_to_float_and_normalize():
    img = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    f = P.image_to_float(img)
    assert f.dtype == torch.float32 and f.max() == 1.0
    assert torch.equal(P.image_to_float(torch.full((1, 3, 2, 2), 127.5)), torch.full((1, 3, 2, 2), 0.5))
    n = P.imagenet_normalize(torch.zeros(1, 3, 2, 2))
    torch.testing.assert_close(n[0, :, 0, 0], -torch.tensor(P.IMAGENET_MEAN) / torch.tensor(P.IMAGENET_STD))


def test_image_range_errors_name_the_key():
    with pytest.raises(ValueError, match=r"'observation.images.top'.*outside \[0, 255\]"):
        P.image_to_float(torch.full((1, 3, 2, 2), 300.0), "observation.images.top")
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*image_to_float"):
        P.imagenet_normalize(torch.full((1, 3, 2, 2), 2.0), "cam")
    with pytest.raises(ValueError, match="NaN"):
        P.image_to_float(torch.full((1, 3, 2, 2), float("nan")))


def test_numpy_hwc_frames_are_accepted():
    frame = np.random.randint(0, 256, (48, 64, 3), dtype=np.uint8)
    out = P.prepare_image(frame, "cam", image_size=(32, 32))
    assert out.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="HxWx3"):
        P.prepare_image(np.zeros((4, 4, 5), dtype=np.uint8), "cam")


def test_resize_with_pad_keeps_aspect_and_pads_top_left():
    img = torch.ones(1, 3, 20, 40)
    out = P.resize_with_pad(img, 20, 20)
    assert out.shape == (1, 3, 20, 20)
    assert out[..., :10, :].abs().sum() == 0 and out[..., 10:, :].eq(1).all()


def test_stack_cameras_with_empty_slots():
    imgs = [torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)]
    stacked, mask = P.stack_cameras(imgs, total_views=3)
    assert stacked.shape == (2, 3, 3, 8, 8)
    assert mask.tolist() == [[True, True, False]] * 2
    assert stacked[:, 2].abs().sum() == 0
    with pytest.raises(ValueError, match="same size"):
        P.stack_cameras([torch.rand(1, 3, 8, 8), torch.rand(1, 3, 4, 4)], 2)


def test_domain_ids():
    assert P.domain_ids(3, 2, 30).tolist() == [3, 3]
    assert P.domain_ids([1, 2], 2, 30).tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"domain_id 31 is out of range.*num_domains=30"):
        P.domain_ids(31, 1, 30)
    with pytest.raises(ValueError, match="one id or one per sample"):
        P.domain_ids([1, 2, 3], 2, 30)


def test_pad_state():
    assert P.pad_state(torch.ones(2, 5), 8).shape == (2, 8)
    with pytest.raises(ValueError, match=r"has 40 dims but this model's max_state_dim is 32"):
        P.pad_state(torch.ones(1, 40), 32)


def test_tokenize(tokenizer):
    ids = P.tokenize(tokenizer, ["pick up the cup", "open the drawer"], max_length=12)
    assert ids.shape == (2, 12) and ids[0, 0] == 0
    assert (ids == tokenizer.pad_token_id).any()


def test_tokenizer_offline_error_says_how_to_fix(tmp_path):
    with pytest.raises(OSError, match="tokenizer files"):
        P.load_tokenizer("facebook/bart-large-not-here", local_dir=tmp_path)


def test_tokenizer_from_local_dir(tokenizer_dir):
    tok = P.load_tokenizer("facebook/bart-large", local_dir=tokenizer_dir)
    assert tok.pad_token_id == 1


def test_libero_observation():
    rot = torch.tensor([[[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]])
    img = torch.arange(2 * 2 * 3, dtype=torch.float32).reshape(1, 3, 2, 2)
    obs = {
        "observation.images.image": img,
        "observation.robot_state": {"eef": {"pos": torch.tensor([[0.1, 0.2, 0.3]]), "mat": rot}},
    }
    out = P.libero_observation(obs)
    state = out["observation.state"]
    assert state.shape == (1, 20)
    assert state[0, :9].tolist() == pytest.approx([0.1, 0.2, 0.3, 0, 1, 0, -1, 0, 0])
    assert state[0, 9:].abs().sum() == 0
    assert torch.equal(out["observation.images.image"], torch.flip(img, dims=[-2, -1]))


def test_tokenizer_files_beside_an_official_checkpoint_load_without_its_config(tmp_path, tokenizer, recwarn):
    """An official config.json says model_type 'xvla': AutoTokenizer would warn and ask about remote code."""
    import json
    import logging

    tokenizer.save_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "xvla", "architectures": ["XVLA"]}))
    logs = []
    handler = logging.Handler()
    handler.emit = logs.append
    logging.getLogger("transformers").addHandler(handler)
    try:
        loaded = P.load_tokenizer("facebook/bart-large", local_dir=tmp_path)
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert loaded("pick up the red block")["input_ids"] == tokenizer("pick up the red block")["input_ids"]
    assert not [r for r in logs if "xvla" in r.getMessage()]
