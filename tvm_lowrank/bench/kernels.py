"""Per-kernel times and achieved GFLOP/s of a host build, for the roofline plot.

TVM 0.27's Relax VM has no profiler (`vm.profile` is gone from the Python VirtualMachine), so each
kernel is timed on its own: one instrumented run of "main" (`VirtualMachine.set_instrument`) records
every kernel call with its argument tensors, then TVM's `time_evaluator` times each kernel's
function in the library on exactly those tensors. A kernel's FLOPs come from its TIR after the
build's own fusion (`build.fuse`, so names match the library's) via `estimate_tir_flops`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .stats import runs_per_sample

_BUILTIN = "vm.builtin."
SAMPLE_SECONDS = 0.005


def kernel_flops(mod, target) -> dict[str, float]:
    """FLOPs of each fused PrimFunc of `mod` as the build for `target` fuses it (0 if unknown)."""
    import tvm
    from tvm.s_tir.analysis import estimate_tir_flops

    from ..build import fuse

    flops = {}
    for global_var, func in fuse(mod, target).functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            try:
                flops[global_var.name_hint] = float(estimate_tir_flops(tvm.IRModule({global_var: func})))
            except Exception:  # noqa: BLE001 - TVM cannot count some loops; the kernel is still timed
                flops[global_var.name_hint] = 0.0
    return flops


def _kernel_module(library, name: str):
    """The (imported) module of `library` that defines kernel `name`: time_evaluator does not
    look through imports."""
    pending = [library]
    while pending:
        module = pending.pop(0)
        if module.implements_function(name, query_imports=False):
            return module
        pending.extend(module.imports)
    raise KeyError(f"kernel {name} is in no module of the library")


def _kernel_calls(library, x: np.ndarray):
    """[(kernel name, argument tensors)] of one run of "main", in call order."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(library, tvm.cpu())
    calls = []

    def instrument(_func, symbol, before_run, _ret, *args):
        if before_run and not str(symbol).startswith(_BUILTIN):
            calls.append((str(symbol), list(args)))
        return 0  # VMInstrumentReturnKind.NO_OP: run the call as usual

    vm.set_instrument(instrument)
    vm.set_input("main", tvm.runtime.tensor(np.ascontiguousarray(x)))
    vm.invoke_stateful("main")
    return calls


def kernel_functions(library, x: np.ndarray) -> list[tuple[str, object, object, list]]:
    """[(kernel name, its module, its function, argument tensors)] of one run of "main" on `x`, in
    call order: calling each function on its tensors in turn redoes the run's kernel work."""
    calls = []
    for name, args in _kernel_calls(library, x):
        module = _kernel_module(library, name)
        calls.append((name, module, module.get_function(name), args))
    return calls


def profile_kernels(library_path: str | Path, x: np.ndarray, flops: dict[str, float],
                    repeat: int = 10) -> list[dict]:
    """One row per kernel call: name, FLOPs, median seconds, achieved GFLOP/s."""
    import time

    import tvm

    library = tvm.runtime.load_module(str(library_path))
    rows = []
    for name, module, function, args in kernel_functions(library, x):
        start = time.perf_counter()
        function(*args)
        number = runs_per_sample(time.perf_counter() - start, SAMPLE_SECONDS)
        timer = module.time_evaluator(name, tvm.cpu(), number=number, repeat=repeat)
        seconds = float(np.median(timer(*args).results))
        kernel_flops_ = flops.get(name, 0.0)
        rows.append({"kernel": name, "flops": kernel_flops_, "seconds": seconds,
                     "gflops": kernel_flops_ / seconds / 1e9 if seconds > 0 else None})
    return rows
