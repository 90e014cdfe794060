"""Our trailing-axes reduction schedule (the global average pool): vector partial sums, exact."""

import numpy as np
import pytest
import tvm
from tvm import relax, s_tir

from tvm_lowrank.build import build, compile_pipeline
from tvm_lowrank.schedule import CPUVectorInfo, match_trailing_reduction
from tvm_lowrank.schedule.cpu_reduce import plan_lanes
from tvm_lowrank.targets import host_cpu_target, load_target

AVX512 = CPUVectorInfo(bits=512, registers=32, threads=2)


def _reduce_module(shape, op, axis):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(getattr(relax.op, op)(x, axis=axis, keepdims=True)))
        bb.emit_func_output(out)
    return bb.get()


def _kernel(lowered, name):
    kernels = [func for gv, func in lowered.functions_items()
               if isinstance(func, tvm.tirx.PrimFunc) and gv.name_hint == name]
    assert len(kernels) == 1
    return kernels[0]


@pytest.mark.parametrize("shape, op", [
    ((1, 128, 56, 56), "mean"),  # VGG-FMNIST's pool at 224x224: 56 lanes, parallel
    ((1, 512, 4, 4), "mean"),  # ResNet-18 at 32x32: 4 lanes
    ((2, 24, 7, 7), "max"),  # a max reducer and a batch: 7 lanes
])
def test_trailing_reduction_is_vectorized_and_matches_numpy(shape, op):
    mod = _reduce_module(shape, op, [2, 3])
    target = load_target(host_cpu_target())  # it runs the build: this CPU's widest x86 target
    text = _kernel(compile_pipeline(target)(mod), op).script()
    assert "_rf = T.sblock_alloc_buffer" in text  # partial sums, factored out of the reduction
    assert "T.vectorized(" in text
    assert ("T.parallel(" in text) == (np.prod(shape) >= 1 << 18)
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    vm = relax.VirtualMachine(build(mod, target), tvm.cpu())
    expected = getattr(np, op)(x.astype(np.float64), axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduced, lanes", [(3136, 56), (49, 7), (16, 4), (2, 2), (1, 1)])
def test_lanes_balance_the_vector_and_scalar_add_chains(reduced, lanes):
    assert plan_lanes(reduced, AVX512) == lanes


@pytest.mark.parametrize("shape, axis", [
    ((1, 32, 8, 8), [1]),  # over channels: strided, not the trailing axes
    ((1, 32, 8, 8), [1, 2]),  # leaves the innermost axis out
])
def test_reductions_not_over_whole_trailing_axes_are_left_to_dlight(shape, axis):
    legalized = relax.transform.LegalizeOps()(_reduce_module(shape, "sum", axis))
    assert match_trailing_reduction(s_tir.Schedule(legalized["sum"])) is None
