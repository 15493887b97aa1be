"""Rotation conversions: rot6d, rotation matrices, quaternions (x, y, z, w), axis-angle and euler.

Two 6D conventions exist in X-VLA data, and they are NOT interchangeable:

- ``"columns"`` (LIBERO data and clients, LeRobot's LIBERO processor): the first two *columns* of the
  rotation matrix concatenated, ``[R[:, 0], R[:, 1]]`` = ``[R00, R10, R20, R01, R11, R21]``.
- ``"rows"``: the first two columns read row by row, ``R[:, :2].reshape(6)`` =
  ``[R00, R01, R10, R11, R20, R21]``.

Every function works on torch tensors with any leading batch shape.
"""

from __future__ import annotations

import torch

ROT6D_CONVENTIONS = ("columns", "rows")


def _check_convention(convention: str) -> None:
    if convention not in ROT6D_CONVENTIONS:
        raise ValueError(f"rot6d convention '{convention}' is unknown; use one of {ROT6D_CONVENTIONS}")


def matrix_to_rot6d(matrix: torch.Tensor, convention: str = "columns") -> torch.Tensor:
    """[..., 3, 3] rotation matrices -> [..., 6]."""
    _check_convention(convention)
    if matrix.shape[-2:] != (3, 3):
        raise ValueError(f"matrix_to_rot6d expects [..., 3, 3], got {tuple(matrix.shape)}")
    if convention == "columns":
        return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], dim=-1)
    return matrix[..., :, :2].reshape(*matrix.shape[:-2], 6)


def rot6d_to_matrix(rot6d: torch.Tensor, convention: str = "columns", eps: float = 1e-6) -> torch.Tensor:
    """[..., 6] -> [..., 3, 3] by Gram-Schmidt (the result is a proper rotation even for noisy inputs)."""
    _check_convention(convention)
    if rot6d.shape[-1] != 6:
        raise ValueError(f"rot6d_to_matrix expects [..., 6], got {tuple(rot6d.shape)}")
    if convention == "columns":
        a1, a2 = rot6d[..., 0:3], rot6d[..., 3:6]
    else:
        pairs = rot6d.reshape(*rot6d.shape[:-1], 3, 2)
        a1, a2 = pairs[..., 0], pairs[..., 1]
    b1 = a1 / a1.norm(dim=-1, keepdim=True).clamp_min(eps)
    b2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = b2 / b2.norm(dim=-1, keepdim=True).clamp_min(eps)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def quaternion_to_matrix(quat: torch.Tensor) -> torch.Tensor:
    """[..., 4] quaternions in (x, y, z, w) order -> [..., 3, 3]."""
    q = quat / quat.norm(dim=-1, keepdim=True)
    x, y, z, w = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] -> [..., 4] (x, y, z, w) with w >= 0, numerically stable for all angles."""
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Four candidate solutions; use the one with the largest denominator for each matrix.
    cands = torch.stack(
        [
            torch.stack([1 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] - m[..., 1, 2]], -1),
            torch.stack([m[..., 0, 1] + m[..., 1, 0], 1 - m00 + m11 - m22, m[..., 1, 2] + m[..., 2, 1], m[..., 0, 2] - m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m00 - m11 + m22, m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1], 1 + m00 + m11 + m22], -1),
        ],
        dim=-2,
    )  # fmt: skip
    diag = torch.stack(
        [1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22, 1 + m00 + m11 + m22], -1
    )
    best = diag.argmax(-1, keepdim=True)
    q = torch.gather(cands, -2, best[..., None].expand(*best.shape[:-1], 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., 3:4] < 0, -q, q)


def quaternion_to_axis_angle(quat: torch.Tensor) -> torch.Tensor:
    """[..., 4] (x, y, z, w) -> [..., 3] rotation vector (axis * angle, angle in [0, pi])."""
    q = quat / quat.norm(dim=-1, keepdim=True)
    q = torch.where(q[..., 3:4] < 0, -q, q)
    sin_half = q[..., :3].norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, q[..., 3:4])
    # angle / sin(angle/2) -> 2 as the angle -> 0
    scale = torch.where(sin_half > 1e-8, angle / sin_half.clamp_min(1e-12), torch.full_like(angle, 2.0))
    return q[..., :3] * scale


def axis_angle_to_quaternion(axis_angle: torch.Tensor) -> torch.Tensor:
    """[..., 3] rotation vector -> [..., 4] (x, y, z, w)."""
    angle = axis_angle.norm(dim=-1, keepdim=True)
    half = angle / 2
    scale = torch.where(angle > 1e-8, torch.sin(half) / angle.clamp_min(1e-12), 0.5 - angle**2 / 48)
    return torch.cat([axis_angle * scale, torch.cos(half)], dim=-1)


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    return quaternion_to_matrix(axis_angle_to_quaternion(axis_angle))


def rot6d_to_axis_angle(rot6d: torch.Tensor, convention: str = "columns") -> torch.Tensor:
    """The LIBERO action decoding: rot6d -> rotation vector."""
    return matrix_to_axis_angle(rot6d_to_matrix(rot6d, convention))


def euler_to_matrix(euler: torch.Tensor, order: str = "xyz") -> torch.Tensor:
    """[..., 3] extrinsic euler angles (radians), applied in ``order`` (e.g. roll-pitch-yaw = "xyz")."""
    if sorted(order) != ["x", "y", "z"]:
        raise ValueError(f"euler order must be a permutation of 'xyz', got '{order}'")
    mats = {axis: _axis_rotation(axis, euler[..., i]) for i, axis in enumerate("xyz")}
    result = mats[order[0]]
    for axis in order[1:]:
        result = mats[axis] @ result  # extrinsic: later rotations act in the fixed frame
    return result


def matrix_to_euler(matrix: torch.Tensor, order: str = "xyz") -> torch.Tensor:
    """Inverse of :func:`euler_to_matrix` for the extrinsic "xyz" order (roll, pitch, yaw)."""
    if order != "xyz":
        raise ValueError("matrix_to_euler supports order='xyz' (extrinsic roll-pitch-yaw) only")
    pitch = torch.asin((-matrix[..., 2, 0]).clamp(-1.0, 1.0))
    roll = torch.atan2(matrix[..., 2, 1], matrix[..., 2, 2])
    yaw = torch.atan2(matrix[..., 1, 0], matrix[..., 0, 0])
    return torch.stack([roll, pitch, yaw], dim=-1)


def _axis_rotation(axis: str, angle: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == "x":
        flat = (one, zero, zero, zero, c, -s, zero, s, c)
    elif axis == "y":
        flat = (c, zero, s, zero, one, zero, -s, zero, c)
    else:
        flat = (c, -s, zero, s, c, zero, zero, zero, one)
    return torch.stack(flat, dim=-1).reshape(*angle.shape, 3, 3)
