"""Fixtures of the OpenCL tests: our runtime and the device, or a skip saying why there is none."""

import pytest
import tvm

from tvm_lowrank.opencl import OpenCLRuntimeError, load_opencl_runtime, opencl_unavailable_reason


@pytest.fixture(scope="session")
def opencl_runtime():
    """Our runtime, loaded; skips when it cannot be built or loaded (no g++ or OpenCL headers)."""
    try:
        return load_opencl_runtime()
    except OpenCLRuntimeError as err:
        pytest.skip(f"OpenCL runtime unavailable: {err}")


@pytest.fixture(scope="session")
def opencl_device():
    """tvm.opencl(0), with our runtime loaded; skips when no OpenCL device can run kernels."""
    reason = opencl_unavailable_reason()
    if reason is not None:
        pytest.skip(f"OpenCL unavailable: {reason}")
    return tvm.opencl(0)
