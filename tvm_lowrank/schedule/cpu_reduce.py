"""Vector schedule for reductions over an input's trailing axes: the global average pool of a CNN.

`mean(x, axis=[2, 3])` legalizes to a sum over (h, w) per channel and a divide. dlight's CPU
Reduction rule parallelizes the channels but leaves each channel's sum one scalar add chain, at
3-4 cycles an add: VGG-FMNIST's 128x56x56 mean took 164 us at 224x224 input (3% of the low-rank
model), 3 us at 28x28. The trailing axes are contiguous in memory, so they are fused and split into
`outer` x `lanes` and the lanes factored out (rfactor):

    parallel  for channels
      partial[lane] = 0                          (vectorized)
      for outer: partial[lane] += x[c, outer * lanes + lane]    (vector adds, `lanes` chains)
      out[c] = epilogue(sum of partial)          (scalar, `lanes` adds)

`lanes` is the divisor of the reduced extent that minimizes outer + lanes (both halves are add
chains), at most four vectors wide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target

from ._blocks import divisors, epilogue_chain, has_trivial_binding, int_value, iter_kinds
from ._cpu import CPUVectorInfo, cpu_vector_info
from .cpu_conv import MIN_PARALLEL_WORK

MAX_VECTORS = 4  # partial-sum vectors per channel: independent add chains


@dataclass
class TrailingReduction:
    """A block reducing `reduced` trailing elements of its input into each of `rows` outputs."""

    block: object
    epilogue: list
    rows: int
    reduced: int

    @property
    def work(self) -> int:
        """Input elements read."""
        return self.rows * self.reduced


def plan_lanes(reduced: int, vec: CPUVectorInfo) -> int:
    """The divisor of `reduced` (at most MAX_VECTORS vectors) with the shortest two add chains."""
    return min((d for d in divisors(reduced) if d <= MAX_VECTORS * vec.lanes()),
               key=lambda d: (reduced // d + d, -d))


def match_trailing_reduction(sch: s_tir.Schedule) -> TrailingReduction | None:
    """The single reduction block of `sch`'s function when it reads one input whose trailing axes,
    whole and in order, are its reduction axes, plus its injective epilogue; None for anything
    else."""
    blocks = list(sch.get_child_blocks(get_root_block(sch)))
    reductions = [rv for rv in blocks if "R" in iter_kinds(sch.get(rv))]
    if len(reductions) != 1:
        return None
    block_rv = reductions[0]
    block = sch.get(block_rv)
    kinds = iter_kinds(block)
    spatial_count = kinds.index("R")
    if set(kinds[:spatial_count]) - {"S"} or set(kinds[spatial_count:]) != {"R"}:
        return None
    if len(block.reads) != 1 or len(block.writes) != 1 or not has_trivial_binding(sch, block_rv):
        return None
    extents = [int_value(iv.dom.extent) for iv in block.iter_vars]
    if any(e is None for e in extents):
        return None
    read = block.reads[0]
    reduce_vars = [iv.var for iv in block.iter_vars[spatial_count:]]
    trailing = read.region[len(read.region) - len(reduce_vars):]
    shape = [int_value(e) for e in read.source.shape[len(read.region) - len(reduce_vars):]]
    if len(trailing) != len(reduce_vars) or any(
            not r.min.same_as(v) or int_value(r.extent) != 1 for r, v in zip(trailing, reduce_vars)):
        return None
    if shape != extents[spatial_count:]:  # the reduced axes must cover whole, contiguous rows
        return None
    epilogue = epilogue_chain(sch, block_rv)
    if epilogue is None or len(blocks) != 1 + len(epilogue):
        return None
    return TrailingReduction(block_rv, epilogue, math.prod(extents[:spatial_count]),
                             math.prod(extents[spatial_count:]))


def schedule_trailing_reduction(sch: s_tir.Schedule, found: TrailingReduction, lanes: int,
                                parallel: bool) -> None:
    """The schedule of the module docstring: one task per output (parallel when `parallel`), each
    summing `lanes` partial sums in a vector before its epilogue."""
    block = found.block
    loops = sch.get_loops(block)
    depth = iter_kinds(sch.get(block)).count("R")
    rows, reduce_loops = loops[:-depth], loops[-depth:]
    outer, lane = sch.split(sch.fuse(*reduce_loops), [None, lanes])
    partial = sch.rfactor(lane, factor_axis=len(rows))
    tasks = sch.fuse(*sch.get_loops(block)[:len(rows)])
    if parallel:
        sch.parallel(tasks)
    sch.compute_at(partial, tasks)
    for epilogue_block in found.epilogue[:-1]:
        sch.compute_inline(epilogue_block)
    if found.epilogue:
        sch.reverse_compute_at(found.epilogue[-1], tasks)
    *_, lane, outer = sch.get_loops(partial)  # compute_at keeps rfactor's order: the lane first
    sch.reorder(outer, lane)
    sch.vectorize(lane)
    init = sch.decompose_reduction(partial, outer)
    sch.vectorize(sch.get_loops(init)[-1])


class VectorTrailingReduction(CPUScheduleRule):
    """dlight rule: `schedule_trailing_reduction` for sums/maxima over trailing axes on llvm CPUs."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        found = match_trailing_reduction(sch)
        if found is None:
            return None
        lanes = plan_lanes(found.reduced, cpu_vector_info(target))
        if lanes < 2:  # nothing to vectorize (a prime extent above four vectors, or 1)
            return None
        try:
            schedule_trailing_reduction(sch, found, lanes, found.work >= MIN_PARALLEL_WORK)
        except RuntimeError:  # not a reducer rfactor knows: the next rule tries
            return None
        return sch
