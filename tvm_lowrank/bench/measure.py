"""Measure one cell: compile, check against PyTorch, accuracy on real data, latency on the device.

The build is `api.compile_model`'s (verified against both PyTorch references where it runs here),
and it runs where `tvm_lowrank.runner` runs artifacts: in this process, or on a board through
the RPC tracker; the runner's placement says whether that device is an emulated stand-in. On the
host CPU the same low-rank program is also timed in PyTorch eager and ONNX Runtime
(`baselines`), and each kernel is timed for the roofline (`kernels`).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .grid import DENSE, FASHION_MNIST, Cell, ModelSpec
from .stats import latency_stats, runs_per_sample


@dataclass
class BenchSettings:
    """What a benchmark run measures and how; `key_fields` change the numbers (and the cache key)."""

    repeat: int = 30  # timing samples per latency
    sample_seconds: float = 0.02  # each sample averages enough runs to last about this long
    accuracy_images: int = 1000  # test images run through each build (0: no accuracy)
    dataset: str = "auto"  # see grid.resolve_model
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    database: str | None = None  # None, "default" (schedules/<target>/) or a directory
    tracker: str | None = None  # RPC tracker for targets that do not run here
    baselines: bool = True  # PyTorch eager and ONNX Runtime on host targets
    kernels: bool = True  # per-kernel roofline on host targets

    def key_fields(self) -> dict:
        fields = asdict(self)
        fields.pop("tracker")  # the same board through another tracker measures the same
        return fields


def database_dir(settings: BenchSettings, target) -> Path | None:
    """The database a cell applies: "default" is the target's own in schedules/, where it has
    records (a target never tuned builds untuned), a directory given by the user must exist."""
    if settings.database is None:
        return None
    if settings.database == "default":
        from ..database import shipped_database

        return shipped_database(target)
    return Path(settings.database)


def _agreement(verification) -> dict:
    original, lowrank = verification.vs_original, verification.vs_lowrank_reference
    return {"top1_agreement": original.top1_agreement, "max_rel_error_vs_original": original.max_rel_error,
            "max_rel_error_vs_lowrank_reference": lowrank.max_rel_error,
            "compiler_exact": verification.compiler_exact, "verified_inputs": verification.num_inputs}


def _accuracy(runner, dataset: str | None, images: int) -> dict:
    if dataset is None or images <= 0:
        return {"accuracy": None, "accuracy_images": 0, "dataset": dataset}
    if dataset != FASHION_MNIST:
        raise ValueError(f"no loader for dataset {dataset!r}")
    from ..data import load_fashion_mnist

    inputs, labels = load_fashion_mnist("test", limit=images)
    predicted = np.array([int(np.argmax(runner.run(x[None]))) for x in inputs])
    return {"accuracy": float(np.mean(predicted == labels)), "accuracy_images": int(len(labels)),
            "dataset": dataset}


def _latency(runner, x: np.ndarray, settings: BenchSettings) -> dict:
    estimate = min(runner.time(x, repeat=2, number=1))
    number = runs_per_sample(estimate, settings.sample_seconds)
    seconds = runner.time(x, repeat=settings.repeat, number=number)
    return {**latency_stats(seconds, "latency"), "latency_runs_per_sample": number}


def _tuning(manifest: dict, prepared, target, database: Path | None) -> dict:
    """Kernels the database scheduled and the measured records (trials) it holds for them.

    A database keeps each trial's measured run time, not the time the search took, so
    tuning_seconds is only known where the manifest records it."""
    schedules = manifest.get("schedules") or {}
    row = {"database": None if database is None else str(database),
           "tuned_kernels": schedules.get("kernels_from_database", 0), "kernels": schedules.get("kernels"),
           "tuning_trials": 0, "tuning_seconds": schedules.get("seconds", 0 if database is None else None)}
    if database is None:
        return row
    from ..database import open_database
    from ..tune import extract_tuning_tasks

    db = open_database(database, target)
    for task in extract_tuning_tasks(prepared.mod, target):
        workload = task.dispatched[0]
        if db.has_workload(workload):
            row["tuning_trials"] += len(db.get_top_k(db.commit_workload(workload), 1 << 30))
    return row


def _host_extras(prepared, artifact, target, x: np.ndarray, settings: BenchSettings,
                 peaks: dict) -> tuple[dict, list]:
    """PyTorch/ORT latency of the same program, and the per-kernel roofline rows. `peaks` keeps
    each target's (peak GFLOP/s, where it came from) across cells."""
    from ..reference import lowrank_program
    from .baselines import measure_baselines
    from .kernels import kernel_flops, profile_kernels

    if target.peak_gflops is not None:
        peaks[target.name] = (target.peak_gflops, f"target file {target.name}.json")
    need_peak = settings.kernels and target.name not in peaks
    row, kernel_rows, measured = {}, [], {}
    if settings.baselines:
        source = prepared.source
        if prepared.policy is None:
            program = source.program if source.kind == "torch" else source.onnx_model
        else:
            program = lowrank_program(source, prepared.records)
        torch_program, onnx_model = (program, None) if source.kind == "torch" else (None, program)
        measured = measure_baselines(torch_program, onnx_model, x, settings.threads, settings.repeat, need_peak)
    elif need_peak:
        measured = measure_baselines(None, None, x, settings.threads, settings.repeat, peak=True)
    for key, value in measured.items():
        if key == "peak_gflops":
            peaks[target.name] = (value, f"measured: float32 GEMM (PyTorch), {settings.threads} threads")
        elif key == "errors":
            row["baseline_errors"] = "; ".join(f"{k}: {v}" for k, v in value.items()) or None
        else:
            row[key] = value
    if settings.kernels:
        peak, row["peak_source"] = peaks[target.name]
        row["peak_gflops"] = peak
        kernel_rows = profile_kernels(artifact.library_path, x, kernel_flops(prepared.mod, target))
        for kernel in kernel_rows:
            kernel["peak_gflops"] = peak
            kernel["efficiency"] = None if kernel["gflops"] is None else kernel["gflops"] / peak
        kernel_seconds = sum(kernel["seconds"] for kernel in kernel_rows)
        if kernel_seconds > 0:  # the whole model: every kernel's FLOPs over every kernel's time
            row["kernels_ms"] = kernel_seconds * 1e3
            row["kernels_gflops"] = sum(kernel["flops"] for kernel in kernel_rows) / kernel_seconds / 1e9
            row["kernels_efficiency"] = row["kernels_gflops"] / peak
    return row, kernel_rows


def _check_board(target, tracker: str | None, why_not_here: str) -> None:
    """Fail before compiling when no board can run the cell (a build takes seconds to minutes)."""
    from ..errors import DeviceError
    from ..remote import board_keys, tracker_summary

    key = target.rpc_key or target.name
    if tracker is None:
        raise DeviceError(f"target {target.name} does not run here ({why_not_here}); "
                          f"give --tracker HOST:PORT with a board registered as {key!r}")
    keys = board_keys(tracker_summary(tracker))
    if key not in keys:
        raise DeviceError(f"no board with key {key!r} on the RPC tracker at {tracker} (it has "
                          f"{', '.join(sorted(keys)) or 'none'})")


def measure_cell(cell: Cell, model: ModelSpec, settings: BenchSettings, artifact_dir: Path,
                 peaks: dict) -> tuple[dict, list]:
    """The cell's result row and its kernel rows (host CPU targets only). `peaks` caches each
    target's peak GFLOP/s across cells. Raises whatever stopped it (the caller records it)."""
    from ..api import compile_model, prepare_model
    from ..runner import local_unavailable_reason, open_artifact
    from ..targets import load_target

    target = load_target(cell.target)
    local = local_unavailable_reason(target) is None
    if not local:
        _check_board(target, settings.tracker, local_unavailable_reason(target))
    database = database_dir(settings, target)
    rank = "energy:0.95" if cell.method == DENSE else cell.rank
    model_arg, example = model.load()
    start = time.perf_counter()
    # prepared here and handed to compile_model: the baselines and kernel FLOPs need it too
    prepared = prepare_model(model_arg, cell.method, rank, example_input=example)
    rpc = None if local else settings.tracker
    result = compile_model(prepared, target=cell.target, method=cell.method, out=artifact_dir,
                           min_top1_agreement=0.0, database=database, rpc=rpc)
    row = {"compile_seconds": time.perf_counter() - start}
    if result.verification is not None:  # run where the target runs, on this host or the board
        row.update(_agreement(result.verification))
    totals = result.artifact.manifest["totals"]
    row.update(conv_macs=totals["conv_macs_after"], conv_macs_dense=totals["conv_macs_before"],
               mac_reduction=totals["mac_reduction"], conv_params=totals["conv_params_after"],
               conv_params_dense=totals["conv_params_before"], param_reduction=totals["param_reduction"],
               layers_decomposed=totals["layers_decomposed"],
               build_bytes=result.artifact.library_path.stat().st_size)
    x = result.artifact.reference().inputs[0]
    with open_artifact(result.artifact, rpc=rpc) as runner:
        placement = runner.placement
        row.update(_accuracy(runner, model.dataset, settings.accuracy_images))
        row.update(_latency(runner, x, settings))
    row.update(device=placement.describe(), where=placement.where, emulated=placement.emulated is not None,
               emulated_by=placement.emulated)
    host_cpu = placement.where == "local" and placement.device == "cpu"
    row.update(_tuning(result.artifact.manifest, prepared, target, database))
    kernel_rows = []
    if host_cpu:
        extras, kernel_rows = _host_extras(prepared, result.artifact, target, x, settings, peaks)
        row.update(extras)
    return row, kernel_rows
