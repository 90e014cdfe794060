"""A low-rank model compiled for Mali through compile_model: verified here on OpenCL with an x86 host
(mali-g76-pocl), and cross-built for the aarch64 board (mali-g76) with its OpenCL kernels inside."""

import shutil

import numpy as np
import pytest
import torch
from torch import nn

from opencl_helpers import opencl_modules
from tvm_lowrank.api import compile_model, time_artifact
from tvm_lowrank.boards import EMULATED_LABEL
from tvm_lowrank.cli import main
from tvm_lowrank.runner import open_artifact
from tvm_lowrank.targets import load_target


def tiny_classifier():
    """Two 3x3 convs (rewritten as Tai pairs) and a linear head on 12x12 inputs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    return model, torch.randn(1, 3, 12, 12)


def compile_for(target, out, **options):
    model, example = tiny_classifier()
    return compile_model(model, target=target, method="tai", rank=4, out=out, example_input=example,
                         min_top1_agreement=0.0, num_random_inputs=4, **options)


def test_mali_kernels_verified_on_opencl_here(opencl_device, tmp_path, capsys):
    import tvm

    result = compile_for("mali-g76-pocl", tmp_path / "mali")
    assert any(row.action == "decomposed" for row in result.rows)
    assert result.verification is not None and result.verification.passed
    assert result.verification.vs_lowrank_reference.max_rel_error < 1e-5
    ran_on = result.artifact.manifest["verification"]["ran_on"]
    assert ran_on["where"] == "local" and ran_on["device"] == "opencl"
    library = tvm.runtime.load_module(str(result.artifact.library_path))
    (kernels,) = opencl_modules(library)
    assert "__kernel" in kernels.inspect_source()

    timing = time_artifact(result.artifact.path, repeat=2, number=1)
    assert timing.placement.device == "opencl" and timing.median_s > 0
    if "Portable Computing Language" in (timing.placement.device_name or ""):
        assert timing.emulated and EMULATED_LABEL in timing.summary()  # PoCL stands in for a Mali
    assert main(["verify", str(result.artifact.path), "--repeat", "1", "--number", "1"]) == 0
    assert "vs PyTorch low-rank reference" in capsys.readouterr().out


def test_mali_board_build_is_aarch64_with_opencl_kernels(tmp_path):
    if shutil.which(load_target("mali-g76").cross_compiler) is None:
        pytest.skip("aarch64-linux-gnu-g++ not installed (run scripts/arm_board.py setup)")
    result = compile_for("mali-g76", tmp_path / "board")
    skipped = result.artifact.manifest["verification"]["skipped"]
    assert result.verification is None and "--rpc HOST:PORT --key mali-g76" in skipped
    library = result.artifact.library_path.read_bytes()
    assert library[:4] == b"\x7fELF" and int.from_bytes(library[18:20], "little") == 183  # EM_AARCH64
    assert b"__kernel void" in library  # the OpenCL C source travels inside the .so


def test_mali_build_on_opencl_equals_the_x86_cpu_build(opencl_device, tmp_path):
    host = next((n for n in ("x86-avx512", "x86-avx2") if load_target(n).runs_on_host()), None)
    if host is None:
        pytest.skip("no x86 target file runs on this CPU")
    outputs = {}
    for target in ("mali-g76-pocl", host):
        artifact = compile_for(target, tmp_path / target, verify=False).artifact
        with open_artifact(artifact) as runner:
            outputs[runner.placement.device] = np.stack([runner.run(x) for x in artifact.reference().inputs])
    np.testing.assert_allclose(outputs["opencl"], outputs["cpu"], rtol=1e-5, atol=1e-6)
