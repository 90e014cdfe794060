"""Our matmul schedule (x @ W[k, n], the classifier of every CNN): vectorized, parallel when large, exact."""

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_lowrank.build import build, compile_pipeline
from tvm_lowrank.schedule import CPUVectorInfo, match_matmul
from tvm_lowrank.schedule.cpu_matmul import MatmulBlocks, plan_matmul
from tvm_lowrank.targets import load_target

AVX512 = CPUVectorInfo(bits=512, registers=32, threads=2)


def _linear_module(batch, k, n, epilogue, rng):
    """Relax's import of nn.Linear: matmul by the transposed weight (+ bias, + ReLU)."""
    weight = rng.standard_normal((n, k)).astype("float32")
    bias = rng.standard_normal((n,)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((batch, k), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, relax.op.permute_dims(relax.const(weight))))
            if epilogue != "none":
                y = bb.emit(relax.op.add(y, relax.const(bias)))
            if epilogue == "bias_relu":
                y = bb.emit(relax.op.nn.relu(y))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get(), weight, bias


def _expected(x, weight, bias, epilogue):
    y = x.astype(np.float64) @ weight.T.astype(np.float64)
    if epilogue != "none":
        y = y + bias
    return np.maximum(y, 0) if epilogue == "bias_relu" else y


@pytest.mark.parametrize("batch, k, n, epilogue", [
    (1, 512, 1000, "bias"),  # ResNet-18's classifier: 8-lane vectors, parallel
    (1, 256, 10, "bias_relu"),  # a 10-class head: one partial vector, serial
    (2, 64, 36, "none"),  # 4-lane vectors, batch 2, no epilogue (the accumulator is a cache)
])
def test_matmul_is_vectorized_and_matches_numpy(batch, k, n, epilogue):
    rng = np.random.default_rng(0)
    mod, weight, bias = _linear_module(batch, k, n, epilogue, rng)
    target = load_target("x86-avx2")
    lowered = compile_pipeline(target)(mod)
    kernels = [func for gv, func in lowered.functions_items()
               if isinstance(func, tvm.tirx.PrimFunc) and "matmul" in gv.name_hint]
    assert len(kernels) == 1
    text = kernels[0].script()
    assert "T.vectorized(" in text
    assert ("T.parallel(" in text) == (batch * k * n >= 1 << 18)
    x = rng.standard_normal((batch, k)).astype("float32")
    vm = relax.VirtualMachine(build(mod, target), tvm.cpu())
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), _expected(x, weight, bias, epilogue),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n, chunk", [(1000, 8), (1024, 16), (10, 10), (36, 4)])
def test_matmul_plan_uses_whole_vector_shares_that_divide_n(n, chunk):
    tile = plan_matmul(MatmulBlocks(None, [], 1, n, 512), AVX512)
    assert tile.chunk == chunk and n % (tile.chunk * tile.vectors) == 0
    assert tile.vectors * -(-tile.chunk // AVX512.lanes()) <= AVX512.accumulators


def test_matmul_rule_ignores_a_weight_with_the_reduction_innermost():
    """x @ W.T with W[n, k] stored as is (dense): dlight GEMV's case, not ours."""
    from tvm import s_tir, te, topi

    x = te.placeholder((1, 64), name="x")
    w = te.placeholder((32, 64), name="w")
    func = te.create_prim_func([x, w, topi.nn.dense(x, w)])
    assert match_matmul(s_tir.Schedule(func)) is None
    y = te.placeholder((1, 64), name="y")
    v = te.placeholder((64, 32), name="v")
    assert match_matmul(s_tir.Schedule(te.create_prim_func([y, v, topi.matmul(y, v)]))) is not None
