"""Our OpenCL runtime under TVM: device attributes, memory and copies, kernel launches with their
launch sizes and scalar arguments, the module format in exported libraries, and the clean report
when no OpenCL platform exists."""

import gc
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
import tvm
from tvm import te
from tvm.s_tir import Schedule

from opencl_helpers import MALI, export_and_load, opencl_modules
from tvm_lowrank.opencl import load_opencl_runtime, opencl_devices


def test_device_attributes(opencl_device):
    dev = opencl_device
    assert dev.exist
    assert dev.warp_size == 1
    assert dev.max_threads_per_block >= 64
    assert dev.max_shared_memory_per_block > 0
    assert re.fullmatch(r"\d+\.\d+", dev.compute_version)
    assert dev.device_name and opencl_devices()[0].startswith(f"opencl(0): {dev.device_name}")
    assert len(dev.max_thread_dimensions) == 3
    assert dev.total_global_memory > 0 and dev.multi_processor_count >= 1
    assert not tvm.opencl(len(opencl_devices())).exist


def test_missing_device_is_named(opencl_device):
    with pytest.raises(RuntimeError, match=r"opencl\(99\) does not exist"):
        tvm.runtime.empty((4,), "float32", tvm.opencl(99))


@pytest.mark.parametrize("dtype,shape", [("float32", (3, 5)), ("int8", (7,)), ("float64", (2, 2, 2)),
                                         ("float32", (0, 4))])
def test_copies_host_device_and_device_device(opencl_device, dtype, shape):
    host = (np.arange(int(np.prod(shape))) * 3 - 5).astype(dtype).reshape(shape)
    on_device = tvm.runtime.tensor(host, opencl_device)
    copy = tvm.runtime.empty(shape, dtype, opencl_device)
    on_device.copyto(copy)
    np.testing.assert_array_equal(on_device.numpy(), host)
    np.testing.assert_array_equal(copy.numpy(), host)


def scaled_add_module() -> tvm.IRModule:
    """B[i, j] = alpha * A[i, j] + offset, on a 2-D grid of 2-D work-groups, with scalar arguments."""
    rows, cols = te.var("rows"), te.var("cols")
    alpha, offset = te.var("alpha", "float32"), te.var("offset", "int32")
    a = te.placeholder((rows, cols), "float32", name="A")
    b = te.compute((rows, cols), lambda i, j: alpha * a[i, j] + offset.astype("float32"), name="B")
    func = te.create_prim_func([a, b, alpha, offset]).with_attr("global_symbol", "scaled_add")
    sch = Schedule(tvm.IRModule({"scaled_add": func}))
    sch.work_on("scaled_add")
    i, j = sch.get_loops(sch.get_sblock("B"))
    i_group, i_item = sch.split(i, [None, 4])
    j_group, j_item = sch.split(j, [None, 8])
    sch.reorder(i_group, j_group, i_item, j_item)
    for loop, axis in [(i_group, "blockIdx.y"), (j_group, "blockIdx.x"), (i_item, "threadIdx.y"),
                       (j_item, "threadIdx.x")]:
        sch.bind(loop, axis)
    return sch.mod


def test_kernel_launch_in_process_and_after_export(opencl_device, tmp_path):
    executable = tvm.compile(scaled_add_module(), target=tvm.target.Target(MALI))
    loaded = export_and_load(executable, tmp_path / "scaled_add.so")
    (kernels,) = opencl_modules(loaded)
    assert "__kernel void scaled_add_kernel" in kernels.inspect_source()
    a = np.random.default_rng(0).standard_normal((13, 21)).astype("float32")  # ragged edges
    expected = 2.5 * a + 3
    for module in (executable.mod, loaded):  # made by ffi.Module.create / by load_from_bytes
        b = tvm.runtime.empty(a.shape, "float32", opencl_device)
        module["scaled_add"](tvm.runtime.tensor(a, opencl_device), b, 2.5, 3)
        np.testing.assert_allclose(b.numpy(), expected, rtol=1e-6, atol=1e-6)  # FMA rounding


def test_loads_libraries_built_without_our_runtime(opencl_device, tmp_path, monkeypatch):
    """A library cross-built where our runtime was not loaded carries the compiler's own
    serialization of the kernels; our loader must read it."""
    monkeypatch.setenv("TVM_COMPILE_FORCE_FALLBACK", "1")
    executable = tvm.compile(scaled_add_module(), target=tvm.target.Target(MALI))
    monkeypatch.delenv("TVM_COMPILE_FORCE_FALLBACK")
    loaded = export_and_load(executable, tmp_path / "fallback.so")
    a = np.ones((5, 9), "float32")
    b = tvm.runtime.empty(a.shape, "float32", opencl_device)
    loaded["scaled_add"](tvm.runtime.tensor(a, opencl_device), b, -1.0, 4)
    np.testing.assert_array_equal(b.numpy(), np.full(a.shape, 3, "float32"))


def serialized_opencl_module(code: str, kernels: dict) -> bytes:
    """TVM's serialization of an "opencl" module: fmt, {name: FunctionInfo}, code (little-endian,
    u64 sizes). `kernels` maps a name to its (code, bits, lanes) argument types and launch tags."""
    def sized(data: bytes) -> bytes:
        return struct.pack("<Q", len(data)) + data

    out = sized(b"cl") + struct.pack("<Q", len(kernels))
    for name, (arg_types, tags) in kernels.items():
        out += sized(name.encode()) + sized(name.encode())
        out += struct.pack("<Q", len(arg_types)) + b"".join(struct.pack("<BBH", *t) for t in arg_types)
        out += struct.pack("<Q", len(tags)) + b"".join(sized(tag.encode()) for tag in tags)
        out += struct.pack("<Q", len(arg_types)) + b"\0\0\0\0" * len(arg_types)
    return out + sized(code.encode())


FILL = ("__kernel void fill(__global float* out, float value, int step) {"
        " out[get_global_id(0)] = value + step * (int)get_global_id(0); }")
FILL_INFO = {"fill": ([(3, 64, 1), (2, 32, 1), (0, 32, 1)], ["blockIdx.x", "threadIdx.x"])}


def test_handwritten_module_bytes_load_and_launch(opencl_device):
    load = tvm.get_global_func("ffi.Module.load_from_bytes.opencl")
    module = load(serialized_opencl_module(FILL, FILL_INFO))
    out = tvm.runtime.empty((12,), "float32", opencl_device)
    module["fill"](out, 0.5, 2, 3, 4)  # 3 work-groups of 4 work-items
    np.testing.assert_array_equal(out.numpy(), 0.5 + 2 * np.arange(12, dtype="float32"))
    with pytest.raises(TypeError, match="takes 3 arguments and 2 launch sizes, got 4"):
        module["fill"](out, 0.5, 3, 4)
    with pytest.raises(ValueError, match="corrupt opencl module"):
        load(serialized_opencl_module(FILL, FILL_INFO)[:-10])


def test_build_failure_shows_the_compiler_log(opencl_device):
    broken = "__kernel void fill(__global float* out, float value, int step) { out[0] = nope; }"
    module = tvm.get_global_func("ffi.Module.load_from_bytes.opencl")(
        serialized_opencl_module(broken, FILL_INFO))
    out = tvm.runtime.empty((4,), "float32", opencl_device)
    for _ in range(2):  # a failed build is not cached as a kernel
        with pytest.raises(RuntimeError, match="(?s)CL_BUILD_PROGRAM_FAILURE.*build log:.*nope"):
            module["fill"](out, 1.0, 0, 1, 4)
    del module
    gc.collect()  # releasing a module whose build failed must not crash


def test_loading_twice_keeps_one_runtime(opencl_device):
    assert load_opencl_runtime() == load_opencl_runtime()


def test_no_platform_is_reported_not_raised(opencl_runtime, tmp_path):
    """With an ICD loader that finds no driver, the device simply does not exist."""
    if opencl_runtime is None:
        pytest.skip("TVM's own OpenCL runtime is loaded, not ours")
    probe = ("import ctypes, sys, tvm; ctypes.CDLL(sys.argv[1], ctypes.RTLD_GLOBAL); "
             "print(tvm.opencl(0).exist); "
             "print(tvm.get_global_func('tvm_lowrank.opencl.unavailable_reason')())")
    # An empty vendor folder: the ICD loader finds no driver. Runtime-only TVM imports faster.
    env = {**os.environ, "OCL_ICD_VENDORS": str(tmp_path), "OCL_ICD_FILENAMES": "",
           "TVM_USE_RUNTIME_LIB": "1"}
    done = subprocess.run([sys.executable, "-c", probe, str(opencl_runtime)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    exist, reason = done.stdout.strip().splitlines()[-2:]
    assert exist == "False"
    assert "no OpenCL platform" in reason
