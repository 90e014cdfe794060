"""Relax CNNs built for Mali by build_for_opencl, exported, loaded and run on tvm.opencl(0) through
the VM: the conv shapes our low-rank passes produce, each checked against PyTorch."""

import numpy as np
import pytest
import torch
import tvm
from torch import nn

from opencl_helpers import MALI, export_and_load, run_main, torch_to_relax
from tvm_lowrank.errors import TargetError
from tvm_lowrank.opencl import build_for_opencl


class ConvReluPool(nn.Module):
    """conv3x3 + ReLU, a 1x1 conv, global average pooling: a CNN's smallest complete shape."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pointwise = nn.Conv2d(8, 16, 1)

    def forward(self, x):
        return nn.functional.adaptive_avg_pool2d(self.pointwise(torch.relu(self.conv(x))), 1).flatten(1)


class VerticalHorizontalPair(nn.Module):
    """A k x 1 then 1 x k conv (Tai et al.'s rank-r factorization of a k x k conv), as our pass
    emits it: the first without bias, the second with the original bias."""

    def __init__(self, channels=8, rank=4, kernel=3):
        super().__init__()
        self.vertical = nn.Conv2d(channels, rank, (kernel, 1), padding=(kernel // 2, 0), bias=False)
        self.horizontal = nn.Conv2d(rank, 16, (1, kernel), padding=(0, kernel // 2))

    def forward(self, x):
        return torch.relu(self.horizontal(self.vertical(x)))


class Depthwise(nn.Module):
    def __init__(self, channels=8):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x):
        return torch.relu(self.depthwise(x))


CASES = {  # name -> (model, input shape); odd, non-square sizes catch axis mix-ups
    "conv_relu_1x1_avgpool": (ConvReluPool, (1, 3, 16, 16)),
    "kx1_1xk_pair": (VerticalHorizontalPair, (1, 8, 13, 11)),
    "depthwise": (Depthwise, (1, 8, 14, 10)),
}


def reference(name):
    torch.manual_seed(0)
    model_class, shape = CASES[name]
    model, x = model_class().eval(), torch.randn(*shape)
    with torch.no_grad():
        return model, x, model(x).numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_exported_mali_build_matches_pytorch(opencl_device, name, tmp_path):
    model, x, expected = reference(name)
    executable = build_for_opencl(torch_to_relax(model, x), MALI)
    loaded = export_and_load(executable, tmp_path / f"{name}.so")
    np.testing.assert_allclose(run_main(loaded, x.numpy(), opencl_device), expected, rtol=1e-4, atol=1e-4)


def test_executable_runs_without_export(opencl_device):
    """tvm.compile's own module (made by our ffi.Module.create.opencl) runs in place too."""
    model, x, expected = reference("kx1_1xk_pair")
    executable = build_for_opencl(torch_to_relax(model, x), tvm.target.Target(MALI))
    np.testing.assert_allclose(run_main(executable, x.numpy(), opencl_device), expected, rtol=1e-4, atol=1e-4)


def test_build_for_opencl_rejects_other_targets():
    model, x, _ = reference("depthwise")
    with pytest.raises(TargetError, match="needs an opencl target"):
        build_for_opencl(torch_to_relax(model, x), {"kind": "llvm"})
