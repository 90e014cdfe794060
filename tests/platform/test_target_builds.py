"""Every shipped target file compiles a tiny low-rank model through compile_model: verified here when
its code runs here, else built and exported for its device with the reason recorded."""

import shutil
import struct

import pytest
import torch
from torch import nn

from tvm_lowrank.api import compile_model
from tvm_lowrank.cli import main
from tvm_lowrank.cuda_aot import FATBIN_MAGIC
from tvm_lowrank.runner import local_unavailable_reason
from tvm_lowrank.targets import list_targets, load_target

ELF_MACHINES = {"x86_64": 62, "aarch64": 183}
KERNEL_SOURCE = {"opencl": b"__kernel void", "cuda": b"__global__"}  # device code inside the .so


def tiny_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    return model, torch.randn(1, 3, 10, 10)


@pytest.mark.parametrize("name", list_targets())
def test_target_compiles_a_tiny_model(name, tmp_path):
    spec = load_target(name)
    if spec.cross_compiler and shutil.which(spec.cross_compiler) is None:
        pytest.skip(f"{spec.cross_compiler} not installed (run scripts/arm_board.py setup)")
    model, example = tiny_model()
    result = compile_model(model, target=name, method="tai", rank=2, out=tmp_path / name,
                           example_input=example, min_top1_agreement=0.0, num_random_inputs=2)
    assert any(row.action == "decomposed" for row in result.rows)
    library = result.artifact.library_path.read_bytes()
    assert library[:4] == b"\x7fELF" and int.from_bytes(library[18:20], "little") == ELF_MACHINES[spec.arch]
    kind = spec.tvm_target_config["kind"]
    manifest = result.artifact.manifest
    if kind == "cuda" and manifest["cuda"]["kernels"] != "cuda source":  # compiled at build time
        assert KERNEL_SOURCE[kind] not in library and manifest["cuda"]["arch"] == spec.tvm_target_config["arch"]
        if manifest["cuda"]["kernels"] == "fatbin":  # by nvcc (else NVRTC's cubin)
            assert struct.pack("<I", FATBIN_MAGIC) in library
    elif kind in KERNEL_SOURCE:
        assert KERNEL_SOURCE[kind] in library
    assert manifest["target"]["name"] == name and manifest["target"]["file"] == str(spec.source)
    reason = local_unavailable_reason(spec)
    if reason is None:
        assert result.verification.passed and manifest["verification"]["passed"]
    else:  # e.g. "target arm-cortex-a72 is built for aarch64, ...; verify it on a device with --rpc"
        assert result.verification is None
        assert manifest["verification"]["skipped"].startswith(reason)


def test_unknown_target_exits_2_listing_the_known_ones(tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["compile", "no_such_module:model", "--target", "riscv-rvv", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "unknown target 'riscv-rvv'" in error and all(name in error for name in list_targets())
    assert not out.exists()
