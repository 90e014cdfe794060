"""CUDA kernels compiled ahead of time into the artifact (fatbin), so that it loads with the TVM
runtime alone: the rewrite of TVM's packed imports, and the export with nvcc where it exists."""

import struct

import pytest
import torch
import tvm_ffi
from torch import nn
from tvm.relax.frontend.torch import from_exported_program

from tvm_lowrank import cuda_aot
from tvm_lowrank.build import build
from tvm_lowrank.cuda import compute_capability
from tvm_lowrank.cuda_aot import (FATBIN_MAGIC, _packed_imports, _packed_modules, _Reader, _sized,
                                  _skip_function_table, _split_cuda_payload, compile_packed_imports,
                                  export_cuda_library, kernel_kinds, kernels_compiled_by_nvcc, nvcc_path)
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


def packed(executable):
    return _packed_imports(executable.mod)


def source_blob(executable):
    """The packed imports, where this machine's build left the kernels as CUDA source."""
    blob = packed(executable)
    if kernel_kinds(blob) != ["cuda source"]:  # TVM's CUDA runtime is loaded: its codegen compiled them
        pytest.skip(f"the build compiled its kernels ({kernel_kinds(blob)}): a machine with an NVIDIA driver")
    return blob


def with_cuda_code(blob, fmt, code):
    """`blob` with its CUDA module's format and code replaced."""
    modules = _packed_modules(blob)
    out = [next(modules)]
    for kind, payload in modules:
        out.append(_sized(kind))
        if payload is not None:
            if kind == b"cuda":
                _, table, _, rest = _split_cuda_payload(payload)
                payload = _sized(fmt) + table + _sized(code) + rest
            out.append(_sized(payload))
    body = b"".join(out)
    return struct.pack("<Q", len(body)) + body


def test_packed_cuda_source_is_replaced_by_the_compiled_binary(cuda_build):
    executable, _ = cuda_build
    blob = source_blob(executable)
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
    blob = source_blob(executable)
    with pytest.raises(TargetError, match="did not produce a fatbin"):
        compile_packed_imports(blob, lambda source: b"// not a binary")
    with pytest.raises(TargetError, match="size header"):
        compile_packed_imports(blob[:-1], lambda source: FAKE_FATBIN)


def test_kernel_kinds_are_told_by_the_code_bytes(cuda_build):
    blob = packed(cuda_build[0])
    assert kernel_kinds(with_cuda_code(blob, b"cuda", b"extern \"C\" __global__ void k() {}")) == ["cuda source"]
    assert kernel_kinds(with_cuda_code(blob, b"cubin", FAKE_FATBIN)) == ["fatbin"]  # TVM says cubin
    assert kernel_kinds(with_cuda_code(blob, b"cubin", b"\x7fELF\x02\x01")) == ["cubin"]
    assert kernel_kinds(with_cuda_code(blob, b"ptx", b"//\n.version 8.0")) == ["ptx"]


def test_export_embeds_a_fatbin_for_the_target_arch(cuda_build, tmp_path):
    if nvcc_path() is None:
        pytest.skip("nvcc not installed: CUDA kernels stay source (see the next test)")
    executable, spec = cuda_build
    info = export_cuda_library(executable, tmp_path / "model.so", spec)
    assert info == {"kernels": "fatbin", "arch": "sm_90", "modules": 1}
    library = (tmp_path / "model.so").read_bytes()
    assert struct.pack("<I", FATBIN_MAGIC) in library and b"__global__" not in library
    assert b"sm_90" in library  # the fatbin's ELF is for the target's arch


def test_without_nvcc_export_keeps_what_the_build_left(cuda_build, tmp_path, monkeypatch):
    monkeypatch.setattr("tvm_lowrank.cuda_aot.nvcc_path", lambda: None)
    executable, spec = cuda_build
    info = export_cuda_library(executable, tmp_path / "model.so", spec)
    kinds = kernel_kinds(packed(executable))
    assert info["kernels"] == "+".join(kinds) and info["modules"] == 1 and info["arch"] == "sm_90"
    library = (tmp_path / "model.so").read_bytes()
    if kinds == ["cuda source"]:  # no driver here: loading compiles them
        assert "nvcc not found" in info["note"] and b"__global__" in library
    else:  # compiled at build time, by nvcc or NVRTC
        assert "note" not in info and b"__global__" not in library


def test_builds_compile_their_kernels_with_nvcc_while_codegen_asks(monkeypatch):
    """Where TVM's CUDA runtime is loaded, its codegen compiles through tvm_callback_cuda_compile:
    during our build that is nvcc_fatbin for the target, and TVM's own callback afterwards."""
    name = "tvm_callback_cuda_compile"
    original = tvm_ffi.get_global_func(name)
    target = load_target("cuda-sm80").tvm_target()
    monkeypatch.setattr(cuda_aot, "nvcc_fatbin", lambda source, target: f"fatbin {target.arch}: {source}".encode())
    monkeypatch.setattr(cuda_aot, "nvcc_path", lambda: "/usr/local/cuda/bin/nvcc")
    with kernels_compiled_by_nvcc(target):
        assert tvm_ffi.get_global_func(name)("kernels") == b"fatbin sm_80: kernels"
    assert tvm_ffi.get_global_func(name).same_as(original)
    with pytest.raises(ValueError), kernels_compiled_by_nvcc(target):
        raise ValueError("build failed")
    assert tvm_ffi.get_global_func(name).same_as(original)
    monkeypatch.setattr(cuda_aot, "nvcc_path", lambda: None)  # no nvcc: TVM's callback (NVRTC) stays
    with kernels_compiled_by_nvcc(target):
        assert tvm_ffi.get_global_func(name).same_as(original)


def test_compute_capability_of_arch_names():
    assert compute_capability("sm_90a") == (9, 0) and compute_capability("sm_86") == (8, 6)
    assert compute_capability("sm_100") == (10, 0)
    with pytest.raises(ValueError, match="not a CUDA arch"):
        compute_capability("compute")
