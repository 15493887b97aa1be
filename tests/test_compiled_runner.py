"""The fast inference path (xvla.model.compiled_runner): compiled graphs agree with eager and with the
reference fixtures.

One compile of the tiny parity model (fp32) keeps this file at a few tens of seconds; speed itself is
measured in benchmarks/compare_lerobot.py, never asserted here.
"""

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from xvla import XVLAPolicy, hardware
from xvla.model.compiled_runner import (
    CompiledRunner,
    _pad_rows,
    check_compile_supported,
    compile_for_inference,
)
from xvla.model.int8_linear import MIN_IN_FEATURES, Int8Linear, quantize_int8

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
CASE = "lerobot_mixed_domains"  # B=3, mixed domain ids, an empty camera slot: padding and masking at once


def load_case(name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(FIXTURES / name / "io.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def sample_inputs(io: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    keys = ("input_ids", "image_input", "image_mask", "domain_id", "proprio")
    return {k: io[k] for k in keys}


def test_compiled_fp32_matches_reference_with_padding_and_slices():
    io, meta = load_case(CASE)
    # Sizes (2,): the batch of 3 is padded to 4 and run as two slices of 2 -- one graph of each kind.
    policy = XVLAPolicy.from_pretrained(
        FIXTURES / CASE / "checkpoint", compile=True, compile_batch_sizes=(2,)
    )
    fast = policy.model.runner
    assert isinstance(fast, CompiledRunner) and fast.padded_size(3) == 4
    actions = policy.model.generate_actions(**sample_inputs(io), steps=int(meta["steps"]), noise=io["noise"])
    torch.testing.assert_close(actions, io["actions"], atol=1e-4, rtol=0)
    # A single sample gives the same actions as inside the batch: padding rows do not leak.
    one = {k: v[1:2] for k, v in sample_inputs(io).items()}
    alone = policy.model.generate_actions(**one, steps=int(meta["steps"]), noise=io["noise"][1:2])
    torch.testing.assert_close(alone, actions[1:2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype, graphs", [("bfloat16", 4), ("float32", 6)])
def test_frozen_graphs_per_batch_size(dtype, graphs):
    # Each frozen graph holds a copy of the weights. bf16: batch 1 gets one graph, every size >= 2 shares
    # one (symbolic batch). fp32: a graph per warmed size (inductor packs fp32 linears for MKL only at a
    # static batch), and batch 3 runs padded to 4.
    from torch._dynamo.testing import CompileCounterWithBackend

    io, meta = load_case(CASE)
    policy = XVLAPolicy.from_pretrained(FIXTURES / CASE / "checkpoint", dtype=dtype)
    counter = CompileCounterWithBackend("inductor")
    compile_for_inference(policy.model, batch_sizes=(1, 2, 4), backend=counter)
    atol = 1e-4 if dtype == "float32" else 3e-2  # bf16: the fixtures' bf16 error is about 1e-2
    for batch in (1, 2, 3, 4):
        rows = [0, 1, 2, 0][:batch]
        inputs = {k: v[rows] for k, v in sample_inputs(io).items()}
        actions = policy.model.generate_actions(**inputs, steps=int(meta["steps"]), noise=io["noise"][rows])
        torch.testing.assert_close(actions.float(), io["actions"][rows], atol=atol, rtol=0)
    assert counter.frame_count == graphs  # encode and denoising step, at each graph's batch


def test_training_and_autograd_bypass_the_compiled_graphs():
    io, _ = load_case(CASE)
    policy = XVLAPolicy.from_pretrained(FIXTURES / CASE / "checkpoint")
    kwargs = dict(**sample_inputs(io), action=io["action"], t=io["t"], noise=io["loss_noise"])
    expected = policy.model(**kwargs)
    fast = compile_for_inference(policy.model, batch_sizes=(4,))
    assert policy.model.runner is fast and "encode" not in policy.model.__dict__  # held, no method replaced
    fast._encode_graph = fast._denoise_graph = None  # any use of a graph would fail loudly
    losses = policy.model(**kwargs)  # grad enabled: the model runs eagerly
    for name, value in expected.items():
        torch.testing.assert_close(losses[name], value)
    fast.disable()
    assert "encode" not in policy.model.__dict__ and policy.model.runner is None


def test_pad_rows_repeats_the_first_sample():
    x = torch.arange(6.0).view(3, 2)
    padded = _pad_rows(x, 5)
    assert padded.shape == (5, 2) and torch.equal(padded[3:], x[:1].expand(2, 2))
    assert _pad_rows(x, 3) is x


def test_bucket_sizes_and_invalid_sizes():
    bf16 = XVLAPolicy.from_pretrained(FIXTURES / CASE / "checkpoint", dtype="bfloat16")
    sizes = (1, 2, 3, 5, 8, 9, 17)
    # Frozen bf16 graphs (CPU): a symbolic batch, so a batch runs at its own size, in slices of at most 8 ...
    fast = compile_for_inference(bf16.model, batch_sizes=(8, 1, 2, 4))
    assert [fast.padded_size(b) for b in sizes] == [1, 2, 3, 5, 8, 9, 17]
    # ... except a lone row when batch 1 has no graph.
    fast = compile_for_inference(bf16.model, batch_sizes=(2, 4))
    assert [fast.padded_size(b) for b in (1, 3, 4, 5, 9)] == [2, 3, 4, 6, 10]
    # One graph per size (frozen fp32 graphs, CUDA graphs): the next warmed size or a multiple of the largest.
    policy = XVLAPolicy.from_pretrained(FIXTURES / CASE / "checkpoint")
    for mode in (None, "reduce-overhead"):
        fast = compile_for_inference(policy.model, batch_sizes=(8, 1, 2, 4), mode=mode)
        assert [fast.padded_size(b) for b in sizes] == [1, 2, 4, 8, 8, 16, 24]
    with pytest.raises(ValueError, match="batch_sizes"):
        compile_for_inference(policy.model, batch_sizes=(0,))


def test_clear_errors_where_inductor_cannot_work(monkeypatch):
    with pytest.raises(ValueError, match="compile=False"):
        check_compile_supported(torch.device("meta"))
    no_compiler = dataclasses.replace(hardware.probe(), cxx=None)
    monkeypatch.setattr("xvla.model.compiled_runner.probe", lambda: no_compiler)
    with pytest.raises(ValueError, match="C\\+\\+ compiler"):
        check_compile_supported(torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graphs_bf16_close_to_fp32():
    io, meta = load_case(CASE)
    policy = XVLAPolicy.from_pretrained(
        FIXTURES / CASE / "checkpoint",
        device="cuda",
        dtype="bfloat16",
        compile=True,
        compile_batch_sizes=(4,),
    )
    assert policy.model.runner.mode == "reduce-overhead"
    inputs = {k: v.cuda() for k, v in sample_inputs(io).items()}
    for _ in range(3):  # CUDA graphs are recorded on a later call than the first: replay them too
        actions = policy.model.generate_actions(**inputs, steps=int(meta["steps"]), noise=io["noise"].cuda())
    torch.testing.assert_close(actions.float().cpu(), io["actions"], atol=5e-2, rtol=0)


def test_int8_quantization_of_the_linears_stays_close_to_fp32():
    io, meta = load_case(CASE)
    policy = XVLAPolicy.from_pretrained(FIXTURES / CASE / "checkpoint", quantize="int8")
    modules = dict(policy.model.named_modules())
    quantized = [n for n, m in modules.items() if isinstance(m, Int8Linear)]
    left = [
        n for n, m in modules.items() if isinstance(m, torch.nn.Linear) and m.in_features >= MIN_IN_FEATURES
    ]
    assert quantized and not left and all(not n.startswith("transformer.soft_prompt") for n in quantized)
    inputs = sample_inputs(io)
    before = {k: v.clone() for k, v in inputs.items()}
    actions = policy.model.generate_actions(**inputs, steps=int(meta["steps"]), noise=io["noise"])
    err = (actions - io["actions"]).abs()
    scale = io["actions"].abs().mean()
    assert 0 < err.mean() < 0.1 * scale, (err.mean(), scale)  # quantized: not bit-equal, but close
    assert all(torch.equal(before[k], inputs[k]) for k in inputs)
    with pytest.raises(ValueError, match="'int4' is unknown"):
        XVLAPolicy.from_pretrained(FIXTURES / CASE / "checkpoint", quantize="int4")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_eager_kernel_matches_its_pattern_and_compiles_to_onednn_int8(dtype):
    """Eager runs oneDNN's int8 linear on a packed weight; compiled, the quantize -> dequantize -> linear
    pattern becomes the same kernel with the GELU and the residual add fused (none of it dequantizes a
    weight at run time)."""
    from torch._inductor.utils import run_and_get_code

    from xvla.model.transformer import Mlp

    torch.manual_seed(0)
    mlp = Mlp(64, 256, dropout=0.0).eval()
    x = torch.randn(2, 16, 64)

    def block(x):
        # Not x + mlp(x): inductor (torch 2.13) adds the residual in place into the int8 linear's output
        # buffer, and would write into a graph input; in the model every residual is an intermediate.
        h = x * 0.5
        return h + mlp(h)

    expected = block(x)
    mlp = mlp.to(dtype)
    assert quantize_int8(mlp) == 2 and isinstance(mlp.fc1, Int8Linear)

    def reference(x):  # the pattern, run op by op (weights dequantized)
        h = x * 0.5
        hidden = torch.nn.functional.gelu(mlp.fc1._reference_forward(h), approximate="tanh")
        return h + mlp.fc2._reference_forward(hidden)

    with torch.no_grad():
        xd = x.to(dtype)
        eager, pattern = block(xd), reference(xd)
        assert eager.dtype == dtype
        # Not bit-equal: where the GEMMs' summation order moves a value across a rounding boundary of the
        # next layer's input quantization, that element moves by one int8 step.
        tol = (1e-2 if dtype == torch.float32 else 3e-2) * expected.abs().max().item()
        torch.testing.assert_close(eager.float(), pattern.float(), atol=tol, rtol=0)
        assert (eager.float() - expected).abs().max() < 0.05 * expected.abs().max()  # int8 error, not a bug
        with torch._inductor.config.patch(freezing=True):
            compiled, (code,) = run_and_get_code(torch.compile(block), xd)
    assert code.count("qlinear_pointwise") >= 2 and "gelu" in code and "dequantize_per_channel" not in code
    assert "sum" in code  # the residual add in the second linear's epilogue
    torch.testing.assert_close(compiled.float(), eager.float(), atol=tol, rtol=0)


def test_compiled_int8_model_agrees_with_eager_int8_and_leaves_its_inputs_alone():
    io, meta = load_case(CASE)
    policy = XVLAPolicy.from_pretrained(
        FIXTURES / CASE / "checkpoint", quantize="int8", compile=True, compile_batch_sizes=(4,)
    )
    inputs = sample_inputs(io)
    before = {k: v.clone() for k, v in inputs.items()}
    steps = int(meta["steps"])
    compiled = policy.model.generate_actions(**inputs, steps=steps, noise=io["noise"])
    again = policy.model.generate_actions(**inputs, steps=steps, noise=io["noise"])
    assert all(torch.equal(before[k], inputs[k]) for k in inputs)
    torch.testing.assert_close(again, compiled, atol=0, rtol=0)
    policy.model.runner.disable()
    eager = policy.model.generate_actions(**inputs, steps=steps, noise=io["noise"])
    scale = io["actions"].abs().mean()
    assert (compiled - eager).abs().mean() < 0.05 * scale


def test_a_lora_merge_into_int8_layers_is_refused_with_a_clear_error():
    policy = XVLAPolicy.from_pretrained(FIXTURES / CASE / "checkpoint", quantize="int8")
    from xvla.adapters import merge_lora

    name = next(n for n, m in policy.model.named_modules() if isinstance(m, Int8Linear))
    module = policy.model.get_submodule(name)
    lora = {
        f"base_model.model.{name}.lora_A.weight": torch.zeros(2, module.in_features),
        f"base_model.model.{name}.lora_B.weight": torch.zeros(module.out_features, 2),
    }
    with pytest.raises(ValueError, match="int8"):
        merge_lora(policy.model, lora, {"r": 2, "lora_alpha": 2}, "adapter.safetensors")


def test_weights_changed_rebuilds_graphs_that_froze_the_old_weights():
    """bf16 graphs hold prepacked copies of the linears: an in-place change (a LoRA merge) needs new graphs."""
    from conftest import tiny_config

    from xvla.model import XVLAModel

    torch.manual_seed(0)
    model = XVLAModel(tiny_config(dtype="bfloat16", hidden_size=64, depth=1)).eval()
    inputs = dict(
        input_ids=torch.randint(3, 200, (1, 12)),
        image_input=torch.randn(1, 1, 3, 32, 32),
        image_mask=torch.ones(1, 1, dtype=torch.bool),
        domain_id=torch.zeros(1, dtype=torch.long),
        proprio=torch.randn(1, model.dim_proprio),
        noise=torch.randn(1, 4, model.dim_action),
    )
    fast = compile_for_inference(model, batch_sizes=(1,))
    model.generate_actions(**inputs)  # compiles: the linears are prepacked for oneDNN
    with torch.no_grad():
        model.transformer.blocks[0].mlp.fc1.weight.mul_(-3.0)
    fast.weights_changed()
    compiled = model.generate_actions(**inputs)
    fast.disable()
    eager = model.generate_actions(**inputs)
    assert (compiled - eager).abs().max() < 0.05  # bf16 rounding; stale weights are off by about 1
