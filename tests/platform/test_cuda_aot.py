"""CUDA kernels compiled ahead of time into the artifact (fatbin), so that it loads with the TVM
runtime alone: the rewrite of TVM's packed imports, and the export with nvcc where it exists."""

import struct

import pytest
import torch
from torch import nn
from tvm.relax.frontend.torch import from_exported_program
from tvm.runtime import _ffi_api

from tvm_lowrank.build import build
from tvm_lowrank.cuda_aot import (FATBIN_MAGIC, _Reader, _skip_function_table, compile_packed_imports,
                                  export_cuda_library, nvcc_path)
from tvm_lowrank.errors import TargetError
from tvm_lowrank.targets import load_target

FAKE_FATBIN = struct.pack("<I", FATBIN_MAGIC) + b"kernels for sm_90"


@pytest.fixture(scope="module")
def cuda_build():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).eval()
    program = torch.export.export(model, (torch.randn(1, 3, 8, 8),))
    spec = load_target("cuda-sm90")
    return build(from_exported_program(program, unwrap_unit_return_tuple=True), spec), spec


def modules(blob):
    """[(kind, payload or None)] of TVM's packed imports."""
    reader = _Reader(blob)
    assert reader.u64() == len(blob) - 8
    for _ in range(2):
        reader.raw(8 * reader.u64())
    found = []
    while reader.offset < len(blob):
        kind = reader.sized().decode()
        found.append((kind, None if kind == "_lib" else reader.sized()))
    return found


def cuda_payload_parts(payload):
    reader = _Reader(payload)
    fmt = reader.sized()
    start = reader.offset
    _skip_function_table(reader)
    table = payload[start:reader.offset]
    return fmt, table, reader.sized(), payload[reader.offset:]


def test_packed_cuda_source_is_replaced_by_the_compiled_binary(cuda_build):
    executable, _ = cuda_build
    blob = bytes(_ffi_api.ModulePackImportsToTensor(executable.mod).numpy().tobytes())
    sources = []
    rewritten, count = compile_packed_imports(blob, lambda source: sources.append(source) or FAKE_FATBIN)
    assert count == 1 and "__global__" in sources[0]
    before, after = dict(modules(blob)), dict(modules(rewritten))
    assert before.keys() == after.keys() and "cuda" in after
    assert all(before[kind] == after[kind] for kind in before if kind != "cuda")  # host code untouched
    old_fmt, old_table, old_code, old_rest = cuda_payload_parts(before["cuda"])
    new_fmt, new_table, new_code, new_rest = cuda_payload_parts(after["cuda"])
    assert (old_fmt, new_fmt) == (b"cuda", b"fatbin") and old_code.decode() == sources[0]
    assert new_table == old_table and b"conv2d" in new_table and new_rest == old_rest
    assert new_code == FAKE_FATBIN
    again, count = compile_packed_imports(rewritten, lambda source: pytest.fail("compiled twice"))
    assert again == rewritten and count == 0


def test_a_compiler_output_that_is_no_fatbin_is_refused(cuda_build):
    executable, _ = cuda_build
    blob = bytes(_ffi_api.ModulePackImportsToTensor(executable.mod).numpy().tobytes())
    with pytest.raises(TargetError, match="did not produce a fatbin"):
        compile_packed_imports(blob, lambda source: b"// not a binary")
    with pytest.raises(TargetError, match="size header"):
        compile_packed_imports(blob[:-1], lambda source: FAKE_FATBIN)


def test_export_embeds_a_fatbin_for_the_target_arch(cuda_build, tmp_path):
    if nvcc_path() is None:
        pytest.skip("nvcc not installed: CUDA kernels stay source (see the next test)")
    executable, spec = cuda_build
    info = export_cuda_library(executable, tmp_path / "model.so", spec)
    assert info == {"kernels": "fatbin", "arch": "sm_90", "modules": 1}
    library = (tmp_path / "model.so").read_bytes()
    assert struct.pack("<I", FATBIN_MAGIC) in library and b"__global__" not in library
    assert b"sm_90" in library  # the fatbin's ELF is for the target's arch


def test_without_nvcc_the_kernels_stay_source(cuda_build, tmp_path, monkeypatch):
    monkeypatch.setattr("tvm_lowrank.cuda_aot.nvcc_path", lambda: None)
    executable, spec = cuda_build
    info = export_cuda_library(executable, tmp_path / "model.so", spec)
    assert info["kernels"] == "cuda source" and "nvcc not found" in info["note"]
    assert b"__global__" in (tmp_path / "model.so").read_bytes()
