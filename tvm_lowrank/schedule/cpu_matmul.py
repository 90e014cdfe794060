"""Vector schedule for matmuls whose weight is [K, N] (N contiguous): the classifier of every CNN.

Relax imports `nn.Linear` as `matmul(x, permute_dims(W))`; once the transpose is folded into the
constant, the fused PrimFunc reads `x[.., k] * W[k, n]` with n innermost in memory. dlight's CPU GEMV
rule expects the reduction innermost and leaves this a scalar loop (ResNet-18's 512x1000 classifier:
0.26 ms, a third of a 32x32 low-rank inference). Vectorized along n instead:

    parallel  for rows, n_outer                 (one task = `vectors` x `chunk` outputs of one row)
      acc[n_vec, lane] = 0
      for k_outer: unroll k_inner, n_vec; vectorize lane:
          acc += broadcast(x[k]) * W[k, n]      (contiguous weight loads; acc stays in registers)
      epilogue (bias, activation) on acc -> output

measured 13-18 us for 512x1000 on 2 threads. The chunk is a power-of-two share of a vector that
divides N (1000 -> 8 lanes: 30% faster than 10), else `choose_x_chunk`'s divisor (a prime N
above two vectors has none: left to dlight); rows (a batch) are not blocked, as inference here is
batch 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target

from ._blocks import (epilogue_chain, has_trivial_binding, int_value, iter_kinds, largest_divisor,
                      register_accumulator, uses, vectorize_innermost, vectorized_init)
from ._cpu import CPUVectorInfo, cpu_vector_info
from .cpu_conv import MIN_PARALLEL_WORK, TASKS_PER_THREAD, vector_chunk

K_UNROLL = 4
MIN_CHUNK = 4  # lanes; below this the rule declines and dlight's GEMV rule runs


@dataclass(frozen=True)
class MatmulTile:
    """`vectors` accumulators of `chunk` lanes per task; `k_unroll` reduction steps per iteration."""

    chunk: int
    vectors: int
    k_unroll: int
    parallel: bool  # tasks run on the thread pool


@dataclass
class MatmulBlocks:
    matmul: object
    epilogue: list
    rows: int  # product of the spatial extents before n
    n: int
    k: int

    @property
    def work(self) -> int:
        """Multiply-adds."""
        return self.rows * self.n * self.k


def plan_matmul(blocks: MatmulBlocks, vec: CPUVectorInfo) -> MatmulTile:
    chunk = vector_chunk(blocks.n, vec.lanes())
    registers_per_vector = -(-chunk // vec.lanes())
    chunks = blocks.n // chunk
    vectors = largest_divisor(chunks, vec.accumulators // registers_per_vector)
    parallel = blocks.work >= MIN_PARALLEL_WORK
    while parallel and blocks.rows * (chunks // vectors) < TASKS_PER_THREAD * vec.threads and vectors > 1:
        vectors = largest_divisor(chunks, vectors - 1)
    k_unroll = largest_divisor(blocks.k, K_UNROLL)
    return MatmulTile(chunk, vectors, k_unroll, parallel)


def match_matmul(sch: s_tir.Schedule) -> MatmulBlocks | None:
    """The matmul (S..SR block reading x[.., k] and W[k, n]) of `sch`'s function and its fused
    epilogue, or None when the function is anything else."""
    blocks = list(sch.get_child_blocks(get_root_block(sch)))
    reductions = [rv for rv in blocks if "R" in iter_kinds(sch.get(rv))]
    if len(reductions) != 1:
        return None
    matmul = reductions[0]
    block = sch.get(matmul)
    kinds = iter_kinds(block)
    if not (kinds.endswith("SR") and set(kinds[:-1]) == {"S"}) or len(block.reads) != 2 or len(block.writes) != 1:
        return None
    extents = [int_value(iv.dom.extent) for iv in block.iter_vars]
    if any(e is None for e in extents) or not has_trivial_binding(sch, matmul):
        return None
    spatial = [iv.var for iv in block.iter_vars[:-1]]
    n, k = spatial[-1], block.iter_vars[-1].var
    write = block.writes[0].region
    if len(write) != len(spatial) or any(not r.min.same_as(v) for r, v in zip(write, spatial)):
        return None
    weight = [r for r in block.reads if r.region[-1].min.same_as(n)]
    data = [r for r in block.reads if not any(uses(dim.min, n) for dim in r.region)]
    if len(weight) != 1 or len(data) != 1 or not uses(data[0].region[-1].min, k):
        return None
    if not any(uses(dim.min, k) for dim in weight[0].region[:-1]):
        return None
    epilogue = epilogue_chain(sch, matmul)
    if epilogue is None or len(blocks) != 1 + len(epilogue):
        return None
    return MatmulBlocks(matmul, epilogue, math.prod(extents[:-2]), extents[-2], extents[-1])


def schedule_matmul(sch: s_tir.Schedule, blocks: MatmulBlocks, tile: MatmulTile) -> None:
    matmul = blocks.matmul
    writer = register_accumulator(sch, matmul, blocks.epilogue)
    *rows, n, k = sch.get_loops(matmul)
    n_outer, n_vec, n_lane = sch.split(n, [None, tile.vectors, tile.chunk])
    k_outer, k_inner = sch.split(k, [None, tile.k_unroll])
    sch.reorder(*rows, n_outer, k_outer, k_inner, n_vec, n_lane)
    tasks = sch.fuse(*rows, n_outer)
    if tile.parallel:
        sch.parallel(tasks)
    sch.reverse_compute_at(writer, tasks)
    sch.unroll(k_inner)
    sch.unroll(n_vec)
    sch.vectorize(n_lane)
    vectorized_init(sch, matmul, k_outer, tile_depth=1)
    vectorize_innermost(sch, writer, tile.chunk)


class VectorMatmul(CPUScheduleRule):
    """dlight rule: `schedule_matmul` for x[.., k] * W[k, n] matmuls (+ epilogue) on llvm CPUs."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        blocks = match_matmul(sch)
        if blocks is None:
            return None
        tile = plan_matmul(blocks, cpu_vector_info(target))
        if tile.chunk < MIN_CHUNK:  # a prime N: no vector divides it
            return None
        try:
            schedule_matmul(sch, blocks, tile)
        except RuntimeError:  # ScheduleError or a TVM internal error: the next rule tries
            return None
        return sch
