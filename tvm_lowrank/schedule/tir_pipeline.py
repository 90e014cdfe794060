"""Our TIR pipeline for CPU code: TVM's "s_tir" pipeline plus two passes before `LowerTVMBuiltin`.

- `DenseStridedLoads` (`strided_loads`): strided vector loads become a dense load and a shuffle.
- `StackScratchBuffers` (`stack_buffers`): small scratch buffers stay on the stack.

Both need the vectorized, flattened TIR that only the end of TVM's lowering has, so they run in
the host's finalize stage. Builds (`build.build`) and tuning candidates (`tune`) both lower CPU
code with this pipeline, so what tuning measures is what the build runs.
"""

from __future__ import annotations

import tvm
from tvm.s_tir import pipeline as s_tir_pipeline
from tvm.tirx.compilation_pipeline import register_tir_pipeline

from .stack_buffers import StackScratchBuffers
from .strided_loads import DenseStridedLoads

LOWRANK_CPU_PIPELINE = "tvm_lowrank_cpu"


def lowrank_cpu_pipeline():
    """TVM's "s_tir" pipeline with our passes before the host's `LowerTVMBuiltin`."""
    pipeline, finalize_host, finalize_device = s_tir_pipeline.default_s_tir_pipeline()

    def finalize_host_with_our_passes():
        return tvm.transform.Sequential([DenseStridedLoads(), StackScratchBuffers(), finalize_host()])

    return pipeline, finalize_host_with_our_passes, finalize_device


register_tir_pipeline(LOWRANK_CPU_PIPELINE, lowrank_cpu_pipeline)


def tir_pipeline(target: tvm.target.Target) -> str:
    """The name of the TIR pipeline our builds use for `target`: ours on CPUs, TVM's elsewhere."""
    return LOWRANK_CPU_PIPELINE if target.kind.name == "llvm" else "default"
