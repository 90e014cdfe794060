"""Default CPU schedules, so that an untuned llvm build is vectorized and parallel.

TVM's default Relax pipeline leaves every PrimFunc a naive scalar loop nest on CPU, and dlight's CPU
rules cover only GEMV and row reductions. `ApplyCPUSchedules` runs after fusion (FuseTIR) and
before codegen: it gives each fused conv2d / pooling PrimFunc our direct-convolution schedule
(`DirectConv2D`, see `cpu_conv`: vectors along rows, or across output channels on maps narrower
than a vector, whose weights the build stores channel-last), each x @ W[k, n] matmul our vector
schedule (`VectorMatmul`, see `cpu_matmul`), each sum over an input's trailing axes (the global
average pool) vector partial sums (`VectorTrailingReduction`, see `cpu_reduce`) and the rest dlight's
CPU rules. Functions a tuning database
already scheduled (attribute ``tirx.is_scheduled``) are kept, so tuned records win.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.s_tir.dlight import cpu as dlight_cpu
from tvm.target import Target

from ._cpu import CPUVectorInfo, cpu_vector_info
from .cpu_conv import DirectConv2D, Tile, WindowShape, match_window, plan_tile, schedule_window
from .cpu_matmul import VectorMatmul, match_matmul
from .cpu_reduce import VectorTrailingReduction, match_trailing_reduction

SCHEDULED_ATTR = "tirx.is_scheduled"


def default_cpu_rules():
    """The rules ApplyCPUSchedules tries on each function, first match wins."""
    return [DirectConv2D(), VectorMatmul(), VectorTrailingReduction(), dlight_cpu.GEMV(), dlight_cpu.Reduction()]


def _is_scheduled(func) -> bool:
    return func.attrs is not None and SCHEDULED_ATTR in func.attrs and int(func.attrs[SCHEDULED_ATTR]) == 1


@tvm.transform.module_pass(opt_level=0, name="ApplyCPUSchedules")
class ApplyCPUSchedules:
    """Schedule every unscheduled PrimFunc of the module with the first rule that applies to it.

    target: the llvm Target (default: the current one); other targets leave the module as it is.
    After running, `applied` maps each scheduled function's name to its rule's class name.
    The input module is not modified (dlight's ApplyDefaultSchedule updates it in place).
    """

    def __init__(self, target: Target | None = None, rules=None):
        self.target = target
        self.rules = list(rules) if rules is not None else default_cpu_rules()
        self.applied: dict[str, str] = {}

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        target = self.target or Target.current(allow_none=False)
        self.applied = {}
        if target.kind.name != "llvm":
            return mod
        updates = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
                continue
            func_target = func.attrs.get("target", target) if func.attrs is not None else target
            for rule in self.rules:
                sch = rule.apply(func, func_target, False)
                if sch is not None:
                    updates[gvar] = sch.mod["main"].with_attr(SCHEDULED_ATTR, True)
                    self.applied[gvar.name_hint] = type(rule).__name__
                    break
        if not updates:
            return mod
        functions = dict(mod.functions_items())
        functions.update(updates)
        return tvm.IRModule(functions, attrs=mod.attrs, global_infos=mod.global_infos)


__all__ = ["ApplyCPUSchedules", "CPUVectorInfo", "DirectConv2D", "SCHEDULED_ATTR", "Tile", "VectorMatmul",
           "VectorTrailingReduction", "WindowShape", "cpu_vector_info", "default_cpu_rules", "match_matmul",
           "match_trailing_reduction", "match_window", "plan_tile", "schedule_window"]
