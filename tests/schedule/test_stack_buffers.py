"""StackScratchBuffers: which scratch buffers of a CPU kernel stay on the stack."""

import re

import numpy as np
import pytest
import tvm
from tvm.script import tirx as T

from tvm_lowrank.schedule.stack_buffers import STACK_BUFFER_BYTES
from tvm_lowrank.schedule.tir_pipeline import LOWRANK_CPU_PIPELINE, tir_pipeline
from tvm_lowrank.tune import _build_candidate

SMALL, LARGE = 512, 8192  # floats: 2 KiB (over TVM's own 1 KiB stack limit) and 32 KiB


@T.prim_func
def _scratch(a: T.Buffer((LARGE,), "float32"), b: T.Buffer((LARGE,), "float32")):
    T.func_attr({"global_symbol": "main"})
    large = T.alloc_buffer((LARGE,), "float32")
    small = T.alloc_buffer((SMALL,), "float32")
    small_local = T.alloc_buffer((SMALL,), "float32", scope="local")
    for i in range(LARGE):
        large[i] = a[i] * T.float32(2)
    for i in range(SMALL):
        small[i] = large[i] + T.float32(1)
    for i in range(SMALL):
        small_local[i] = small[i] * T.float32(3)
    for i in range(LARGE):
        b[i] = large[i] + small_local[i % SMALL]


def _workspace_buffers(module: tvm.runtime.Module) -> set[str]:
    """Names of the buffers the kernel takes from TVMBackendAllocWorkspace (its LLVM IR)."""
    llvm_ir = module.inspect_source("ll")
    return set(re.findall(r"%(\w+)(?:\.\w+)? = tail call ptr %\w+\(i32 1, i32 %\w+, i64 \d+", llvm_ir))


def test_only_global_buffers_within_the_limit_leave_the_workspace():
    assert SMALL * 4 <= STACK_BUFFER_BYTES < LARGE * 4
    target = tvm.target.Target("llvm")
    assert _workspace_buffers(tvm.tirx.build(_scratch, target)) == {"large", "small", "small_local"}
    ours = tvm.tirx.build(_scratch, target, pipeline=LOWRANK_CPU_PIPELINE)
    assert _workspace_buffers(ours) == {"large", "small_local"}
    a = np.random.default_rng(0).random(LARGE, dtype="float32")
    b = tvm.runtime.tensor(np.zeros(LARGE, "float32"))
    ours(tvm.runtime.tensor(a), b)
    np.testing.assert_allclose(b.numpy(), a * 2 + np.tile((a[:SMALL] * 2 + 1) * 3, LARGE // SMALL), rtol=1e-6)


def test_tuning_candidates_are_lowered_like_builds():
    """A candidate is measured as the build will run it: its small scratch buffers on the stack."""
    assert _workspace_buffers(_build_candidate(tvm.IRModule({"main": _scratch}), tvm.target.Target("llvm"), None)) \
        == {"large", "small_local"}


@pytest.mark.parametrize("kind, expected", [("llvm", LOWRANK_CPU_PIPELINE), ("cuda", "default")])
def test_pipeline_is_ours_on_cpus_only(kind, expected):
    assert tir_pipeline(tvm.target.Target(kind)) == expected
