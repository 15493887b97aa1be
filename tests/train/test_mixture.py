"""Mixtures: weighted infinite sampling, sharding, reproducibility, key mapping, frame alignment,
action resampling over a horizon and colour jitter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xvla import XVLAPolicy
from xvla.train.config import build_train_config
from xvla.train.mixture import (
    Collator,
    DrawStream,
    MixtureBatchSampler,
    MixtureDataset,
    build_loader,
    open_sources,
)
from xvla.train.transforms import adjust_hue, color_jitter, frames_for_horizon, resample_chunk

from .support import FPS, FRONT, WRIST, action_value, frame_of_action, state_value, tiny_train_config

TOP = "observation.images.top"


# ---------------------------------------------------------------------------------------------- sampling
def test_weighted_proportions():
    stream = DrawStream([50, 200, 10], [3.0, 1.0, 1.0], seed=7)
    counts = np.bincount([stream.draw(g)[0] for g in range(10_000)], minlength=3) / 10_000
    assert counts == pytest.approx([0.6, 0.2, 0.2], abs=0.02)
    assert stream.counts_before(10_000) == list(np.round(counts * 10_000).astype(int))


def test_no_repeat_within_a_dataset_epoch():
    stream = DrawStream([37, 53], [1.0, 1.0], seed=1)
    per = {0: [], 1: []}
    for g in range(120):
        d, i = stream.draw(g)
        per[d].append(i)
    for d, n in ((0, 37), (1, 53)):
        first = per[d][:n]
        assert len(set(first)) == len(first)  # a full pass before any repeat
        assert all(0 <= i < n for i in per[d])


def test_reproducible_from_seed_and_random_access():
    a = DrawStream([20, 30], [1.0, 2.0], seed=3)
    b = DrawStream([20, 30], [1.0, 2.0], seed=3)
    c = DrawStream([20, 30], [1.0, 2.0], seed=4)
    seq_a = [a.draw(g) for g in range(9000)]
    assert seq_a == [b.draw(g) for g in range(9000)]
    assert seq_a != [c.draw(g) for g in range(9000)]
    # Going back (a resumed run starting mid-stream) gives the same draws.
    assert [a.draw(g) for g in (8999, 5, 4100)] == [seq_a[8999], seq_a[5], seq_a[4100]]


def test_ranks_get_disjoint_slices_of_one_stream():
    sizes, weights = [40, 25], [1.0, 1.0]
    r0 = iter(MixtureBatchSampler(sizes, weights, batch_size=3, seed=5, rank=0, world_size=2))
    r1 = iter(MixtureBatchSampler(sizes, weights, batch_size=3, seed=5, rank=1, world_size=2))
    single = iter(MixtureBatchSampler(sizes, weights, batch_size=6, seed=5))
    for _ in range(10):
        b0, b1, both = next(r0), next(r1), next(single)
        assert not {t[2] for t in b0} & {t[2] for t in b1}
        assert b0 + b1 == both  # together the ranks see exactly the single-process batch


def test_sampler_restarts_at_any_batch():
    sampler = MixtureBatchSampler([40, 25], [2.0, 1.0], batch_size=4, seed=9, rank=1, world_size=3)
    it = iter(sampler)
    batches = [next(it) for _ in range(8)]
    state = sampler.state_dict(consumed_batches=5)
    assert state["next_batch"] == 5 and sum(state["draws_per_dataset"]) == 5 * 4 * 3
    start = MixtureBatchSampler.start_batch_from_state(state, 4, 3, [40, 25], [2.0, 1.0], 9)
    resumed = MixtureBatchSampler(
        [40, 25], [2.0, 1.0], batch_size=4, seed=9, rank=1, world_size=3, start_batch=start
    )
    it2 = iter(resumed)
    assert [next(it2) for _ in range(3)] == batches[5:8]


# ---------------------------------------------------------------------------------------------- datasets
def _mixture(dataset_a, dataset_b, **overrides):
    config = tiny_train_config(image_keys=[FRONT, WRIST], **overrides.pop("policy", {}))
    cfg = build_train_config(
        {
            "mixture": {
                "datasets": [
                    {"root": str(dataset_a), "weight": 1.0, "domain_id": 2},
                    {
                        "root": str(dataset_b),
                        "weight": 1.0,
                        "domain_id": 4,
                        "keys": {FRONT: TOP},
                        "task": "do the thing",
                    },
                ],
                **overrides,
            }
        }
    )
    sources = open_sources(cfg, config, list(config.image_keys))
    ds = MixtureDataset(
        sources, list(config.image_keys), config.chunk_size, cfg.mixture.color_jitter, seed=cfg.seed
    )
    return ds, sources


def test_key_mapping_padding_and_missing_cameras(dataset_a, dataset_b, tokenizer):
    ds, sources = _mixture(dataset_a, dataset_b)
    assert sources[1].camera_map == {FRONT: TOP}  # no wrist camera in dataset b
    a = ds[(0, 0, 0)]
    b = ds[(1, 3, 1)]
    assert b[WRIST] is None and a[WRIST] is not None  # raw samples: the processor pads and masks
    assert (int(a["domain_id"]), int(b["domain_id"])) == (2, 4)
    assert b["task"] == "do the thing" and a["task"] == "pick up the red block"
    config = tiny_train_config(image_keys=[FRONT, WRIST])
    batch = Collator(XVLAPolicy(config, tokenizer=tokenizer).processor)([a, b])
    assert batch["image_mask"][:, :2].tolist() == [[True, True], [True, False]]
    assert batch["image_input"].shape[-2:] == tuple(config.image_size)
    assert batch["proprio"].shape == (2, config.max_state_dim)
    assert batch["proprio"][1, 4:].abs().sum() == 0  # 4-dim state zero-padded to max_state_dim
    assert batch["action"].shape == (2, 4, 8) and batch["action"][0, :, 7].abs().sum() == 0  # 7 -> 8 dims
    assert batch["domain_id"].tolist() == [2, 4]


def test_frame_alignment_in_video_state_and_actions(dataset_a, dataset_b):
    ds, sources = _mixture(dataset_a, dataset_b)
    lengths = (12, 9, 10)
    starts = np.cumsum((0,) + lengths)
    for idx in range(sum(lengths)):
        ep = int(np.searchsorted(starts, idx, side="right") - 1)
        i = idx - starts[ep]
        item = ds[(0, idx, idx)]
        assert item["observation.state"][:6].tolist() == pytest.approx(state_value(0, ep, i, 6).tolist())
        for k in range(4):
            j = min(i + k, lengths[ep] - 1)  # past the episode end the last action repeats
            assert frame_of_action(float(item["action"][k, 0])) == (0, ep, j)
            assert bool(item["action_is_pad"][k]) == (i + k >= lengths[ep])
        # The decoded video frame is this frame's colour (red encodes the frame index).
        red = float(item[FRONT][0].mean()) * 255
        assert abs(red - (10 + 20 * i) % 256) < 6, (idx, red)


def test_action_horizon_resampling(dataset_a, dataset_b):
    # chunk 4 over 0.8 s at 10 fps: frames 0, 2, 4, 6 from the current one.
    ds, sources = _mixture(dataset_a, dataset_b, action_horizon_s=0.8)
    assert sources[0].dataset.chunk_size == frames_for_horizon(0.8, FPS, 4) == 7
    item = ds[(0, 1, 0)]  # episode 0, frame 1
    assert [frame_of_action(float(v))[2] for v in item["action"][:, 0]] == [1, 3, 5, 7]
    # 0.6 s: frames 0, 1.5, 3, 4.5 -> linear interpolation between frames
    ds, _ = _mixture(dataset_a, dataset_b, action_horizon_s=0.6)
    values = ds[(0, 0, 0)]["action"][:, 0]
    expected = [action_value(0, 0, 0, 7)[0] + 0.001 * f for f in (0, 1.5, 3, 4.5)]  # dim 0 is linear in frame
    assert values.tolist() == pytest.approx(expected, abs=1e-6)
    # near the episode end the resampled points past the last frame are padding
    last = ds[(0, 10, 0)]  # episode 0 has 12 frames: frame 10 + 1.5 is past frame 11
    assert last["action_is_pad"].tolist() == [False, True, True, True]


def test_resample_chunk_identity_and_interpolation():
    actions = torch.arange(12, dtype=torch.float32).view(6, 2)
    same, pad = resample_chunk(actions, torch.zeros(6, dtype=torch.bool), fps=10, horizon_s=0.4, num_points=4)
    assert torch.equal(same, actions[:4]) and not pad.any()
    half, _ = resample_chunk(actions, None, fps=10, horizon_s=0.2, num_points=4)
    assert half[:, 0].tolist() == pytest.approx([0, 1, 2, 3])  # frame positions 0, .5, 1, 1.5 (x2 per frame)


def test_loader_workers_do_not_change_the_data(dataset_a, dataset_b, tokenizer):
    ds, _ = _mixture(dataset_a, dataset_b, color_jitter={"enable": True})
    collate = Collator(
        XVLAPolicy(tiny_train_config(image_keys=[FRONT, WRIST]), tokenizer=tokenizer).processor
    )

    def batches(workers):
        sampler = MixtureBatchSampler(ds.sizes, [1.0, 1.0], batch_size=3, seed=11)
        it = iter(build_loader(ds, sampler, collate, num_workers=workers, seed=11))
        return [next(it) for _ in range(4)]

    single, multi = batches(0), batches(2)
    for x, y in zip(single, multi, strict=True):
        assert torch.equal(x["draw"], y["draw"]) and torch.equal(x["image_input"], y["image_input"])
        assert torch.equal(x["input_ids"], y["input_ids"])
    draws = torch.cat([b["draw"] for b in multi]).tolist()
    assert draws == list(range(12))  # every draw once, in order, across the two workers


def test_mapping_errors(dataset_a, dataset_b):
    config = tiny_train_config(image_keys=[FRONT])
    cfg = build_train_config({"dataset": {"root": str(dataset_b)}})
    with pytest.raises(ValueError, match="main view"):
        open_sources(cfg, config, [FRONT])
    cfg = build_train_config(
        {"dataset": {"root": str(dataset_b), "keys": {FRONT: "observation.images.nope"}}}
    )
    with pytest.raises(ValueError, match="nope"):
        open_sources(cfg, config, [FRONT])
    cfg = build_train_config({"dataset": {"root": str(dataset_a)}})
    with pytest.raises(ValueError, match="max_state_dim"):
        open_sources(cfg, tiny_train_config(max_state_dim=4), [FRONT])


# ---------------------------------------------------------------------------------------------- colour
def test_color_jitter_is_seeded_and_bounded():
    img = torch.rand(3, 16, 16)
    out1 = color_jitter(img, torch.Generator().manual_seed(1), 0.2, 0.2, 0.2, 0.05)
    out2 = color_jitter(img, torch.Generator().manual_seed(1), 0.2, 0.2, 0.2, 0.05)
    out3 = color_jitter(img, torch.Generator().manual_seed(2), 0.2, 0.2, 0.2, 0.05)
    assert torch.equal(out1, out2) and not torch.equal(out1, out3)
    assert out1.min() >= 0 and out1.max() <= 1
    assert torch.equal(color_jitter(img, torch.Generator().manual_seed(3), 0, 0, 0, 0), img)
    bright = color_jitter(img * 0.5, torch.Generator().manual_seed(4), 0.2, 0, 0, 0)
    ratio = (bright / (img * 0.5)).flatten()
    assert ratio.std() < 1e-5 and 0.8 <= float(ratio.mean()) <= 1.2  # one brightness factor in [0.8, 1.2]


def test_hue_shift_round_trip():
    img = torch.rand(3, 8, 8)
    assert torch.allclose(adjust_hue(img, 0.0), img, atol=1e-5)
    assert torch.allclose(adjust_hue(adjust_hue(img, 0.2), -0.2), img, atol=1e-4)
    gray = torch.full((3, 4, 4), 0.3)
    assert torch.allclose(adjust_hue(gray, 0.3), gray)
