"""xvla.model.compiled_ops: the compiled forms of dropout, attention and GELU compute what torch's do."""

import pytest
import torch
import torch.nn.functional as F

import xvla.model.compiled_ops as compiled_ops
from xvla.model.compiled_ops import (
    Dropout,
    GeluTanh,
    attention,
    dropout,
    explicit_bf16_attention,
    hashed_keep_mask,
)

P = 0.1


def lowbias32(h: int) -> int:
    """The hash on Python integers (unbounded, masked to 32 bits by hand): what the int32 tensor code must equal."""
    h &= 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x7FEB352D) & 0xFFFFFFFF
    h ^= h >> 15
    h = (h * 0x846CA68B) & 0xFFFFFFFF
    return h ^ (h >> 16)


def python_keep(index: int, seed: int, p: float) -> bool:
    h = lowbias32((lowbias32(index ^ seed) + seed) & 0xFFFFFFFF)
    return (h >> 8) >= round(p * (1 << 24))


@pytest.fixture(scope="module")
def compiled_dropout():
    return torch.compile(lambda x: dropout(x, P, training=True))


def test_the_int32_mask_is_the_32_bit_hash_eager_and_compiled():
    seed = 0x5EED1234
    expected = torch.tensor([python_keep(i, seed, P) for i in range(1 << 16)], dtype=torch.uint8)
    for make_mask in (
        hashed_keep_mask,
        torch.compile(hashed_keep_mask),
    ):  # vector kernels must wrap like Python
        mask = make_mask(torch.Size([1 << 16]), torch.tensor(seed, dtype=torch.int32), P)
        assert torch.equal(mask, expected)


def test_masks_keep_one_minus_p_independently_of_position_and_seed():
    shape = torch.Size([1024, 1024])
    a = hashed_keep_mask(shape, torch.tensor(7, dtype=torch.int32), P).flatten().float()
    b = hashed_keep_mask(shape, torch.tensor(8, dtype=torch.int32), P).flatten().float()
    n = a.numel()
    tol = 5 * (P * (1 - P) / n) ** 0.5  # five standard deviations of a binomial rate
    assert abs(a.mean().item() - (1 - P)) < tol
    drop_a, drop_b = 1 - a, 1 - b
    assert abs((drop_a[1:] * drop_a[:-1]).mean().item() - P * P) < 5 * (P * P / n) ** 0.5  # neighbours
    assert abs((drop_a * drop_b).mean().item() - P * P) < 5 * (P * P / n) ** 0.5  # two seeds


def test_compiled_dropout_scales_kept_values_and_routes_gradients_through_the_same_mask(compiled_dropout):
    x = torch.randn(64, 512, requires_grad=True)
    y = compiled_dropout(x)
    kept = y != 0
    assert 0.85 < kept.float().mean().item() < 0.95
    torch.testing.assert_close(y[kept], x[kept] / (1 - P))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / (1 - P))
    assert not torch.equal(compiled_dropout(x) != 0, kept)  # a new mask per call


def test_eval_mode_and_eager_calls_are_torch_dropout():
    x = torch.randn(8, 16)
    module = Dropout(P).eval()
    assert module(x) is x
    torch.manual_seed(3)
    eager = dropout(x, P, training=True)
    torch.manual_seed(3)
    torch.testing.assert_close(eager, F.dropout(x, P, training=True))


def test_compiled_attention_with_dropout_is_attention():
    q, k, v = (torch.randn(2, 4, 40, 16) for _ in range(3))
    # p this small rounds to a threshold of 0: every element is kept, so only the attention maths differs.
    out = torch.compile(lambda q, k, v: attention(q, k, v, dropout_p=1e-9))(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_explicit_bf16_attention_only_without_amx_for_bf16_and_many_heads(monkeypatch):
    def q(batch, heads, dtype=torch.bfloat16):
        return torch.zeros(batch, heads, 4, 64, dtype=dtype)

    monkeypatch.setattr(compiled_ops, "_CPU_HAS_AMX", False)
    assert (
        explicit_bf16_attention(q(1, 16))
        and explicit_bf16_attention(q(2, 8))
        and explicit_bf16_attention(q(8, 8))
    )
    assert not explicit_bf16_attention(q(1, 8))  # 8 (batch, head) pairs: SDPA is as fast
    assert not explicit_bf16_attention(q(8, 8, torch.float32))
    monkeypatch.setattr(compiled_ops, "_CPU_HAS_AMX", True)
    assert not explicit_bf16_attention(q(8, 8))


def _compiled_attention_code(q, k, v, dynamic_batch: bool, no_recompile: bool = False):
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    if dynamic_batch:
        for x in (q, k, v):
            torch._dynamo.mark_dynamic(x, 0)
    compiled = torch.compile(lambda q, k, v: attention(q, k, v, dropout_p=0.0))
    larger = [torch.cat([x, x, x[:1]]) for x in (q, k, v)]
    with torch.inference_mode():
        out, code = run_and_get_code(compiled, q, k, v)
        if no_recompile:  # one graph for every batch size from 2 up: the choice put no guard on the batch
            with torch._dynamo.config.patch(error_on_recompile=True):
                compiled(*larger)
    torch._dynamo.reset()
    return out, "".join(code)


@pytest.mark.parametrize("dynamic_batch", [False, True])
def test_compiled_bf16_attention_without_amx_is_two_gemms_and_a_softmax(monkeypatch, dynamic_batch):
    monkeypatch.setattr(compiled_ops, "_CPU_HAS_AMX", False)
    q, k, v = (torch.randn(2, 8, 40, 64).bfloat16() for _ in range(3))  # 16 (batch, head) pairs
    out, code = _compiled_attention_code(q, k, v, dynamic_batch, no_recompile=dynamic_batch)
    # Inductor's pattern matcher must not have turned it back into SDPA (it does when q is not scaled first).
    assert "scaled_dot_product" not in code and "bmm" in code
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    torch.testing.assert_close(out.float(), expected, atol=3e-2, rtol=2e-2)


def test_compiled_bf16_attention_keeps_sdpa_for_few_heads_or_with_amx(monkeypatch):
    q, k, v = (torch.randn(2, 4, 40, 64).bfloat16() for _ in range(3))
    monkeypatch.setattr(compiled_ops, "_CPU_HAS_AMX", False)
    assert "scaled_dot_product" in _compiled_attention_code(q, k, v, dynamic_batch=False)[1]  # 8 pairs
    monkeypatch.setattr(compiled_ops, "_CPU_HAS_AMX", True)
    assert "scaled_dot_product" in _compiled_attention_code(q, k, v, dynamic_batch=True)[1]


def test_compiled_gelu_is_the_tanh_approximation_with_the_same_gradient():
    x = (torch.randn(4096, dtype=torch.float64) * 4).float().requires_grad_()
    compiled = torch.compile(GeluTanh())(x)
    (grad,) = torch.autograd.grad(compiled.sum(), x)
    eager = F.gelu(x, approximate="tanh")
    (expected_grad,) = torch.autograd.grad(eager.sum(), x)
    torch.testing.assert_close(compiled, eager, atol=2e-6, rtol=1e-6)
    torch.testing.assert_close(grad, expected_grad, atol=2e-6, rtol=1e-5)
    assert torch.equal(GeluTanh()(x), eager)  # eager: torch's own kernel


def test_gradient_checkpointing_recomputes_the_same_mask():
    from torch.utils.checkpoint import checkpoint

    x = torch.randn(4096)
    w = torch.ones(4096, requires_grad=True)
    step = torch.compile(
        lambda w: checkpoint(lambda w: dropout(x * w, 0.5, training=True), w, use_reentrant=False)
    )
    y = step(w)
    y.sum().backward()  # the backward recomputes the forward: a new seed would give another mask
    torch.testing.assert_close(w.grad, x * (y != 0) / 0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_compiled_masks_are_the_same_hash():
    # Triton's int32 arithmetic must wrap and shift like the CPU kernels' for the mask to be this hash.
    seed = 0x5EED1234
    keep = torch.compile(hashed_keep_mask)(
        torch.Size([1 << 16]), torch.tensor(seed, dtype=torch.int32).cuda(), P, "cuda"
    )
    expected = torch.tensor([python_keep(i, seed, P) for i in range(1 << 16)], dtype=torch.uint8)
    assert torch.equal(keep.cpu(), expected)
