"""Compilation targets as JSON files in the repository's ``targets/`` folder.

A target is data, not code (as timm's registry maps names to models, ``targets/<name>.json`` maps
a CLI name to a TVM target, its host, cross compiler, RPC key and runtime needs), so adding a
board means adding a file. Every file is checked on load, TVM's own Target parser included, so a
typo fails at ``load_target`` with the file named rather than deep inside a build.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import tvm

from .errors import TargetError

TARGETS_DIR = Path(__file__).resolve().parents[1] / "targets"
ARCHES = ("x86_64", "aarch64")
_MACHINE_TO_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}

# JSON key -> (accepted JSON types, required); any other key in a file is a typo and an error.
_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), True),
    "description": ((str,), True),
    "tvm_target": ((dict,), True),
    "host": ((dict, type(None)), True),
    "cross_compiler": ((str, type(None)), True),
    "rpc_key": ((str, type(None)), True),
    "runtime": ((list,), True),
    "arch": ((str,), True),
    "cpu_flags": ((list,), False),
    "peak_gflops": ((int, float, type(None)), False),
}


@dataclass(frozen=True)
class TargetSpec:
    """One compilation target, as read from ``targets/<name>.json``.

    `tvm_target_config`/`host` are TVM JSON-dict targets (the file's "tvm_target" and "host";
    TVM 0.27 rejects target strings); `cross_compiler` is the g++ that links an exported library
    (None: native); `rpc_key` is the tracker key of the board that runs it (None: runs here);
    `runtime` lists what the device runtime needs beyond TVM's core (e.g. "opencl"); `cpu_flags`
    are the /proc/cpuinfo flags the generated code requires; `peak_gflops` is the device's peak,
    for roofline reports (None: unknown).
    """

    name: str
    description: str
    tvm_target_config: dict[str, Any]
    host: dict[str, Any] | None
    cross_compiler: str | None
    rpc_key: str | None
    runtime: tuple[str, ...]
    arch: str
    cpu_flags: tuple[str, ...] = ()
    peak_gflops: float | None = None
    source: Path | None = field(default=None, compare=False)

    def tvm_target(self) -> tvm.target.Target:
        """The TVM Target, with the host folded in as TVM expects it."""
        config = dict(self.tvm_target_config)
        if self.host is not None:
            config["host"] = dict(self.host)
        return tvm.target.Target(config)

    def runs_on_host(self) -> bool:
        """Whether code built for this target can run on this machine, in this process.

        True for CPU (llvm) targets of this machine's architecture whose required CPU flags the
        machine has: AVX-512 code on an AVX2-only CPU dies of SIGILL rather than raising.
        Device targets (OpenCL, CUDA), RPC boards and other architectures are not "host".
        """
        if self.tvm_target_config.get("kind") != "llvm" or self.rpc_key is not None:
            return False
        if host_arch() != self.arch:
            return False
        return not self.missing_cpu_flags()

    def missing_cpu_flags(self) -> list[str]:
        """The flags this target's code requires that this CPU lacks, in the target file's order."""
        return [flag for flag in self.cpu_flags if flag not in host_cpu_flags()]


def host_arch() -> str | None:
    """This machine's architecture as target files name it ("x86_64", "aarch64"), or None."""
    return _MACHINE_TO_ARCH.get(platform.machine().lower())


def host_cpu_target() -> str:
    """The widest x86 target this CPU runs natively: the default of the demo and benchmarks."""
    return "x86-avx512" if load_target("x86-avx512").runs_on_host() else "x86-avx2"


@lru_cache(maxsize=1)
def host_cpu_flags() -> frozenset[str]:
    """This CPU's feature flags from /proc/cpuinfo ("flags" on x86, "Features" on ARM)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def list_targets() -> list[str]:
    """Names of the targets shipped in ``targets/``."""
    return sorted(path.stem for path in TARGETS_DIR.glob("*.json"))


def _resolve(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if text.endswith(".json") or "/" in text or Path(text).is_file():
        path = Path(text)
        if not path.is_file():
            raise TargetError(f"target file {path} does not exist")
        return path
    path = TARGETS_DIR / f"{text}.json"
    if not path.is_file():
        raise TargetError(f"unknown target {text!r}; known targets: {', '.join(list_targets())} "
                          f"(or give a path to a .json file)")
    return path


def _check_tvm_target(path: Path, key: str, config: dict[str, Any]) -> None:
    """Let TVM parse the dict, and LLVM judge its CPU name (TVM only warns about a bad mcpu)."""
    try:
        target = tvm.target.Target(config)
    except Exception as exc:  # TVM raises ValueError/TVMError with the offending option named
        raise TargetError(f"{path}: {key!r} is not a valid TVM target: {exc}") from None
    if target.kind.name == "llvm" and "mcpu" in config:
        triple = config.get("mtriple") or tvm.target.codegen.llvm_get_system_triple()
        if not tvm.target.codegen.llvm_is_valid_cpu(config["mcpu"], triple):
            raise TargetError(f"{path}: {key!r} has mcpu {config['mcpu']!r}, "
                              f"which LLVM does not know for triple {triple!r}")


def load_target(name_or_path: str | Path) -> TargetSpec:
    """Load a target by name (``targets/<name>.json``) or from a path to a .json file."""
    path = _resolve(name_or_path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TargetError(f"{path}: cannot read target JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TargetError(f"{path}: expected a JSON object, got {type(data).__name__}")
    missing = [key for key, (_, required) in _FIELDS.items() if required and key not in data]
    if missing:
        raise TargetError(f"{path}: missing field(s) {', '.join(missing)}")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise TargetError(f"{path}: unknown field(s) {', '.join(unknown)}; "
                          f"known fields: {', '.join(_FIELDS)}")
    for key, (types, _) in _FIELDS.items():
        if key in data and (not isinstance(data[key], types) or isinstance(data[key], bool)):
            raise TargetError(f"{path}: field {key!r} has the wrong type "
                              f"({type(data[key]).__name__}: {data[key]!r})")
    for key in ("runtime", "cpu_flags"):
        if not all(isinstance(item, str) for item in data.get(key, [])):
            raise TargetError(f"{path}: field {key!r} must be a list of strings")
    if data["arch"] not in ARCHES:
        raise TargetError(f"{path}: arch {data['arch']!r} is not one of {', '.join(ARCHES)}")
    _check_tvm_target(path, "tvm_target", data["tvm_target"])
    if data["host"] is not None:
        _check_tvm_target(path, "host", data["host"])
        _check_tvm_target(path, "tvm_target with host", {**data["tvm_target"], "host": data["host"]})
    peak = data.get("peak_gflops")
    return TargetSpec(
        name=data["name"], description=data["description"], tvm_target_config=data["tvm_target"],
        host=data["host"], cross_compiler=data["cross_compiler"], rpc_key=data["rpc_key"],
        runtime=tuple(data["runtime"]), arch=data["arch"],
        cpu_flags=tuple(data.get("cpu_flags", ())),
        peak_gflops=None if peak is None else float(peak), source=path.resolve())
