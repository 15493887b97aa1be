"""The action head's Linear: oneDNN at CPU inference, nn.Linear's path everywhere else."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xvla.model import linear as linear_mod
from xvla.model.linear import Linear, runs_on_onednn
from xvla.model.transformer import Mlp

pytestmark = pytest.mark.skipif(linear_mod._LINEAR_POINTWISE is None, reason="torch built without oneDNN")


@pytest.fixture
def onednn_calls(monkeypatch):
    """Records the post-op of every oneDNN linear call."""
    calls = []
    op = linear_mod._LINEAR_POINTWISE

    def spy(x, weight, bias, attr, scalars, algorithm):
        calls.append(attr)
        return op(x, weight, bias, attr, scalars, algorithm)

    monkeypatch.setattr(linear_mod, "_LINEAR_POINTWISE", spy)
    monkeypatch.setattr(linear_mod, "MIN_MULTIPLY_ADDS", 0)  # the layers here are small
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(5, 32), (2, 7, 32)])
@pytest.mark.parametrize("bias", [True, False])
def test_inference_takes_onednn_and_matches_nn_linear(onednn_calls, dtype, shape, bias):
    if dtype == torch.bfloat16 and not linear_mod._BF16_OK:
        pytest.skip("no oneDNN bfloat16 on this CPU")
    torch.manual_seed(0)
    layer = Linear(32, 48, bias=bias).to(dtype)
    x = torch.randn(shape).to(dtype)
    with torch.no_grad():
        out = layer(x)
        expected = F.linear(
            x.float(), layer.weight.float(), None if layer.bias is None else layer.bias.float()
        )
    assert onednn_calls == ["none"]
    assert out.dtype == dtype and out.shape == (*shape[:-1], 48)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(out.float(), expected, atol=tol, rtol=tol)


def test_training_keeps_nn_linear_and_its_gradients(onednn_calls):
    torch.manual_seed(0)
    layer = Linear(16, 8)
    plain = torch.nn.Linear(16, 8)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(4, 16)
    layer(x).square().sum().backward()
    plain(x).square().sum().backward()
    assert onednn_calls == []
    torch.testing.assert_close(layer.weight.grad, plain.weight.grad)
    with torch.no_grad():
        layer(x)
    assert onednn_calls == ["none"]


def test_compiled_and_exported_graphs_see_plain_linears(onednn_calls):
    layer = Linear(16, 8).eval()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    with torch.no_grad():
        torch.compile(layer, backend=backend)(torch.randn(3, 16))
        exported = torch.export.export(layer, (torch.randn(3, 16),))
    assert onednn_calls == []
    targets = [str(n.target) for g in graphs for n in g.graph.nodes] + [
        str(n.target) for n in exported.graph_module.graph.nodes
    ]
    assert not any("mkldnn" in t for t in targets), targets
    assert any("linear" in t for t in targets), targets


def test_mlp_fuses_the_gelu_only_where_nothing_hooks_fc1(onednn_calls):
    torch.manual_seed(0)
    mlp = Mlp(32, 128).eval()
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        expected = F.linear(
            F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias), approximate="tanh"),
            mlp.fc2.weight,
            mlp.fc2.bias,
        )
        fused = mlp(x)
        assert onednn_calls == ["gelu", "none"]
        torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5)

        seen = []
        mlp.fc1.register_forward_hook(lambda module, args, out: seen.append(out.shape))
        onednn_calls.clear()
        hooked = mlp(x)
    assert seen == [(2, 9, 128)]  # the hook saw fc1's call, so the GELU ran on its own
    assert onednn_calls == ["none", "none"]
    torch.testing.assert_close(hooked, expected, atol=1e-5, rtol=1e-5)


def test_mlp_with_another_activation_does_not_fuse(onednn_calls):
    torch.manual_seed(0)
    mlp = Mlp(32, 128).eval()
    mlp.act = torch.nn.ReLU()
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        out = mlp(x)
        expected = F.linear(F.relu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias)
    assert onednn_calls == ["none", "none"]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_small_gemms_stay_on_addmm():
    layer = Linear(64, 256)  # 16.4k multiply-adds per row
    with torch.no_grad():
        assert not runs_on_onednn(layer, torch.randn(8, 64))
        assert runs_on_onednn(layer, torch.randn(2, 40, 64))  # 80 rows: 1.3M


def test_other_inputs_take_nn_linear(monkeypatch):
    monkeypatch.setattr(linear_mod, "MIN_MULTIPLY_ADDS", 0)
    layer = Linear(4, 3)
    with torch.no_grad():
        assert runs_on_onednn(layer, torch.randn(2, 4))
        assert not runs_on_onednn(layer, torch.randn(4))  # 1-D input
        assert not runs_on_onednn(layer, torch.randn(2, 4, dtype=torch.float64))
        assert not runs_on_onednn(layer.double(), torch.randn(2, 4, dtype=torch.float64))
    assert not runs_on_onednn(layer.float(), torch.randn(2, 4, requires_grad=True))
    with pytest.raises(ValueError, match="activation"):
        linear_mod.onednn_linear(layer, torch.randn(2, 4), "relu")
