"""A committed action prefix as a constraint on flow-matching sampling (real-time chunking).

While a new chunk is being computed the robot keeps executing the previous one, so the first actions
of the new chunk are already decided. ``generate_actions(prefix=...)`` samples a chunk that agrees
with them. X-VLA's network predicts the clean chunk ``a_hat = net(x_t, t)`` and the sampler re-noises
it with the initial noise ``x1``: ``x_{t - dt} = (t - dt) * x1 + (1 - t + dt) * a_hat``. The only
learned quantity in a step is ``a_hat``, so both variants act on it (derivation: docs/realtime.md):

- ``inpaint`` (guidance-free): ``a_hat <- a_hat + W * (Y - a_hat)``. The next noisy input then holds
  the prefix noised with the same ``x1``, and the last step returns ``Y`` exactly where ``W = 1``.
- ``guided`` (RTC's pseudo-inverse guidance, mapped to a clean-action sampler): ``a_hat <- a_hat +
  s(t) * J^T (W * (Y - a_hat))`` with ``J = d a_hat / d x_t`` (one vector-Jacobian product per step)
  and ``s(t) = t * min(beta, ((1 - t)^2 + t^2) / (t * (1 - t)))``.

``Y`` and ``W`` live in the model's action space; the prefix arrives in the robot's space (after the
action space's postprocess) and is mapped back with ``action_space.invert_postprocess``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..actions import BaseActionSpace

GUIDANCE_MODES = ("inpaint", "guided")
DEFAULT_MAX_GUIDANCE = 5.0  # beta, the clip on the guidance weight (RTC's default)


@dataclass
class PrefixConstraint:
    target: torch.Tensor  # [B, T, D] model-space actions (zero where unconstrained)
    weights: torch.Tensor  # [B, T, D] in [0, 1]; zero beyond the prefix and on padded channels
    mode: str = "inpaint"
    max_guidance: float = DEFAULT_MAX_GUIDANCE

    def inpaint(self, action: torch.Tensor) -> torch.Tensor:
        return action + self.weights * (self.target - action)

    def guide(
        self, denoise: Callable[[torch.Tensor], torch.Tensor], x_t: torch.Tensor, t: float
    ) -> torch.Tensor:
        """The guided clean estimate at noise level ``t`` (1 = pure noise)."""
        # The server samples under inference_mode; autograd needs ordinary tensors, hence the clone.
        with torch.inference_mode(False), torch.enable_grad():
            x = x_t.detach().clone().requires_grad_(True)
            pred = denoise(x)
            residual = self.weights * (self.target - pred.detach())
            (vjp,) = torch.autograd.grad(pred, x, grad_outputs=residual)
        return pred.detach() + guidance_scale(t, self.max_guidance) * vjp.detach()


def guidance_scale(t: float, max_guidance: float = DEFAULT_MAX_GUIDANCE) -> float:
    """RTC's clipped guidance weight, multiplied by ``t`` to act on the clean estimate instead of a velocity."""
    if t >= 1.0:
        return t * max_guidance
    return t * min(max_guidance, ((1 - t) ** 2 + t**2) / (t * (1 - t)))


def build_prefix_constraint(
    space: BaseActionSpace,
    prefix: torch.Tensor,
    prefix_weights: torch.Tensor | None,
    shape: tuple[int, int, int],
    *,
    mode: str = "inpaint",
    max_guidance: float = DEFAULT_MAX_GUIDANCE,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> PrefixConstraint:
    """Robot-space prefix [B, d, real_dim] and weights ([d], [B, d] or None = all ones) -> a model-space constraint."""
    if mode not in GUIDANCE_MODES:
        raise ValueError(f"guidance={mode!r} is unknown: choose one of {list(GUIDANCE_MODES)}")
    batch, chunk, dim = shape
    prefix = torch.as_tensor(prefix).to(device=device, dtype=torch.float32)
    if prefix.dim() == 2:
        prefix = prefix.unsqueeze(0).expand(batch, -1, -1)
    if prefix.dim() != 3 or prefix.shape[0] != batch or not 0 < prefix.shape[1] <= chunk:
        raise ValueError(
            f"prefix must be [B={batch}, d, {space.real_dim}] with 1 <= d <= chunk_size={chunk}, "
            f"got shape {tuple(prefix.shape)}"
        )
    if not torch.isfinite(prefix).all():
        raise ValueError("prefix contains NaN or infinite values; pass the actions the robot executes")
    length = prefix.shape[1]
    model_prefix, channels = space.invert_postprocess(prefix)
    weights = _position_weights(prefix_weights, batch, length, device)
    target = torch.zeros(shape, device=device, dtype=torch.float32)
    target[:, :length] = model_prefix
    full = torch.zeros(shape, device=device, dtype=torch.float32)
    full[:, :length] = weights.unsqueeze(-1) * channels.to(torch.float32)
    return PrefixConstraint(target.to(dtype), full.to(dtype), mode, float(max_guidance))


def _position_weights(weights: torch.Tensor | None, batch: int, length: int, device) -> torch.Tensor:
    if weights is None:
        return torch.ones(batch, length, device=device)
    weights = torch.as_tensor(weights).to(device=device, dtype=torch.float32)
    if weights.dim() == 1:
        weights = weights.unsqueeze(0).expand(batch, -1)
    if tuple(weights.shape) != (batch, length):
        raise ValueError(
            f"prefix_weights must be [d={length}] or [B={batch}, d={length}] (one weight per prefix action), "
            f"got shape {tuple(weights.shape)}"
        )
    if not torch.isfinite(weights).all() or weights.min() < 0 or weights.max() > 1:
        raise ValueError("prefix_weights must be finite numbers in [0, 1] (1 = keep the committed action)")
    return weights
