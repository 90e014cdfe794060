"""CUDA kernels compiled ahead of time, so that a CUDA artifact loads with the TVM runtime alone.

The wheel's compiler has no CUDA toolkit linked in: its codegen leaves each CUDA module as a
placeholder holding CUDA C source (format "cuda"), saved byte for byte as TVM's CUDA module saves
itself. Loaded on a GPU machine as it is, that source must be compiled there by TVM's Python
callback (the compiler package plus NVRTC or nvcc). Here, when nvcc is present, export rewrites
each such module in the library's packed imports to a fatbin for the target's architecture
(format "fatbin"), which TVM's CUDA runtime loads with the driver alone.

The packed imports are TVM's serialization: u64 size; the import tree (two u64 vectors); then per
module its kind string and, unless "_lib", a u64-sized payload. A CUDA payload is: format string,
function table, code bytes, then source metadata (kept as is).
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import tvm

from .errors import TargetError

FATBIN_MAGIC = 0xBA55ED50  # first u32 of an nvcc fatbin


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


def _compiled_payload(payload: bytes, compile_source) -> bytes:
    """A "cuda"-format CUDA payload rewritten to "fatbin"; other formats come back unchanged."""
    reader = _Reader(payload)
    fmt = reader.sized()
    if fmt != b"cuda":
        return payload
    table_start = reader.offset
    _skip_function_table(reader)
    function_table = payload[table_start:reader.offset]
    source = reader.sized()
    rest = payload[reader.offset:]
    binary = compile_source(source.decode())
    if len(binary) < 4 or struct.unpack_from("<I", binary)[0] != FATBIN_MAGIC:
        raise TargetError("nvcc did not produce a fatbin for the CUDA kernels")
    return _sized(b"fatbin") + function_table + _sized(binary) + rest


def compile_packed_imports(blob: bytes, compile_source) -> tuple[bytes, int]:
    """The packed imports with every CUDA source module compiled; returns (blob, modules compiled)."""
    reader = _Reader(blob)
    if reader.u64() != len(blob) - 8:
        raise TargetError("packed imports: size header does not match")
    for _ in range(2):  # import tree: row pointers, child indices
        reader.raw(8 * reader.u64())
    out = [blob[8:reader.offset]]
    compiled = 0
    while reader.offset < len(blob):
        kind = reader.sized()
        out.append(_sized(kind))
        if kind == b"_lib":
            continue
        payload = reader.sized()
        if kind == b"cuda":
            new_payload = _compiled_payload(payload, compile_source)
            compiled += new_payload is not payload
            payload = new_payload
        out.append(_sized(payload))
    body = b"".join(out)
    return struct.pack("<Q", len(body)) + body, compiled


def _c_array(symbol_declarations: str, blob: bytes) -> str:
    rows = (",".join(f"0x{byte:02x}" for byte in blob[i:i + 20]) for i in range(0, len(blob), 20))
    return symbol_declarations.replace("@SIZE@", str(len(blob))).replace("@BYTES@", ",\n  ".join(rows))


def fatbin_pack_imports(target: tvm.target.Target, stats: dict):
    """An `fpack_imports` for export_library: TVM's C packing of the imports, with the CUDA
    modules compiled to fatbins by nvcc for `target`'s arch. `stats["cuda_modules"]` counts them."""
    from tvm.runtime import _ffi_api

    def compile_source(source: str) -> bytes:
        from tvm.support import nvcc

        with target:
            try:
                return bytes(nvcc.compile_cuda(source, target_format="fatbin", compiler="nvcc"))
            except RuntimeError as err:
                log = str(err).split("Compilation error:")[-1].strip().splitlines()
                raise TargetError(f"nvcc failed on the CUDA kernels for {target.arch}: "
                                  + "\n".join(log[-10:])) from None

    def pack(module, is_system_lib, prefix, workspace_dir):
        blob = bytes(_ffi_api.ModulePackImportsToTensor(module).numpy().tobytes())
        blob, stats["cuda_modules"] = compile_packed_imports(blob, compile_source)
        c_source = str(_ffi_api.ModulePackImportsToC(module, is_system_lib, prefix))
        head, _, rest = c_source.partition("] = {")
        declarations = head[:head.rindex("[") + 1] + "@SIZE@] = {\n  @BYTES@\n" + rest[rest.index("};"):]
        path = Path(workspace_dir) / f"{prefix}devc.c"
        path.write_text(_c_array(declarations, blob))
        return str(path)

    return pack


def export_cuda_library(executable, path: str | Path, target) -> dict:
    """Export a CUDA build's library for `target` (a TargetSpec); returns the manifest's "cuda" entry.

    With nvcc, the kernels inside are fatbins for the target's arch (the TVM runtime alone loads
    them); without it they stay CUDA source, which loading compiles (TVM's compiler package and
    NVRTC or nvcc needed on the GPU machine).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tvm_target = target.tvm_target()
    if nvcc_path() is None:
        executable.export_library(str(path))
        return {"kernels": "cuda source", "note": "nvcc not found at build time: the kernels are "
                "compiled when the library is loaded (needs apache-tvm's compiler package and NVRTC "
                "or nvcc on the GPU machine)"}
    stats: dict = {}
    os.environ.setdefault("PATH", "")
    if shutil.which("nvcc") is None:  # found under CUDA_HOME: TVM's nvcc helper runs "nvcc"
        os.environ["PATH"] = f"{Path(nvcc_path()).parent}{os.pathsep}{os.environ['PATH']}"
    executable.export_library(str(path), fpack_imports=fatbin_pack_imports(tvm_target, stats))
    return {"kernels": "fatbin", "arch": tvm_target.arch, "modules": stats.get("cuda_modules", 0)}
