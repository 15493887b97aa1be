"""ONNX export (xvla.export / `xvla export`): the graphs agree with eager torch at a new batch size."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from xvla import XVLAPolicy  # noqa: E402
from xvla.cli import main  # noqa: E402
from xvla.export import OnnxSampler  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
CASE = "lerobot_mixed_domains"  # 3 mixed domains, an empty camera slot


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx")
    # The CLI checks onnxruntime against eager itself and fails above 1e-4.
    assert main(["export", str(FIXTURES / CASE / "checkpoint"), str(out), "--image-size", "16", "16"]) == 0
    return out


def test_export_writes_both_graphs_and_metadata(exported):
    assert (exported / "encoder.onnx").is_file() and (exported / "denoise_step.onnx").is_file()
    sampler = OnnxSampler(exported)
    assert sampler.meta["views"] == 3 and sampler.meta["image_size"] == [16, 16]


def test_onnx_sampler_matches_the_reference_fixture(exported):
    with safe_open(str(FIXTURES / CASE / "io.safetensors"), framework="pt") as f:
        io, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    policy = XVLAPolicy.from_pretrained(FIXTURES / CASE / "checkpoint")
    inputs = {k: io[k].numpy() for k in ("input_ids", "image_input", "image_mask", "domain_id", "proprio")}
    for rows in (
        slice(0, 3),
        slice(1, 2),
    ):  # the exported batch was 2: batch 3 and 1 exercise the dynamic axis
        part = {k: v[rows] for k, v in inputs.items()}
        raw = OnnxSampler(exported)(part, io["noise"][rows].numpy(), steps=int(meta["steps"]))
        actions = policy.model.action_space.postprocess(torch.from_numpy(raw))
        torch.testing.assert_close(actions, io["actions"][rows], atol=1e-4, rtol=0)
        assert np.isfinite(raw).all()


def test_unknown_format_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", str(FIXTURES / CASE / "checkpoint"), str(tmp_path), "--format", "tensorrt"])
    assert "invalid choice" in capsys.readouterr().err


def test_openvino_runs_the_exported_graphs(exported):
    pytest.importorskip("openvino")  # installed by `make test` (the `openvino` extra)
    with safe_open(str(FIXTURES / CASE / "io.safetensors"), framework="pt") as f:
        io, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    inputs = {k: io[k].numpy() for k in ("input_ids", "image_input", "image_mask", "domain_id", "proprio")}
    steps = int(meta["steps"])
    onnxruntime = OnnxSampler(exported)(inputs, io["noise"].numpy(), steps=steps)
    f32 = OnnxSampler(exported, runtime="openvino", precision="f32")(inputs, io["noise"].numpy(), steps=steps)
    np.testing.assert_allclose(f32, onnxruntime, atol=1e-4, rtol=0)
    bf16 = OnnxSampler(exported, runtime="openvino", precision="bf16")(
        inputs, io["noise"].numpy(), steps=steps
    )
    assert (
        np.isfinite(bf16).all() and np.abs(bf16 - onnxruntime).max() < 0.05
    )  # 0.015 measured (actions up to 1.1)


def test_unknown_runtime_or_precision_is_refused(exported):
    with pytest.raises(ValueError, match="runtime='tvm' is unknown"):
        OnnxSampler(exported, runtime="tvm")
    if importlib.util.find_spec("openvino"):
        with pytest.raises(ValueError, match="one of f32, bf16, f16"):
            OnnxSampler(exported, runtime="openvino", precision="int4")


def test_fast_flag_times_this_machines_fast_setting_on_the_same_inputs(exported, monkeypatch, capsys):
    from xvla import hardware

    # An eager setting keeps the test short; the chooser itself is tested in test_hardware.py.
    setting = hardware.FastSetting("cpu", "float32", False, "int8", "test")
    monkeypatch.setattr(hardware, "choose", lambda device=None, hw=None: setting)
    monkeypatch.setattr("xvla.policy.choose", lambda device=None: setting)
    out = exported.parent / "again"
    args = [
        "export",
        str(FIXTURES / CASE / "checkpoint"),
        str(out),
        "--image-size",
        "16",
        "16",
        "--no-check",
        "--fast",
    ]
    assert main(args) == 0
    assert (
        "fast path here (--device cpu --dtype float32 --quantize int8), batch 3:" in capsys.readouterr().out
    )


def test_export_takes_the_image_size_the_processor_settles(tmp_path):
    from dataclasses import replace

    from xvla.export import export_onnx

    policy = XVLAPolicy.from_pretrained(FIXTURES / CASE / "checkpoint")
    policy.model.config = replace(policy.config, image_size=None, resize_imgs_with_padding=(12, 16))
    export_onnx(policy.model, tmp_path, views=policy.config.total_image_views)
    assert OnnxSampler(tmp_path).meta["image_size"] == [
        12,
        16,
    ]  # what resize_imgs_with_padding feeds the model
