"""LowRankLinear: truncated SVD of a linear layer, exact at full rank."""

import pytest
import torch
from torch import nn

from tvm_lowrank.errors import RankError
from tvm_lowrank.nn import LowRankLinear


@pytest.mark.parametrize("bias", [True, False])
def test_full_rank_and_round_trip(bias, rel_err):
    linear = nn.Linear(12, 7, bias=bias)
    x = torch.randn(5, 12)
    full = LowRankLinear.from_linear(linear, 7)
    low = LowRankLinear.from_linear(linear, 3)
    with torch.no_grad():
        assert rel_err(full(x), linear(x)) <= 1e-5
        assert rel_err(low.to_dense()(x), low(x)) <= 1e-5
        errors = [rel_err(LowRankLinear.from_linear(linear, rank)(x), linear(x)) for rank in range(1, 8)]
    assert all(later <= earlier for earlier, later in zip(errors, errors[1:]))
    assert low.flops() == 3 * (12 + 7) and low.flops(positions=4) == 4 * 3 * 19
    assert low.num_parameters == 3 * 12 + 7 * 3 + (7 if bias else 0)


@pytest.mark.parametrize("rank", [0, 8])
def test_bad_rank_names_the_layer(rank):
    with pytest.raises(RankError, match="classifier"):
        LowRankLinear.from_linear(nn.Linear(12, 7), rank, layer="classifier")
