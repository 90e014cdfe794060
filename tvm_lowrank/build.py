"""Build a Relax module for a TargetSpec, export it, load it back and run or time it.

The pipeline is TVM's per-target default (``relax.get_default_pipeline``), which unlike
``relax_pipeline="default"`` fuses ops on CPU. With a tuning database the database is applied
right after fusion, where TVM's zero pipeline applies it, so the fused functions match the
workloads that MetaSchedule tuned on the zero pipeline's output; per kernel it applies the fastest
record unless our own schedule's is within 10% of it (`applied_records.MIN_TUNED_GAIN`). On llvm
(CPU) targets our default schedules (`tvm_lowrank.schedule.ApplyCPUSchedules`) then schedule every
function the database did not, since TVM's own untuned CPU code is scalar; ``schedules=False``
leaves them out.
"""

from __future__ import annotations

import shutil
from contextlib import nullcontext
from importlib import import_module
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from .applied_records import applied_database
from .database import open_database
from .errors import TargetError
from .targets import TargetSpec


def _backend_pipeline(target: tvm.target.Target):
    """The relax.backend pipeline module whose pass lists get_default_pipeline(target) uses."""
    kind = target.kind.name
    if kind == "llvm":
        name = "cpu_generic"
    elif kind in ("cuda", "rocm"):
        name = kind
    elif kind == "opencl" and "adreno" in target.keys:
        name = "adreno"
    else:
        name = "gpu_generic"
    return import_module(f"tvm.relax.backend.{name}.pipeline")


def fusion_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """The passes up to FuseTIR (run under `with target`): their output's PrimFuncs are what a
    tuning database is keyed by, so tuning (`tvm_lowrank.tune`) and the build share this list.
    `FuseBorderPadsWithProducers` runs right before FuseOps (see `passes.pad_at_producer`)."""
    from .passes import FuseBorderPadsWithProducers

    backend = _backend_pipeline(target)
    legalize = list(backend.legalize_passes(target))
    after_fusion = next(i for i, p in enumerate(legalize) if p.info.name == "FuseTIR") + 1
    fuse_ops = next(i for i, p in enumerate(legalize) if p.info.name == "FuseOps")
    return (graph_passes(target) + list(backend.library_dispatch_passes(target)) + legalize[:fuse_ops]
            + [FuseBorderPadsWithProducers()] + legalize[fuse_ops:after_fusion])


def graph_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """Our Relax rewrites before legalization: crop conv taps that only read padding (any target);
    on CPUs, channel-last weights for narrow convs and padding written by the producing kernel
    (`PadConvInputsAtProducer`), what our schedules want."""
    from .passes import ChannelsLastNarrowConvWeights, PadConvInputsAtProducer, TrimDeadConvTaps

    passes = [TrimDeadConvTaps()]
    if target.kind.name == "llvm":
        from .schedule import cpu_vector_info

        vec = cpu_vector_info(target)
        # channel-last weights first: PadConvInputsAtProducer keeps the phase-split padding of the
        # column-strided convs that stay OIHW
        passes.append(ChannelsLastNarrowConvWeights(vec.lanes(), max_width=vec.channel_vector_width))
        passes.append(PadConvInputsAtProducer())
    return passes


def fuse(mod: tvm.IRModule, target: TargetSpec) -> tvm.IRModule:
    """`mod` legalized and fused for `target`, as the build schedules it (see fusion_passes)."""
    tvm_target = target.tvm_target()
    with tvm_target:
        return tvm.transform.Sequential(fusion_passes(tvm_target))(mod)


def compile_pipeline(target: TargetSpec, database_dir: str | Path | None = None,
                     schedules: bool = True) -> tvm.transform.Pass:
    """The Relax pipeline for `target`; with `database_dir`, tuned schedules are applied after fusion.

    `database_dir` is a MetaSchedule JSONDatabase work_dir (database_workload.json and
    database_tuning_record.json), checked here (TuningDatabaseError naming a damaged file or a
    record of another target); each kernel gets the record `applied_records.choose_record` picks,
    and functions it has no record for keep their default schedule, which on llvm targets is ours
    (`tvm_lowrank.schedule`) unless `schedules` is False.
    """
    tvm_target = target.tvm_target()
    on_cpu = tvm_target.kind.name == "llvm"
    cpu_schedules = schedules and on_cpu
    if database_dir is None and not cpu_schedules:
        return relax.get_default_pipeline(tvm_target)
    from .passes import FoldScheduledWeightLayouts

    backend = _backend_pipeline(tvm_target)
    stored = open_database(database_dir, target) if database_dir is not None else None

    @tvm.transform.module_pass(opt_level=0, name="LowRankBuildWithDatabase")
    def pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with tvm_target:  # the database pass and its records are keyed by the current target
            legalize = list(backend.legalize_passes(tvm_target))
            after_fusion = next(i for i, p in enumerate(legalize) if p.info.name == "FuseTIR") + 1
            mod = tvm.transform.Sequential(fusion_passes(tvm_target))(mod)
            if stored is not None:
                with applied_database(mod, stored):
                    mod = relax.transform.MetaScheduleApplyDatabase()(mod)
            if cpu_schedules:  # after the database: functions it scheduled are kept
                from .schedule import ApplyCPUSchedules

                mod = ApplyCPUSchedules(tvm_target)(mod)
            if on_cpu:  # weight layouts a CPU schedule (ours or a record's) chose;
                mod = FoldScheduledWeightLayouts()(mod)  # FoldConstant runs kernels on the host CPU
            passes = (legalize[after_fusion:]
                      + list(backend.dataflow_lower_passes(tvm_target))
                      + list(backend.finalize_passes(tvm_target)))
            return tvm.transform.Sequential(passes)(mod)

    return pipeline


def build(mod: tvm.IRModule, target: TargetSpec, database_dir: str | Path | None = None,
          schedules: bool = True) -> tvm.runtime.Executable:
    """Compile `mod` (a Relax module with a "main") for `target` (`database_dir`, `schedules`: see
    compile_pipeline; with `schedules`, CPU kernels are lowered through our TIR pipeline,
    `schedule.tir_pipeline`: strided loads made dense, small scratch buffers on the stack)."""
    from .schedule.tir_pipeline import tir_pipeline

    tvm_target = target.tvm_target()
    compiler = nullcontext()
    if tvm_target.kind.name == "cuda":  # the same fatbin whether or not this machine has a driver
        from .cuda_aot import kernels_compiled_by_nvcc

        compiler = kernels_compiled_by_nvcc(tvm_target)
    with compiler:
        return tvm.compile(mod, target=tvm_target,
                           relax_pipeline=compile_pipeline(target, database_dir, schedules),
                           tir_pipeline=tir_pipeline(tvm_target) if schedules else "default")


def export_library(executable: tvm.runtime.Executable, path: str | Path,
                   target: TargetSpec) -> Path:
    """Write the shared library for `target`, linked by its cross compiler when it has one.

    Weights are embedded, so the .so alone is the deployable artifact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if target.cross_compiler is None:
        executable.export_library(str(path))
    elif shutil.which(target.cross_compiler) is None:
        raise TargetError(f"target {target.name}: cross compiler {target.cross_compiler!r} is not "
                          f"installed here (for aarch64 targets, scripts/arm_board.py setup installs it)")
    else:
        fcompile = tvm.support.cc.cross_compiler(target.cross_compiler)
        try:
            executable.export_library(str(path), fcompile=fcompile)
        except (RuntimeError, OSError) as exc:  # the cross g++ fails to link
            raise TargetError(f"target {target.name}: cross compiler {target.cross_compiler!r} "
                              f"failed to link {path}: {exc}") from exc
    return path


def load_executable(path: str | Path, device: tvm.runtime.Device | None = None) -> relax.VirtualMachine:
    """Load an exported library into a VirtualMachine on `device` (default: the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported library at {path}")
    return relax.VirtualMachine(tvm.runtime.load_module(str(path)), device or tvm.cpu())


def run_vm(vm: relax.VirtualMachine, x: np.ndarray,
           device: tvm.runtime.Device | None = None) -> np.ndarray:
    """Run "main" on one input and return its single output as a numpy array.

    `device` is the VM's device (the VM does not expose it); default: the CPU.

    Uses the stateful API (set_input / invoke_stateful / get_outputs), which also works over RPC,
    where a returned tuple would be an unusable remote object.
    """
    vm.set_input("main", tvm.runtime.tensor(np.ascontiguousarray(x), device or tvm.cpu()))
    vm.invoke_stateful("main")
    output = vm.get_outputs("main")
    if isinstance(output, tvm.runtime.Tensor):
        return output.numpy()
    if len(output) != 1:
        raise ValueError(f"run_vm expects a single-output model, got {len(output)} outputs")
    return output[0].numpy()


def time_vm(vm: relax.VirtualMachine, x: np.ndarray, repeat: int = 10, number: int = 10,
            device: tvm.runtime.Device | None = None) -> list[float]:
    """Seconds per run of "main" on `x`: `repeat` samples, each the mean of `number` runs.

    TVM's own evaluator (one warm-up call, then timing in C++) avoids Python overhead per run.
    """
    device = device or tvm.cpu()
    vm.set_input("main", tvm.runtime.tensor(np.ascontiguousarray(x), device))
    timer = vm.time_evaluator("invoke_stateful", device, number=number, repeat=repeat)
    return [float(t) for t in timer("main").results]
