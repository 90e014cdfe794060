"""Run an artifact's library where its target runs: in this process, or on a board through RPC.

`verify` and timing share this, so the same artifact is checked the same way on x86, on PoCL
standing in for a Mali GPU, on the emulated aarch64 board and on a real board. A `Placement` says
where it ran and whether that device stands in for the real one (its timings are then labelled
"emulated — not representative").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .artifact import Artifact
from .boards import EMULATED_LABEL
from .errors import TargetError
from .targets import TargetSpec, host_arch, load_target

# The TVM device kind that an artifact's kernels run on, by TVM target kind.
DEVICE_KINDS = {"llvm": "cpu", "opencl": "opencl", "cuda": "cuda"}


@dataclass(frozen=True)
class Placement:
    """Where an artifact ran: "local" (this process) or "rpc" (a board through a tracker)."""

    where: str
    device: str  # TVM device kind: "cpu", "opencl", "cuda"
    target: str
    tracker: str | None = None
    key: str | None = None
    device_name: str | None = None  # e.g. the OpenCL device's name
    emulated: str | None = None  # what stands in for the real device (None: the real one)

    def describe(self) -> str:
        place = "this machine" if self.where == "local" else f"board {self.key!r} via {self.tracker}"
        device = f"{self.device}" + (f" ({self.device_name})" if self.device_name else "")
        text = f"{device} on {place}, target {self.target}"
        return text + (f" [{EMULATED_LABEL}: {self.emulated}]" if self.emulated else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def artifact_target(artifact: Artifact) -> TargetSpec:
    """The target an artifact was built for: its file in targets/ by name, else the file it was
    built from (recorded in the manifest)."""
    stored = artifact.manifest.get("target") or {}
    name = stored.get("name")
    try:
        return load_target(name)
    except TargetError:
        if stored.get("file"):
            return load_target(stored["file"])
        raise TargetError(f"{artifact.path}: built for target {name!r}, which is not in targets/; "
                          f"its manifest names no target file") from None


def device_kind(target: TargetSpec) -> str:
    kind = target.tvm_target_config.get("kind")
    if kind not in DEVICE_KINDS:
        raise TargetError(f"target {target.name}: no runtime device for TVM target kind {kind!r}")
    return DEVICE_KINDS[kind]


def local_unavailable_reason(target: TargetSpec) -> str | None:
    """Why `target`'s code cannot run in this process, or None when it can."""
    kind = device_kind(target)
    here = host_arch()
    if target.arch != here:
        return f"target {target.name} is built for {target.arch}, this machine is {here}"
    if target.rpc_key is not None and kind == "cpu":
        return f"target {target.name} runs on a board (RPC key {target.rpc_key!r})"
    if kind == "cpu":
        missing = target.missing_cpu_flags()
        return f"this CPU lacks {', '.join(missing)}, which target {target.name} needs" if missing else None
    if kind == "opencl":
        from .opencl import opencl_unavailable_reason

        reason = opencl_unavailable_reason()
        return None if reason is None else f"OpenCL unavailable: {reason}"
    from .cuda import cuda_unavailable_reason

    reason = cuda_unavailable_reason(target.tvm_target_config.get("arch"))
    return None if reason is None else f"CUDA unavailable: {reason}"


@dataclass(frozen=True)
class DeviceTiming:
    """Seconds per run of an artifact on its device: `repeat` samples, each the mean of `number`."""

    seconds: tuple[float, ...]
    number: int
    placement: Placement

    @property
    def median_s(self) -> float:
        return float(np.median(self.seconds))

    @property
    def spread_s(self) -> tuple[float, float]:
        """(min, max) over the samples."""
        return float(min(self.seconds)), float(max(self.seconds))

    @property
    def emulated(self) -> bool:
        return self.placement.emulated is not None

    def summary(self) -> str:
        low, high = self.spread_s
        text = (f"timing: median {self.median_s * 1e3:.3f} ms (min {low * 1e3:.3f}, max {high * 1e3:.3f}; "
                f"{len(self.seconds)} x {self.number} runs) on {self.placement.describe()}")
        return text if self.emulated else text + " (real device)"

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": list(self.seconds), "number": self.number, "median_s": self.median_s,
                "min_s": self.spread_s[0], "max_s": self.spread_s[1], "emulated": self.emulated,
                "ran_on": self.placement.to_dict()}


def where_it_runs(target: TargetSpec) -> str:
    """How builds for `target` are run: here, or on a board (and how to reach it), or why not here."""
    reason = local_unavailable_reason(target)
    if reason is None:
        return "runs here"
    if target.rpc_key is not None:
        return f"runs on a board: --rpc HOST:PORT --key {target.rpc_key}"
    return reason


class ArtifactRunner:
    """The artifact's library loaded on its device: run or time "main" on numpy inputs."""

    def __init__(self, placement: Placement, run, time):
        self.placement = placement
        self._run, self._time = run, time

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._run(x)

    def time(self, x: np.ndarray, repeat: int = 10, number: int = 10) -> list[float]:
        """Seconds per run: `repeat` samples, each the mean of `number` runs (TVM's evaluator)."""
        return self._time(x, repeat, number)


def _local_device_name(kind: str, device) -> str | None:
    if kind == "opencl":
        from .opencl import opencl_devices

        names = opencl_devices()
        return names[device.index].split(": ", 1)[1] if device.index < len(names) else None
    return device.device_name if kind == "cuda" else None


def _local_emulation(kind: str, device_name: str | None) -> str | None:
    """A CPU OpenCL (PoCL) stands in for the GPU the kernels target."""
    if kind == "opencl" and device_name and ("portable computing language" in device_name.lower()
                                             or "pocl" in device_name.lower()):
        return "PoCL (CPU OpenCL) standing in for the GPU"
    return None


@contextmanager
def open_local(artifact: Artifact, target: TargetSpec) -> Iterator[ArtifactRunner]:
    import tvm

    from .build import load_executable, run_vm, time_vm

    reason = local_unavailable_reason(target)
    if reason is not None:
        hint = (f"; run it on a board: --rpc HOST:PORT --key {target.rpc_key}" if target.rpc_key
                else "")
        raise TargetError(f"{artifact.path} cannot run here: {reason}{hint}")
    kind = device_kind(target)
    if kind == "cuda":
        from .cuda import prepare_cuda_loading

        prepare_cuda_loading()
    device = tvm.device(kind, 0)
    vm = load_executable(artifact.library_path, device)
    name = _local_device_name(kind, device)
    placement = Placement("local", kind, target.name, device_name=name, emulated=_local_emulation(kind, name))
    yield ArtifactRunner(placement, lambda x: run_vm(vm, x, device),
                         lambda x, repeat, number: time_vm(vm, x, repeat, number, device))


@contextmanager
def open_remote(artifact: Artifact, target: TargetSpec, tracker: str, key: str | None = None,
                timeout: float = 60.0) -> Iterator[ArtifactRunner]:
    from .remote import connect

    key = key or target.rpc_key or target.name
    kind = device_kind(target)
    with connect(tracker, key, timeout=timeout) as board:
        model = board.load(artifact.library_path, device_kind=kind)
        placement = Placement("rpc", kind, target.name, tracker=tracker, key=key, emulated=board.emulated)
        yield ArtifactRunner(placement, model.run, lambda x, repeat, number: model.time(x, repeat, number))


def open_artifact(artifact: Artifact, rpc: str | None = None, key: str | None = None):
    """A context manager giving an ArtifactRunner: on the board (`rpc` tracker, `key`) or here."""
    target = artifact_target(artifact)
    if rpc is None:
        if key is not None:
            raise TargetError(f"--key {key} needs --rpc HOST:PORT (the tracker the board is registered on)")
        return open_local(artifact, target)
    return open_remote(artifact, target, rpc, key)
