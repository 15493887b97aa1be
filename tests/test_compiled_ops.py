"""xvla.model.compiled_ops: the compiled forms of dropout, attention and GELU compute what torch's do."""

import pytest
import torch
import torch.nn.functional as F

from xvla.model.compiled_ops import Dropout, GeluTanh, attention, dropout, hashed_keep_mask

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
