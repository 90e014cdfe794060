"""CUDA support: whether CUDA kernels can run in this process, and what loading them needs.

The wheel's CUDA runtime is a separate ``libtvm_runtime_cuda.so`` beside ``libtvm_runtime.so``; it
is loaded on first use here so that a device check does not depend on what was imported before.

The wheel's compiler has no CUDA toolkit linked in: a CUDA build (``{"kind": "cuda"}``) succeeds on
any machine, but leaves the kernels as CUDA C source. `tvm_lowrank.cuda_aot` compiles them to a
fatbin at export where nvcc exists; a library that still carries source is compiled when loaded, by
TVM's ``tvm_callback_cuda_compile`` (``tvm.support.nvcc``: NVRTC through ``cuda-bindings``, or
``nvcc``), which `prepare_cuda_loading` registers.
"""

from __future__ import annotations

import ctypes
from pathlib import Path


def _load_cuda_runtime() -> str | None:
    """Load the wheel's CUDA runtime when it is not registered yet; why not, or None."""
    import tvm

    if tvm.get_global_func("device_api.cuda", allow_missing=True) is not None:
        return None
    library = Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"
    if not library.is_file():
        return f"this TVM build has no CUDA runtime ({library.name} not found)"
    try:
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    except OSError as err:
        if "libcuda.so" in str(err):
            return "no NVIDIA driver on this machine (libcuda.so.1 not found)"
        return f"cannot load {library.name}: {err}"
    return None


def compute_capability(arch: str) -> tuple[int, int]:
    """(major, minor) of a CUDA arch name: "sm_90a" -> (9, 0), "sm_86" -> (8, 6)."""
    digits = "".join(ch for ch in arch.removeprefix("sm_") if ch.isdigit())
    if len(digits) < 2:
        raise ValueError(f"not a CUDA arch: {arch!r} (expected sm_XY)")
    return int(digits[:-1]), int(digits[-1])


def cuda_unavailable_reason(arch: str | None = None) -> str | None:
    """Why CUDA kernels for `arch` (e.g. "sm_90"; None: any) cannot run here (no runtime, no
    driver, no GPU, a GPU older than `arch`), or None."""
    import tvm

    reason = _load_cuda_runtime()
    if reason is not None:
        return reason
    try:
        device = tvm.cuda(0)
        exists = device.exist
    except Exception as err:  # noqa: BLE001 - TVM raises its own error types for a missing driver
        return f"no CUDA device: {err}"
    if not exists:
        return "no CUDA GPU on this machine"
    have = tuple(int(part) for part in device.compute_version.split("."))
    if arch is not None and have < compute_capability(arch):
        return (f"the GPU ({device.device_name}, compute capability {device.compute_version}) is older "
                f"than the kernels' {arch}")
    return None


def prepare_cuda_loading() -> None:
    """Register TVM's CUDA compile callback for libraries that carry CUDA source, picking nvcc when
    NVRTC's Python bindings are missing (TVM defaults to NVRTC)."""
    import os
    import shutil

    import tvm.support.nvcc  # noqa: F401 - registers tvm_callback_cuda_compile

    if "TVM_CUDA_COMPILE_MODE" in os.environ:
        return
    try:
        import cuda.bindings  # noqa: F401 - what TVM's NVRTC path imports
    except ImportError:
        if shutil.which("nvcc"):
            os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
