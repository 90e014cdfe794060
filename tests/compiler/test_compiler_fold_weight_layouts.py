"""FoldScheduledWeightLayouts: a scheduled kernel's weight layout rewrite leaves the kernel, is
folded into a constant weight at compile time (a kernel of its own for a weight given at run time),
and the kernel keeps its name; outputs unchanged."""

import numpy as np
import pytest
import tvm
from tvm import relax, s_tir, te
from tvm.s_tir.meta_schedule.arg_info import ArgInfo

from tvm_lowrank.passes import FoldScheduledWeightLayouts
from tvm_lowrank.schedule.cpu_conv import LAYOUT_REWRITE_PREPROC

BLOCK = 4


def _scale_rows() -> tvm.tirx.PrimFunc:
    """out[i, j] = x[i, j] * sum_k w[k, j]: a weight read along its last axis, like IHWO."""
    x = te.placeholder((2, 8), name="x")
    w = te.placeholder((3, 8), name="w")
    k = te.reduce_axis((0, 3), name="k")
    out = te.compute((2, 8), lambda i, j: te.sum(x[i, j] * w[k, j], axis=k), name="acc")
    return te.create_prim_func([x, w, out]).without_attr("global_symbol")  # private, as FuseTIR's


def _blocked(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    """`func` reading `w` as [8 // BLOCK, 3, BLOCK], the way our channel tiles block a weight."""
    sch = s_tir.Schedule(func)
    block = sch.get_sblock("acc")
    preproc = sch.cache_read(block, 1, "global")
    sch.annotate(preproc, LAYOUT_REWRITE_PREPROC, 1)
    sch.transform_layout(block, ("read", 1), lambda k, j: (j // BLOCK, k, j % BLOCK))
    return sch.mod["main"]


def _module(weight: np.ndarray, constant: bool) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 8), "float32"))
    w = relax.Var("w", relax.TensorType((3, 8), "float32"))
    params = [x] if constant else [x, w]
    with bb.function("main", params):
        with bb.dataflow():
            kernel = bb.add_func(_blocked(_scale_rows()), "scale_rows")
            out = bb.emit_output(relax.call_tir(kernel, [x, relax.const(weight) if constant else w],
                                                relax.TensorType((2, 8), "float32")))
        bb.emit_func_output(out)
    return bb.get()


def _prim_funcs(mod: tvm.IRModule) -> dict[str, tvm.tirx.PrimFunc]:
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


@pytest.mark.parametrize("constant", [True, False])
def test_weight_layout_leaves_the_kernel_and_outputs_hold(constant):
    rng = np.random.default_rng(0)
    x, weight = (rng.standard_normal(shape).astype("float32") for shape in [(2, 8), (3, 8)])
    folded = FoldScheduledWeightLayouts()(_module(weight, constant))

    kernels = _prim_funcs(folded)
    assert "scale_rows" in kernels and not any(name.endswith("_prepacked") for name in kernels)
    assert [tuple(int(d) for d in arg.shape) for arg in ArgInfo.from_prim_func(kernels["scale_rows"])] \
        == [(2, 8), (8 // BLOCK, 3, BLOCK), (2, 8)]
    assert LAYOUT_REWRITE_PREPROC not in kernels["scale_rows"].script()
    # a constant weight is stored relaid; one given at run time is relaid by a kernel of its own
    assert len(kernels) == (1 if constant else 2)
    if constant:
        stored = _constants(folded["main"])
        assert [tuple(c.shape) for c in stored] == [(8 // BLOCK, 3, BLOCK)]
        np.testing.assert_array_equal(stored[0].numpy(),
                                      weight.reshape(3, 8 // BLOCK, BLOCK).transpose(1, 0, 2))

    vm = relax.VirtualMachine(tvm.compile(folded, "llvm"), tvm.cpu())
    args = [x] if constant else [x, weight]
    out = vm["main"](*(tvm.runtime.tensor(a) for a in args)).numpy()
    np.testing.assert_allclose(out, x * weight.sum(axis=0), rtol=1e-6)


def _constants(func: relax.Function) -> list[tvm.runtime.Tensor]:
    found = []
    relax.analysis.post_order_visit(func, lambda e: found.append(e.value) if isinstance(e, tvm.ir.Constant)
                                    and isinstance(e.value, tvm.runtime.Tensor) else None)
    return found
