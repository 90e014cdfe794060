"""bench.kernels.kernel_functions (the kernels of one run, callable in turn) and
scripts/bench_kernel_sequence.py's arithmetic."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tvm
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_kernel_sequence import switch_cost  # noqa: E402
from tvm_lowrank.api import prepare_model  # noqa: E402
from tvm_lowrank.bench.kernels import kernel_functions  # noqa: E402
from tvm_lowrank.build import build, load_executable, run_vm  # noqa: E402
from tvm_lowrank.targets import host_cpu_target, load_target  # noqa: E402


def test_calling_the_kernels_in_turn_redoes_the_run(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    x = torch.randn(1, 3, 12, 12)
    prepared = prepare_model(model, "tai", "macs:0.5", example_input=x)
    path = tmp_path / "model.so"
    build(prepared.mod, load_target(host_cpu_target())).export_library(str(path))
    expected = run_vm(load_executable(path), x.numpy())
    calls = kernel_functions(tvm.runtime.load_module(str(path)), x.numpy())
    assert len(calls) >= 3 and len({name for name, *_ in calls}) == len(calls)
    output = calls[-1][3][-1]  # the last kernel writes the model's output
    output.copyfrom(np.zeros(output.shape, "float32"))
    for _, _, function, args in calls:
        function(*args)
    np.testing.assert_allclose(output.numpy().reshape(expected.shape), expected, rtol=1e-5, atol=1e-6)


def test_switch_cost_is_a_pass_beyond_its_warm_repeats():
    assert switch_cost(120e-6, 300e-6, 200e-6, 10) == pytest.approx(2e-6)
