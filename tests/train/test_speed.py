"""Training speed-ups (xvla.train.speed): compiled graphs give the eager loss and gradients; fused AdamW probe."""

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from xvla import XVLAPolicy
from xvla.train.speed import compile_for_training, fused_adamw_supported

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "parity"
CASE = "lerobot_ee6d"


def loss_and_grads(model, io) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    keys = ("input_ids", "image_input", "image_mask", "domain_id", "proprio")
    losses = model(**{k: io[k] for k in keys}, action=io["action"], t=io["t"], noise=io["loss_noise"])
    total = sum(losses.values())
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return total.detach(), grads


@pytest.mark.slow  # compiles forward + backward: about 3 CPU-minutes
def test_compiled_training_step_matches_eager():
    with safe_open(str(FIXTURES / CASE / "io.safetensors"), framework="pt") as f:
        io = {k: f.get_tensor(k) for k in f.keys()}
    model = XVLAPolicy.from_pretrained(FIXTURES / CASE / "checkpoint").model.eval()  # eval: no dropout draws
    expected_loss, expected_grads = loss_and_grads(model, io)
    compile_for_training(model)
    loss, grads = loss_and_grads(model, io)
    torch.testing.assert_close(loss, expected_loss, atol=1e-5, rtol=1e-5)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], atol=1e-4, rtol=1e-3, msg=name)


def test_fused_adamw_probe():
    assert fused_adamw_supported(torch.device("cpu")) in (True, False)
    assert fused_adamw_supported(torch.device("meta")) is False
