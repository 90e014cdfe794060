"""OpenCL (Mali path) support for the apache-tvm 0.27 wheel: our runtime, and builds that need it.

The wheel compiles ``opencl`` targets but ships no OpenCL runtime (its libtvm_runtime only looks
for an optional ``libtvm_runtime_opencl.so``), so neither ``tvm.opencl(0)`` nor the kernels of an
exported library can run. ``runtime/opencl/`` is a small runtime of ours; this module builds it
with ``scripts/build_opencl_runtime.sh`` on first use (into the git-ignored ``.cache/opencl/``),
loads it into the process, and compiles Relax modules with the GPU schedules an OpenCL build needs.
Once loaded, plain TVM calls work: ``tvm.runtime.load_module`` on an exported library,
``relax.VirtualMachine(lib, tvm.opencl(0))``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import subprocess
import sys
import threading
from pathlib import Path

import tvm
from tvm import relax

from .errors import OpenCLRuntimeError, TargetError

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNTIME_SOURCES = REPO_ROOT / "runtime" / "opencl"
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build_opencl_runtime.sh"
LIBRARY_NAME = "libtvm_lowrank_opencl.so"
# A prebuilt runtime to load instead of building one (a board with no compiler, a packaged copy).
LIBRARY_ENV = "TVM_LOWRANK_OPENCL_LIB"
# Registered only by our runtime: tells it apart from TVM's own libtvm_runtime_opencl.so.
_OUR_MARKER = "tvm_lowrank.opencl.runtime_version"
_MACHINE_TO_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}

_load_lock = threading.Lock()
_loaded: Path | None = None


def _registered(name: str) -> bool:
    return tvm.get_global_func(name, allow_missing=True) is not None


def library_path(arch: str | None = None) -> Path:
    """Where scripts/build_opencl_runtime.sh puts the runtime for `arch` (default: this machine)."""
    machine = (arch or platform.machine()).lower()
    if machine not in _MACHINE_TO_ARCH:
        raise OpenCLRuntimeError(f"no OpenCL runtime build for architecture {machine!r} "
                                 f"(known: {sorted(set(_MACHINE_TO_ARCH.values()))})")
    return REPO_ROOT / ".cache" / "opencl" / _MACHINE_TO_ARCH[machine] / LIBRARY_NAME


def _is_current(library: Path) -> bool:
    """True when `library` exists and is newer than every source it is built from (if present)."""
    if not library.is_file():
        return False
    inputs = [p for p in (BUILD_SCRIPT, *RUNTIME_SOURCES.glob("*")) if p.is_file()]
    return not inputs or library.stat().st_mtime >= max(p.stat().st_mtime for p in inputs)


def build_opencl_runtime(arch: str | None = None, force: bool = False) -> Path:
    """Build the runtime for `arch` unless an up-to-date build exists; return the library path.

    A cross build (aarch64 on x86) leaves TVM's symbols to be resolved by the libtvm_runtime that
    `import tvm` loads on the board.
    """
    library = library_path(arch)
    if not force and _is_current(library):
        return library
    if not BUILD_SCRIPT.is_file():
        raise OpenCLRuntimeError(f"{BUILD_SCRIPT} not found: building the OpenCL runtime needs a "
                                 f"source checkout; set {LIBRARY_ENV} to a prebuilt library")
    command = ["bash", str(BUILD_SCRIPT), "--arch", library.parent.name]
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHON": sys.executable})
    except OSError as err:  # no bash
        raise OpenCLRuntimeError(f"cannot run {BUILD_SCRIPT}: {err}") from err
    if done.returncode != 0:
        log = (done.stderr or done.stdout).strip().splitlines()
        raise OpenCLRuntimeError(f"building the OpenCL runtime ({library}) failed with exit code "
                                 f"{done.returncode}: " + "\n".join(log[-15:]))
    return library


def load_opencl_runtime() -> Path | None:
    """Register the OpenCL device API and module loader in this process, once.

    Returns the library loaded: $TVM_LOWRANK_OPENCL_LIB when set, else our build (made or
    refreshed first when missing or older than its sources). Returns None when another OpenCL
    runtime (TVM's own libtvm_runtime_opencl.so) is already registered: it is kept.
    Load it before loading an exported library that has OpenCL kernels; it does not need an
    OpenCL device (see `opencl_available`).
    """
    global _loaded
    with _load_lock:
        if _loaded is not None:
            return _loaded
        if _registered("device_api.opencl") and not _registered(_OUR_MARKER):
            return None
        prebuilt = os.environ.get(LIBRARY_ENV)
        if prebuilt:
            library = Path(prebuilt)
            if not library.is_file():
                raise OpenCLRuntimeError(f"{LIBRARY_ENV}={prebuilt} is not a file")
        else:
            library = build_opencl_runtime()
        try:
            ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
        except OSError as err:
            raise OpenCLRuntimeError(f"cannot load the OpenCL runtime {library}: {err}") from err
        if not _registered(_OUR_MARKER):
            raise OpenCLRuntimeError(f"{library} loaded but registered no OpenCL runtime: another "
                                     "OpenCL runtime registered device_api.opencl first")
        _loaded = library
        return library


def _missing_opencl_library() -> str | None:
    """Why no OpenCL library is on the loader's path, or None (as far as ldconfig knows)."""
    if os.environ.get("TVM_LOWRANK_LIBOPENCL") or ctypes.util.find_library("OpenCL"):
        return None
    return ("no OpenCL library (libOpenCL.so.1) is installed: install an ICD loader and a driver, "
            "e.g. Debian ocl-icd-libopencl1 and pocl-opencl-icd, or set TVM_LOWRANK_LIBOPENCL")


def opencl_unavailable_reason() -> str | None:
    """Why OpenCL kernels cannot run in this process (runtime, ICD loader, platform, device), or
    None when tvm.opencl(0) exists."""
    if _loaded is None and not _registered("device_api.opencl"):
        missing = _missing_opencl_library()
        if missing:
            return missing  # before building a runtime that could not run anything
    try:
        ours = load_opencl_runtime() is not None
    except OpenCLRuntimeError as err:
        return str(err)
    if ours:
        return str(tvm.get_global_func("tvm_lowrank.opencl.unavailable_reason")()) or None
    return None if tvm.opencl(0).exist else "TVM's OpenCL runtime is loaded but sees no device"


def opencl_available() -> bool:
    """True when kernels can run on tvm.opencl(0): the runtime loads and a device exists."""
    return opencl_unavailable_reason() is None


def opencl_devices() -> list[str]:
    """Our runtime's devices as "opencl(i): name (platform)", in tvm.opencl(i) order."""
    if load_opencl_runtime() is None:
        return []
    return [str(d) for d in tvm.get_global_func("tvm_lowrank.opencl.devices")()]


def opencl_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """The Relax pipeline for an OpenCL target: TVM's generic GPU one.

    Its legalization ends, after fusion, with dlight's default GPU rules (``tvm.s_tir.dlight``:
    Matmul, GEMV, Reduction, GeneralReduction, then Fallback for everything else), which bind
    every loop nest to work-groups and work-items; a GPU build of unscheduled TIR fails. Functions
    already scheduled (e.g. by MetaSchedule) are left alone. Adreno targets get this pipeline too:
    TVM's Adreno pipeline uses image (texture) memory, which our runtime does not provide.
    """
    return relax.backend.gpu_generic.get_default_pipeline(target)


def build_for_opencl(mod: tvm.IRModule, target: tvm.target.Target | dict) -> tvm.runtime.Executable:
    """Compile a Relax module (with a "main") for an OpenCL target such as Mali.

    The runtime is loaded first when possible, so that the executable also runs in this process;
    without it (e.g. cross-building on a machine with no C++ compiler) the build is the same and
    can still be exported for a board.
    """
    target = target if isinstance(target, tvm.target.Target) else tvm.target.Target(target)
    if target.kind.name != "opencl":
        raise TargetError(f"build_for_opencl needs an opencl target, got {target.kind.name!r} "
                          f"({target})")
    try:
        load_opencl_runtime()
    except OpenCLRuntimeError:
        pass  # compiling needs no runtime; running it is reported when tried
    return tvm.compile(mod, target=target, relax_pipeline=opencl_pipeline(target))
