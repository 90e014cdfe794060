"""CUDA support checks: whether CUDA kernels can run in this process.

The wheel's CUDA runtime is a separate ``libtvm_runtime_cuda.so`` beside ``libtvm_runtime.so``; it
is loaded on first use here (as TVM's compiler package does) so that a device check does not
depend on what was imported before.
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
    except OSError as err:  # libcuda.so.1 (the driver) is missing
        return f"cannot load {library.name}: {err}"
    return None


def cuda_unavailable_reason() -> str | None:
    """Why CUDA kernels cannot run here (no runtime, no driver, no GPU), or None."""
    import tvm

    reason = _load_cuda_runtime()
    if reason is not None:
        return reason
    try:
        exists = tvm.cuda(0).exist
    except Exception as err:  # noqa: BLE001 - TVM raises its own error types for a missing driver
        return f"no CUDA device: {err}"
    return None if exists else "no CUDA GPU on this machine"
