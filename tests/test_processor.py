"""The processor's state and domain-id steps."""

import pytest
import torch

from xvla.processor import domain_ids, pad_state


def test_domain_ids():
    assert domain_ids(3, 2, 30).tolist() == [3, 3]
    assert domain_ids([1, 2], 2, 30).tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"domain_id 31 is out of range.*num_domains=30"):
        domain_ids(31, 1, 30)
    with pytest.raises(ValueError, match="one id or one per sample"):
        domain_ids([1, 2, 3], 2, 30)


def test_pad_state():
    assert pad_state(torch.ones(2, 5), 8).shape == (2, 8)
    with pytest.raises(ValueError, match=r"has 40 dims but this model's max_state_dim is 32"):
        pad_state(torch.ones(1, 40), 32)
