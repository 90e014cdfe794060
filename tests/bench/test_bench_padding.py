"""scripts/bench_padding.py: the convs it times are the model's padded ones, and the pre-padded twin
it compares with computes the same output."""

import sys
from pathlib import Path

import numpy as np
import torch
import tvm
from torch import nn
from tvm import relax

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_padding import conv_module, padded_convs  # noqa: E402
from tvm_lowrank.api import prepare_model  # noqa: E402
from tvm_lowrank.build import build, run_vm  # noqa: E402
from tvm_lowrank.targets import load_target  # noqa: E402


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1),
                         nn.Conv2d(8, 4, (1, 3), padding=(0, 1), bias=False)).eval()


def test_padded_convs_are_the_models_padded_ones_each_shape_once():
    prepared = prepare_model(_model(), "dense", example_input=torch.randn(1, 3, 10, 12))
    convs = padded_convs(prepared.mod)
    assert [(c.weight.shape, c.padding, c.bias_relu) for c in convs] == [
        ((8, 3, 3, 3), (1, 1, 1, 1), True), ((4, 8, 1, 3), (0, 1, 0, 1), False)]  # the 1x1 is unpadded


def test_pre_padded_twin_computes_the_same_output():
    prepared = prepare_model(_model(), "dense", example_input=torch.randn(1, 3, 10, 12))
    target = load_target("x86-avx2")
    rng = np.random.default_rng(0)
    for conv in padded_convs(prepared.mod):
        x = rng.standard_normal(conv.in_shape).astype("float32")
        top, left = conv.padding[:2]
        padded = run_vm(relax.VirtualMachine(build(conv_module(conv, False), target), tvm.cpu()), x)
        pre = run_vm(relax.VirtualMachine(build(conv_module(conv, True), target), tvm.cpu()), conv.pad(x))
        np.testing.assert_allclose(pre, padded, rtol=1e-5, atol=1e-5)
        weight = torch.from_numpy(conv.weight)
        expected = torch.nn.functional.conv2d(torch.from_numpy(x), weight, padding=(top, left)).numpy()
        if not conv.bias_relu:
            np.testing.assert_allclose(padded, expected, rtol=1e-4, atol=1e-4)
