"""Shared helpers of the nn tests: small shapes, seeded tensors, a relative error."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def rel_err():
    def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
        return float((actual - expected).norm() / expected.norm())
    return relative_error
