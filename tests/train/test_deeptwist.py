"""DeepTwist distortion: weights exactly low-rank after a step, at the ranks the compiler picks."""

import numpy as np
import pytest
import torch
from torch import nn

from tvm_lowrank.decompose import tai_matrix
from tvm_lowrank.frontend import load_model, to_relax
from tvm_lowrank.passes import DecomposeConv2D
from tvm_lowrank.train import DeepTwist, recalibrate_batchnorm


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 24, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
        nn.Conv2d(24, 24, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 4),
    )


def _example():
    return torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_distortion_makes_weights_exactly_low_rank():
    model = _model()
    twist = DeepTwist(model, _example(), "tai", "macs:0.3")
    assert set(twist.ranks) == {"0", "3"}  # the 1×1 conv is not eligible
    full_ranks = {name: np.linalg.matrix_rank(tai_matrix(model[int(name)].weight.detach().numpy()))
                  for name in twist.ranks}
    twist.distort()
    for name, rank in twist.ranks.items():
        matrix = tai_matrix(model[int(name)].weight.detach().numpy().astype(np.float64))
        assert rank < full_ranks[name]
        assert np.linalg.matrix_rank(matrix, tol=1e-5 * np.abs(matrix).max()) == rank


def test_on_step_distorts_every_period():
    model = _model()
    twist = DeepTwist(model, _example(), "tai", "macs:0.3", period=3)
    before = model[3].weight.detach().clone()
    twist.on_step(0)
    twist.on_step(1)
    assert torch.equal(model[3].weight, before)
    twist.on_step(2)
    assert not torch.equal(model[3].weight, before)


def test_compiler_decomposes_a_distorted_model_exactly():
    """The pass picks the same ranks, so the decomposition of a distorted model loses nothing."""
    model = _model()
    twist = DeepTwist(model, _example(), "tai", "macs:0.3")
    twist.distort()
    recalibrate_batchnorm(model, torch.randn(64, 3, 16, 16))
    rewrite = DecomposeConv2D("tai", "macs:0.3")
    rewrite(to_relax(load_model(model, _example())))
    decomposed = [record for record in rewrite.records if record.action == "decomposed"]
    assert [record.rank for record in decomposed] == list(twist.ranks.values())
    assert decomposed[0].relative_error < 1e-5  # BN folding scales columns: the rank is kept


def test_unsupported_method_is_rejected():
    with pytest.raises(ValueError, match="cp"):
        DeepTwist(_model(), _example(), "cp")
