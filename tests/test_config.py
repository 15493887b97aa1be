import pytest
from conftest import tiny_config

from xvla import XVLAConfig
from xvla.config import florence2_large_config


def test_defaults_match_the_released_models():
    cfg = XVLAConfig()
    assert (cfg.chunk_size, cfg.n_action_steps, cfg.hidden_size, cfg.depth, cfg.num_heads) == (
        32,
        32,
        1024,
        24,
        16,
    )
    assert (cfg.num_domains, cfg.len_soft_prompts, cfg.max_state_dim, cfg.max_action_dim) == (30, 32, 32, 20)
    assert cfg.action_mode == "ee6d" and cfg.num_denoising_steps == 10 and cfg.dtype == "float32"
    assert cfg.tokenizer_name == "facebook/bart-large"
    assert cfg.florence_config == florence2_large_config()


@pytest.mark.parametrize(
    "field,value,pattern",
    [
        ("chunk_size", 0, "chunk_size=0"),
        ("n_action_steps", 9, r"n_action_steps=9 .*chunk_size=4"),
        ("hidden_size", 30, "divisible by num_heads"),
        ("dtype", "float16", r"dtype='float16'.*float32.*bfloat16"),
        ("domain_id", 6, r"domain_id.6 is out of range.*num_domains=6.*\[0, 5\]"),
        ("domain_id", -1, "out of range"),
        ("empty_cameras", -1, "empty_cameras"),
        ("dim_time", 7, "dim_time=7"),
        ("max_state_dim", -3, "max_state_dim"),
        ("num_image_views", 0, "num_image_views"),
        ("image_size", (0, 3), "image_size"),
        ("mlp_ratio", -1.0, "mlp_ratio"),
    ],
)
def test_invalid_values_name_the_field(field, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        tiny_config(**{field: value})


def test_unknown_action_mode_lists_registered():
    with pytest.raises(ValueError, match=r"action_mode='nope' is not registered.*'auto'.*'ee6d'"):
        tiny_config(action_mode="nope")


def test_auto_real_dim_must_fit():
    with pytest.raises(ValueError, match="max_action_dim"):
        tiny_config(action_mode="auto", real_action_dim=30, max_action_dim=20)


def test_inconsistent_florence_config():
    fc = florence2_large_config()
    fc["text_config"]["d_model"] = 768
    with pytest.raises(ValueError, match="projection_dim=1024 must equal text d_model=768"):
        tiny_config(florence_config=fc)
    fc = florence2_large_config()
    fc["vision_config"]["depths"] = [1, 1]
    with pytest.raises(ValueError, match="depths"):
        tiny_config(florence_config=fc)


def test_round_trip_and_replace(tmp_path):
    cfg = tiny_config(image_size=(32, 32), image_keys=["observation.images.a"])
    cfg.save(tmp_path / "c.json")
    loaded = XVLAConfig.load(tmp_path / "c.json")
    assert loaded == cfg
    assert cfg.replace(dtype="bfloat16").dtype == "bfloat16"
    with pytest.raises(ValueError, match="unknown XVLAConfig field"):
        cfg.replace(not_a_field=1)
