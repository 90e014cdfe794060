"""CUDA kernels compiled ahead of time, so that a CUDA artifact loads with the TVM runtime alone.

Where the wheel's CUDA runtime is not loaded (no NVIDIA driver), its codegen leaves each CUDA
module as a placeholder holding CUDA C source (format "cuda"), saved byte for byte as TVM's CUDA
module saves itself; loaded as it is, that source must be compiled on the GPU machine by TVM's
Python callback (the compiler package plus NVRTC or nvcc). Where the runtime is loaded (a machine
with a driver), the codegen calls that callback at build time instead. With nvcc present we compile
both ways to the same fatbin (`nvcc_fatbin`: machine code for the target's arch plus its PTX):
`kernels_compiled_by_nvcc` is the callback during a build, and export rewrites each source module
in the library's packed imports (format "fatbin"). TVM's CUDA runtime loads either with the driver
alone.

The packed imports are TVM's serialization: u64 size; the import tree (two u64 vectors); then per
module its kind string and, unless "_lib", a u64-sized payload. A CUDA payload is: format string,
function table, code bytes, then source metadata (kept as is).
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import tvm
import tvm_ffi

from .errors import TargetError

FATBIN_MAGIC = 0xBA55ED50  # first u32 of an nvcc fatbin


def _is_fatbin(data: bytes) -> bool:
    return len(data) >= 4 and struct.unpack_from("<I", data)[0] == FATBIN_MAGIC


def nvcc_path() -> str | None:
    """nvcc on PATH, or under $CUDA_HOME / /usr/local/cuda."""
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return None


class _Reader:
    def __init__(self, data: bytes, offset: int = 0):
        self.data, self.offset = data, offset

    def u64(self) -> int:
        value = struct.unpack_from("<Q", self.data, self.offset)[0]
        self.offset += 8
        return value

    def raw(self, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise TargetError("packed CUDA module is truncated or not in TVM's format")
        value = self.data[self.offset:self.offset + size]
        self.offset += size
        return value

    def sized(self) -> bytes:
        return self.raw(self.u64())


def _sized(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data


def _skip_function_table(reader: _Reader) -> None:
    """name -> FunctionInfo(name, arg_types, launch_param_tags, arg_extra_tags)."""
    for _ in range(reader.u64()):
        reader.sized()  # key
        reader.sized()  # FunctionInfo.name
        reader.raw(4 * reader.u64())  # arg types (DLDataType)
        for _ in range(reader.u64()):
            reader.sized()  # launch parameter tags
        reader.raw(4 * reader.u64())  # argument extra tags


def _split_cuda_payload(payload: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(format, function table, code bytes, source metadata) of a packed CUDA module."""
    reader = _Reader(payload)
    fmt = reader.sized()
    table_start = reader.offset
    _skip_function_table(reader)
    function_table = payload[table_start:reader.offset]
    code = reader.sized()
    return fmt, function_table, code, payload[reader.offset:]


def _compiled_payload(payload: bytes, compile_source) -> bytes:
    """A "cuda"-format CUDA payload rewritten to "fatbin"; other formats come back unchanged."""
    fmt, function_table, source, rest = _split_cuda_payload(payload)
    if fmt != b"cuda":
        return payload
    binary = compile_source(source.decode())
    if not _is_fatbin(binary):
        raise TargetError("nvcc did not produce a fatbin for the CUDA kernels")
    return _sized(b"fatbin") + function_table + _sized(binary) + rest


def _packed_modules(blob: bytes):
    """(kind, payload or None for "_lib") of each module in TVM's packed imports, in order, after
    the import tree (returned first, as bytes, so a rewrite can keep it)."""
    reader = _Reader(blob)
    if reader.u64() != len(blob) - 8:
        raise TargetError("packed imports: size header does not match")
    for _ in range(2):  # import tree: row pointers, child indices
        reader.raw(8 * reader.u64())
    yield blob[8:reader.offset]
    while reader.offset < len(blob):
        kind = reader.sized()
        yield kind, None if kind == b"_lib" else reader.sized()


def compile_packed_imports(blob: bytes, compile_source) -> tuple[bytes, int]:
    """The packed imports with every CUDA source module compiled; returns (blob, modules compiled)."""
    modules = _packed_modules(blob)
    out = [next(modules)]
    compiled = 0
    for kind, payload in modules:
        out.append(_sized(kind))
        if payload is None:
            continue
        if kind == b"cuda":
            new_payload = _compiled_payload(payload, compile_source)
            compiled += new_payload is not payload
            payload = new_payload
        out.append(_sized(payload))
    body = b"".join(out)
    return struct.pack("<Q", len(body)) + body, compiled


def kernel_kinds(blob: bytes) -> list[str]:
    """What each CUDA module in the packed imports carries: "fatbin", "cubin", "ptx" or
    "cuda source" (told by the code's own bytes, since TVM labels any binary "cubin")."""
    modules = _packed_modules(blob)
    next(modules)
    kinds = []
    for kind, payload in modules:
        if kind != b"cuda":
            continue
        fmt, _, code, _ = _split_cuda_payload(payload)
        if fmt == b"cuda":
            kinds.append("cuda source")
        elif _is_fatbin(code):
            kinds.append("fatbin")
        elif code[:4] == b"\x7fELF":
            kinds.append("cubin")
        else:
            kinds.append(fmt.decode())
    return kinds


def _c_array(symbol_declarations: str, blob: bytes) -> str:
    rows = (",".join(f"0x{byte:02x}" for byte in blob[i:i + 20]) for i in range(0, len(blob), 20))
    return symbol_declarations.replace("@SIZE@", str(len(blob))).replace("@BYTES@", ",\n  ".join(rows))


def nvcc_fatbin(source: str, target: tvm.target.Target) -> bytes:
    """`source` compiled by nvcc into a fatbin holding machine code for `target`'s arch (sm_XX)
    and its PTX, which the driver compiles for a newer GPU: an sm_80 build also runs on an H100."""
    from tvm.support import nvcc

    if shutil.which("nvcc") is None:  # found under CUDA_HOME: TVM's nvcc helper runs "nvcc"
        os.environ["PATH"] = f"{Path(nvcc_path()).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    number = str(target.arch).removeprefix("sm_")
    gencode = ["-gencode", f"arch=compute_{number},code=sm_{number}",
               "-gencode", f"arch=compute_{number},code=compute_{number}"]
    with target:
        try:
            return bytes(nvcc.compile_cuda(source, target_format="fatbin", arch=gencode, compiler="nvcc"))
        except RuntimeError as err:
            log = str(err).split("Compilation error:")[-1].strip().splitlines()
            raise TargetError(f"nvcc failed on the CUDA kernels for {target.arch}: "
                              + "\n".join(log[-10:])) from None


_COMPILE_CALLBACK = "tvm_callback_cuda_compile"


@contextmanager
def kernels_compiled_by_nvcc(target: tvm.target.Target) -> Iterator[None]:
    """While building for `target`, have TVM's CUDA codegen use `nvcc_fatbin`.

    Where TVM's CUDA runtime is loaded (a machine with an NVIDIA driver), its codegen compiles the
    kernels itself, through the `tvm_callback_cuda_compile` that TVM registers (NVRTC: machine code
    for the exact arch only, and a failed build without NVRTC's Python bindings); elsewhere it
    leaves CUDA source, which export compiles. With nvcc, both paths give the same fatbin.
    """
    original = tvm_ffi.get_global_func(_COMPILE_CALLBACK, allow_missing=True)
    if nvcc_path() is None or original is None:
        yield
        return
    tvm_ffi.register_global_func(_COMPILE_CALLBACK, lambda source, *_: nvcc_fatbin(source, target),
                                 override=True)
    try:
        yield
    finally:
        tvm_ffi.register_global_func(_COMPILE_CALLBACK, original, override=True)


def _packed_imports(module) -> bytes:
    from tvm.runtime import _ffi_api

    return bytes(_ffi_api.ModulePackImportsToTensor(module).numpy().tobytes())


def fatbin_pack_imports(target: tvm.target.Target, stats: dict):
    """An `fpack_imports` for export_library: TVM's C packing of the imports, with the CUDA source
    modules compiled by `nvcc_fatbin`. `stats["kinds"]`: `kernel_kinds` of what was packed."""
    from tvm.runtime import _ffi_api

    def pack(module, is_system_lib, prefix, workspace_dir):
        blob, _ = compile_packed_imports(_packed_imports(module), lambda source: nvcc_fatbin(source, target))
        stats["kinds"] = kernel_kinds(blob)
        c_source = str(_ffi_api.ModulePackImportsToC(module, is_system_lib, prefix))
        head, _, rest = c_source.partition("] = {")
        declarations = head[:head.rindex("[") + 1] + "@SIZE@] = {\n  @BYTES@\n" + rest[rest.index("};"):]
        path = Path(workspace_dir) / f"{prefix}devc.c"
        path.write_text(_c_array(declarations, blob))
        return str(path)

    return pack


SOURCE_NOTE = ("nvcc not found at build time: the kernels are compiled when the library is loaded "
               "(needs apache-tvm's compiler package and NVRTC or nvcc on the GPU machine)")


def export_cuda_library(executable, path: str | Path, target) -> dict:
    """Export a CUDA build's library for `target` (a TargetSpec); returns the manifest's "cuda"
    entry: what the kernels inside are (`kernel_kinds`), for which arch, how many modules.

    With nvcc, they are fatbins (`nvcc_fatbin`) that the TVM runtime alone loads; without it,
    whatever the build left: NVRTC's cubin where the build machine has a driver and NVRTC, else
    CUDA source, which loading compiles (TVM's compiler package and NVRTC or nvcc needed there).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tvm_target = target.tvm_target()
    if nvcc_path() is None:
        executable.export_library(str(path))
        kinds = kernel_kinds(_packed_imports(executable.mod))
    else:
        stats: dict = {}
        executable.export_library(str(path), fpack_imports=fatbin_pack_imports(tvm_target, stats))
        kinds = stats["kinds"]
    entry = {"kernels": "+".join(sorted(set(kinds))) or "none", "arch": tvm_target.arch, "modules": len(kinds)}
    if "cuda source" in kinds:
        entry["note"] = SOURCE_NOTE
    return entry
