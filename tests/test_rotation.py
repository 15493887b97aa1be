import math

import pytest
import torch

from xvla import rotation as R


def random_rotations(n=16):
    return R.quaternion_to_matrix(torch.randn(n, 4, dtype=torch.float64))


@pytest.mark.parametrize("convention", ["columns", "rows"])
def test_rot6d_round_trip(convention):
    mats = random_rotations()
    back = R.rot6d_to_matrix(R.matrix_to_rot6d(mats, convention), convention)
    torch.testing.assert_close(back, mats, atol=1e-6, rtol=0)


def test_conventions_are_named_and_differ():
    m = torch.arange(9.0).reshape(3, 3)
    assert R.matrix_to_rot6d(m, "columns").tolist() == [0, 3, 6, 1, 4, 7]
    assert R.matrix_to_rot6d(m, "rows").tolist() == [0, 1, 3, 4, 6, 7]
    with pytest.raises(ValueError, match="convention"):
        R.matrix_to_rot6d(m, "diagonal")


def test_quaternion_and_axis_angle_round_trips():
    mats = random_rotations()
    torch.testing.assert_close(R.quaternion_to_matrix(R.matrix_to_quaternion(mats)), mats, atol=1e-9, rtol=0)
    aa = R.matrix_to_axis_angle(mats)
    torch.testing.assert_close(R.axis_angle_to_matrix(aa), mats, atol=1e-9, rtol=0)
    assert (aa.norm(dim=-1) <= math.pi + 1e-9).all()


def test_axis_angle_known_value_and_identity():
    aa = torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64)
    m = R.axis_angle_to_matrix(aa)
    torch.testing.assert_close(
        m @ torch.tensor([1.0, 0, 0], dtype=torch.float64), torch.tensor([0.0, 1, 0], dtype=torch.float64)
    )
    assert R.matrix_to_axis_angle(torch.eye(3)).abs().max() < 1e-6


def test_rot6d_to_axis_angle_matches_matrix_path():
    mats = random_rotations()
    r6 = R.matrix_to_rot6d(mats, "columns")
    torch.testing.assert_close(R.rot6d_to_axis_angle(r6), R.matrix_to_axis_angle(mats))


def test_euler_round_trip():
    euler = (torch.rand(10, 3, dtype=torch.float64) - 0.5) * torch.tensor(
        [3.0, 1.5, 3.0], dtype=torch.float64
    )
    torch.testing.assert_close(R.matrix_to_euler(R.euler_to_matrix(euler)), euler)
