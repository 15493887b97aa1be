"""xvla.hardware: the capability probe, the chooser, and what depends on them (int8's weight range,
fast=True, the bf16 warning). Paths for smaller CPUs run in a subprocess with the instruction sets
capped (ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY), so every kind tests what the others run."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xvla import XVLAPolicy, hardware
from xvla.model.int8_linear import Int8Linear

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}

BASE = hardware.Hardware(
    cpu_model="test",
    aten_capability="AVX2",
    onednn_cap=None,
    avx512=False,
    vnni=False,
    bf16=False,
    amx=False,
    cuda=None,
    cxx="/usr/bin/c++",
)


def _run_capped(code: str) -> dict:
    """Run ``code`` (which prints one JSON line last) in a fresh process capped at AVX2."""
    env = {**os.environ, **AVX2_ONLY, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"amx": True, "vnni": True, "bf16": True}, ("bfloat16", True, None)),
        ({"vnni": True, "bf16": True}, ("float32", True, "int8")),
        ({"vnni": True}, ("float32", True, "int8")),
        ({}, ("float32", True, "int8")),
        ({"vnni": True, "cxx": None}, ("float32", False, "int8")),
        ({"amx": True, "vnni": True, "bf16": True, "cxx": None}, ("bfloat16", False, None)),
    ],
)
def test_chooser_picks_the_fast_correct_setting_per_kind(changes, expected):
    setting = hardware.choose("cpu", dataclasses.replace(BASE, **changes))
    assert (setting.dtype, setting.compile, setting.quantize) == expected
    assert setting.reason and setting.device == "cpu"


def test_chooser_on_a_gpu_and_auto():
    gpu = dataclasses.replace(BASE, cuda="Some GPU")
    assert hardware.choose("cuda:1", gpu).kwargs() == {
        "device": "cuda:1",
        "dtype": "bfloat16",
        "compile": True,
        "quantize": None,
    }
    assert hardware.choose(None, gpu).device == "cuda"
    assert hardware.choose("auto", BASE).device == "cpu"


def test_probe_honours_an_instruction_set_cap():
    result = _run_capped(
        "import json, dataclasses; from xvla import hardware; hw = hardware.probe(); "
        "print(json.dumps({**dataclasses.asdict(hw), 'choice': hardware.choose('cpu').kwargs()}))"
    )
    assert not (result["vnni"] or result["bf16"] or result["amx"] or result["avx512"])
    assert result["aten_capability"] == "AVX2" and result["onednn_cap"] == "AVX2"
    assert result["choice"] == {"device": "cpu", "dtype": "float32", "compile": True, "quantize": "int8"}


def test_int8_weights_keep_to_7_bits_without_vnni():
    # Under the cap, oneDNN runs the AVX2 kernel (vpmaddubsw, int16 pair sums). 8-bit weights saturate it,
    # which is why Int8Linear keeps to 7 there; the 7-bit layer must equal its dequantized pattern.
    result = _run_capped(
        "import json, torch; import xvla.model.int8_linear as il\n"
        "torch.manual_seed(0); lin = torch.nn.Linear(256, 256); x = torch.randn(8, 256) * 3 + 1\n"
        "def err(q):\n"
        "    with torch.no_grad(): return (q(x) - q._reference_forward(x)).abs().max().item()\n"
        "seven = il.Int8Linear(lin)\n"
        "il.weight_bits = lambda: 8\n"
        "eight = il.Int8Linear(lin)\n"
        "print(json.dumps({'bits': seven.weight_bits, 'max_w': seven.qweight.abs().max().item(), "
        "'err7': err(seven), 'err8': err(eight), 'scale': lin(x).abs().max().item()}))"
    )
    assert result["bits"] == 7 and result["max_w"] <= 63
    assert result["err7"] < 1e-4 * result["scale"]  # fp32 rounding of the same int32 sums
    if result["err8"] < 1e-2 * result["scale"]:
        pytest.skip("oneDNN did not run its saturating AVX2 int8 kernel under ONEDNN_MAX_CPU_ISA=AVX2 here")


def test_int8_weight_range_follows_this_cpu():
    layer = Int8Linear(torch.nn.Linear(128, 8))
    assert layer.weight_bits == (8 if hardware.probe().vnni else 7)
    assert layer.qweight.abs().max().item() == 2 ** (layer.weight_bits - 1) - 1


ACCURACY = """
import json, torch
from pathlib import Path
from safetensors import safe_open
from xvla import XVLAPolicy
keys = ("input_ids", "image_input", "image_mask", "domain_id", "proprio", "noise")
errors = {"bf16": [], "int8": []}
for case in sorted(p for p in Path(FIXTURES).iterdir() if (p / "io.safetensors").exists()):
    with safe_open(str(case / "io.safetensors"), framework="pt") as f:
        io, steps = {k: f.get_tensor(k) for k in f.keys()}, int(f.metadata()["steps"])
    for name, kwargs in (("bf16", {"dtype": "bfloat16"}), ("int8", {"dtype": "float32", "quantize": "int8"})):
        policy = XVLAPolicy.from_pretrained(case / "checkpoint", **kwargs)
        with torch.inference_mode():
            out = policy.model.generate_actions(**{k: io[k] for k in keys}, steps=steps).float()
        errors[name].append((out - io["actions"]).abs())
print(json.dumps({name: [max(e.max().item() for e in v), sum(e.mean().item() for e in v) / len(v)]
                  for name, v in errors.items()}))
"""


@pytest.mark.parametrize("capped", [False, True], ids=["this-cpu", "avx2-only"])
def test_int8_action_error_within_twice_bf16s_on_the_parity_fixtures(capped):
    """Against the reference's recorded fp32 actions. Eager layers: the compiled int8 graph runs the same
    oneDNN kernel (tests/test_compiled_runner.py), and compiled bf16 rounds as eager bf16 does."""
    code = ACCURACY.replace("FIXTURES", repr(str(FIXTURES)))
    if capped:
        result = _run_capped(code)
    else:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    (bf16_max, bf16_mean), (int8_max, int8_mean) = result["bf16"], result["int8"]
    assert int8_max <= 2 * bf16_max and int8_mean <= 2 * bf16_mean, result


def test_fast_true_applies_the_choice_and_explicit_arguments_win(monkeypatch):
    path = FIXTURES / "lerobot_mixed_domains" / "checkpoint"
    choice = hardware.FastSetting("cpu", "float32", False, "int8", "test")
    monkeypatch.setattr("xvla.policy.choose", lambda device=None: choice)
    policy = XVLAPolicy.from_pretrained(path, fast=True)
    assert any(isinstance(m, Int8Linear) for m in policy.modules())
    assert policy.model.dtype == torch.float32 and policy.model.runner is None
    plain = XVLAPolicy.from_pretrained(path, fast=True, quantize="none", dtype="bfloat16")
    assert plain.model.dtype == torch.bfloat16
    assert not any(isinstance(m, Int8Linear) for m in plain.modules())
    compiled = hardware.FastSetting("cpu", "float32", True, None, "test")
    monkeypatch.setattr("xvla.policy.choose", lambda device=None: compiled)
    assert XVLAPolicy.from_pretrained(path, fast=True).model.runner is not None  # graphs build lazily
    assert XVLAPolicy.from_pretrained(path, fast=True, compile=False).model.runner is None


@pytest.mark.parametrize("native_bf16", [False, True])
def test_bf16_load_warns_where_the_cpu_would_emulate_it(monkeypatch, caplog, native_bf16):
    hw = dataclasses.replace(BASE, bf16=native_bf16)
    monkeypatch.setattr(hardware, "probe", lambda: hw)
    path = FIXTURES / "lerobot_mixed_domains" / "checkpoint"
    with caplog.at_level("WARNING", logger="xvla.policy"):
        XVLAPolicy.from_pretrained(path, dtype="bfloat16")
        XVLAPolicy.from_pretrained(path, dtype="float32")
    warned = [r.getMessage() for r in caplog.records if "without bf16 units" in r.getMessage()]
    # Once, for the bf16 load only, naming the setting to use instead.
    assert len(warned) == (0 if native_bf16 else 1)
    if warned:
        assert "'dtype': 'float32'" in warned[0] and "--fast" in warned[0]


def test_report_names_the_detection_and_the_choice():
    text = hardware.report()
    assert hardware.probe().summary() in text and "chooses" in text and "why" in text
