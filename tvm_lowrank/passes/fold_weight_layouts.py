"""Fold the weight layouts that our CPU schedules choose into the constant weights.

A schedule may store a constant weight in the layout its loops read best (the channel-vector conv
tiles of `schedule.cpu_conv` read each tile's weights as one contiguous block). It does that the
way MetaSchedule's RewriteLayout does: a block marked as layout-rewrite preprocessing copies the
weight into the new layout at the top of the kernel. Relax's SplitLayoutRewritePreproc moves
that block into a kernel of its own, and FoldConstant runs it at compile time on the constant, so
the built kernel reads the relaid weight and nothing copies it at run time. A weight that is not a
constant keeps the copy as a kernel of its own.

SplitLayoutRewritePreproc renames the kernel `<name>_prepacked`; the kernels keep their fused names
here, which is what tuning reports, profiles and tests know them by.
"""

from __future__ import annotations

import tvm
from tvm import relax

PREPACKED_SUFFIX = "_prepacked"


@relax.expr_functor.mutator
class _RenameCallees(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, renamed: dict[str, tvm.ir.GlobalVar]):
        super().__init__(mod)
        self.renamed = renamed

    def visit_global_var_(self, op: tvm.ir.GlobalVar) -> relax.Expr:
        return self.renamed.get(op.name_hint, op)


def _restore_kernel_names(mod: tvm.IRModule) -> tvm.IRModule:
    """`mod` with each `<name>_prepacked` PrimFunc called `<name>` again where that name is free."""
    taken = {gvar.name_hint for gvar in mod.get_global_vars()}
    prepacked = {gvar.name_hint: func for gvar, func in mod.functions_items()
                 if isinstance(func, tvm.tirx.PrimFunc) and gvar.name_hint.endswith(PREPACKED_SUFFIX)
                 and gvar.name_hint.removesuffix(PREPACKED_SUFFIX) not in taken}
    if not prepacked:
        return mod
    # a builder over the module without them: one holding an equal function would hand back its name
    builder = relax.BlockBuilder(tvm.IRModule({gvar: func for gvar, func in mod.functions_items()
                                               if gvar.name_hint not in prepacked}))
    renamed = {}
    for old_name, func in prepacked.items():
        name = old_name.removesuffix(PREPACKED_SUFFIX)
        if "global_symbol" in (func.attrs or {}):
            func = func.with_attr("global_symbol", name)
        renamed[old_name] = builder.add_func(func, name)
    rename = _RenameCallees(mod, renamed)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            builder.update_func(gvar, rename.visit_expr(func))
    return builder.get()


@tvm.transform.module_pass(opt_level=0, name="FoldScheduledWeightLayouts")
class FoldScheduledWeightLayouts:
    """Split each scheduled kernel's weight layout rewrite out of it, fold it into the constant
    weight, drop what is left unused, and give the kernels back their names. Run it after the
    kernels are scheduled (MetaScheduleApplyDatabase, our CPU schedules)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod = tvm.transform.Sequential([relax.transform.SplitLayoutRewritePreproc(),
                                        relax.transform.FoldConstant(),
                                        relax.transform.DeadCodeElimination()])(mod)
        return _restore_kernel_names(mod)  # the kernels' old names are free once dead code is gone
