"""DenseStridedLoads: strided vector loads become one dense load and a shuffle, with equal results."""

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import ir, tirx
from tvm.script import tirx as T

from tvm_lowrank.schedule.strided_loads import DenseStridedLoads
from tvm_lowrank.schedule.tir_pipeline import LOWRANK_CPU_PIPELINE

N = 64


def _strided_copy(stride: int, lanes: int, offset: int):
    """out[j] = a[offset + stride * j], written as one vector load per `lanes` outputs."""
    count = (N - offset - 1) // stride + 1
    count -= count % lanes

    @T.prim_func
    def main(a: T.Buffer((N,), "float32"), out: T.Buffer((N,), "float32")):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for chunk in range(count // lanes):
            out[T.Ramp(chunk * lanes, 1, lanes)] = a[T.Ramp(offset + chunk * lanes * stride, stride, lanes)]

    return main, count


def _ramps(func) -> list[tuple[int, int]]:
    """(stride, lanes) of every ramp-indexed load in `func`."""
    loads = []
    tvm_ffi.structural_walk(func.body, (ir.TensorLoad, loads.append))
    return [(int(load.indices[-1].stride.value), int(load.indices[-1].lanes.value))
            for load in loads if isinstance(load.indices[-1], tirx.Ramp)]


@pytest.mark.parametrize("stride, lanes", [(2, 8), (2, 16), (3, 4), (4, 4)])
def test_strided_loads_become_dense_loads_of_the_span_they_read(stride, lanes):
    func, _ = _strided_copy(stride, lanes, offset=1)
    rewritten = DenseStridedLoads()(tvm.IRModule({"main": func}))["main"]
    # exactly the elements from the first to the last lane: never past the ramp's own extremes
    assert _ramps(rewritten) == [(1, (lanes - 1) * stride + 1)]
    assert "T.Shuffle(" in rewritten.script()


@pytest.mark.parametrize("stride, lanes", [(1, 16), (5, 4)])
def test_unit_and_wide_strides_are_left_alone(stride, lanes):
    func, _ = _strided_copy(stride, lanes, offset=0)
    assert DenseStridedLoads()(tvm.IRModule({"main": func}))["main"].same_as(func)


@pytest.mark.parametrize("stride, lanes, offset", [(2, 16, 1), (2, 8, 0), (3, 4, 2), (4, 4, 3)])
def test_built_kernels_read_the_same_values(stride, lanes, offset):
    """Built through our pipeline (the pass included), each output lane still holds its element; the
    last ramp ends on the buffer's last element for offset 1 / stride 2 and 3 / 4, so a load past the
    span would read out of bounds."""
    func, count = _strided_copy(stride, lanes, offset)
    kernel = tvm.tirx.build(func, tvm.target.Target("llvm"), pipeline=LOWRANK_CPU_PIPELINE)
    assert "shufflevector" in kernel.inspect_source("ll")
    a = np.random.default_rng(stride).random(N, dtype="float32")
    out = tvm.runtime.tensor(np.full(N, np.nan, "float32"))
    kernel(tvm.runtime.tensor(a), out)
    np.testing.assert_array_equal(out.numpy()[:count], a[offset::stride][:count])
